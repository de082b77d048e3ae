"""Redshift's catalogue for ``gristmill provision``, through the connector: schemas from
``pg_namespace``, columns from ``svv_columns`` (``information_schema.columns``' shape, with
Redshift's own types such as SUPER and VARBYTE spelled out), and the layout of each table —
its distribution from ``svv_table_info`` and ``pg_table_def``, its sort key from
``pg_table_def``.

Redshift declares no partitions. What decides where a row lives is its distribution, and
changing it (like re-partitioning) rewrites the table, so the plan's partitioning slot carries
it: ``distkey(<column>)`` or ``diststyle(auto|even|all)``. The compound ``SORTKEY`` is the
clustering (the time column first, then the pack's ``cluster_by``; see sql.py). A table
created ``DISTSTYLE AUTO`` that Redshift has since moved to a key of its choosing still reads
``diststyle(auto)``: that move is Redshift's own, not a change to plan. Pure parts (normalising,
layouts, connector hints) need no cluster and are tested here; reading runs in the live suite.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from gristmill.warehouse.provision.model import Catalogue, TableState
from gristmill.warehouse.redshift.factory import DIALECT
from gristmill.warehouse.redshift.sql import sql

if TYPE_CHECKING:
    from gristmill.config import Settings
    from gristmill.pack.models import Pack
    from gristmill.warehouse.redshift.client import RedshiftWarehouse

CLUSTERING_IS_INDEX = False
"""The sort key is part of the table (``ALTER SORTKEY`` rewrites it): never added by a plan."""

AUTO = "diststyle(auto)"
"""A table without ``DISTKEY`` or ``DISTSTYLE`` is ``AUTO`` (Redshift's default)."""

_ALIASES = {
    "binary varying": "varbyte",
    "character varying": "varchar",
    "character": "char",
    "numeric": "decimal",
}
"""``svv_columns`` spellings sqlglot does not read as the type the DDL renders."""


def render(e: exp.Expr) -> str:
    return sql(e)


def normalize_type(text: str) -> str:
    base = re.sub(r"\s+", " ", text.strip().lower())
    for alias, name in _ALIASES.items():
        if base == alias or base.startswith(f"{alias}("):
            base = name + base[len(alias) :]
            break
    return exp.DataType.build(base, dialect=DIALECT).sql(dialect=DIALECT).upper()


def column_type(
    data_type: str, length: int | None, precision: int | None, scale: int | None
) -> str:
    """One ``svv_columns`` row's type as the DDL spells it: the length of character and
    binary types and the precision of ``numeric`` are separate columns there."""
    base = data_type.strip().lower()
    if base == "numeric" and precision is not None:
        return normalize_type(f"numeric({precision},{scale or 0})")
    if length is not None and base in ("character varying", "character", "binary varying"):
        return normalize_type(f"{base}({length})")
    return normalize_type(base)


def distribution(diststyle: str | None, distkey: str | None = None) -> str:
    """``svv_table_info.diststyle`` (``KEY(c)``, ``EVEN``, ``ALL``, ``AUTO(…)``) as the plan
    compares it; a table missing there (an empty one: that view lists only tables with
    blocks) falls back to ``pg_table_def``'s distkey column, else ``AUTO``."""
    text = (diststyle or "").strip()
    if text.upper().startswith("AUTO"):
        return AUTO
    key = re.fullmatch(r"(?i)KEY\s*\(\s*\"?(.*?)\"?\s*\)", text)
    if key is not None:
        return f"distkey({key.group(1)})"
    if text:
        return f"diststyle({text.lower()})"
    return f"distkey({distkey})" if distkey else AUTO


def sort_key(columns: Iterable[tuple[str, int]]) -> tuple[str, ...]:
    """``pg_table_def``'s ``(column, sortkey)`` rows as the sort key: positions 1, 2, …
    (compound); an interleaved key (negative positions) is marked, so it never equals the
    compound key the packs ask for."""
    keyed = sorted(((abs(n), c, n < 0) for c, n in columns if n), key=lambda r: r[0])
    return tuple(f"{c} (interleaved)" if inter else c for _, c, inter in keyed)


def layout(create: exp.Create) -> tuple[str | None, tuple[str, ...]]:
    props = create.args.get("properties")
    if props is None:
        return AUTO, ()
    dist = props.find(exp.DistKeyProperty)
    style = props.find(exp.DistStyleProperty)
    sort = props.find(exp.SortKeyProperty)
    if dist is not None:
        part = f"distkey({dist.name})"
    elif style is not None:
        part = f"diststyle({style.name.lower()})"
    else:
        part = AUTO
    return part, tuple(i.name for i in sort.this) if sort is not None else ()


def index_clustering(index: exp.Create) -> tuple[str, ...] | None:
    return None


def _in(column: str, n: int) -> exp.Expr:
    return exp.column(column, quoted=True).isin(*(exp.Placeholder() for _ in range(n)))


def _queries(n: int) -> tuple[str, str, str]:
    schemas = exp.select("nspname").from_("pg_namespace").where(_in("nspname", n))
    columns = (
        exp.select(
            "table_schema",
            "table_name",
            "column_name",
            "data_type",
            "character_maximum_length",
            "numeric_precision",
            "numeric_scale",
        )
        .from_("svv_columns")
        .where(_in("table_schema", n))
        .order_by("table_schema", "table_name", "ordinal_position")
    )
    info = (
        exp.select(exp.column("schema", quoted=True), exp.column("table", quoted=True), "diststyle")
        .from_("svv_table_info")
        .where(_in("schema", n))
    )
    return schemas.sql(dialect=DIALECT), columns.sql(dialect=DIALECT), info.sql(dialect=DIALECT)


TABLE_DEF = (
    exp.select("tablename", exp.column("column", quoted=True), "distkey", "sortkey")
    .from_("pg_table_def")
    .where(exp.column("schemaname").eq(exp.Placeholder()))
    .sql(dialect=DIALECT)
)
"""``pg_table_def`` lists only tables on the search path, and of two equally named tables only
the first: it is read one schema at a time with the path set to that schema."""


def read(wh: RedshiftWarehouse, schemas: Sequence[str], tables: Sequence[exp.Table]) -> Catalogue:
    names = list(schemas)
    if not names:
        return Catalogue(frozenset(), {})
    q_schemas, q_columns, q_info = _queries(len(names))
    cols: dict[str, dict[str, str]] = defaultdict(dict)
    dist_keys: dict[str, str] = {}
    sorts: dict[str, list[tuple[str, int]]] = defaultdict(list)
    with wh._lock:
        cur = wh._conn.cursor()
        cur.execute(q_schemas, names)
        found = frozenset(str(r[0]) for r in cur.fetchall())
        cur.execute(q_columns, names)
        for s, t, c, typ, length, precision, scale in cur.fetchall():
            cols[f"{s}.{t}"][str(c)] = column_type(str(typ), length, precision, scale)
        cur.execute(q_info, names)
        styles = {f"{s}.{t}": str(d) for s, t, d in cur.fetchall()}
        try:
            for schema in sorted(found):
                path = exp.to_identifier(schema, quoted=True).sql(dialect=DIALECT)
                cur.execute(f"SET search_path TO {path}")
                cur.execute(TABLE_DEF, [schema])
                for t, c, is_dist, n in cur.fetchall():
                    key = f"{schema}.{t}"
                    if is_dist:
                        dist_keys[key] = str(c)
                    sorts[key].append((str(c), int(n or 0)))
        finally:
            cur.execute("RESET search_path")
    return Catalogue(
        found,
        {
            k: TableState(v, distribution(styles.get(k), dist_keys.get(k)), sort_key(sorts[k]))
            for k, v in cols.items()
        },
    )


def execute(wh: RedshiftWarehouse, statements: Sequence[str]) -> None:
    """Run a plan's statements in one transaction (Redshift's CREATE SCHEMA, CREATE TABLE and
    ADD COLUMN are transactional): a failed apply leaves nothing half made."""
    with wh._lock:
        cur = wh._conn.cursor()
        cur.execute("BEGIN")
        try:
            for stmt in statements:
                cur.execute(stmt)
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")


def scalar(wh: RedshiftWarehouse, text: str) -> Any:
    with wh._lock:
        cur = wh._conn.cursor()
        cur.execute(text)
        row = cur.fetchone()
    return row[0] if row else None


# -- connector hints -------------------------------------------------------------------------
def _lit(text: str) -> str:
    return exp.Literal.string(text).sql(dialect=DIALECT)


def _ident(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql(dialect=DIALECT)


def json_paths(pack: Pack, table: str) -> dict[str, list[str]]:
    """The JSONPaths file of a table's ``COPY``: one path per column, in column order (the
    contract's ``json_path``s: promoted columns are read from ``$.properties``)."""
    return {
        "jsonpaths": [
            f"$.properties.{c.name}" if c.promoted else f"$.{c.name}" for c in pack.columns(table)
        ]
    }


def copy_from_s3(pack: Pack, schema: str, table: str, bucket: str, iam_role: str) -> str:
    """``COPY`` one table from its folder of newline-delimited JSON, columns matched by the
    table's JSONPaths file (``<folder>.jsonpaths.json`` beside it)."""
    folder = f"s3://{bucket}/{schema}/{table}"
    stmt = exp.Copy(
        this=exp.Schema(
            this=exp.table_(
                exp.to_identifier(table, quoted=True), db=exp.to_identifier(schema, quoted=True)
            ),
            expressions=[exp.to_identifier(c.name, quoted=True) for c in pack.columns(table)],
        ),
        kind=True,
        files=[exp.Literal.string(f"{folder}/")],
        credentials=exp.Credentials(iam_role=exp.Literal.string(iam_role)),
        params=[
            exp.CopyParameter(
                this=exp.var("FORMAT AS JSON"),
                expression=exp.Literal.string(f"{folder}.jsonpaths.json"),
            ),
            exp.CopyParameter(this=exp.var("TIMEFORMAT"), expression=exp.Literal.string("auto")),
        ],
    )
    return stmt.sql(dialect=DIALECT)


def streaming_view(schema: str, view: str, source_schema: str, source: str, kafka: bool) -> str:
    """The materialized view streaming ingestion fills from an MSK topic or a Kinesis
    stream: one row per record, the event parsed to SUPER (records that are not JSON are
    skipped)."""
    value = "kafka_value" if kafka else "kinesis_data"
    meta = (
        ("kafka_partition", "kafka_offset", "kafka_timestamp")
        if kafka
        else ("shard_id", "sequence_number", "approximate_arrival_timestamp")
    )
    select = (
        exp.select(*meta, exp.alias_(exp.ParseJSON(this=exp.column(value)), "payload", quoted=True))
        .from_(
            exp.table_(
                exp.to_identifier(source, quoted=True),
                db=exp.to_identifier(source_schema, quoted=True),
            )
        )
        .where(exp.func("CAN_JSON_PARSE", exp.column(value)))
    )
    create = exp.Create(
        this=exp.table_(
            exp.to_identifier(view, quoted=True), db=exp.to_identifier(schema, quoted=True)
        ),
        kind="VIEW",
        expression=select,
        properties=exp.Properties(
            expressions=[exp.MaterializedProperty(), exp.AutoRefreshProperty(this=exp.var("YES"))]
        ),
    )
    return create.sql(dialect=DIALECT)


def external_schema(name: str, iam_role: str, kafka: bool) -> str:
    """``CREATE EXTERNAL SCHEMA … FROM MSK|KINESIS``: sqlglot has no model of it, so it is
    fixed text with the name quoted as an identifier and the role as a string literal."""
    source = "MSK" if kafka else "KINESIS"
    extra = " AUTHENTICATION iam CLUSTER_ARN '<msk-cluster-arn>'" if kafka else ""
    return f"CREATE EXTERNAL SCHEMA {_ident(name)} FROM {source} IAM_ROLE {_lit(iam_role)}{extra}"


def connector_hints(
    packs: Sequence[Pack], bus: Mapping[str, Any], settings: Settings
) -> dict[str, Any]:
    """``COPY`` from S3 per table, and streaming ingestion from MSK (the log is Kafka) or
    Kinesis (any other log: a team forwards the events there), for teams that land the
    events themselves instead of running ``gristmill load``."""
    from gristmill.config import RedshiftSettings

    cfg = settings.warehouse if isinstance(settings.warehouse, RedshiftSettings) else None
    bucket = (cfg.staging.bucket if cfg else None) or "<bucket>"
    role = (cfg.staging.iam_role if cfg else None) or "<iam-role-arn>"
    kafka = bus.get("log") == "kafka"
    source = str(bus["topic"]) if kafka else "<kinesis-stream>"
    landing = "gristmill_msk" if kafka else "gristmill_kinesis"
    copies = []
    for pack in packs:
        for name in sorted(pack.spec.tables):
            copies.append(
                {
                    "table": f"{pack.dataset}.{name}",
                    "copy": copy_from_s3(pack, pack.dataset, name, bucket, role),
                    "jsonpaths": json_paths(pack, name),
                }
            )
    return {
        "loader": "gristmill load reads the log into these tables (exactly once, deduped)",
        "copy_from_s3": copies,
        "streaming_ingestion": {
            "source": "msk" if kafka else "kinesis",
            "external_schema": external_schema(landing, role, kafka),
            "materialized_view": streaming_view(
                "public", "gristmill_stream", landing, source, kafka
            ),
            "refresh": "AUTO REFRESH YES; route payload.event_type to tables[].event_types "
            "with INSERT … SELECT from the view",
        },
        "routing": "one topic or stream carries every table's events: route by event_type "
        "(tables[].event_types); COPY and streaming ingestion do not dedupe",
    }
