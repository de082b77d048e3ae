"""Rollup and freshness maintenance for engines without ``ON CONFLICT`` whose load transaction
may not create tables (BigQuery, Snowflake, Redshift: ``caps.upsert_by_merge``).

Rollups are kept by :func:`delta` by default: one MERGE per rollup folds the aggregates of the
batch's fresh rows into the stored rows of the keys it touched — the batch and those rows are
read, no event rows. It is exact because dedupe comes first and in the same transaction: the
step runs after the insert and before the batch's keys are remembered (``before_keys``), so
``_gm_new`` is the anti-join on the key table as it was before the batch — the rows just
inserted, each once; a repeated event finds its key and adds nothing (a re-delivered batch
stops earlier, at the ledger), and a failed load rolls the merge back with the rows.

``rollup_mode = "recompute"`` keeps :func:`refresh`: the numbers of
:func:`gristmill.rollup.spec.refresh` in another shape, the touched buckets deleted and rebuilt
from every row in their time range.

Both shapes avoid temp tables (Snowflake DDL commits the open transaction): the touched keys
are a subquery over the staged batch ``_gm_batch``, and the first and last bucket are the
``bounds`` bound into the statements as constants (so BigQuery prunes the rollup's and the
table's partitions). Freshness is a MERGE.
"""

from __future__ import annotations

from sqlglot import exp

from gristmill.metrics.compile import AGGS, component_columns
from gristmill.pack.analytics import RollupSpec
from gristmill.pack.models import Pack
from gristmill.rollup.delta import merged_columns
from gristmill.rollup.freshness import ALL, FRESHNESS, KEY, scope_columns
from gristmill.rollup.spec import _bucket, _names, rollup_table
from gristmill.sql.ddl import table_ref
from gristmill.sql.types import Logical, sql_type
from gristmill.warehouse.base import AfterInsert
from gristmill.warehouse.common import NEW

BATCH = "_gm_batch"


def _touched(pack: Pack, r: RollupSpec, dialect: str) -> exp.Select:
    bucket = _bucket(exp.column("occurred_at", quoted=True), r.grain, dialect)
    dims = [exp.column(d, quoted=True) for d in r.dimensions]
    return exp.select(exp.alias_(bucket, "bucket"), *dims).from_(BATCH).distinct()


def _same_key(r: RollupSpec, a: str, b: str) -> exp.Expr:
    conds: list[exp.Expr] = [
        exp.EQ(this=exp.column("bucket", table=a), expression=exp.column("bucket", table=b))
    ]
    conds += [
        exp.NullSafeEQ(
            this=exp.column(d, table=a, quoted=True), expression=exp.column(d, table=b, quoted=True)
        )
        for d in r.dimensions
    ]
    return exp.and_(*conds)


def refresh(pack: Pack, name: str, r: RollupSpec, dialect: str) -> AfterInsert:
    """Recompute the buckets a batch touched: ``bounds`` gives the first and last one, then
    the touched buckets are deleted and rebuilt from rows in that time range."""
    target = rollup_table(pack, name)
    bucket = _bucket(exp.column("occurred_at", quoted=True), r.grain, dialect)
    dims = [exp.column(d, quoted=True) for d in r.dimensions]
    lo, hi = exp.Placeholder(this="lo"), exp.Placeholder(this="hi")
    bounds = exp.select(
        exp.alias_(exp.Min(this=exp.column("bucket")), "lo"),
        exp.alias_(exp.Max(this=exp.column("bucket")), "hi"),
    ).from_(_touched(pack, r, dialect).subquery("t"))

    def touched_exists(alias: str) -> exp.Exists:
        return exp.Exists(
            this=exp.select("1")
            .from_(_touched(pack, r, dialect).subquery("t"))
            .where(_same_key(r, alias, "t"))
        )

    delete = (
        exp.delete(target.as_("r"))
        .where(exp.GTE(this=exp.column("bucket", table="r"), expression=lo))
        .where(exp.LTE(this=exp.column("bucket", table="r"), expression=hi.copy()))
        .where(touched_exists("r"))
    )
    comps: list[exp.Expr] = []
    for m_name in r.metrics:
        comps += component_columns(m_name, pack.spec.metrics[m_name], AGGS[dialect])
    # Rows from the first touched bucket to the end of the last one (``hi`` is a bucket start).
    span = exp.Interval(this=exp.Literal.number(1), unit=exp.var(r.grain.upper()))
    rows = (
        exp.select(exp.alias_(bucket, "bucket"), *dims, *comps)
        .from_(table_ref(pack.dataset, r.table))
        .where(exp.GTE(this=exp.column("occurred_at", quoted=True), expression=lo.copy()))
        .where(
            exp.LT(
                this=exp.column("occurred_at", quoted=True),
                expression=exp.Add(this=hi.copy(), expression=span),
            )
        )
        .group_by(exp.column("bucket"), *[d.copy() for d in dims])
    )
    keyed = exp.select("s.*").from_(rows.subquery("s")).where(touched_exists("s"))
    insert = exp.insert(keyed, target, columns=_names(pack, r))
    return AfterInsert(statements=(delete, insert), bounds=bounds)


