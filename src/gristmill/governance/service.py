"""Governance for one process: erasure requests (queued, run by one worker, resumed after a
restart), scheduled retention, the suppression list the collector reads, and counters for
``/metrics``. Built by :class:`~gristmill.runtime.Runtime`; the API and the CLI call it."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlglot import exp

from gristmill.config import GovernanceSettings
from gristmill.core.ids import new_token
from gristmill.core.subjects import Mode, Suppression, subject_hash
from gristmill.governance.erasure import Report, Subject, erase
from gristmill.governance.reprice import RepriceReport, reprice
from gristmill.governance.retention import RetentionReport, enforce
from gristmill.governance.retention import status as retention_status
from gristmill.governance.verify import VerifyReport, verify
from gristmill.meta.governance import ErasureRecord, GovernanceStore
from gristmill.pack.models import Pack
from gristmill.warehouse.base import Warehouse

log = logging.getLogger(__name__)

STATUS_TTL_S = 60.0
"""How long a retention status is reused (its counts move only with a run or a day)."""


class ErasureRefused(ValueError):
    """A request that names no subject."""


class ExportHooks(Protocol):
    """What governance asks of the exports engine (exports/service.py)."""

    def erase_subject(self, needles: Sequence[bytes]) -> dict[str, int]: ...

    def expire(self, older_than: datetime | None = None, *, dry_run: bool = False) -> list[str]: ...


@dataclass(slots=True)
class GovernanceCounters:
    erasures: Counter[str] = field(default_factory=Counter)
    """status -> requests that reached it."""
    erased_rows: int = 0
    retention_runs: int = 0
    retention_rows: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(table, method) -> rows removed."""
    partitions_dropped: int = 0
    last_retention_at: float | None = None


