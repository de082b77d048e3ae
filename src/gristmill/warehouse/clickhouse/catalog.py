"""ClickHouse's catalogue for ``gristmill provision`` (chdb in process or a server, one
interface): ``system.columns`` for types and ``system.tables`` for the partition key and the
sorting key, which is the clustering of a MergeTree. ``Nullable(…)`` is left out of the
comparison: nullability is not a type change the plan acts on."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from gristmill.warehouse.clickhouse.factory import DIALECT
from gristmill.warehouse.provision.model import Catalogue, TableState

if TYPE_CHECKING:
    from gristmill.warehouse.clickhouse.client import ClickHouseWarehouse

CLUSTERING_IS_INDEX = False

_SCHEMAS = "SELECT name FROM system.databases"
_COLUMNS = (
    "SELECT database, table, name, type FROM system.columns "
    "WHERE has({s:Array(String)}, database) ORDER BY database, table, position"
)
_TABLES = (
    "SELECT database, name, partition_key, sorting_key FROM system.tables "
    "WHERE has({s:Array(String)}, database)"
)


def render(e: exp.Expr) -> str:
    return e.sql(dialect=DIALECT)


def _flat(text: str) -> str:
    return re.sub(r'[\s"`]', "", text).lower()


def normalize_type(text: str) -> str:
    bare = re.sub(r"^(?:LowCardinality\()?Nullable\((.*)\)\)?$", r"\1", text.strip())
    return exp.DataType.build(bare, dialect=DIALECT).sql(dialect=DIALECT)


def layout(create: exp.Create) -> tuple[str | None, tuple[str, ...]]:
    props = create.args.get("properties")
    if props is None:
        return None, ()
    part = props.find(exp.PartitionedByProperty)
    order = props.find(exp.Order)
    keys: list[str] = []
    if order is not None:
        for o in order.expressions:
            inner = o.this
            items = inner.expressions if isinstance(inner, exp.Tuple) else [inner]
            keys += [_flat(i.sql(dialect=DIALECT)) for i in items]
    return (_flat(part.this.sql(dialect=DIALECT)) if part is not None else None), tuple(keys)


def index_clustering(index: exp.Create) -> tuple[str, ...] | None:
    return None


def read(wh: ClickHouseWarehouse, schemas: Sequence[str], tables: Sequence[exp.Table]) -> Catalogue:
    conn = wh._conn
    found = frozenset(str(r["name"]) for r in conn.query(_SCHEMAS).to_pylist()) & set(schemas)
    s = {"s": list(schemas)}
    cols: dict[str, dict[str, str]] = defaultdict(dict)
    for r in conn.query(_COLUMNS, s).to_pylist():
        cols[f"{r['database']}.{r['table']}"][str(r["name"])] = normalize_type(str(r["type"]))
    layouts: dict[str, tuple[str | None, tuple[str, ...]]] = {}
    for r in conn.query(_TABLES, s).to_pylist():
        part = _flat(str(r["partition_key"])) or None
        keys = tuple(_flat(k) for k in str(r["sorting_key"]).split(",") if k.strip())
        layouts[f"{r['database']}.{r['name']}"] = (part, keys)
    return Catalogue(
        found, {k: TableState(v, *layouts.get(k, (None, ()))) for k, v in cols.items()}
    )


def execute(wh: ClickHouseWarehouse, statements: Sequence[str]) -> None:
    """Run a plan's statements in order (ClickHouse DDL is not transactional; each is
    idempotent, so a failed apply is re-planned and finished by the next one)."""
    with wh._write_lock:
        for stmt in statements:
            wh._conn.command(stmt)
        wh._engines.clear()


def scalar(wh: ClickHouseWarehouse, text: str) -> Any:
    rows = wh._conn.query(text).to_pylist()
    return next(iter(rows[0].values())) if rows else None


def connector_hints(packs: Sequence[Any], bus: Mapping[str, Any], settings: Any) -> dict[str, Any]:
    return {"loader": "gristmill load (or gristmill serve) reads the log into these tables"}
