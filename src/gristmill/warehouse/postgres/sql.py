"""PostgreSQL statements: partitioned pack tables, their partitions and indexes, the dedupe
key table, and the load statements of one pack table, built once as sqlglot expressions.

Partitions: each pack table is ``PARTITION BY RANGE (occurred_at)`` with one partition per
day (or hour, or month: the pack's granularity), created ahead of time at provisioning and on
demand before a batch that needs one loads, in their own short transaction. There is no
DEFAULT partition: a default partition would make every later ``CREATE … PARTITION OF`` scan
it, and a batch never waits for a partition it cannot create.

Dedupe: ``<dataset>._gm_dedupe(k UUID PRIMARY KEY, first_seen)``, ``k = md5(scope ␟ id)``.
Keys are inserted with ``ON CONFLICT DO NOTHING RETURNING k`` in the load transaction; only
rows whose key came back are inserted. Two loaders racing on one key serialize on the primary
key: the second sees the first's key once it commits, so the row loads once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from sqlglot import exp

from gristmill.pack.models import Pack
from gristmill.sql import ddl
from gristmill.sql.ddl import create_table, pack_table_columns, table_ref
from gristmill.sql.system import system_ddl
from gristmill.sql.types import Logical, logical, sql_type
from gristmill.warehouse.common import stored_columns
from gristmill.warehouse.postgres.factory import DIALECT

BATCH = "_gm_batch"
FRESH = "_gm_fresh"
NEW = "_gm_new"
DEDUPE_TABLE = "_gm_dedupe"
UNIT_SEPARATOR = "\x1f"
MAX_IDENT = 63

SET_FUNCTIONS = (
    # count_distinct rollups store arrays of values; answering merges them across buckets.
    "CREATE OR REPLACE FUNCTION _gristmill.array_distinct(anycompatiblearray) "
    "RETURNS anycompatiblearray LANGUAGE sql IMMUTABLE PARALLEL SAFE AS "
    "$$ SELECT array_agg(DISTINCT x) FROM unnest($1) AS x $$",
    "CREATE OR REPLACE AGGREGATE _gristmill.set_union(anycompatiblearray) "
    "(SFUNC = array_cat, STYPE = anycompatiblearray, FINALFUNC = _gristmill.array_distinct)",
)
"""Fixed text (no names from packs or requests): PostgreSQL has no aggregate that unions
arrays, so provisioning creates one."""


def sql(e: exp.Expr) -> str:
    return e.sql(dialect=DIALECT)


def _ident(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def _cols(*names: str) -> list[exp.Identifier]:
    return [_ident(n) for n in names]


def dedupe_key(table: str | None = None) -> exp.Expr:
    joined = exp.DPipe(
        this=exp.DPipe(
            this=exp.column("_dedupe_scope", table=table),
            expression=exp.Literal.string(UNIT_SEPARATOR),
        ),
        expression=exp.column("event_id", table=table),
    )
    return exp.Cast(this=exp.func("md5", joined), to=exp.DataType.build("UUID"))


# -- provisioning ---------------------------------------------------------------------------
def partitioned_table(pack: Pack, table: str) -> exp.Create:
    spec = pack.spec.tables[table].partition_by
    create = create_table(table_ref(pack.dataset, table), pack_table_columns(pack, table, DIALECT))
    create.set(
        "properties",
        exp.Properties(
            expressions=[
                exp.PartitionedByProperty(
                    this=exp.Anonymous(this="RANGE", expressions=[exp.column(spec.column)])
                )
            ]
        ),
    )
    return create


def cluster_index(pack: Pack, table: str) -> exp.Create | None:
    """PostgreSQL has no clustering; a b-tree on the clustering keys serves the same filters
    (tenant, then event type) and is inherited by every partition."""
    keys = pack.spec.tables[table].cluster_by
    if not keys:
        return None
    return ddl.create_index(table_ref(pack.dataset, table), _short(f"{table}_cluster"), keys)


def dedupe_table(pack: Pack) -> exp.Create:
    return create_table(
        table_ref(pack.dataset, DEDUPE_TABLE),
        [
            exp.ColumnDef(
                this=_ident("k"),
                kind=exp.DataType.build("UUID"),
                constraints=[exp.ColumnConstraint(kind=exp.PrimaryKeyColumnConstraint())],
            ),
            exp.ColumnDef(
                this=_ident("first_seen"),
                kind=sql_type(Logical.TIMESTAMP, DIALECT),
                constraints=[exp.ColumnConstraint(kind=exp.NotNullColumnConstraint())],
            ),
        ],
    )


def _short(name: str) -> str:
    """Identifiers are cut at 63 bytes by PostgreSQL: long names keep a hash instead."""
    if len(name) <= MAX_IDENT:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]  # noqa: S324 - a name, not security
    return f"{name[: MAX_IDENT - 9]}_{digest}"


def partition_start(t: datetime, granularity: str) -> datetime:
    t = t.astimezone(UTC)
    if granularity == "hour":
        return t.replace(minute=0, second=0, microsecond=0)
    if granularity == "day":
        return t.replace(hour=0, minute=0, second=0, microsecond=0)
    return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def partition_end(start: datetime, granularity: str) -> datetime:
    if granularity == "hour":
        return start + timedelta(hours=1)
    if granularity == "day":
        return start + timedelta(days=1)
    return (start + timedelta(days=32)).replace(day=1)


def partition(pack: Pack, table: str, start: datetime) -> exp.Create:
    gran = pack.spec.tables[table].partition_by.granularity
    fmt = {"hour": "%Y%m%d%H", "day": "%Y%m%d", "month": "%Y%m"}[gran]
    end = partition_end(start, gran)
    return exp.Create(
        this=table_ref(pack.dataset, _short(f"{table}_p{start.strftime(fmt)}")),
        kind="TABLE",
        exists=True,
        properties=exp.Properties(
            expressions=[
                exp.PartitionedOfProperty(
                    this=table_ref(pack.dataset, table),
                    expression=exp.PartitionBoundSpec(
                        from_expressions=[exp.Literal.string(start.isoformat())],
                        to_expressions=[exp.Literal.string(end.isoformat())],
                    ),
                )
            ]
        ),
    )


def partitions_ahead(pack: Pack, table: str, now: datetime, ahead: int) -> list[datetime]:
    """Starts of the partitions to have before rows arrive: the previous one, the current one
    and ``ahead`` more."""
    gran = pack.spec.tables[table].partition_by.granularity
    step = {"hour": timedelta(hours=1), "day": timedelta(days=1), "month": timedelta(days=31)}
    starts = {partition_start(now + step[gran] * i, gran) for i in range(-1, ahead + 1)}
    return sorted(starts)


def pack_ddl(
    packs: Sequence[Pack], ahead: int = 7, now: datetime | None = None
) -> list[exp.Expr | str]:
    """System tables and functions, then per pack its schema, key table, partitioned tables,
    cluster indexes and the partitions ahead of ``now``."""
    now = now or datetime.now(UTC)
    stmts: list[exp.Expr | str] = [*system_ddl(DIALECT), *SET_FUNCTIONS]
    for pack in packs:
        stmts.append(ddl.create_schema(pack.dataset))
        stmts.append(dedupe_table(pack))
        for table in pack.spec.tables:
            stmts.append(partitioned_table(pack, table))
            index = cluster_index(pack, table)
            if index is not None:
                stmts.append(index)
            stmts += [partition(pack, table, s) for s in partitions_ahead(pack, table, now, ahead)]
    return stmts


def render(stmts: Sequence[exp.Expr | str], extra: Sequence[exp.Expr] = ()) -> list[str]:
    return [s if isinstance(s, str) else sql(s) for s in [*stmts, *extra]]


# -- loading ---------------------------------------------------------------------------------
def _view(name: str, query: exp.Query) -> list[str]:
    """A temp view, dropped first: its columns differ per pack table (OR REPLACE cannot
    drop columns)."""
    return [
        sql(exp.Drop(tables=[exp.to_table(name)], kind="VIEW", exists=True)),
        sql(
            exp.Create(
                this=exp.to_table(name),
                kind="VIEW",
                properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
                expression=query,
            )
        ),
    ]


_ARROW_TYPES: dict[str, Logical] = {
    "string": Logical.TEXT,
    "large_string": Logical.TEXT,
    "int64": Logical.INT64,
    "double": Logical.FLOAT64,
    "bool": Logical.BOOL,
    "binary": Logical.BINARY,
    "large_binary": Logical.BINARY,
}


def stage_from_arrow(name: str, schema: pa.Schema) -> list[str]:
    """A temp table shaped like an Arrow batch, for a binary COPY (JSON and DATE columns
    travel as text and are cast on insert). Timestamps are ``timestamptz``: the binary COPY
    format of ``timestamp`` and ``timestamptz`` is the same integer, and pgpq writes UTC."""
    cols: list[exp.ColumnDef] = []
    for f in schema:
        lt = Logical.TIMESTAMP if pa.types.is_timestamp(f.type) else _ARROW_TYPES[str(f.type)]
        cols.append(exp.ColumnDef(this=_ident(f.name), kind=sql_type(lt, DIALECT)))
    create = exp.Create(
        this=exp.Schema(this=exp.to_table(name), expressions=cols),
        kind="TABLE",
        properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
    )
    return [sql(exp.Drop(tables=[exp.to_table(name)], kind="TABLE", exists=True)), sql(create)]


@dataclass(frozen=True)
class LoadStatements:
    remember: list[str]
    """Fresh keys into the key table, the fresh ones kept in a temp table (its row count is
    the number of fresh rows)."""
    insert_all: str
    insert_fresh: str
    count_fresh: str
    new_all: list[str]
    """View ``_gm_new``: the rows this load added (:mod:`gristmill.rollup.delta`) when every
    key was fresh."""
    new_fresh: list[str]
    """View ``_gm_new`` when some keys repeated: the fresh rows only."""

    DROP_NEW = exp.Drop(tables=[exp.to_table(NEW)], kind="VIEW", exists=True).sql(DIALECT)

    @classmethod
    def build(cls, pack: Pack, table: str) -> LoadStatements:
        target = table_ref(pack.dataset, table)
        dedupe = table_ref(pack.dataset, DEDUPE_TABLE)
        types = {c.name: logical(c.type) for c in pack.columns(table)}
        rows = exp.select(*stored_columns(types, DIALECT)).from_(BATCH)
        returning = exp.insert(
            # One set-based statement from the staged batch: hash, insert the new keys and
            # hand them back (a temp table of hashed keys first cost 8% of a load).
            # Key order: concurrent loaders take the unique-index locks in the same order,
            # so overlapping batches wait for each other instead of deadlocking.
            exp.select(exp.alias_(dedupe_key(), "_k"), "received_at").from_(BATCH).order_by("_k"),
            dedupe,
            columns=_cols("k", "first_seen"),
        )
        returning.set(
            "conflict",
            exp.OnConflict(
                conflict_keys=[exp.Ordered(this=exp.column("k", quoted=True))],
                action=exp.var("DO NOTHING"),
            ),
        )
        returning.set("returning", exp.Returning(expressions=[exp.column("k", quoted=True)]))
        remember = exp.insert(exp.select("k").from_("ins"), FRESH).with_("ins", as_=returning)
        is_fresh = exp.In(this=dedupe_key(), query=exp.select("k").from_(FRESH).subquery())
        named = exp.select(
            *[
                exp.alias_(e, c, quoted=True)
                for e, c in zip(stored_columns(types, DIALECT), types, strict=True)
            ]
        ).from_(BATCH)
        return cls(
            remember=[
                sql(exp.Drop(tables=[exp.to_table(FRESH)], kind="TABLE", exists=True)),
                sql(
                    exp.Create(
                        this=exp.Schema(
                            this=exp.to_table(FRESH),
                            expressions=[
                                exp.ColumnDef(this=_ident("k"), kind=exp.DataType.build("UUID"))
                            ],
                        ),
                        kind="TABLE",
                        properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
                    )
                ),
                sql(remember),
            ],
            insert_all=sql(exp.insert(rows, target, columns=_cols(*types))),
            insert_fresh=sql(exp.insert(rows.where(is_fresh), target, columns=_cols(*types))),
            count_fresh=sql(
                exp.select("source", exp.func("count", exp.Star()))
                .from_(BATCH)
                .where(is_fresh.copy())
                .group_by("source")
            ),
            new_all=_view(NEW, named),
            new_fresh=_view(NEW, named.where(is_fresh.copy())),
        )
