"""Lifecycle SQL: the events of one entity paired into milestones (``kind: lifecycle``).

Each step's time is the **first** ``occurred_at`` among the entity's events matching the
step's filter, so events that arrive late, out of order or twice pair the same way as when
they arrive once and in order (dedupe on ``event_id`` happens at load; a re-emission under a
new id is still only a later occurrence). The query has two levels:

1. per entity (``GROUP BY entity``): ``MIN(occurred_at) FILTER (WHERE step)`` per step, each
   ``by`` dimension from the first step's events, the durations in seconds (from instants,
   so a daylight-saving change inside a duration changes nothing), and the current step
   (the one reached last; a later declared step wins a tie);
2. per bucket and ``by`` value, per ``by`` value and in total (one pass, ``GROUPING SETS``):
   entities started, entities per step reached and per current
   step, percentiles of each duration, and how many finished within their SLA.

Rows are read from ``start`` to ``end + max_span``: an entity started in the range has its
later steps within ``max_span`` of its start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from gristmill.metrics.compile import AGGS, Params, bucket_expr, condition, conjunction, render
from gristmill.metrics.model import Condition, pack_filter
from gristmill.metrics.shapes import ShapeCache, cond_shape, cond_values
from gristmill.metrics.timerange import TimeRange
from gristmill.pack.entities import LifecycleSpec
from gristmill.sql.ddl import table_ref

BUCKET = "_bucket"
ENTITIES = "entities"


def pname(p: float) -> str:
    """``95`` -> ``p95``; ``99.9`` -> ``p99_9`` (a column alias and an answer field)."""
    text = f"{p:g}".replace(".", "_")
    return f"p{text}"


def _step(name: str) -> str:
    return f"s__{name}"


def _dur(name: str) -> str:
    return f"d__{name}"


def _col(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table, quoted=True)


@dataclass(frozen=True)
class LifecycleQuery:
    sql: str
    params: dict[str, Any]


_SHAPES = ShapeCache()


def build(
    spec: LifecycleSpec,
    dataset: str,
    dialect: str,
    rng: TimeRange,
    conds: Sequence[Condition],
    *,
    grain: str,
    group_by: Sequence[str],
) -> LifecycleQuery:
    """One query answering the lifecycle figures per bucket and ``group_by`` value, per
    ``group_by`` value, and in total (``_no_bucket`` / ``_no_by`` say which); ``conds`` (the
    caller's scope, the path's and the request's filters) limit rows. The SQL is built once
    per shape (``metrics/shapes.py``)."""
    values = [rng.start, rng.end + spec.max_span, *cond_values(conds), rng.tz.key]
    values += [rng.start, rng.end]
    key = (dataset, dialect, grain, tuple(group_by), cond_shape(conds))
    sql, params = _SHAPES.get(
        spec,
        key,
        values,
        lambda: _build(spec, dataset, dialect, rng, conds, grain=grain, group_by=group_by),
    )
    return LifecycleQuery(sql, params)


def _build(
    spec: LifecycleSpec,
    dataset: str,
    dialect: str,
    rng: TimeRange,
    conds: Sequence[Condition],
    *,
    grain: str,
    group_by: Sequence[str],
) -> tuple[str, dict[str, Any]]:
    aggs = AGGS[dialect]
    params = Params()
    steps = list(spec.steps)
    first = steps[0]
    ts = _col("occurred_at")
    where = [
        exp.GTE(this=ts, expression=params.bind(rng.start)),
        exp.LT(this=ts.copy(), expression=params.bind(rng.end + spec.max_span)),
        exp.Not(this=exp.Is(this=_col(spec.entity), expression=exp.Null())),
        *(condition(c, params) for c in conds),
    ]

    def step_cond(name: str) -> exp.Expr:
        out = conjunction([condition(c, None) for c in pack_filter(spec.steps[name])])
        return out if out is not None else exp.true()

    def first_of(name: str, value: exp.Expr) -> exp.Expr:
        # MIN(CASE WHEN step THEN value END): NULL when no event marks the step, on every
        # engine (ClickHouse's minIf of a non-nullable column would answer 1970 instead).
        return exp.Min(this=exp.If(this=step_cond(name), true=value, false=exp.Null()))

    per_entity: list[exp.Expr] = [_col(spec.entity)]
    per_entity += [
        exp.alias_(first_of(s, _col("occurred_at")), _step(s), quoted=True) for s in steps
    ]
    # by__<dim>: ClickHouse lets a SELECT alias shadow the column of that name in WHERE
    per_entity += [exp.alias_(first_of(first, _col(d)), f"by__{d}", quoted=True) for d in spec.by]
    inner = (
        exp.select(*per_entity)
        .from_(table_ref(dataset, spec.table))
        .where(exp.and_(*where))
        .group_by(_col(spec.entity))
    )

    # Level 1b: durations and the current step, from the per-entity milestones.
    def s(name: str) -> exp.Column:
        return _col(_step(name), "m")

    mid: list[exp.Expr] = [*(s(x) for x in steps), *(_col(f"by__{d}", "m") for d in spec.by)]
    for name, (a, b) in spec.durations.items():
        diff = exp.Sub(this=aggs.epoch(s(b)), expression=aggs.epoch(s(a)))
        ok = exp.GTE(
            this=s(b), expression=s(a)
        )  # a step before its start (skewed clocks) is no duration
        mid.append(
            exp.alias_(exp.If(this=ok, true=diff, false=exp.Null()), _dur(name), quoted=True)
        )
    mid.append(exp.alias_(_current(steps, s), "status", quoted=True))
    mid.append(exp.alias_(bucket_expr(s(first), grain, params, rng.tz.key, dialect), BUCKET))
    middle = exp.select(*mid).from_(inner.subquery("m"))

    # Level 2: the figures per bucket and by-value, per by-value and in total — one pass
    # over the entities (GROUPING SETS), for entities started in the range.
    started = _col(_step(first), "x")
    bucket = _col(BUCKET, "x")
    dims = [_col(f"by__{d}", "x") for d in group_by]
    outer: list[exp.Expr] = [
        exp.alias_(bucket, BUCKET),
        *(exp.alias_(_col(f"by__{d}", "x"), d, quoted=True) for d in group_by),
        exp.alias_(exp.func("GROUPING", bucket.copy()), "_no_bucket"),
        exp.alias_(
            exp.func("GROUPING", dims[0].copy()) if dims else exp.Literal.number(1), "_no_by"
        ),
    ]
    outer.append(exp.alias_(exp.Count(this=exp.Star()), ENTITIES, quoted=True))
    for x in steps:
        outer.append(exp.alias_(exp.Count(this=_col(_step(x), "x")), f"reached__{x}", quoted=True))
        is_x = exp.EQ(this=_col("status", "x"), expression=exp.Literal.string(x))
        outer.append(
            exp.alias_(
                exp.Filter(this=exp.Count(this=exp.Star()), expression=exp.Where(this=is_x)),
                f"status__{x}",
                quoted=True,
            )
        )
    for name in spec.durations:
        dcol = _col(_dur(name), "x")
        outer.append(exp.alias_(exp.Count(this=dcol), f"n__{name}", quoted=True))
        for p in spec.percentiles:
            outer.append(
                exp.alias_(
                    aggs.percentile(dcol.copy(), p / 100), f"{pname(p)}__{name}", quoted=True
                )
            )
        sla = spec.sla.get(name)
        if sla is not None:
            within = exp.LTE(this=dcol.copy(), expression=exp.Literal.number(sla.total_seconds()))
            outer.append(
                exp.alias_(
                    exp.Filter(this=exp.Count(this=exp.Star()), expression=exp.Where(this=within)),
                    f"on_time__{name}",
                    quoted=True,
                )
            )
    in_range = exp.and_(
        exp.GTE(this=started, expression=params.bind(rng.start)),
        exp.LT(this=started.copy(), expression=params.bind(rng.end)),
    )
    sets: list[exp.Expr] = [exp.Tuple(expressions=[bucket.copy(), *(d.copy() for d in dims)])]
    if dims:
        sets.append(exp.Tuple(expressions=[d.copy() for d in dims]))
    sets.append(exp.Tuple(expressions=[]))
    query = exp.select(*outer).from_(middle.subquery("x")).where(in_range)
    query.set("group", exp.Group(expressions=[exp.GroupingSets(expressions=sets)]))
    return render(query, dialect), dict(params.values)


def _current(steps: list[str], s: Any) -> exp.Expr:
    """The step reached last: ``CASE`` over the steps, later declared steps first, each
    winning when no other reached step is later (portable: no ``GREATEST`` null rules)."""
    case = exp.Case()
    for x in reversed(steps):
        conds: list[exp.Expr] = [exp.Not(this=exp.Is(this=s(x), expression=exp.Null()))]
        for y in steps:
            if y != x:
                conds.append(
                    exp.Paren(
                        this=exp.or_(
                            exp.Is(this=s(y), expression=exp.Null()),
                            exp.GTE(this=s(x), expression=s(y)),
                        )
                    )
                )
        case = case.when(exp.and_(*conds), exp.Literal.string(x))
    return case


def seconds(v: Any) -> float | None:
    """A duration figure as seconds with millisecond precision (engines return float or
    Decimal)."""
    return None if v is None else round(float(v), 3)
