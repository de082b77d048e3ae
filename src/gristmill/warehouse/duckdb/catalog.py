"""DuckDB's catalogue for ``gristmill provision``: schemas, columns and their types as
``information_schema`` lists them, normalised to compare with the rendered DDL. DuckDB
declares no partitions or clustering (zonemaps prune), so a table's layout is always empty."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from gristmill.warehouse.duckdb.factory import DIALECT
from gristmill.warehouse.provision.model import Catalogue, TableState

if TYPE_CHECKING:
    from gristmill.warehouse.duckdb.client import DuckDBWarehouse

CLUSTERING_IS_INDEX = False


def render(e: exp.Expr) -> str:
    return e.sql(dialect=DIALECT)


def normalize_type(text: str) -> str:
    return exp.DataType.build(text, dialect=DIALECT).sql(dialect=DIALECT).upper()


def layout(create: exp.Create) -> tuple[str | None, tuple[str, ...]]:
    return None, ()


def index_clustering(index: exp.Create) -> tuple[str, ...] | None:
    return None


def read(wh: DuckDBWarehouse, schemas: Sequence[str], tables: Sequence[exp.Table]) -> Catalogue:
    wanted = set(schemas)
    cur = wh._cur()
    found = {str(r[0]) for r in cur.execute("SELECT schema_name FROM duckdb_schemas()").fetchall()}
    rows = cur.execute(
        "SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns() "
        "WHERE NOT internal ORDER BY schema_name, table_name, column_index"
    ).fetchall()
    cols: dict[str, dict[str, str]] = defaultdict(dict)
    for s, t, c, typ in rows:
        if s in wanted:
            cols[f"{s}.{t}"][str(c)] = normalize_type(str(typ))
    return Catalogue(frozenset(found & wanted), {k: TableState(v) for k, v in cols.items()})


def execute(wh: DuckDBWarehouse, statements: Sequence[str]) -> None:
    """Run a plan's statements in one transaction: all of them or none."""
    cur = wh._cur()
    cur.execute("BEGIN TRANSACTION")
    try:
        for s in statements:
            cur.execute(s).fetchall()
    except Exception:
        cur.execute("ROLLBACK")
        raise
    cur.execute("COMMIT")


def scalar(wh: DuckDBWarehouse, text: str) -> Any:
    row = wh._cur().execute(text).fetchone()
    return row[0] if row else None


def connector_hints(packs: Sequence[Any], bus: Mapping[str, Any], settings: Any) -> dict[str, Any]:
    return {"loader": "gristmill load (or gristmill serve) reads the log into these tables"}
