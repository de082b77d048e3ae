"""Pack KPI gauges on ``/metrics``: ``gristmill_pack_metric{pack,metric,<dims>}``.

Each pack's ``observe:`` section (``pack/observe.py``) names metrics, a trailing window and
group-by dimensions. A scrape gets their values over ``[now - window, now)`` computed by the
metric layer (the rollup-aware planner, the same code as ``GET /v1/metrics``), unscoped: this
is the operator's view, and ``/metrics`` is already limited to ``server.metrics_allow``.

Values are cached per pack for ``cache_s`` seconds and computed by one scrape at a time, so
Prometheus replicas or a short scrape interval cost one warehouse query per pack per
``cache_s``, never one per scrape. ``gristmill_pack_metric_watermark_seconds{pack}`` is the
pack's completeness watermark when the values were computed (every event received before it is
counted); a query that fails keeps the last values and counts
``gristmill_pack_metric_failures_total{pack}`` rather than failing the whole scrape.

Cardinality: at most ``max_series`` series per pack. Groups are ranked by the first published
metric (largest first); past the budget they are folded into one ``__other__`` group, exact
for count, sum, min and max (other types publish nothing for the folded groups), so
``sum by (pack)`` over counts and sums equals the ungrouped total.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gristmill.metrics.model import MetricQuery
from gristmill.metrics.service import run
from gristmill.metrics.timerange import TimeRange, utc_now
from gristmill.pack.models import Pack
from gristmill.pack.observe import OTHER, ObserveSpec
from gristmill.runtime import Runtime

log = logging.getLogger(__name__)

UTC_ZONE = ZoneInfo("UTC")


def _fold(mtype: str, values: list[float]) -> float | None:
    """The value of folded groups, where the metric's type folds exactly."""
    if mtype in ("count", "sum"):
        return float(sum(values))
    if mtype == "min":
        return min(values)
    if mtype == "max":
        return max(values)
    return None


@dataclass(frozen=True, slots=True)
class Sample:
    metric: str
    """The published name."""
    dims: tuple[str, ...]
    value: float


@dataclass(slots=True)
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    computed_at: float = float("-inf")
    """``time.monotonic()`` of the last computation (successful or not)."""
    samples: tuple[Sample, ...] = ()
    watermark_s: float | None = None
    groups: int = 0
    failures: int = 0


def _number(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None if v is None else float(v)
    if isinstance(v, int | float | Decimal):
        return float(v)
    return None


def _label(v: Any) -> str:
    return "" if v is None else str(v)


def compute(rt: Runtime, pack: Pack, spec: ObserveSpec) -> tuple[list[Sample], int]:
    """The pack's observed metrics over the trailing window, bounded by ``max_series``;
    also the number of groups before folding."""
    end = utc_now()
    rng = TimeRange(end - spec.window, end, UTC_ZONE)
    names = tuple(dict.fromkeys(spec.metrics.values()))
    q = MetricQuery(pack, names, rng, None, tuple(spec.group_by))
    rows = run(rt.warehouse, q).rows
    return bound(pack, spec, rows), len(rows)


def bound(pack: Pack, spec: ObserveSpec, rows: Sequence[dict[str, Any]]) -> list[Sample]:
    """Samples of ``rows`` (one per group) within ``max_series``: the largest groups by the
    first published metric, the rest folded into ``__other__`` where the type folds exactly."""
    published = list(spec.metrics.items())
    per_group = len(published)
    keep = spec.max_series // per_group
    first = published[0][1]

    def rank(row: dict[str, Any]) -> tuple[bool, float, tuple[str, ...]]:
        v = _number(row.get(first))
        return (v is None, -(v or 0.0), tuple(_label(row.get(d)) for d in spec.group_by))

    ordered = sorted(rows, key=rank)
    if len(ordered) > keep:
        kept, rest = ordered[: max(keep - 1, 0)], ordered[max(keep - 1, 0) :]
    else:
        kept, rest = ordered, []
    out: list[Sample] = []
    for row in kept:
        dims = tuple(_label(row.get(d)) for d in spec.group_by)
        for name, metric in published:
            v = _number(row.get(metric))
            if v is not None:
                out.append(Sample(name, dims, v))
    if rest:
        other = tuple(OTHER for _ in spec.group_by)
        for name, metric in published:
            values = [x for r in rest if (x := _number(r.get(metric))) is not None]
            folded = _fold(pack.spec.metrics[metric].type, values) if values else None
            if folded is not None:
                out.append(Sample(name, other, folded))
    return out


class PackMetricsCollector(Collector):
    """The gauges of every served pack that declares ``observe:``."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._entries = {name: _Entry() for name, p in rt.packs.items() if p.spec.observe}

    def _refresh(self, name: str, entry: _Entry) -> None:
        pack = self.rt.packs[name]
        spec = pack.spec.observe
        assert spec is not None
        with entry.lock:  # one computation at a time; the others read its result
            if time.monotonic() - entry.computed_at < spec.cache_s:
                return
            try:
                wm = self.rt.watermark(name)
                samples, groups = compute(self.rt, pack, spec)
            except Exception:
                entry.failures += 1
                log.exception("pack %s: observed metrics failed; keeping the last values", name)
            else:
                entry.samples, entry.groups = tuple(samples), groups
                entry.watermark_s = wm.as_of.timestamp()
            entry.computed_at = time.monotonic()

    def collect(self) -> Iterator[Metric]:
        if not self._entries:
            return
        for name, entry in self._entries.items():
            self._refresh(name, entry)
        # One family for every pack (a name must not be described twice in one exposition):
        # its labels are the union of the packs' group_by; a pack's samples leave the others'
        # dimensions empty, which Prometheus stores as absent.
        dims: list[str] = []
        for name in self._entries:
            spec = self.rt.packs[name].spec.observe
            assert spec is not None
            dims += [d for d in spec.group_by if d not in dims]
        values = GaugeMetricFamily(
            "gristmill_pack_metric",
            "A pack metric over the pack's trailing observe window (pack.yaml observe:).",
            labels=["pack", "metric", *dims],
        )
        wm = GaugeMetricFamily(
            "gristmill_pack_metric_watermark_seconds",
            "Unix time of the completeness watermark the pack's metrics were computed at.",
            labels=["pack"],
        )
        groups = GaugeMetricFamily(
            "gristmill_pack_metric_groups",
            "Groups the pack's observed query returned, before the max_series bound.",
            labels=["pack"],
        )
        fails = CounterMetricFamily(
            "gristmill_pack_metric_failures",
            "Computations of a pack's observed metrics that failed (last values kept).",
            labels=["pack"],
        )
        for name, entry in self._entries.items():
            spec = self.rt.packs[name].spec.observe
            assert spec is not None
            at = {d: i for i, d in enumerate(spec.group_by)}
            for s in entry.samples:
                labels = [s.dims[at[d]] if d in at else "" for d in dims]
                values.add_metric([name, s.metric, *labels], s.value)
            if entry.watermark_s is not None:
                wm.add_metric([name], entry.watermark_s)
            groups.add_metric([name], entry.groups)
            fails.add_metric([name], entry.failures)
        yield values
        yield wm
        yield groups
        yield fails
