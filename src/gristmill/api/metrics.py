"""Prometheus exposition: pipeline counters read from the conservation snapshot at scrape
time (so they can never disagree with ``gristmill status``), plus request counters and the
ingest latency histogram. Freshness and export jobs are in :mod:`gristmill.api.metrics_ops`,
pack KPI gauges in :mod:`gristmill.api.observe`; every series is listed in
docs/operations.md."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gristmill.api.metrics_ops import ExportsCollector, FreshnessCollector
from gristmill.api.observe import PackMetricsCollector
from gristmill.core.clock import MICROS, now_us
from gristmill.runtime import Runtime

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RequestCounters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.rejected_requests: dict[str, int] = defaultdict(int)
        self.rate_limited: dict[tuple[str, str], int] = {
            (scope, cls): 0 for scope in ("key", "ip") for cls in ("ingest", "query")
        }
        # Not in any global registry: each app (and each test's app) has its own.
        self.duration = Histogram(
            "gristmill_http_request_duration_seconds",
            "Time from the start of an ingest request to its answer (durable in the log).",
            ["route"],
            registry=None,
            buckets=LATENCY_BUCKETS,
        )
        # labels() hashes and checks the label values on every call (~2 µs, on the ingest
        # path of every request); a route's child is looked up once.
        self._durations: dict[str, Histogram] = {}

    def count(self, route: str, status: int, seconds: float | None = None) -> None:
        with self._lock:
            self.requests[(route, status)] += 1
        if seconds is not None:
            child = self._durations.get(route)
            if child is None:
                child = self._durations.setdefault(route, self.duration.labels(route))
            child.observe(seconds)

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejected_requests[reason] += 1

    def limited(self, scope: str, route_class: str) -> None:
        """A request refused by a rate limit (``scope`` key or ip, ``route_class`` ingest or
        query); see :mod:`gristmill.api.ratelimit`."""
        with self._lock:
            key = (scope, route_class)
            self.rate_limited[key] = self.rate_limited.get(key, 0) + 1


class PipelineCollector(Collector):
    def __init__(self, rt: Runtime, counters: RequestCounters) -> None:
        self.rt = rt
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        if self.rt.role == "collect":  # no warehouse behind a collector: the log's depth only
            d = self.rt.log_depth()  # a broker's estimate, or the embedded log's count
            depth = d.get("depth_bytes_estimate", d.get("depth_bytes", 0))
            yield GaugeMetricFamily(
                "gristmill_log_depth_bytes", "Log bytes not yet loaded.", value=float(str(depth))
            )
        else:
            yield from self._pipeline()
        yield from self._collected()
        yield from self._requests()

    def _pipeline(self) -> Iterator[Metric]:
        c = self.rt.conservation()
        labels = ["pack", "source"]
        for name, field, doc in (
            ("gristmill_events_received", "received", "Events durably appended to the log."),
            ("gristmill_events_loaded", "loaded", "Events inserted into the warehouse."),
            ("gristmill_events_quarantined", "quarantined", "Events put in quarantine."),
            ("gristmill_events_duplicates", "duplicates", "Re-deliveries dropped by dedupe."),
        ):
            m = CounterMetricFamily(name, doc, labels=labels)
            for s in c.sources:
                m.add_metric([s.pack, s.source], getattr(s, field))
            yield m
        g = GaugeMetricFamily(
            "gristmill_events_in_flight", "Events in the log, not yet loaded.", labels=labels
        )
        for s in c.sources:
            g.add_metric([s.pack, s.source], s.in_flight)
        yield g
        yield GaugeMetricFamily(
            "gristmill_conservation_balanced",
            "1 when received = loaded + quarantined + duplicates + in_flight.",
            value=1 if c.balanced else 0,
        )
        yield GaugeMetricFamily(
            "gristmill_log_depth_events", "Events not yet loaded.", value=c.log.depth_events
        )
        yield GaugeMetricFamily(
            "gristmill_log_depth_bytes", "Log bytes not yet loaded.", value=c.log.depth_bytes
        )
        lag = 0.0
        if c.log.oldest_pending_received_at is not None:
            lag = max(0.0, (now_us() - c.log.oldest_pending_received_at) / MICROS)
        yield GaugeMetricFamily(
            "gristmill_load_lag_seconds", "Age of the oldest event not yet loaded.", value=lag
        )
        now = now_us()
        wm = GaugeMetricFamily(
            "gristmill_freshness_watermark_lag_seconds",
            "Age of the pack's oldest received event not yet queryable (0 when caught up).",
            labels=["pack"],
        )
        for pack in sorted(self.rt.packs):
            oldest = c.log.oldest_pending.get(pack)
            wm.add_metric([pack], 0.0 if oldest is None else max(0.0, (now - oldest) / MICROS))
        yield wm
        sup = CounterMetricFamily(
            "gristmill_events_suppressed",
            "Events of erased subjects dropped at collect time.",
            labels=labels,
        )
        for s in c.sources:
            sup.add_metric([s.pack, s.source], s.suppressed)
        yield sup
        yield from self._governance()
        st = self.rt.loader.stats
        yield CounterMetricFamily(
            "gristmill_loader_batches", "Warehouse load transactions.", value=st.batches
        )
        held = getattr(self.rt.warehouse, "keys_in_memory", None)
        if held is not None:  # DuckDB with warehouse.key_index: the memory the key sets hold
            keys = GaugeMetricFamily(
                "gristmill_dedupe_keys_in_memory",
                "Dedupe keys the warehouse holds in memory (24 bytes each).",
                labels=["pack"],
            )
            for pack, n in sorted(held().items()):
                keys.add_metric([pack], n)
            yield keys
        yield CounterMetricFamily(
            "gristmill_loader_failures", "Failed load attempts.", value=st.failures
        )
        yield GaugeMetricFamily(
            "gristmill_loader_batch_wait_seconds",
            "How long the last batch waited to grow (longer when the CPUs are saturated).",
            value=st.last_wait_seconds,
        )

    def _collected(self) -> Iterator[Metric]:
        """Per source, from the collector of this process: the quarantine rate alert's input
        (deploy/prometheus/gristmill-rules.yml, ``GristmillQuarantineRateRising``)."""
        collected, quarantined = self.rt.collector.counters.snapshot()
        c = CounterMetricFamily(
            "gristmill_collected",
            "Events framed by this process's collector (accepted or quarantined), per source.",
            labels=["pack", "source"],
        )
        for (pack, source), n in sorted(collected.items()):
            c.add_metric([pack, source], n)
        yield c
        q = CounterMetricFamily(
            "gristmill_quarantined_by_reason",
            "Events this process's collector quarantined, per source and reason.",
            labels=["pack", "source", "reason"],
        )
        for (pack, source, reason), n in sorted(quarantined.items()):
            q.add_metric([pack, source, reason], n)
        yield q

    def _governance(self) -> Iterator[Metric]:
        g = self.rt.governance.counters
        er = CounterMetricFamily(
            "gristmill_erasure_requests", "Erasure requests by final status.", labels=["status"]
        )
        for status, n in sorted(g.erasures.items()):
            er.add_metric([status], n)
        yield er
        yield CounterMetricFamily(
            "gristmill_erasure_rows", "Rows deleted or anonymized by erasure.", value=g.erased_rows
        )
        yield CounterMetricFamily(
            "gristmill_retention_runs", "Retention runs that changed data.", value=g.retention_runs
        )
        rr = CounterMetricFamily(
            "gristmill_retention_rows_removed",
            "Rows removed by retention, by table and method.",
            labels=["table", "method"],
        )
        for (table, method), n in sorted(g.retention_rows.items()):
            rr.add_metric([table, method], n)
        yield rr
        yield CounterMetricFamily(
            "gristmill_retention_partitions_dropped",
            "Whole partitions dropped by retention.",
            value=g.partitions_dropped,
        )

    def _requests(self) -> Iterator[Metric]:
        req = CounterMetricFamily(
            "gristmill_http_requests",
            "HTTP requests by route and status.",
            labels=["route", "status"],
        )
        for (route, status), n in sorted(self.counters.requests.items()):
            req.add_metric([route, str(status)], n)
        yield req
        rej = CounterMetricFamily(
            "gristmill_requests_rejected", "Whole requests refused, by reason.", labels=["reason"]
        )
        for reason, n in sorted(self.counters.rejected_requests.items()):
            rej.add_metric([reason], n)
        yield rej
        lim = CounterMetricFamily(
            "gristmill_rate_limited",
            "Requests answered 429 by a rate limit, by limit scope and route class.",
            labels=["scope", "route_class"],
        )
        for (scope, route_class), n in sorted(self.counters.rate_limited.items()):
            lim.add_metric([scope, route_class], n)
        yield lim
        yield GaugeMetricFamily(
            "gristmill_uptime_seconds",
            "Seconds since start.",
            value=(now_us() - self.rt.started_at) / MICROS,
        )


def build_registry(rt: Runtime, counters: RequestCounters) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(PipelineCollector(rt, counters))
    reg.register(counters.duration)
    if rt.role != "collect":  # freshness and pack metrics read the warehouse
        reg.register(FreshnessCollector(rt))
        reg.register(PackMetricsCollector(rt))
        reg.register(ExportsCollector(rt))
    return reg
