"""Metric SQL pieces for BigQuery and Snowflake, as sqlglot expressions.

Neither engine has ``FILTER (WHERE …)``; sqlglot folds it into the aggregate's argument
(``COUNTIF``, ``SUM(IF(…))``) when rendering, so the shared builders keep it. What sqlglot
cannot translate lives here:

* **Sets** (distinct-count rollups): BigQuery merges with ``ARRAY_CONCAT_AGG`` and a
  ``SELECT DISTINCT`` over its ``UNNEST``; Snowflake has ``ARRAY_UNION_AGG``.
* **Percentiles**: Snowflake has the ordered-set ``PERCENTILE_CONT``; BigQuery only has it as
  a window function, so the exact value is computed over the group's values gathered with
  ``ARRAY_AGG`` (approximate ``APPROX_QUANTILES`` would disagree with the other engines).
* **Time buckets**: the caller's local day is ``DATETIME_TRUNC(DATETIME(ts, tz), DAY)`` /
  ``DATE_TRUNC('DAY', CONVERT_TIMEZONE(tz, ts)::TIMESTAMP_NTZ)`` (a local wall-clock time, as
  DuckDB returns); a local hour is the *instant* it began: ``ts`` minus how far the local
  clock is into its hour (BigQuery's ``TIMESTAMP_TRUNC`` ignores the zone below a day), or
  Snowflake's ``DATE_TRUNC('HOUR', CONVERT_TIMEZONE(tz, ts))``, which keeps the offset.
  Weeks start on Monday everywhere (BigQuery ``ISOWEEK``; Snowflake ``WEEK_START = 1`` is set
  on the session).
"""

from __future__ import annotations

from sqlglot import exp

_GRAIN = {"hour": "HOUR", "day": "DAY", "week": "WEEK", "month": "MONTH"}


def _unit(grain: str, *, bigquery: bool = False) -> exp.Var:
    unit = _GRAIN[grain]
    if bigquery and unit == "WEEK":
        unit = "ISOWEEK"  # BigQuery's WEEK starts on Sunday
    return exp.var(unit)


# -- BigQuery -------------------------------------------------------------------------------
def bq_distinct_set(c: exp.Expr) -> exp.Expr:
    # BigQuery arrays cannot hold NULL: IGNORE NULLS (sqlglot keeps it when folding FILTER).
    return exp.IgnoreNulls(this=exp.ArrayAgg(this=exp.Distinct(expressions=[c])))


def bq_merge_sets(s: exp.Expr) -> exp.Expr:
    x = exp.to_identifier("_gm_x")
    inner = (
        exp.select(exp.column(x))
        .distinct()
        .from_(
            exp.Unnest(
                expressions=[exp.func("ARRAY_CONCAT_AGG", s)], alias=exp.TableAlias(columns=[x])
            )
        )
    )
    return exp.Array(expressions=[inner])


def bq_set_size(s: exp.Expr) -> exp.Expr:
    return exp.func("coalesce", exp.ArraySize(this=s), exp.Literal.number(0))


def bq_percentile(c: exp.Expr, p: float) -> exp.Expr:
    """``(SELECT PERCENTILE_CONT(v, p) OVER () FROM UNNEST(ARRAY_AGG(c IGNORE NULLS)) v
    LIMIT 1)``: exact, linear interpolation like ``quantile_cont`` and PostgreSQL; NULL over
    no values. A metric's filter moves into the ``ARRAY_AGG`` (:func:`bq_rewrite`)."""
    v = exp.to_identifier("_gm_v")
    window = exp.Window(
        this=exp.Anonymous(
            this="PERCENTILE_CONT", expressions=[exp.column(v), exp.Literal.number(p)]
        )
    )
    values = exp.ArrayAgg(this=exp.IgnoreNulls(this=c))
    return (
        exp.select(window)
        .from_(exp.Unnest(expressions=[values], alias=exp.TableAlias(columns=[v])))
        .limit(1)
        .subquery()
    )


