"""Metric SQL pieces for Amazon Redshift, as sqlglot expressions.

Redshift descends from PostgreSQL 8 and lacks what sqlglot would otherwise pass through:

* **No ``FILTER (WHERE …)``** (sqlglot's ``redshift`` dialect keeps it): :func:`fold_filters`
  moves each filter into its aggregate's argument — ``COUNT(CASE WHEN c THEN 1 END)``,
  ``SUM(CASE WHEN c THEN x END)``, a percentile ordered by ``CASE WHEN c THEN x END`` (NULLs
  are skipped by every aggregate, so the answers equal the filtered ones).
* **No array aggregate**: a distinct-count rollup cannot keep its set of values. Redshift's
  rollups keep counts, sums, minima and maxima; distinct counts are answered from rows
  (``Aggs.sets = False`` makes the planner skip rollups holding them) and the set columns
  stay NULL.
* **Time buckets**: the session runs in UTC (``SET timezone``); the caller's local day is
  ``DATE_TRUNC('DAY', CONVERT_TIMEZONE(tz, ts))`` (a local wall-clock time, as DuckDB
  returns); a local hour is the instant it began, ``ts`` minus how far the local clock is into
  its hour (an INTERVAL). ``DATE_TRUNC('WEEK', …)`` starts weeks on Monday.
"""

from __future__ import annotations

from sqlglot import exp

_GRAIN = {"hour": "HOUR", "day": "DAY", "week": "WEEK", "month": "MONTH"}


def _when(cond: exp.Expr, value: exp.Expr) -> exp.Expr:
    return exp.Case(ifs=[exp.If(this=cond.copy(), true=value)])


def _fold(agg: exp.Expr, cond: exp.Expr) -> exp.Expr:
    """``agg FILTER (WHERE cond)`` as one aggregate over a conditional argument."""
    if isinstance(agg, exp.WithinGroup):
        order = agg.expression
        for o in order.expressions:
            o.set("this", _when(cond, o.this.copy()))
        return agg
    if isinstance(agg, exp.Count) and isinstance(agg.this, exp.Star):
        agg.set("this", _when(cond, exp.Literal.number(1)))
        return agg
    if isinstance(agg, exp.AggFunc):
        inner = agg.this
        if isinstance(inner, exp.Distinct):
            inner.set("expressions", [_when(cond, e.copy()) for e in inner.expressions])
        else:
            agg.set("this", _when(cond, inner.copy()))
        return agg
    return agg  # not an aggregate over values (a NULL set placeholder): nothing to filter


def fold_filters(query: exp.Expr) -> exp.Expr:
    """Every ``FILTER`` clause folded into its aggregate (innermost first)."""
    for node in reversed(list(query.find_all(exp.Filter))):
        where = node.expression
        cond = where.this if isinstance(where, exp.Where) else where
        node.replace(_fold(node.this.copy(), cond))
    return query


def _null_set() -> exp.Expr:
    return exp.Cast(this=exp.Null(), to=exp.DataType.build("SUPER", dialect="redshift"))


def rs_distinct_set(c: exp.Expr) -> exp.Expr:
    """Rollups keep no sets on Redshift: the column is written NULL and never read."""
    return _null_set()


def rs_no_sets(s: exp.Expr) -> exp.Expr:
    raise ValueError("Redshift rollups keep no sets: distinct counts are answered from rows")


def rs_percentile(c: exp.Expr, p: float) -> exp.Expr:
    return exp.WithinGroup(
        this=exp.PercentileCont(this=exp.Literal.number(p)),
        expression=exp.Order(expressions=[exp.Ordered(this=c)]),
    )


def rs_local_bucket(ts: exp.Expr, grain: str, zone: exp.Expr) -> exp.Expr:
    local = exp.ConvertTimezone(target_tz=zone, timestamp=ts)
    if grain == "hour":
        # Timestamp minus timestamp is an INTERVAL (DATEADD's count is a 32-bit integer:
        # too small for the microseconds of an hour).
        into = exp.Sub(
            this=local, expression=exp.TimestampTrunc(this=local.copy(), unit=exp.var("HOUR"))
        )
        return exp.Sub(this=ts.copy(), expression=exp.Paren(this=into))
    return exp.TimestampTrunc(this=local, unit=exp.var(_GRAIN[grain]))


def rs_utc_bucket(ts: exp.Expr, grain: str) -> exp.Expr:
    """A rollup bucket: the UTC hour or day (sessions run in UTC), still a TIMESTAMPTZ."""
    return exp.TimestampTrunc(this=ts, unit=exp.var(_GRAIN[grain]))


def rs_rewrite(query: exp.Expr) -> exp.Expr:
    return fold_filters(query)
