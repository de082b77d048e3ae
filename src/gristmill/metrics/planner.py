"""The rollup-aware planner: one SQL query per table the requested metrics live in.

A rollup answers a table's metrics when it stores every one of them, has every group-by,
filter and scope column as a dimension, and its buckets map onto the caller's buckets (an
hourly UTC rollup serves hour/day/week/month in any zone whose offset is a whole number of
hours; a daily one serves UTC only). The range is split at bucket boundaries: the aligned
middle comes from the rollup, the ragged edges (a range ending "now" ends mid-hour) from rows,
and the two are combined exactly. Otherwise — percentiles, an unrolled dimension — rows.

The caller's buckets (a local day, week, month) are computed per stored bucket — rollup rows
are merged by stored bucket first — and once per edge, which lies inside one stored bucket:
time-zone arithmetic per row was most of a wide view's cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlglot import exp

from gristmill.metrics.compile import (
    AGGS,
    COMPONENTS,
    Aggs,
    Params,
    bucket_expr,
    combine_columns,
    component_columns,
    condition,
    conjunction,
    final_columns,
    render,
)
from gristmill.metrics.model import Condition, MetricQuery
from gristmill.metrics.timerange import whole_hour_offsets
from gristmill.pack.analytics import RollupSpec
from gristmill.rollup.spec import rollup_table
from gristmill.sql.ddl import table_ref

BUCKET = "_bucket"


@dataclass(frozen=True)
class TablePlan:
    table: str
    metrics: tuple[str, ...]
    path: str
    """``raw``, ``rollup`` or ``rollup+raw``."""
    rollup: str | None
    query: exp.Select
    params: dict[str, Any]
    sql: str
    """The query rendered for the warehouse's dialect (built and rendered once per shape)."""

    def explain(self, dialect: str) -> dict[str, Any]:
        return {
            "table": self.table,
            "metrics": list(self.metrics),
            "path": self.path,
            "rollup": self.rollup,
            "sql": render(self.query, dialect, pretty=True),
            "params": {k: str(v) for k, v in self.params.items()},
        }


def _floor(t: datetime, grain: str) -> datetime:
    t = t.replace(minute=0, second=0, microsecond=0)
    return t.replace(hour=0) if grain == "day" else t


def _ceil(t: datetime, grain: str) -> datetime:
    f = _floor(t, grain)
    return f if f == t else f + (timedelta(days=1) if grain == "day" else timedelta(hours=1))


def choose_rollup(
    q: MetricQuery, table: str, metrics: list[str], dialect: str | None = None
) -> tuple[str, RollupSpec] | None:
    needed = {c.column for c in (*q.filters, *q.scope)} | set(q.group_by)
    best: tuple[str, RollupSpec] | None = None
    no_sets = dialect is not None and not AGGS[dialect].sets
    for name, r in q.pack.spec.rollups.items():
        if r.table != table or not set(metrics) <= set(r.metrics):
            continue
        if no_sets and any(q.metric(m).type == "count_distinct" for m in metrics):
            continue  # the engine's rollups keep no sets (Redshift)
        if not needed <= set(r.dimensions):
            continue
        if r.grain == "hour":
            if q.grain is not None and not whole_hour_offsets(q.range):
                continue
        elif q.grain == "hour" or (
            q.grain is not None and q.range.tz.key not in ("UTC", "Etc/UTC")
        ):
            continue
        if _ceil(q.range.start, r.grain) >= _floor(q.range.end, r.grain):
            continue  # no whole bucket inside the range
        if best is None or len(r.dimensions) < len(best[1].dimensions):
            best = (name, r)
    return best


@dataclass(frozen=True)
class _Shape:
    """Everything that decides the SQL text of a table query; values stay out (they are bound
    parameters), so one shape's SQL is built and rendered once and reused."""

    pack: str
    fingerprint: str
    table: str
    metrics: tuple[str, ...]
    grain: str | None
    group_by: tuple[str, ...]
    conds: tuple[tuple[str, str, int], ...]
    """(column, op, number of values) of scope then filter conditions."""
    rollup: str | None
    head: bool
    tail: bool
    dialect: str


