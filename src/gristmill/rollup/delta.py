"""Delta rollups: a load merges the aggregates of the rows it added into the rollup, instead of
recomputing every bucket it touched from rows.

Recompute reads, per load, every row between the first and the last bucket the batch touched —
a batch of late events spread over three days reads three days of rows. The delta reads the
batch and the rollup rows of the buckets it touched, nothing else:

1. ``_gm_delta`` ← the batch's fresh rows (``_gm_new``, which the engine defines after dedupe:
   a duplicate never reaches it) grouped by bucket and dimensions, as rollup components;
2. the stored rows of those keys are appended to ``_gm_delta`` and deleted from the rollup;
3. ``_gm_delta`` grouped by key again goes back in, each component merged by its own rule:
   counts and sums add, min and max compare, distinct-value sets union (exact: the set of
   values, as the rollup already stores them — no sketch, no error).

DuckDB and PostgreSQL (``caps.rollup_appends``) defer steps 2 and 3: a load appends its batch's
aggregates as rows of their own (reads merge a key's rows anyway), and every few loads one load
also folds the keys appended since into one row each (:func:`fold`; when, in
warehouse/folds.py). Steps 2 and 3 rewrote every key a batch touched, sets included, at every
load.

Same numbers as a full rebuild (the tests compare after random interleavings of in-order, late
and duplicate batches). Two engines give ``_gm_new`` inside the load transaction
(``caps.delta_rollups``: DuckDB, PostgreSQL). On PostgreSQL, where loaders in several processes
may load one pack, a transaction-scoped advisory lock per rollup is taken by every append,
merge and fold of it: a fold deletes the rows it read, and without the lock a row another
loader appended meanwhile would go with them. A recompute needed it too. The cloud engines
(``caps.upsert_by_merge``: BigQuery, Snowflake, Redshift) merge deltas too, in one MERGE per
rollup without temp tables (:func:`gristmill.rollup.scripted.delta`): their ``_gm_new`` is the
dedupe anti-join, run before the batch's keys are remembered, in the load transaction.
ClickHouse has no transactions, and a retried batch must be able to redo its rollup step,
which a merge into stored rows is not: there the batch's aggregates go in as a *part* of their
own, tagged with the batch id (a retry deletes it with the batch's rows), reads merge parts per
key, and committed parts are compacted into one row per key a month partition at a time
(``REPLACE PARTITION``, atomic: warehouse/clickhouse/compact.py).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlglot import exp

from gristmill.metrics.compile import AGGS, COMPONENTS, component_columns
from gristmill.pack.analytics import RollupSpec
from gristmill.pack.models import Pack
from gristmill.rollup.spec import _bucket, _names, rollup_table
from gristmill.sql.system import LOADS
from gristmill.warehouse.base import AfterInsert, RollupFold, RollupParts
from gristmill.warehouse.common import NEW

DELTA = "_gm_delta"


def lock_key(pack: Pack, name: str) -> int:
    """A stable signed 64-bit advisory-lock key per rollup (PostgreSQL's lock space)."""
    digest = hashlib.sha256(f"gristmill rollup {pack.name}.{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _merge(comp: str, column: str, dialect: str) -> exp.Expr:
    col = exp.column(column, quoted=True)
    if comp in ("n", "sum"):
        return exp.Sum(this=col)
    if comp == "min":
        return exp.Min(this=col)
    if comp == "max":
        return exp.Max(this=col)
    assert comp == "set", comp
    if not AGGS[dialect].sets:  # the engine keeps no sets (Redshift): a typed NULL stays NULL
        return AGGS[dialect].distinct_set(col)
    if dialect == "clickhouse":  # arrays are never NULL there: no values is the empty set
        return AGGS[dialect].merge_sets(col)
    # A bucket whose filtered values were all NULL stores a NULL set (as a rebuild does), not
    # the empty set a union of NULLs gives.
    return (
        exp.Case()
        .when(exp.Count(this=col.copy()).eq(0), exp.Null())
        .else_(AGGS[dialect].merge_sets(col))
    )


def merged_columns(pack: Pack, r: RollupSpec, dialect: str) -> list[exp.Expr]:
    """A rollup's key columns and each component merged by its rule (counts and sums add,
    min and max compare, sets union), named as stored: the select list that folds rows of
    one key into one."""
    out: list[exp.Expr] = [
        exp.column("bucket", quoted=True),
        *[exp.column(d, quoted=True) for d in r.dimensions],
    ]
    for m_name in r.metrics:
        for comp in COMPONENTS[pack.spec.metrics[m_name].type]:
            column = f"{m_name}__{comp}"
            out.append(exp.alias_(_merge(comp, column, dialect), column, quoted=True))
    return out


def delta(
    pack: Pack, name: str, r: RollupSpec, dialect: str = "duckdb", *, appends: bool = False
) -> AfterInsert:
    """The load-transaction steps that merge a batch's fresh rows into rollup ``name``
    (with ``appends``, ``caps.rollup_appends``: that append them, to be folded later)."""
    aggs = AGGS[dialect]
    target = rollup_table(pack, name)
    names = _names(pack, r)
    dims = [exp.column(d, quoted=True) for d in r.dimensions]
    bucket = _bucket(exp.column("occurred_at", quoted=True), r.grain, dialect)
    comps: list[exp.Expr] = []
    for m_name in r.metrics:
        comps += component_columns(m_name, pack.spec.metrics[m_name], aggs)
    if dialect == "clickhouse":
        return _partial(pack, name, r, bucket, comps)
    if appends:
        return _appended(pack, name, r, bucket, comps, dialect)

    prepare = rollup_lock(pack, name, dialect)
    prepare += [
        exp.Drop(tables=[exp.to_table(DELTA)], kind="TABLE", exists=True),
        exp.Create(
            this=exp.to_table(DELTA),
            kind="TABLE",
            properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
            expression=exp.select(exp.alias_(bucket, "bucket"), *dims, *comps)
            .from_(NEW)
            .group_by(exp.column("bucket"), *[d.copy() for d in dims]),
        ),
    ]
    bounds = exp.select(
        exp.alias_(exp.Min(this=exp.column("bucket")), "lo"),
        exp.alias_(exp.Max(this=exp.column("bucket")), "hi"),
    ).from_(DELTA)
    lo, hi = exp.Placeholder(this="lo"), exp.Placeholder(this="hi")

    def stored(alias: str) -> exp.Expr:
        """Rollup rows (as ``alias``) whose key the delta holds, within the delta's range."""
        return exp.and_(
            exp.GTE(this=exp.column("bucket", table=alias), expression=lo.copy()),
            exp.LTE(this=exp.column("bucket", table=alias), expression=hi.copy()),
            _key_in(DELTA, r, alias),
        )

    cols = [exp.column(n.this, table="r", quoted=True) for n in names]
    gather = exp.insert(
        exp.select(*cols).from_(target.copy().as_("r")).where(stored("r")),
        exp.to_table(DELTA),
        columns=[n.copy() for n in names],
    )
    delete = exp.delete(target.copy().as_("r")).where(stored("r"))
    put = exp.insert(
        exp.select(*merged_columns(pack, r, dialect))
        .from_(DELTA)
        # Every delta row is in range; the bound parameters are the same for all statements.
        .where(exp.column("bucket", quoted=True).between(lo.copy(), hi.copy()))
        .group_by(exp.column("bucket", quoted=True), *[d.copy() for d in dims]),
        target.copy(),
        columns=[n.copy() for n in names],
    )
    return AfterInsert(statements=(gather, delete, put), prepare=tuple(prepare), bounds=bounds)


def rollup_lock(pack: Pack, name: str, dialect: str) -> list[exp.Expr]:
    """On PostgreSQL, the statement that takes rollup ``name``'s transaction-scoped advisory
    lock (held to the commit; taking it again in the same transaction is free)."""
    if dialect != "postgres":
        return []
    key = exp.Literal.number(lock_key(pack, name))
    return [exp.select(exp.func("pg_advisory_xact_lock", key))]


def _key_in(table: str | exp.Subquery, r: RollupSpec, alias: str) -> exp.Exists:
    """Whether ``table`` (a temp table's name, or a subquery aliased ``d``) holds the key
    (bucket and dimensions, NULL equal to NULL) of the rollup row ``alias``."""
    same: list[exp.Expr] = [exp.column("bucket", table="d").eq(exp.column("bucket", table=alias))]
    same += [
        exp.NullSafeEQ(
            this=exp.column(d, table="d", quoted=True),
            expression=exp.column(d, table=alias, quoted=True),
        )
        for d in r.dimensions
    ]
    source = exp.to_table(table).as_("d") if isinstance(table, str) else table
    return exp.Exists(this=exp.select("1").from_(source).where(exp.and_(*same)))


FOLD = "_gm_fold"
SPAN = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
"""The longest bucket of each grain (UTC buckets: no DST)."""


def _appended(
    pack: Pack, name: str, r: RollupSpec, bucket: exp.Expr, comps: list[exp.Expr], dialect: str
) -> AfterInsert:
    """Engines with transactions (``caps.rollup_appends``): the batch's aggregates go in as
    rows of their own, one statement that reads the batch and nothing stored.

    Merging into stored rows at every load reads, deletes and rewrites every touched key: a
    batch of late events over three days rewrites three days of the rollup, sets included.
    Reads merge rows per key anyway (the planner re-aggregates rollup rows), so the extra
    rows are right; :func:`fold` later makes them one row per key again."""
    target = rollup_table(pack, name)
    dims = [exp.column(d, quoted=True) for d in r.dimensions]
    append = exp.insert(
        exp.select(exp.alias_(bucket, "bucket"), *dims, *comps)
        .from_(NEW)
        .group_by(exp.column("bucket"), *[d.copy() for d in dims]),
        target,
        columns=_names(pack, r),
    )
    return AfterInsert(
        statements=(append,),
        prepare=tuple(rollup_lock(pack, name, dialect)),
        fold=fold(pack, name, r, dialect),
    )


def fold(pack: Pack, name: str, r: RollupSpec, dialect: str = "duckdb") -> RollupFold:
    """The statements that fold rollup ``name``'s keys holding several rows, in buckets from
    ``$lo`` on, into one row each: merged into a scratch table, deleted, put back."""
    target = rollup_table(pack, name)
    keys = [exp.column("bucket", quoted=True), *[exp.column(d, quoted=True) for d in r.dimensions]]
    since = exp.GTE(this=exp.column("bucket", quoted=True), expression=exp.Placeholder(this="lo"))
    # The keys holding several rows first, from the key columns alone; then only their rows
    # are merged. Merging every key in range and keeping those with several rows merged the
    # sets of keys that needed nothing: half the fold's time over a 90-day rollup.
    several = (
        exp.select(*[k.copy() for k in keys])
        .from_(target.copy())
        .where(since.copy())
        .group_by(*[k.copy() for k in keys])
        .having(exp.GT(this=exp.func("count", exp.Star()), expression=exp.Literal.number(1)))
    )
    r_since = exp.GTE(this=exp.column("bucket", table="r"), expression=exp.Placeholder(this="lo"))
    merged_keys = (
        exp.select(*merged_columns(pack, r, dialect))
        .from_(target.copy().as_("r"))
        .where(exp.and_(r_since.copy(), _key_in(several.subquery("d"), r, "r")))
        .group_by(*keys)
    )
    scratch = exp.to_table(FOLD)
    rows = exp.and_(r_since, _key_in(FOLD, r, "r"))
    names = _names(pack, r)
    statements = (
        exp.Create(
            this=scratch.copy(),
            kind="TABLE",
            properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
            expression=merged_keys,
        ),
        exp.delete(target.copy().as_("r")).where(rows),
        exp.insert(
            # Every scratch row is in range: all three statements take the same parameter.
            exp.select(*[n.copy() for n in names]).from_(scratch.copy()).where(since.copy()),
            target.copy(),
            columns=[n.copy() for n in names],
        ),
    )
    drop = exp.Drop(tables=[scratch.copy()], kind="TABLE", exists=True)
    return RollupFold(
        target, SPAN[r.grain], statements, drop, tuple(rollup_lock(pack, name, dialect))
    )


PART = "_gm_batch_id"
"""The column of a ClickHouse rollup row that names its part (see warehouse/clickhouse)."""


def _partial(
    pack: Pack, name: str, r: RollupSpec, bucket: exp.Expr, comps: list[exp.Expr]
) -> AfterInsert:
    """ClickHouse: the batch's aggregates go in as rows of their own, tagged with the batch id.

    No read of stored rows, no replace: reads already merge rollup rows per key (a query's
    buckets are coarser than the rollup's anyway), a retried batch deletes its part with its
    other rows (an idempotent step, which a merge into stored rows is not), and compaction
    later folds committed parts into one row per key (:class:`RollupParts`)."""
    parts = rollup_parts(pack, name, r)
    dims = [exp.column(d, quoted=True) for d in r.dimensions]
    select = (
        exp.select(exp.alias_(bucket, "bucket"), *dims, *comps, exp.Placeholder(this="b"))
        .from_(NEW)
        .group_by(exp.column("bucket"), *[d.copy() for d in dims])
    )
    cols = [exp.to_identifier(c, quoted=True) for c in parts.columns]
    return AfterInsert(
        statements=(exp.insert(select, parts.table.copy(), columns=cols),), parts=parts
    )


def rollup_parts(pack: Pack, name: str, r: RollupSpec) -> RollupParts:
    """How a ClickHouse rollup kept as parts is compacted, one partition ``{p}`` at a time."""
    target = rollup_table(pack, name)
    dims = [exp.column(d, quoted=True) for d in r.dimensions]
    part = exp.column(PART, quoted=True)
    cols = [str(n.this) for n in _names(pack, r)] + [PART]
    in_partition = exp.column("_partition_id").eq(exp.Placeholder(this="p"))
    committed = exp.In(
        this=part.copy(),
        query=exp.select("batch_id")
        .from_(LOADS)
        .where(
            exp.In(
                this=exp.column("batch_id"),
                query=exp.select(part.copy())
                .from_(target.copy())
                .where(in_partition.copy())
                .subquery(),
            )
        )
        .subquery(),
    )
    folded = (
        # Unaliased: ClickHouse would read a select alias in WHERE in place of the column.
        exp.select(*merged_columns(pack, r, "clickhouse"), exp.Literal.string(""))
        .from_(target.copy())
        .where(exp.and_(in_partition.copy(), exp.or_(part.copy().eq(""), committed.copy())))
        .group_by(exp.column("bucket", quoted=True), *[d.copy() for d in dims])
    )
    kept = (
        exp.select(*[exp.column(c, quoted=True) for c in cols])
        .from_(target.copy())
        .where(exp.and_(in_partition.copy(), part.copy().neq(""), exp.Not(this=committed.copy())))
    )
    return RollupParts(target, PART, tuple(cols), folded, kept)


def merged(pack: Pack, name: str, dialect: str = "duckdb") -> exp.Select:
    """The rollup as one row per key: its rows merged by key. Where a key has one row
    (DuckDB, PostgreSQL, cloud) this is the table; on ClickHouse it merges the parts."""
    r = pack.spec.rollups[name]
    keys = [exp.column(k, quoted=True) for k in ("bucket", *r.dimensions)]
    return (
        exp.select(*merged_columns(pack, r, dialect))
        .from_(rollup_table(pack, name))
        .group_by(*keys)
    )
