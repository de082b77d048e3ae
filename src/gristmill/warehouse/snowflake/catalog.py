"""Snowflake's catalogue for ``gristmill provision``, through the connector:
``information_schema`` schemata, columns (types compared by family: Snowflake reports NUMBER
for every integer and TEXT for every string) and each table's clustering key. Pure parts
(normalising, layouts, connector hints) need no credentials and are tested here; reading
runs in the live suite."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from gristmill.warehouse.provision.model import Catalogue, TableState
from gristmill.warehouse.snowflake.factory import DIALECT
from gristmill.warehouse.snowflake.sql import sql

if TYPE_CHECKING:
    from gristmill.config import Settings
    from gristmill.pack.models import Pack
    from gristmill.warehouse.snowflake.client import SnowflakeWarehouse

CLUSTERING_IS_INDEX = False

_FAMILIES = {
    "TEXT": ("TEXT", "VARCHAR", "STRING", "CHAR", "CHARACTER", "NCHAR", "NVARCHAR"),
    "NUMBER": ("NUMBER", "DECIMAL", "NUMERIC", "INT", "INTEGER", "BIGINT", "SMALLINT", "TINYINT"),
    "FLOAT": ("FLOAT", "FLOAT4", "FLOAT8", "DOUBLE", "DOUBLE PRECISION", "REAL"),
    "TIMESTAMP_TZ": ("TIMESTAMP_TZ", "TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"),
    "BINARY": ("BINARY", "VARBINARY"),
    "BOOLEAN": ("BOOLEAN", "BOOL"),
}
_FAMILY = {alias: fam for fam, aliases in _FAMILIES.items() for alias in aliases}
_SCHEMAS = "SELECT schema_name FROM information_schema.schemata"
_COLUMNS = (
    "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
    "ORDER BY table_schema, table_name, ordinal_position"
)
_TABLES = "SELECT table_schema, table_name, clustering_key FROM information_schema.tables"


def render(e: exp.Expr) -> str:
    return sql(e)


def normalize_type(text: str) -> str:
    base = re.sub(r"\(.*\)$", "", text.strip().upper()).strip()
    if base.startswith("ARRAY"):
        return "ARRAY"
    return _FAMILY.get(base, base)


def clustering_key(text: str | None) -> tuple[str, ...]:
    """``LINEAR("a", "b")`` (information_schema.tables) as column names."""
    if not text:
        return ()
    inner = re.sub(r"^\s*LINEAR\s*\((.*)\)\s*$", r"\1", text, flags=re.IGNORECASE)
    return tuple(p.strip().strip('"') for p in inner.split(",") if p.strip())


def layout(create: exp.Create) -> tuple[str | None, tuple[str, ...]]:
    props = create.args.get("properties")
    cluster = props.find(exp.ClusterProperty) if props is not None else None
    return None, tuple(c.name for c in cluster.expressions) if cluster is not None else ()


def index_clustering(index: exp.Create) -> tuple[str, ...] | None:
    return None


def read(wh: SnowflakeWarehouse, schemas: Sequence[str], tables: Sequence[exp.Table]) -> Catalogue:
    wanted = set(schemas)
    with wh._lock:
        cur = wh._conn.cursor()
        found = {str(r[0]) for r in cur.execute(_SCHEMAS).fetchall()} & wanted
        rows = cur.execute(_COLUMNS).fetchall()
        keys = cur.execute(_TABLES).fetchall()
    cols: dict[str, dict[str, str]] = defaultdict(dict)
    for s, t, c, typ in rows:
        if s in wanted:
            cols[f"{s}.{t}"][str(c)] = normalize_type(str(typ))
    clus = {f"{s}.{t}": clustering_key(k) for s, t, k in keys if s in wanted}
    return Catalogue(
        frozenset(found), {k: TableState(v, None, clus.get(k, ())) for k, v in cols.items()}
    )


def execute(wh: SnowflakeWarehouse, statements: Sequence[str]) -> None:
    """Run a plan's statements in order (DDL commits on Snowflake; each is idempotent)."""
    with wh._lock:
        cur = wh._conn.cursor()
        for stmt in statements:
            cur.execute(stmt)


def copy_into(dataset: str, table: str, stage: str) -> str:
    """``COPY INTO`` one table from its folder of the stage, JSON matched by column name."""
    stmt = exp.Copy(
        this=exp.table_(
            exp.to_identifier(table, quoted=True), db=exp.to_identifier(dataset, quoted=True)
        ),
        kind=True,
        files=[exp.Table(this=exp.Literal.string(f"@{stage}/{dataset}/{table}/"))],
        params=[
            exp.CopyParameter(
                this=exp.var("FILE_FORMAT"),
                expressions=[exp.Property(this=exp.var("TYPE"), value=exp.Literal.string("JSON"))],
            ),
            exp.CopyParameter(
                this=exp.var("MATCH_BY_COLUMN_NAME"), expression=exp.var("CASE_INSENSITIVE")
            ),
        ],
    )
    return stmt.sql(dialect=DIALECT)


def scalar(wh: SnowflakeWarehouse, text: str) -> Any:
    with wh._lock:
        row = wh._conn.cursor().execute(text).fetchone()
    return row[0] if row else None


def connector_hints(
    packs: Sequence[Pack], bus: Mapping[str, Any], settings: Settings
) -> dict[str, Any]:
    """Snowpipe Streaming through the Kafka connector, or files in the stage and ``COPY
    INTO``, for teams that land the topic themselves instead of running ``gristmill load``."""
    from gristmill.config import SnowflakeSettings

    cfg = settings.warehouse if isinstance(settings.warehouse, SnowflakeSettings) else None
    stage = cfg.stage if cfg else "gristmill_stage"
    database = cfg.database if cfg else "GRISTMILL"
    landing = cfg.landing_schema if cfg else None
    topic = str(bus.get("topic") or "<topic: the log is not Kafka>")
    out = []
    for pack in packs:
        schema = landing or pack.dataset
        for name in sorted(pack.spec.tables):
            out.append(
                {
                    "table": f"{schema}.{name}",
                    "kafka_connector": {
                        "connector.class": "com.snowflake.kafka.connector.SnowflakeSinkConnector",
                        "topics": topic,
                        "snowflake.database.name": database,
                        "snowflake.schema.name": schema,
                        "snowflake.topic2table.map": f"{topic}:{name}",
                        "snowflake.ingestion.method": "SNOWPIPE_STREAMING",
                        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
                    },
                    "copy_into": copy_into(schema, name, stage),
                }
            )
    return {
        "loader": "gristmill load reads the log into these tables (exactly once, deduped)",
        "stage": stage,
        "snowflake": out,
        "routing": "one topic carries every table's events: route by event_type "
        "(tables[].event_types); Snowpipe and COPY INTO do not dedupe",
    }