Slot = tuple[Any, ...]
_CACHE: dict[_Shape, tuple[exp.Select, str, dict[str, Slot]]] = {}
_CACHE_MAX = 4096


def _symbolic(conds: tuple[Condition, ...]) -> tuple[Condition, ...]:
    out = []
    for i, c in enumerate(conds):
        if c.op in ("in", "not_in"):
            n = len(c.value) if isinstance(c.value, tuple) else 1
            value: Any = tuple(("c", i, j) for j in range(n))
        else:
            value = ("c", i, 0)
        out.append(Condition(c.column, c.op, value))
    return tuple(out)


def _build(q: MetricQuery, shape: _Shape) -> tuple[exp.Select, str, dict[str, Slot]]:
    """The query of one shape, with parameters bound to slots (not values)."""
    aggs = AGGS[shape.dialect]
    params = Params()
    dims = [exp.column(d, quoted=True) for d in shape.group_by]
    keys: list[exp.Expr] = [exp.column(BUCKET)] if shape.grain else []
    keys += dims
    specs = {m: q.metric(m) for m in shape.metrics}
    conds = _symbolic((*q.scope, *q.filters))

    def where(ts: str, lo: str, hi: str) -> exp.Expr:
        parts: list[exp.Expr] = [
            exp.GTE(this=exp.column(ts, quoted=True), expression=params.bind(("t", lo))),
            exp.LT(this=exp.column(ts, quoted=True), expression=params.bind(("t", hi))),
        ]
        parts += [condition(c, params) for c in conds]
        out = conjunction(parts)
        assert out is not None
        return out

    def head(ts: str) -> list[exp.Expr]:
        cols: list[exp.Expr] = []
        if shape.grain:
            cols.append(
                exp.alias_(
                    bucket_expr(
                        exp.column(ts, quoted=True), shape.grain, params, ("tz",), shape.dialect
                    ),
                    BUCKET,
                )
            )
        return cols + list(dims)

    source = table_ref(q.pack.dataset, shape.table)
    if shape.rollup is None:
        cols = [c for m, s in specs.items() for c in final_columns(m, s, aggs)]
        query = (
            exp.select(*head("occurred_at"), *cols)
            .from_(source)
            .where(where("occurred_at", "start", "end"))
        )
        if keys:
            query = query.group_by(*keys)
        return query, render(query, shape.dialect), dict(params.values)

    def edge_bucket(lo: str) -> list[exp.Expr]:
        """An edge lies inside one rollup bucket, whose start maps onto one caller bucket:
        the bucket of the edge's start serves all its rows (no time-zone math per row)."""
        if not shape.grain:
            return []
        start = params.bind(("t", lo))
        at = bucket_expr(start, shape.grain, params, ("tz",), shape.dialect)
        return [exp.alias_(at, BUCKET)]

    def raw_part(lo: str, hi: str) -> exp.Select:
        cols = [c for m, s in specs.items() for c in component_columns(m, s, aggs)]
        part = (
            exp.select(*edge_bucket(lo), *dims, *cols)
            .from_(source)
            .where(where("occurred_at", lo, hi))
        )
        return part.group_by(*keys) if keys else part

    parts: list[exp.Select] = []
    if shape.head:
        parts.append(raw_part("start", "a"))
    comps = [c for m, s in specs.items() for c in _rollup_components(m, s.type, aggs)]
    premerge = bool(shape.grain) and _many_rows_per_bucket(q, shape)
    stored_bucket = [exp.column("bucket", quoted=True)] if premerge else head("bucket")
    rolled = (
        exp.select(*stored_bucket, *([] if not premerge else dims), *comps)
        .from_(rollup_table(q.pack, shape.rollup))
        .where(where("bucket", "a", "b"))
    )
    if premerge:
        # Merge the stored buckets first, then map the few left onto the caller's buckets:
        # the time-zone math runs once per stored bucket, not once per rollup row (a day of
        # an hourly rollup over many dimension values is thousands of rows).
        stored = rolled.group_by(exp.column("bucket", quoted=True), *[d.copy() for d in dims])
        again = [
            c for m, s in specs.items() for c in _rollup_components(m, s.type, aggs, quoted=True)
        ]
        rolled = exp.select(*head("bucket"), *again).from_(stored.subquery("s"))
    parts.append(rolled.group_by(*keys) if keys else rolled)
    if shape.tail:
        parts.append(raw_part("b", "end"))
    union: exp.Query = parts[0]
    for p in parts[1:]:
        union = exp.union(union, p, distinct=False)
    outer_keys = [exp.column(BUCKET)] if shape.grain else []
    outer_keys += [exp.column(d, quoted=True) for d in shape.group_by]
    combined = [c for m, s in specs.items() for c in combine_columns(m, s, aggs)]
    query = exp.select(*outer_keys, *combined).from_(union.subquery("u"))
    if outer_keys:
        query = query.group_by(*outer_keys)
    return query, render(query, shape.dialect), dict(params.values)


