"""The rollup-aware planner: one SQL query per table the requested metrics live in.

A rollup answers a table's metrics when it stores every one of them, has every group-by,
filter and scope column as a dimension, and its buckets map onto the caller's buckets (an
hourly UTC rollup serves hour/day/week/month in any zone whose offset is a whole number of
hours; a daily one serves UTC only). The range is split at bucket boundaries: the aligned
middle comes from the rollup, the ragged edges (a range ending "now" ends mid-hour) from rows,
and the two are combined exactly. Otherwise — percentiles, an unrolled dimension — rows.
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
)
from gristmill.metrics.model import MetricQuery
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

    def explain(self, dialect: str) -> dict[str, Any]:
        return {
            "table": self.table,
            "metrics": list(self.metrics),
            "path": self.path,
            "rollup": self.rollup,
            "sql": self.query.sql(dialect, pretty=True),
            "params": {k: str(v) for k, v in self.params.items()},
        }


def _floor(t: datetime, grain: str) -> datetime:
    t = t.replace(minute=0, second=0, microsecond=0)
    return t.replace(hour=0) if grain == "day" else t


def _ceil(t: datetime, grain: str) -> datetime:
    f = _floor(t, grain)
    return f if f == t else f + (timedelta(days=1) if grain == "day" else timedelta(hours=1))


def choose_rollup(q: MetricQuery, table: str, metrics: list[str]) -> tuple[str, RollupSpec] | None:
    needed = {c.column for c in (*q.filters, *q.scope)} | set(q.group_by)
    best: tuple[str, RollupSpec] | None = None
    for name, r in q.pack.spec.rollups.items():
        if r.table != table or not set(metrics) <= set(r.metrics):
            continue
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


def plan_table(q: MetricQuery, table: str, metrics: list[str], dialect: str) -> TablePlan:
    aggs = AGGS[dialect]
    params = Params()
    tz = q.range.tz.key
    dims = [exp.column(d, quoted=True) for d in q.group_by]
    keys: list[exp.Expr] = [exp.column(BUCKET)] if q.grain else []
    keys += dims
    chosen = choose_rollup(q, table, metrics)
    specs = {m: q.metric(m) for m in metrics}

    def where(ts: str, lo: datetime, hi: datetime) -> exp.Expr:
        conds: list[exp.Expr] = [
            exp.GTE(this=exp.column(ts, quoted=True), expression=params.bind(lo)),
            exp.LT(this=exp.column(ts, quoted=True), expression=params.bind(hi)),
        ]
        conds += [condition(c, params) for c in (*q.scope, *q.filters)]
        out = conjunction(conds)
        assert out is not None
        return out

    def head(ts: str) -> list[exp.Expr]:
        cols: list[exp.Expr] = []
        if q.grain:
            cols.append(
                exp.alias_(bucket_expr(exp.column(ts, quoted=True), q.grain, params, tz), BUCKET)
            )
        return cols + list(dims)

    if chosen is None:
        cols = [c for m, s in specs.items() for c in final_columns(m, s, aggs)]
        query = (
            exp.select(*head("occurred_at"), *cols)
            .from_(table_ref(q.pack.dataset, table))
            .where(where("occurred_at", q.range.start, q.range.end))
        )
        if keys:
            query = query.group_by(*keys)
        return TablePlan(table, tuple(metrics), "raw", None, query, params.values)

    name, r = chosen
    a, b = _ceil(q.range.start, r.grain), _floor(q.range.end, r.grain)
    parts: list[exp.Select] = []

    def raw_part(lo: datetime, hi: datetime) -> exp.Select:
        cols = [c for m, s in specs.items() for c in component_columns(m, s, aggs)]
        part = (
            exp.select(*head("occurred_at"), *cols)
            .from_(table_ref(q.pack.dataset, table))
            .where(where("occurred_at", lo, hi))
        )
        return part.group_by(*keys) if keys else part

    if q.range.start < a:
        parts.append(raw_part(q.range.start, a))
    comps = [c for m, s in specs.items() for c in _rollup_components(m, s.type, aggs)]
    rolled = (
        exp.select(*head("bucket"), *comps)
        .from_(rollup_table(q.pack, name))
        .where(where("bucket", a, b))
    )
    parts.append(rolled.group_by(*keys) if keys else rolled)
    if b < q.range.end:
        parts.append(raw_part(b, q.range.end))
    union: exp.Query = parts[0]
    for p in parts[1:]:
        union = exp.union(union, p, distinct=False)
    outer_keys = [exp.column(BUCKET)] if q.grain else []
    outer_keys += [exp.column(d, quoted=True) for d in q.group_by]
    combined = [c for m, s in specs.items() for c in combine_columns(m, s, aggs)]
    query = exp.select(*outer_keys, *combined).from_(union.subquery("u"))
    if outer_keys:
        query = query.group_by(*outer_keys)
    path = "rollup" if len(parts) == 1 else "rollup+raw"
    return TablePlan(table, tuple(metrics), path, name, query, params.values)


def _rollup_components(name: str, mtype: str, aggs: Aggs) -> list[exp.Expr]:
    """Re-aggregate stored components into the caller's buckets (same shape as raw ones)."""
    out: list[exp.Expr] = []
    for comp in COMPONENTS[mtype]:
        col = exp.column(f"{name}__{comp}")
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
