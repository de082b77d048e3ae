"""Run a metric query: plan, execute per table, merge, derive ratios, zero-fill the series."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from gristmill.metrics.model import MetricQuery
from gristmill.metrics.planner import BUCKET, TablePlan, plan
from gristmill.metrics.timerange import buckets, label
from gristmill.pack.analytics import MetricSpec
from gristmill.warehouse.base import Warehouse

ZERO_WHEN_EMPTY = frozenset({"count", "sum", "count_distinct"})


@dataclass(frozen=True)
class MetricResult:
    rows: list[dict[str, Any]]
    """One per (bucket, group): ``bucket`` (if a grain), the group-by columns, the metrics."""
    plans: list[TablePlan]

    def debug(self, dialect: str) -> list[dict[str, Any]]:
        return [p.explain(dialect) for p in self.plans]


def _round(value: Decimal, places: int) -> float:
    with localcontext() as ctx:
        ctx.prec = 60  # quantize needs room for every digit of a huge ratio plus the places
        return float(value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def _finish(name: str, m: MetricSpec, row: dict[str, Any], q: MetricQuery) -> Any:
    if m.type == "ratio":
        assert m.numerator is not None
        assert m.denominator is not None
        num = _finish(m.numerator, q.metric(m.numerator), row, q)
        den = _finish(m.denominator, q.metric(m.denominator), row, q)
        if num is None or not den:
            return None
        return _round(Decimal(str(num)) / Decimal(str(den)), m.precision)
    if m.type == "avg":
        s, n = row.get(f"{name}__sum"), row.get(f"{name}__n")
        if not n:
            return None
        return _round(Decimal(str(s)) / Decimal(n), m.precision)
    value = row.get(name)
    if value is None:
        return 0 if m.type in ZERO_WHEN_EMPTY else None
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if m.type == "percentile":
        return round(float(value), m.precision)
    return value


def run(wh: Warehouse, q: MetricQuery) -> MetricResult:
    plans = plan(q, wh.dialect)
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for p in plans:
        for db_row in wh.query_sql(p.sql, p.params).to_pylist():
            key = tuple(db_row.get(k) for k in (BUCKET, *q.group_by))
            merged.setdefault(key, {}).update(db_row)
    if q.grain and not q.group_by:
        for b in buckets(q.range, q.grain):
            merged.setdefault((b,), {BUCKET: b})
    if not q.grain and not q.group_by and not merged:
        merged[()] = {}
    out = []
    for key in sorted(merged, key=_sort_key):
        raw = merged[key]
        row: dict[str, Any] = {}
        if q.grain:
            b = raw.get(BUCKET, key[0])
            row["bucket"] = label(b, q.grain, q.range.tz) if isinstance(b, datetime) else b
        for d in q.group_by:
            row[d] = raw.get(d)
        for name in q.metrics:
            row[name] = _finish(name, q.metric(name), raw, q)
        out.append(row)
    return MetricResult(out, plans)


def additive_rows(wh: Warehouse, q: MetricQuery) -> Iterator[tuple[Any, ...]]:
    """``(bucket label, *group_by values, *metric values)`` straight from the engine's Arrow
    columns, for count and sum metrics of one table: no zero-filled buckets, no per-row
    dicts. For answers that post-process many rows (a latency histogram: a row per bucket,
    model and bin) the per-row work of :func:`run` costs ten times the query itself."""
    names = list(q.metrics)
    for name in names:
        if q.metric(name).type not in ("count", "sum"):
            raise ValueError(f"{name}: additive_rows takes count and sum metrics only")
    labels: dict[Any, str] = {}

    def lab(b: Any) -> Any:
        if not q.grain or not isinstance(b, datetime):
            return b
        got = labels.get(b)
        if got is None:
            got = labels[b] = label(b, q.grain, q.range.tz)
        return got

    for p in plan(q, wh.dialect):
        t = wh.query_sql(p.sql, p.params)
        dims = [t.column(c).to_pylist() for c in q.group_by]
        values = [[_integral(v) for v in t.column(c).to_pylist()] for c in names]
        bucket = t.column(BUCKET).to_pylist() if q.grain else [None] * t.num_rows
        for i, b in enumerate(bucket):
            yield (lab(b), *(c[i] for c in dims), *(c[i] for c in values))


def _integral(v: Any) -> Any:
    """Sums of integers come back as Decimal from some engines (DuckDB's HUGEINT)."""
    if isinstance(v, Decimal) and v == v.to_integral_value():
        return int(v)
    return v


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((v is None, v) for v in key)


FOLDABLE = frozenset({"count", "sum", "min", "max"})


def foldable(q: MetricQuery, kpis: tuple[str, ...]) -> bool:
    """Whether totals of ``kpis`` follow exactly from the per-bucket rows of series query
    ``q``: counts and sums add, min and max combine, ratios of those divide. Distinct counts,
    averages and percentiles do not; they need their own query."""
    for name in kpis:
        m = q.metric(name)
        parts = [m.numerator, m.denominator] if m.type == "ratio" else [name]
        for part in parts:
            if part not in q.metrics or q.metric(str(part)).type not in FOLDABLE:
                return False
    return True


def fold(q: MetricQuery, rows: list[dict[str, Any]], kpis: tuple[str, ...]) -> dict[str, Any]:
    """Totals over the series rows of ``q`` (see :func:`foldable`)."""
    totals: dict[str, Any] = {}
    for name in q.metrics:
        m = q.metric(name)
        values = [r[name] for r in rows if r.get(name) is not None]
        if m.type in ("count", "sum"):
            totals[name] = sum(values)
        elif m.type in ("min", "max"):
            totals[name] = (min if m.type == "min" else max)(values) if values else None
    out = {}
    for name in kpis:
        m = q.metric(name)
        out[name] = _finish(name, m, totals, q) if m.type == "ratio" else totals[name]
    return out
