"""Track SQL: position pings of one entity as a path (``kind: track``).

Pings are ordered by ``occurred_at`` (then ``event_id``), never by arrival, so a late ping
lands between its neighbours. Each ping's step from the previous one is the great-circle
(haversine) distance on a sphere of radius 6371.0088 km (the mean Earth radius); a gap
longer than ``shift_gap`` starts a new shift and carries no distance; a step faster than
``max_speed_kmh`` is a GPS jump, counted but not travelled. The answer is one row per entity
and shift: pings, kilometres, jumps, first and last ping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from gristmill.metrics.compile import AGGS, Params, condition, render
from gristmill.metrics.model import Condition, pack_filter
from gristmill.metrics.shapes import ShapeCache, cond_shape, cond_values
from gristmill.metrics.timerange import TimeRange
from gristmill.pack.entities import TrackSpec
from gristmill.sql.ddl import table_ref

EARTH_KM = 6371.0088


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The same formula in Python (the demo and the docs use it; tests have their own)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(a)))


def _col(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table, quoted=True)


def _f(name: str, *args: exp.Expr) -> exp.Expr:
    return exp.Anonymous(this=name, expressions=list(args))


def _num(v: float) -> exp.Expr:
    return exp.Literal.number(repr(float(v)))


def _rad(e: exp.Expr) -> exp.Expr:
    return exp.Mul(this=e, expression=_num(math.pi / 180))


def _haversine(lat1: exp.Expr, lon1: exp.Expr, lat2: exp.Expr, lon2: exp.Expr) -> exp.Expr:
    half = _num(0.5)
    dp = exp.Paren(
        this=exp.Mul(
            this=_rad(exp.Paren(this=exp.Sub(this=lat2, expression=lat1))), expression=half
        )
    )
    dl = exp.Paren(
        this=exp.Mul(
            this=_rad(exp.Paren(this=exp.Sub(this=lon2.copy(), expression=lon1.copy()))),
            expression=half,
        )
    )
    sp = _f("SIN", dp)
    sl = _f("SIN", dl)
    a = exp.Add(
        this=exp.Mul(this=sp, expression=sp.copy()),
        expression=exp.Mul(
            this=exp.Mul(
                this=_f("COS", _rad(lat1.copy())), expression=_f("COS", _rad(lat2.copy()))
            ),
            expression=exp.Mul(this=sl, expression=sl.copy()),
        ),
    )
    root = _f("LEAST", _num(1.0), exp.Sqrt(this=a))
    return exp.Mul(this=_num(2 * EARTH_KM), expression=_f("ASIN", root))


@dataclass(frozen=True)
class TrackQuery:
    sql: str
    params: dict[str, Any]


_SHAPES = ShapeCache()


def build(
    spec: TrackSpec, dataset: str, dialect: str, rng: TimeRange, conds: Sequence[Condition]
) -> TrackQuery:
    """The query below, built once per shape (``metrics/shapes.py``)."""
    values = [rng.start, rng.end, *cond_values(conds)]
    sql, params = _SHAPES.get(
        spec,
        (dataset, dialect, cond_shape(conds)),
        values,
        lambda: _build(spec, dataset, dialect, rng, conds),
    )
    return TrackQuery(sql, params)


def _build(
    spec: TrackSpec, dataset: str, dialect: str, rng: TimeRange, conds: Sequence[Condition]
) -> tuple[str, dict[str, Any]]:
    """Per entity and shift: ``pings``, ``km``, ``jumps``, ``first_at``, ``last_at`` and each
    ``by`` dimension (the largest value among the shift's pings)."""
    params = Params()
    epoch = AGGS[dialect].epoch
    ts = _col("occurred_at")
    where = [
        exp.GTE(this=ts, expression=params.bind(rng.start)),
        exp.LT(this=ts.copy(), expression=params.bind(rng.end)),
        *(
            exp.Not(this=exp.Is(this=_col(c), expression=exp.Null()))
            for c in (spec.entity, spec.lat, spec.lon)
        ),
        *(condition(c, None) for c in pack_filter(spec.filter)),
        *(condition(c, params) for c in conds),
    ]
    order = exp.Order(
        expressions=[exp.Ordered(this=_col("occurred_at")), exp.Ordered(this=_col("event_id"))]
    )

    def lag(col: str) -> exp.Expr:
        return exp.Window(
            this=exp.Lag(this=_col(col)), partition_by=[_col(spec.entity)], order=order.copy()
        )

    base = (
        exp.select(
            _col(spec.entity),
            _col("occurred_at"),
            _col("event_id"),
            *(_col(d) for d in spec.by),
            exp.alias_(epoch(_col("occurred_at")), "t", quoted=True),
            exp.alias_(
                exp.Cast(this=_col(spec.lat), to=exp.DataType.build("double")), "lat", quoted=True
            ),
            exp.alias_(
                exp.Cast(this=_col(spec.lon), to=exp.DataType.build("double")), "lon", quoted=True
            ),
            exp.alias_(epoch(lag("occurred_at")), "prev_t", quoted=True),
            exp.alias_(
                exp.Cast(this=lag(spec.lat), to=exp.DataType.build("double")),
                "prev_lat",
                quoted=True,
            ),
            exp.alias_(
                exp.Cast(this=lag(spec.lon), to=exp.DataType.build("double")),
                "prev_lon",
                quoted=True,
            ),
        )
        .from_(table_ref(dataset, spec.table))
        .where(exp.and_(*where))
    )

    def a(c: str) -> exp.Column:
        return _col(c, "a")

    # One level computes each step's gap and distance once; the next one classifies it.
    keep = [spec.entity, "occurred_at", "event_id", *spec.by]
    measured = exp.select(
        *(a(x) for x in keep),
        exp.alias_(exp.Sub(this=a("t"), expression=a("prev_t")), "dt", quoted=True),
        exp.alias_(_haversine(a("prev_lat"), a("prev_lon"), a("lat"), a("lon")), "km", quoted=True),
    ).from_(base.subquery("a"))

    def k(c: str) -> exp.Column:
        return _col(c, "k")

    new_shift = exp.or_(
        exp.Is(this=k("dt"), expression=exp.Null()),
        exp.GT(this=k("dt"), expression=_num(spec.shift_gap.total_seconds())),
    )
    if spec.max_speed_kmh is not None:
        # km > speed * hours, without dividing by a zero gap
        limit = exp.Mul(this=_num(spec.max_speed_kmh / 3600), expression=k("dt"))
        jump: exp.Expr = exp.GT(this=k("km"), expression=limit)
    else:
        jump = exp.false()
    step = exp.Case().when(new_shift.copy(), _num(0.0)).when(jump.copy(), _num(0.0)).else_(k("km"))
    is_jump = (
        exp.Case()
        .when(exp.and_(exp.Not(this=exp.Paren(this=new_shift.copy())), jump), exp.Literal.number(1))
        .else_(exp.Literal.number(0))
    )
    flagged = exp.select(
        *(k(x) for x in keep),
        exp.alias_(step, "step_km", quoted=True),
        exp.alias_(is_jump, "jump", quoted=True),
        exp.alias_(
            exp.Case().when(new_shift, exp.Literal.number(1)).else_(exp.Literal.number(0)),
            "new_shift",
            quoted=True,
        ),
    ).from_(measured.subquery("k"))

    def b(c: str) -> exp.Column:
        return _col(c, "b")

    running = exp.Window(
        this=exp.Sum(this=b("new_shift")),
        partition_by=[b(spec.entity)],
        order=exp.Order(
            expressions=[exp.Ordered(this=b("occurred_at")), exp.Ordered(this=b("event_id"))]
        ),
        spec=exp.WindowSpec(kind="ROWS", start="UNBOUNDED", start_side="PRECEDING"),
    )
    shifts = exp.select(
        b(spec.entity),
        b("occurred_at"),
        *(b(d) for d in spec.by),
        b("step_km"),
        b("jump"),
        exp.alias_(running, "shift", quoted=True),
    ).from_(flagged.subquery("b"))

    def c(x: str) -> exp.Column:
        return _col(x, "c")

    query = (
        exp.select(
            exp.alias_(c(spec.entity), spec.entity, quoted=True),
            exp.alias_(c("shift"), "shift", quoted=True),
            *(exp.alias_(exp.Max(this=c(d)), d, quoted=True) for d in spec.by),
            exp.alias_(exp.Count(this=exp.Star()), "pings", quoted=True),
            exp.alias_(exp.Sum(this=c("step_km")), "km", quoted=True),
            exp.alias_(exp.Sum(this=c("jump")), "jumps", quoted=True),
            exp.alias_(exp.Min(this=c("occurred_at")), "first_at", quoted=True),
            exp.alias_(exp.Max(this=c("occurred_at")), "last_at", quoted=True),
        )
        .from_(shifts.subquery("c"))
        .group_by(c(spec.entity), c("shift"))
        .order_by(c(spec.entity), c("shift"))
    )
    return render(query, dialect), dict(params.values)
