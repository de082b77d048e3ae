"""Rollup and freshness maintenance for engines without ``ON CONFLICT`` whose load transaction
may not create tables (BigQuery, Snowflake: ``caps.upsert_by_merge``).

Same numbers as :func:`gristmill.rollup.spec.refresh`, another shape: the touched buckets are a
subquery over the staged batch ``_gm_batch`` instead of a temp table (Snowflake DDL commits
the open transaction), their first and last bucket are the ``bounds`` bound into the DELETE
and INSERT as constants (so BigQuery prunes the rollup's and the table's partitions), and
freshness is a MERGE.
"""

from __future__ import annotations

from sqlglot import exp

from gristmill.metrics.compile import AGGS, component_columns
from gristmill.pack.analytics import RollupSpec
from gristmill.pack.models import Pack
from gristmill.rollup.freshness import ALL, FRESHNESS, KEY, scope_columns
from gristmill.rollup.spec import _bucket, _names, rollup_table
from gristmill.sql.ddl import table_ref
from gristmill.sql.types import Logical, sql_type
from gristmill.warehouse.base import AfterInsert

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
