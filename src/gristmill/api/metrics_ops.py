"""Freshness and export-job series on ``/metrics`` (beside :mod:`gristmill.api.metrics`).

Freshness per pack table is read from ``_gristmill.freshness`` (kept inside each load
transaction, so it is never ahead of or behind the rows). The rows are read again when this
process's loader has committed a batch since the last read, else at most every
``FRESHNESS_CACHE_S`` (loaders in other processes): on BigQuery or Snowflake every read is a
billed query. The lag itself is computed at scrape time, so a cached row can only make it look
older (by at most the cache age), never fresher.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gristmill.core.clock import MICROS, from_datetime, now_us
from gristmill.rollup.freshness import ALL, FRESHNESS
from gristmill.runtime import Runtime

log = logging.getLogger(__name__)

FRESHNESS_CACHE_S = 5.0
EXPORT_STATUSES = ("queued", "running", "succeeded", "failed")
"""Statuses always exposed (at 0 when no job has them), so a panel or an alert on one never
sees the series vanish; statuses the exports engine reports beyond these are exposed too."""


class FreshnessCollector(Collector):
    """``gristmill_freshness_lag_seconds{pack,table}`` and, for packs that declare
    ``freshness_budget``, ``gristmill_freshness_budget_seconds{pack}``."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._batches = -1
        self._loaded: dict[tuple[str, str], int] = {}

    def _newest_loads(self) -> dict[tuple[str, str], int]:
        """(pack, table) -> newest load time (µs), cached (see the module docstring)."""
        with self._lock:
            batches = self.rt.loader.stats.batches
            if batches != self._batches or time.monotonic() - self._at >= FRESHNESS_CACHE_S:
                self._batches = batches
                try:
                    self._loaded = self._read()
                except Exception:  # a scrape must not fail because the warehouse is down
                    log.exception("freshness: reading %s failed; keeping the last rows", FRESHNESS)
                self._at = time.monotonic()
            return dict(self._loaded)

    def _read(self) -> dict[tuple[str, str], int]:
        from sqlglot import exp

        q = (
            exp.select("pack", "tbl", "newest_loaded_at")
            .from_(FRESHNESS)
            .where(exp.EQ(this=exp.column("scope_column"), expression=exp.Literal.string(ALL)))
        )
        out: dict[tuple[str, str], int] = {}
        for r in self.rt.warehouse.query(q, {}).to_pylist():
            loaded = r["newest_loaded_at"]
            if r["pack"] in self.rt.packs and isinstance(loaded, datetime):
                out[(r["pack"], r["tbl"])] = _micros(loaded)
        return out

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "gristmill_freshness_lag_seconds",
            "Seconds since the newest load into the pack table.",
            labels=["pack", "table"],
        )
        now = now_us()
        for (pack, table), loaded in sorted(self._newest_loads().items()):
            lag.add_metric([pack, table], max(0.0, (now - loaded) / MICROS))
        yield lag
        budget = GaugeMetricFamily(
            "gristmill_freshness_budget_seconds",
            "The pack's declared freshness budget (pack.yaml freshness_budget).",
            labels=["pack"],
        )
        for name in sorted(self.rt.packs):
            b = self.rt.packs[name].spec.freshness_budget
            if b is not None:
                budget.add_metric([name], b / timedelta(seconds=1))
        yield budget


def _micros(v: datetime) -> int:
    """A warehouse timestamp (naive means UTC) as µs since the epoch."""
    return from_datetime(v if v.tzinfo is not None else v.replace(tzinfo=UTC))


class ExportsView(Protocol):
    """What ``/metrics`` reads from ``rt.exports`` (the exports engine, built separately).

    ``counts()`` maps a job status to the number of jobs in it now; ``failures`` counts
    failed job attempts since the process started (monotonic, a Prometheus counter).
    """

    failures: int

    def counts(self) -> Mapping[str, int]: ...


def exports_view(rt: object) -> ExportsView | None:
    """``rt.exports`` when it honours :class:`ExportsView`, else None (duck-typed, so the two
    branches merge in either order without an import between them)."""
    ex = getattr(rt, "exports", None)
    if ex is None or not callable(getattr(ex, "counts", None)):
        return None
    if not isinstance(getattr(ex, "failures", None), int):
        return None
    return cast(ExportsView, ex)


class ExportsCollector(Collector):
    """``gristmill_export_jobs{status}`` and ``gristmill_export_job_failures_total``.

    The contract with the exports engine: if the runtime has an attribute ``exports`` with a
    method ``counts() -> dict[str, int]`` (status -> jobs now in it) and an ``int`` attribute
    ``failures`` (failed attempts so far), both are exposed; otherwise every status in
    :data:`EXPORT_STATUSES` is 0 and so are the failures. A ``counts()`` that raises is
    logged and read as zeros: a scrape never fails on it.
    """

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        view = exports_view(self.rt)
        counts: dict[str, int] = dict.fromkeys(EXPORT_STATUSES, 0)
        failures = 0
        if view is not None:
            try:
                got: Mapping[str, Any] = view.counts()
                counts.update({str(k): int(v) for k, v in got.items()})
                failures = int(view.failures)
            except Exception:
                log.exception("exports: counts() failed; exposing zeros")
                counts = dict.fromkeys(EXPORT_STATUSES, 0)
        jobs = GaugeMetricFamily(
            "gristmill_export_jobs", "Export jobs by current status.", labels=["status"]
        )
        for status, n in sorted(counts.items()):
            jobs.add_metric([status], n)
        yield jobs
        yield CounterMetricFamily(
            "gristmill_export_job_failures", "Failed export job attempts.", value=failures
        )