PART = "_gm_part"
"""1 on the batch's aggregates, 0 on stored rows: keys with no fresh rows are left alone."""


def delta(pack: Pack, name: str, r: RollupSpec, dialect: str) -> AfterInsert:
    """Merge the aggregates of the batch's fresh rows into rollup ``name`` with one MERGE.

    The source is the fresh rows (``_gm_new``) grouped by key, plus the stored rows between
    the batch's first and last bucket, grouped again by key, each component merged by its rule
    (:func:`gristmill.rollup.delta._merge`); keys no fresh row has are dropped (``HAVING``,
    rather than a semi-join on the fresh keys, which would run the anti-join on the key table
    a second time: BigQuery evaluates a CTE once per reference). ``before_keys``:
    ``_gm_new`` is the anti-join on the key table as it was before the batch, so the step runs
    before the batch's keys are remembered, in the same transaction — a duplicate never adds.
    ``bounds`` come from the staged batch (no second anti-join) and are bound into the stored
    rows' filter and the MERGE's ON, so BigQuery prunes the rollup's partitions; every fresh
    bucket is within them."""
    target = rollup_table(pack, name)
    names = _names(pack, r)
    dims = [exp.column(d, quoted=True) for d in r.dimensions]
    bucket = _bucket(exp.column("occurred_at", quoted=True), r.grain, dialect)
    lo, hi = exp.Placeholder(this="lo"), exp.Placeholder(this="hi")
    comps: list[exp.Expr] = []
    for m_name in r.metrics:
        comps += component_columns(m_name, pack.spec.metrics[m_name], AGGS[dialect])
    fresh = (
        exp.select(
            exp.alias_(bucket, "bucket"),
            *dims,
            *comps,
            exp.alias_(exp.Literal.number(1), PART),
        )
        .from_(NEW)
        .group_by(exp.column("bucket"), *[d.copy() for d in dims])
    )
    stored = (
        exp.select(
            *[exp.column(n.this, table="r", quoted=True) for n in names],
            exp.alias_(exp.Literal.number(0), PART),
        )
        .from_(target.copy().as_("r"))
        .where(exp.GTE(this=exp.column("bucket", table="r"), expression=lo.copy()))
        .where(exp.LTE(this=exp.column("bucket", table="r"), expression=hi.copy()))
    )
    source = (
        exp.select(*merged_columns(pack, r, dialect))
        .from_(exp.union(fresh, stored, distinct=False).subquery("u"))
        .group_by(exp.column("bucket", quoted=True), *[d.copy() for d in dims])
        .having(exp.Max(this=exp.column(PART)).eq(1))
    )
    keyed = {"bucket", *r.dimensions}
    update = exp.Update(
        expressions=[
            exp.EQ(
                this=exp.column(n.this, quoted=True),
                expression=exp.column(n.this, table="s", quoted=True),
            )
            for n in names
            if n.this not in keyed
        ]
    )
    insert = exp.Insert(
        this=exp.Tuple(expressions=[n.copy() for n in names]),
        expression=exp.Tuple(
            expressions=[exp.column(n.this, table="s", quoted=True) for n in names]
        ),
    )
    on = exp.and_(
        exp.GTE(this=exp.column("bucket", table="t"), expression=lo.copy()),
        exp.LTE(this=exp.column("bucket", table="t"), expression=hi.copy()),
        _same_key(r, "t", "s"),
    )
    merge = exp.Merge(
        this=target.copy().as_("t"),
        using=source.subquery("s"),
        on=on,
        whens=exp.Whens(
            expressions=[
                exp.When(matched=True, then=update),
                exp.When(matched=False, then=insert),
            ]
        ),
    )
    batch_buckets = exp.select(exp.alias_(bucket.copy(), "bucket")).from_(BATCH)
    bounds = exp.select(
        exp.alias_(exp.Min(this=exp.column("bucket")), "lo"),
        exp.alias_(exp.Max(this=exp.column("bucket")), "hi"),
    ).from_(batch_buckets.subquery("t"))
    return AfterInsert(statements=(merge,), bounds=bounds, before_keys=True)