def _many_rows_per_bucket(q: MetricQuery, shape: _Shape) -> bool:
    """Whether the rollup rows a shape reads hold several rows per stored bucket: some
    dimension is neither grouped by nor pinned to one value (a vendor's own view reads one
    row per hour, where merging first would only add a step)."""
    assert shape.rollup is not None
    pinned = {c for c, op, n in shape.conds if op == "eq" or (op == "in" and n == 1)}
    dims = q.pack.spec.rollups[shape.rollup].dimensions
    return bool(set(dims) - set(shape.group_by) - pinned)


def plan_table(q: MetricQuery, table: str, metrics: list[str], dialect: str) -> TablePlan:
    chosen = choose_rollup(q, table, metrics, dialect)
    times: dict[str, datetime] = {"start": q.range.start, "end": q.range.end}
    head = tail = False
    if chosen is not None:
        grain = chosen[1].grain
        times["a"], times["b"] = _ceil(q.range.start, grain), _floor(q.range.end, grain)
        head, tail = q.range.start < times["a"], times["b"] < q.range.end
    conds = (*q.scope, *q.filters)
    shape = _Shape(
        q.pack.name,
        q.pack.fingerprint,
        table,
        tuple(metrics),
        q.grain,
        q.group_by,
        tuple((c.column, c.op, len(c.value) if isinstance(c.value, tuple) else 1) for c in conds),
        chosen[0] if chosen else None,
        head,
        tail,
        dialect,
    )
    hit = _CACHE.get(shape)
    if hit is None:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        hit = _CACHE[shape] = _build(q, shape)
    query, sql, slots = hit

    def value(slot: Slot) -> Any:
        if slot[0] == "tz":
            return q.range.tz.key
        if slot[0] == "t":
            return times[slot[1]]
        c = conds[slot[1]]
        return c.value[slot[2]] if isinstance(c.value, tuple) else c.value

    params = {name: value(slot) for name, slot in slots.items()}
    path = "raw" if chosen is None else ("rollup+raw" if head or tail else "rollup")
    return TablePlan(table, tuple(metrics), path, chosen[0] if chosen else None, query, params, sql)


def _rollup_components(
    name: str, mtype: str, aggs: Aggs, *, quoted: bool = False
) -> list[exp.Expr]:
    """Re-aggregate stored components into the caller's buckets (same shape as raw ones)."""
    out: list[exp.Expr] = []
    for comp in COMPONENTS[mtype]:
        col = exp.column(f"{name}__{comp}", quoted=quoted)
        agg: exp.Expr
        if comp in ("n", "sum"):
            agg = exp.Sum(this=col)
        elif comp == "set":
            agg = aggs.merge_sets(col)
        else:
            agg = exp.Min(this=col) if comp == "min" else exp.Max(this=col)
        out.append(exp.alias_(agg, f"{name}__{comp}"))
    return out


def plan(q: MetricQuery, dialect: str) -> list[TablePlan]:
    return [plan_table(q, t, ms, dialect) for t, ms in q.tables().items()]