def bq_rewrite(query: exp.Expr) -> exp.Expr:
    """Move a ``FILTER`` over a subquery-built aggregate (the BigQuery percentile) into the
    subquery's ``ARRAY_AGG``: ``ARRAY_AGG(IF(cond, c, NULL) IGNORE NULLS)``. Other filters are
    left for sqlglot, which folds them the same way."""
    for node in list(query.find_all(exp.Filter)):
        if not isinstance(node.this, exp.Subquery):
            continue
        agg = node.this.find(exp.ArrayAgg)
        assert agg is not None, "a filtered subquery aggregate gathers its values with ARRAY_AGG"
        target = agg.this.this if isinstance(agg.this, exp.IgnoreNulls) else agg.this
        if isinstance(target, exp.IgnoreNulls):
            target = target.this
        cond = node.expression.this
        target.replace(exp.If(this=cond.copy(), true=target.copy(), false=exp.null()))
        node.replace(node.this)
    return query


def bq_local_bucket(ts: exp.Expr, grain: str, zone: exp.Expr) -> exp.Expr:
    if grain == "hour":
        # TIMESTAMP_TRUNC ignores its zone below DAY (UTC hours; wrong in +05:30), and
        # TIMESTAMP(local hour, tz) merges the two hours of a DST fall-back. So, as in the
        # canonical form: ts minus how far the local clock is into its hour.
        local = exp.Datetime(this=ts, expression=zone)
        into = exp.DatetimeDiff(
            this=local,
            expression=exp.DatetimeTrunc(this=local.copy(), unit=exp.var("HOUR")),
            unit=exp.var("MICROSECOND"),
        )
        return exp.TimestampSub(this=ts.copy(), expression=into, unit=exp.var("MICROSECOND"))
    return exp.DatetimeTrunc(
        this=exp.Datetime(this=ts, expression=zone), unit=_unit(grain, bigquery=True)
    )


def bq_utc_bucket(ts: exp.Expr, grain: str) -> exp.Expr:
    """A rollup bucket: the UTC hour or day as a TIMESTAMP (``TIMESTAMP_TRUNC`` works in
    UTC unless told otherwise)."""
    return exp.TimestampTrunc(this=ts, unit=_unit(grain, bigquery=True))


# -- Snowflake ------------------------------------------------------------------------------
def sf_distinct_set(c: exp.Expr) -> exp.Expr:
    return exp.ArrayAgg(this=exp.Distinct(expressions=[c]))  # ARRAY_AGG skips NULLs


def sf_merge_sets(s: exp.Expr) -> exp.Expr:
    # The union keeps each value's largest multiplicity; every input set is distinct.
    return exp.Anonymous(this="ARRAY_UNION_AGG", expressions=[s])


def sf_set_size(s: exp.Expr) -> exp.Expr:
    return exp.func("coalesce", exp.ArraySize(this=s), exp.Literal.number(0))


def sf_percentile(c: exp.Expr, p: float) -> exp.Expr:
    return exp.WithinGroup(
        this=exp.PercentileCont(this=exp.Literal.number(p)),
        expression=exp.Order(expressions=[exp.Ordered(this=c)]),
    )


def sf_local_bucket(ts: exp.Expr, grain: str, zone: exp.Expr) -> exp.Expr:
    local = exp.ConvertTimezone(target_tz=zone, timestamp=ts)
    if grain == "hour":
        return exp.TimestampTrunc(this=local, unit=_unit(grain))
    ntz = exp.Cast(this=local, to=exp.DataType.build("TIMESTAMP_NTZ", dialect="snowflake"))
    return exp.TimestampTrunc(this=ntz, unit=_unit(grain))


def sf_utc_bucket(ts: exp.Expr, grain: str) -> exp.Expr:
    utc = exp.ConvertTimezone(target_tz=exp.Literal.string("UTC"), timestamp=ts)
    return exp.TimestampTrunc(this=utc, unit=_unit(grain))


def sf_rewrite(query: exp.Expr) -> exp.Expr:
    """Quote every identifier: Snowflake folds unquoted names to upper case, and Gristmill's
    tables and columns are created quoted, in lower case (result columns keep their case)."""
    for ident in query.find_all(exp.Identifier):
        ident.set("quoted", True)
    return query