class Governance:
    def __init__(
        self,
        store: GovernanceStore,
        suppression: Suppression,
        packs: Mapping[str, Pack],
        settings: GovernanceSettings,
        *,
        warehouse: Warehouse | None,
        wait_loaded: Callable[[float], dict[str, Any]],
        scrub_log: Callable[[], dict[str, Any]] | None,
        forget: Callable[[Sequence[str]], int] | None = None,
        staging: Callable[[], list[tuple[exp.Table, list[str]]]] | None = None,
        exports: ExportHooks | None = None,
    ) -> None:
        self.store = store
        self.suppression = suppression
        self.packs = dict(packs)
        self.settings = settings
        self._warehouse = warehouse
        self._wait_loaded = wait_loaded
        self._scrub_log = scrub_log
        self._forget = forget
        self._staging = staging
        self._exports = exports
        """Stored export files: scrubbed by erasure, expired by retention."""
        """Feed staging tables and their text columns."""
        """Metadata keyed by subject (user traits for enrichment)."""
        self.counters = GovernanceCounters()
        self._queue: list[tuple[str, Mode, list[str]]] = []
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._busy = threading.Lock()
        """One erasure or retention run at a time: both rewrite the same tables."""
        self._scheduled_from: float | None = None
        self._status: tuple[float, dict[str, Any]] | None = None
        """The last retention status: it scans each table, and the dashboard asks on every
        page view."""
        self.refresh_suppression()

    # -- suppression ----------------------------------------------------------------------
    def refresh_suppression(self) -> None:
        self.suppression.replace(self.store.suppression_set())

    # -- erasure ----------------------------------------------------------------------------
    def request_erasure(self, subject: Subject, mode: Mode, actor: str) -> str:
        """Record and suppress now; the rows are erased by the worker (or :meth:`run_pending`
        in a process without one). Returns the request id."""
        ids = subject.identifiers()
        if not ids:
            raise ErasureRefused("name at least one user_id, anonymous_id or email")
        request_id = new_token("era", 12)
        hashes = sorted({subject_hash(self.store.secret, v) for v in ids})
        self.store.create_request(request_id, mode, hashes, actor, ids)
        self.refresh_suppression()
        self.counters.erasures["pending"] += 1
        with self._cv:
            self._queue.append((request_id, mode, list(ids)))
            self._cv.notify_all()
        return request_id

    def status(self, request_id: str) -> ErasureRecord | None:
        return self.store.request(request_id)

    def run_pending(self) -> list[str]:
        """Run every queued request in this thread (the CLI without a server)."""
        done: list[str] = []
        while True:
            with self._cv:
                if not self._queue:
                    return done
                item = self._queue.pop(0)
            self._run(*item)
            done.append(item[0])

    def _run(self, request_id: str, mode: Mode, ids: list[str]) -> None:
        wh = self._warehouse
        if wh is None:
            self.store.set_status(request_id, "failed", error="this process has no warehouse")
            return
        with self._busy:
            self.store.set_status(request_id, "running")
            started = time.monotonic()
            try:
                report: Report = erase(
                    wh,
                    self.packs,
                    ids,
                    mode,
                    wait_loaded=lambda: self._wait_loaded(self.settings.erasure_drain_timeout_s),
                    scrub_log=self._scrub_log,
                    forget=self._forget,
                    staging=self._staging() if self._staging else (),
                    exports=self._exports.erase_subject if self._exports else None,
                )
            except Exception as exc:
                log.exception("erasure %s failed", request_id)
                self.counters.erasures["failed"] += 1
                self.store.set_status(
                    request_id, "failed", error=f"{type(exc).__name__}: {exc}"[:2000]
                )
                return
            took = time.monotonic() - started
            body = report.as_dict() | {
                "seconds": round(took, 3),
                "deadline_s": self.settings.erasure_deadline_s,
                "within_deadline": took <= self.settings.erasure_deadline_s,
            }
            self.counters.erasures["completed"] += 1
            self.counters.erased_rows += int(body["rows_total"])
            self.store.set_status(request_id, "completed", report=body)

    def _worker(self) -> None:
        while not self._stop.is_set():
            with self._cv:
                while not self._queue and not self._stop.is_set():
                    self._cv.wait(1.0)
                if self._stop.is_set():
                    return
                item = self._queue.pop(0)
            self._run(*item)

    def verify_erasures(
        self, *, repair: bool = False, actor: str = "cli", packs: Sequence[str] | None = None
    ) -> VerifyReport:
        """Rows that still name an erased subject (governance/verify.py), erased again with
        ``repair``, in ``packs`` (default every pack served). Audited either way, with counts
        only, and also when it fails part way: a repair that stopped may have changed rows."""
        if self._warehouse is None:
            raise RuntimeError("this process has no warehouse")
        chosen = {n: p for n, p in self.packs.items() if packs is None or n in packs}
        action = "erasure.repair" if repair else "erasure.verify"
        target = ",".join(sorted(chosen))
        try:
            with self._busy:  # never beside a running request's steps
                report = verify(
                    self._warehouse,
                    chosen,
                    self.store.settled_suppression_set(),
                    repair=repair,
                )
        except Exception as exc:
            self.store.audit(actor, action, target, error=f"{type(exc).__name__}: {exc}"[:500])
            raise
        body = report.as_dict()
        self.store.audit(
            actor,
            action,
            target,
            rows_found=body["rows_found"],
            unlocated=body["unlocated"],
            identities_checked=body["identities_checked"],
        )
        return report

    # -- retention --------------------------------------------------------------------------
    def attach_exports(self, exports: ExportHooks) -> None:
        """The exports engine is built after governance (it needs the role table)."""
        self._exports = exports

    def run_reprice(
        self,
        pack: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        dry_run: bool = False,
        actor: str = "cli",
    ) -> RepriceReport:
        """Price the pack's rows again from its current book (governance/reprice.py); the
        restatement is audited with the book's digest and the spend before and after."""
        if self._warehouse is None:
            raise RuntimeError("this process has no warehouse")
        with self._busy:
            report = reprice(
                self._warehouse, self.packs[pack], since=since, until=until, dry_run=dry_run
            )
        self.store.audit(
            actor, "reprice.dry_run" if dry_run else "reprice.run", pack, **report.as_dict()
        )
        return report

    def run_retention(
        self, *, dry_run: bool = False, actor: str = "scheduler", now: datetime | None = None
    ) -> RetentionReport:
        if self._warehouse is None:
            raise RuntimeError("this process has no warehouse")
        with self._busy:
            report = enforce(
                self._warehouse,
                self.packs,
                now or datetime.now(UTC),
                quarantine_days=self.settings.quarantine_retention_days,
                dry_run=dry_run,
            )
        if self._exports is not None:
            report.exports_expired = len(self._exports.expire(dry_run=dry_run))
        if not dry_run:
            self._status = None
            c = self.counters
            c.retention_runs += 1
            c.last_retention_at = time.time()
            c.partitions_dropped += len(report.partitions_dropped)
            for a in report.actions:
                c.retention_rows[(a["table"], a["method"])] += int(a["rows"])
        action = "retention.dry_run" if dry_run else "retention.run"
        self.store.audit(
            actor,
            action,
            "",
            rows=report.rows,
            exports_expired=report.exports_expired,
            partitions=[p["partition"] for p in report.partitions_dropped],
            actions=[a for a in report.actions if a["rows"]],
        )
        return report

    def retention_status(self) -> dict[str, Any]:
        """Per category: retention, oldest row kept, rows the next run removes, and when the
        schedule runs next (``None`` when this process runs no schedule)."""
        if self._warehouse is None:
            raise RuntimeError("this process has no warehouse")
        cached = self._status
        if cached is not None and time.monotonic() - cached[0] < STATUS_TTL_S:
            return cached[1]
        now = datetime.now(UTC)
        interval = self.settings.retention_interval_s
        next_run = None
        if self._scheduled_from is not None and interval > 0:
            last = self.counters.last_retention_at
            first = self._scheduled_from + self.settings.retention_first_run_s
            at = first if last is None else max(first, last + interval)
            next_run = datetime.fromtimestamp(at, UTC).isoformat()
        body = {
            "categories": retention_status(self._warehouse, self.packs, now),
            "next_run_at": next_run,
            "last_run_at": None
            if self.counters.last_retention_at is None
            else datetime.fromtimestamp(self.counters.last_retention_at, UTC).isoformat(),
        }
        self._status = (time.monotonic(), body)
        return body

    def _scheduler(self) -> None:
        interval = self.settings.retention_interval_s
        if self._stop.wait(self.settings.retention_first_run_s):
            return
        while True:
            try:
                self.run_retention()
            except Exception:  # the next run tries again; the failure is in the log
                log.exception("scheduled retention run failed")
            if self._stop.wait(interval):
                return

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Resume unfinished requests, then run the worker and (if configured) the schedule."""
        self.resume_unfinished()
        self._threads.append(threading.Thread(target=self._worker, name="erasure", daemon=True))
        if self.settings.retention_interval_s > 0 and self._warehouse is not None:
            self._scheduled_from = time.time()
            self._threads.append(
                threading.Thread(target=self._scheduler, name="retention", daemon=True)
            )
        for t in self._threads:
            t.start()

    def resume_unfinished(self) -> None:
        """Queue requests an earlier process left unfinished (for :meth:`run_pending`)."""
        with self._cv:
            self._queue.extend(self.store.unfinished())

    def stop(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout=30)
