"""PostgreSQL's catalogue for ``gristmill provision``: columns with ``format_type`` (the
spelling ``information_schema`` flattens to "ARRAY"), the partition key from
``pg_get_partkeydef``, and clustering as the columns of the table's cluster index (PostgreSQL
has no clustering; that b-tree serves the same filters, see sql.py)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from gristmill.warehouse.postgres.factory import DIALECT
from gristmill.warehouse.postgres.sql import _short
from gristmill.warehouse.provision.model import Catalogue, TableState

if TYPE_CHECKING:
    from gristmill.warehouse.postgres.client import PostgresWarehouse

CLUSTERING_IS_INDEX = True
"""A missing cluster index on an existing table is added (CREATE INDEX), not refused."""

_COLUMNS = (
    "SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), "
    "CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END "
    "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = ANY(%(s)s) AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
    "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY n.nspname, c.relname, a.attnum"
)
_INDEXES = (
    "SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes "
    "WHERE schemaname = ANY(%(s)s)"
)
_SCHEMAS = "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%(s)s)"


def render(e: exp.Expr) -> str:
    return e.sql(dialect=DIALECT)


def _flat(text: str) -> str:
    return re.sub(r'[\s"`]', "", text).lower()


def normalize_type(text: str) -> str:
    return exp.DataType.build(text, dialect=DIALECT).sql(dialect=DIALECT).upper()


def layout(create: exp.Create) -> tuple[str | None, tuple[str, ...]]:
    props = create.args.get("properties")
    part = props.find(exp.PartitionedByProperty) if props is not None else None
    return (_flat(part.this.sql(dialect=DIALECT)) if part is not None else None), ()


def index_clustering(index: exp.Create) -> tuple[str, ...] | None:
    table = index.this.args["table"]
    if index.this.name != _short(f"{table.name}_cluster"):
        return None
    params = index.this.args["params"]
    return tuple(o.this.name for o in params.args.get("columns", []))


def read(wh: PostgresWarehouse, schemas: Sequence[str], tables: Sequence[exp.Table]) -> Catalogue:
    conn = wh._reader()
    s = {"s": list(schemas)}
    found = frozenset(str(r[0]) for r in conn.execute(_SCHEMAS, s).fetchall())
    cols: dict[str, dict[str, str]] = defaultdict(dict)
    parts: dict[str, str | None] = {}
    for ns, rel, att, typ, partkey in conn.execute(_COLUMNS, s).fetchall():
        key = f"{ns}.{rel}"
        cols[key][str(att)] = normalize_type(str(typ))
        parts[key] = _flat(str(partkey)) if partkey else None
    clustering: dict[str, tuple[str, ...]] = {}
    for ns, rel, name, indexdef in conn.execute(_INDEXES, s).fetchall():
        if name == _short(f"{rel}_cluster"):
            inner = str(indexdef).rsplit("(", 1)[1].rstrip(")")
            clustering[f"{ns}.{rel}"] = tuple(c.strip().strip('"') for c in inner.split(","))
    return Catalogue(
        found,
        {k: TableState(v, parts.get(k), clustering.get(k, ())) for k, v in cols.items()},
    )


def execute(wh: PostgresWarehouse, statements: Sequence[str]) -> None:
    """Run a plan's statements in one transaction (PostgreSQL's DDL is transactional)."""
    with wh._txn() as cur:
        for stmt in statements:
            cur.execute(stmt)


def scalar(wh: PostgresWarehouse, text: str) -> Any:
    row = wh._reader().execute(text).fetchone()
    return row[0] if row else None


def connector_hints(packs: Sequence[Any], bus: Mapping[str, Any], settings: Any) -> dict[str, Any]:
    return {"loader": "gristmill load (or gristmill serve) reads the log into these tables"}