def _source(pack: Pack, table: str, column: str | None, dialect: str) -> exp.Select:
    text = sql_type(Logical.TEXT, dialect)
    value: exp.Expr = (
        exp.Literal.string(ALL)
        if column is None
        else exp.Cast(this=exp.column(column, quoted=True), to=text)
    )
    select = exp.select(
        exp.alias_(exp.Literal.string(pack.name), "pack"),
        exp.alias_(exp.Literal.string(table), "tbl"),
        exp.alias_(exp.Literal.string(column or ALL), "scope_column"),
        exp.alias_(value, "scope_value"),
        exp.alias_(exp.Max(this=exp.column("occurred_at", quoted=True)), "newest_occurred_at"),
        exp.alias_(exp.CurrentTimestamp(), "newest_loaded_at"),
    ).from_(BATCH)
    if column is not None:
        select = select.where(
            exp.Not(this=exp.Is(this=exp.column(column, quoted=True), expression=exp.Null()))
        ).group_by(exp.column(column, quoted=True))
    return select


def _merge(pack: Pack, table: str, column: str | None, dialect: str) -> exp.Merge:
    names = [*KEY, "newest_occurred_at", "newest_loaded_at"]

    def col(t: str, c: str) -> exp.Column:
        return exp.column(c, table=t, quoted=True)

    update = exp.Update(
        expressions=[
            exp.EQ(
                this=exp.column("newest_occurred_at", quoted=True),
                # An empty batch has a NULL max: keep what is stored.
                expression=exp.Greatest(
                    this=col("f", "newest_occurred_at"),
                    expressions=[
                        exp.func(
                            "coalesce",
                            col("b", "newest_occurred_at"),
                            col("f", "newest_occurred_at"),
                        )
                    ],
                ),
            ),
            exp.EQ(
                this=exp.column("newest_loaded_at", quoted=True),
                expression=col("b", "newest_loaded_at"),
            ),
        ]
    )
    insert = exp.Insert(
        this=exp.Tuple(expressions=[exp.to_identifier(n, quoted=True) for n in names]),
        expression=exp.Tuple(expressions=[col("b", n) for n in names]),
    )
    return exp.Merge(
        this=FRESHNESS.as_("f"),
        using=_source(pack, table, column, dialect).subquery("b"),
        on=exp.and_(*[exp.EQ(this=col("f", k), expression=col("b", k)) for k in KEY]),
        whens=exp.Whens(
            expressions=[
                exp.When(matched=True, then=update),
                exp.When(matched=False, then=insert),
            ]
        ),
    )


def freshness_refresh(pack: Pack, table: str, dialect: str) -> AfterInsert:
    stmts = [_merge(pack, table, None, dialect)] + [
        _merge(pack, table, c, dialect) for c in scope_columns(pack, table)
    ]
    return AfterInsert(statements=tuple(stmts))
