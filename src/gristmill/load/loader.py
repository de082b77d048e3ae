"""The loader: log -> warehouse, offset stored in the warehouse transaction, then in the log.

Order of effects for one batch:

1. read entries after the warehouse's stored offset (not the log's: the log commit may lag);
2. build Arrow tables and quarantine rows;
3. ``commit_load`` — inserts, dedupe keys, quarantine, ledger and offset in one transaction;
4. commit the offset to the log, which then frees the consumed records.

A crash before 3 re-reads the same entries; a crash between 3 and 4 re-reads nothing, because
step 1 starts from the warehouse's offset. Nothing is loaded twice and nothing is skipped.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from gristmill.config import LoaderSettings
from gristmill.core.clock import now_us
from gristmill.core.envelope import Reason
from gristmill.load.batch import build_batch, quarantine_batch
from gristmill.load.pressure import CpuMeter, saturation
from gristmill.log.base import EventLog
from gristmill.pack.models import Pack
from gristmill.warehouse.base import AfterInsert, LoadBatch, LoadResult, Warehouse

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Built:
    load: LoadBatch
    events: int
    build_seconds: float


TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
"""Serialization failure, deadlock, lock not available: another writer got in the way."""


class LeaseLapsed(RuntimeError):
    """A commit refused by the loader's fence: its partition lease may have lapsed."""


def transient(exc: BaseException) -> bool:
    """Whether a failed commit lost a race with another writer (concurrent loaders on one
    warehouse) rather than being refused for its rows. Such a batch is retried as it is:
    counting it towards isolation could quarantine good events as ``unloadable``."""
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "sqlstate", None) in TRANSIENT_SQLSTATES:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@dataclass(slots=True)
class LoaderStats:
    batches: int = 0
    events: int = 0
    loaded: int = 0
    last_commit_at: int | None = None
    last_batch_seconds: float = 0.0
    last_wait_seconds: float = 0.0
    """How long the last batch waited to grow (``Loader.batch_wait``): 0 for a batch that was
    full at its first read, or read without waiting (a drain, ``run_once(timeout_s=…)``)."""
    last_wait_ended: str = ""
    """Why the last batch that waited stopped: ``full`` (``target_events``), ``wait`` (its
    wait ran out), ``quiet`` (nothing came for two polls, the end of a burst), ``drain`` or
    ``stop``; empty when it did not wait."""
    last_error: str | None = None
    failures: int = 0


@dataclass(frozen=True, slots=True)
class DrainMark:
    rounds: int
    """The empty round that proves a read began after the drain was asked for."""
    failures: int
    """Failed loads when it was asked: one more ends the drain."""


def finish_drain(log_id: str, marks: list[tuple[Loader, DrainMark]], drain_s: float) -> bool:
    """Wait for every loader's drain (they run at once, in their own threads), up to
    ``drain_s`` in all; say in the log whether the log was left empty."""
    t0 = time.monotonic()
    done = [loader.drained(mark, t0 + drain_s) for loader, mark in marks]  # wait for each
    ok = all(done)
    if ok:
        log.info("stopping: %s loaded to its end in %.2f s", log_id, time.monotonic() - t0)
    else:
        log.warning(
            "stopping with events still in %s (not drained in %.1f s, or a load failed); "
            "they load at the next start",
            log_id,
            drain_s,
        )
    return ok


@contextmanager
def _pools() -> Iterator[tuple[ThreadPoolExecutor, ThreadPoolExecutor]]:
    """The pipelined loops' two threads: one reads and builds the next batch, one commits
    offsets to the log in order. Leaving waits for both, so nothing touches the log after."""
    with (
        ThreadPoolExecutor(1, thread_name_prefix="loader-build") as build,
        ThreadPoolExecutor(1, thread_name_prefix="loader-log") as logs,
    ):
        yield build, logs


class Loader:
    def __init__(
        self,
        log: EventLog,
        warehouse: Warehouse,
        packs: Mapping[str, Pack],
        settings: LoaderSettings,
        *,
        group: str = "loader",
        on_commit: Callable[[LoadResult], None] | None = None,
        after: Mapping[tuple[str, str], tuple[AfterInsert, ...]] | None = None,
        fence: Callable[[], bool] | None = None,
    ) -> None:
        self.log = log
        self.fence = fence
        """False once this loader's partition lease may have lapsed (the pool's renewals
        stopped, or it handed the partition on): every commit (loop, drain, isolation) is
        refused with :class:`LeaseLapsed`, and the loop stops, rather than commit beside the
        lease's next holder (:mod:`gristmill.load.pool`)."""
        self.warehouse = warehouse
        self.packs = dict(packs)
        self.settings = settings
        self.group = group
        self.on_commit = on_commit
        self.after = dict(after or {})
        self.stats = LoaderStats()
        self._offset: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0
        self._failed_at: int | None = None
        self._busy = 0.0
        """Smoothed share of the time the loader spends committing (0 idle … 1 saturated)."""
        self._last_start: float | None = None
        self._committing = False
        """A warehouse commit is under way (the pipelined loop builds the next batch meanwhile,
        and that batch cannot load before it ends)."""
        self._rounds = threading.Condition()
        self._empty_rounds = 0
        """Times the loop found the log empty after its commits finished (for :meth:`stop`)."""
        self._draining = False
        self.cpu = CpuMeter()

    def batch_wait(self) -> float:
        """How long a small batch waits for more events before it loads.

        A fixed wait trades freshness for fewer commits at every traffic level. Adaptive: the
        wait is ``max_wait_s`` scaled by how busy the loader has been. Light traffic keeps the
        loader mostly idle, so a batch loads at once (an event is queryable one commit after
        its 2xx); as commits fill the loader's time, the wait grows to ``max_wait_s`` and
        batches grow, amortising each commit's fixed cost (dedupe probe, ledger, fsync) — the
        CPU a commit saves is the collector's, in one process. Under a backlog batches are
        full anyway and nothing waits.

        The loader's own share cannot see the collectors: under a stream of single-event
        requests it settles at ~0.4 busy and ~0.07 s waits while both cores are full, and
        its loads' fixed cost took ~0.1 ms of CPU per request from the collectors
        (BENCHMARKS.md). So past ``saturated_cpu`` machine utilization the wait grows
        towards ``saturated_wait_s``: freshness is traded for throughput only when the CPUs
        have none to spare. Part of the adaptive wait: a fixed wait (``adaptive_wait`` off)
        or none (``max_wait_s`` 0) is what the operator chose, and stays so.

        An adaptive wait also ends when two polls in a row (``idle_poll_s`` apart) find
        nothing new and no commit is under way: fewer commits pay only while events keep
        coming, and at the end of a burst the CPUs still read saturated for a few seconds (the
        reading is smoothed). Only on a log whose empty read means nothing was appended
        (``EventLog.idle_when_empty``: the embedded logs, not a broker's fetch)."""
        cfg = self.settings
        if self._draining:
            return 0.0
        if not cfg.adaptive_wait:
            return cfg.max_wait_s
        wait = cfg.max_wait_s * min(1.0, self._busy)
        if cfg.saturated_wait_s > 0 and cfg.max_wait_s > 0:
            full = saturation(self.cpu.utilization(), cfg.saturated_cpu)
            wait = max(wait, cfg.saturated_wait_s * full)
        return wait

    @property
    def log_id(self) -> str:
        return self.log.log_id

    def _position(self) -> int:
        if self._offset is None:
            stored = self.warehouse.stored_offset(self.log_id, self.group)
            if self.log.committed(self.group) < stored:
                self.log.commit(self.group, stored)  # a crash between warehouse and log commit
            self._offset = stored
        return self._offset

    def _read_and_build(self, after: int, timeout_s: float, *, wait: bool = True) -> _Built | None:
        cfg = self.settings
        batch = self.log.read(self.group, cfg.max_events, timeout_s, after=after)
        if not batch.entries:
            return None
        first = time.monotonic()
        small = wait and batch.events < cfg.target_events
        deadline = first + (self.batch_wait() if small else 0.0)
        quiet_ends = cfg.adaptive_wait and self.log.idle_when_empty
        quiet = 0
        ended = "full"
        while batch.events < cfg.target_events:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set() or self._draining:
                ended = "stop" if self._stop.is_set() else "drain" if self._draining else "wait"
                break
            # Let a batch's worth arrive before reading again: under a stream of small
            # requests, re-reading after every group commit costs more than it gathers.
            self._stop.wait(min(remaining, cfg.idle_poll_s))
            more = self.log.read(
                self.group, cfg.max_events - batch.events, 0, after=batch.last_offset
            )
            quiet = 0 if more.entries or self._committing else quiet + 1
            if quiet >= 2 and quiet_ends:
                # Nothing came for two polls and nothing is committing: the traffic paused
                # (the end of a burst), so waiting longer would only hold what came.
                ended = "quiet"
                break
            batch.entries.extend(more.entries)
        self.stats.last_wait_seconds = time.monotonic() - first if small else 0.0
        self.stats.last_wait_ended = ended if small else ""
        started = time.perf_counter()
        load = build_batch(
            batch.entries, self.packs, log_id=self.log_id, group=self.group, after=self.after
        )
        return _Built(load, batch.events, time.perf_counter() - started)

    def _commit(self, built: _Built, *, defer: ThreadPoolExecutor | None = None) -> LoadResult:
        """Commit a batch to the warehouse, then its offset to the log.

        With ``defer`` (the pipelined loops: one thread, so log commits stay in order), on a
        log that allows it (``background_commit``: the SQLite logs) the log commit overlaps
        the next warehouse commit: the SQLite log deletes the consumed records there, ~15% of
        a load when run in line. That is safe because the warehouse's offset is the position
        (see :meth:`_position`): a log commit that lags, fails or is lost to a crash re-reads
        nothing, and the next one frees the same records."""
        if self.fence is not None and not self.fence():
            raise LeaseLapsed(f"{self.group}: the partition's lease was not renewed in time")
        started = time.perf_counter()
        self._committing = True
        try:
            result = self.warehouse.commit_load(built.load)
        finally:
            self._committing = False
        done = time.perf_counter()
        if self._last_start is not None and started > self._last_start:
            share = min(1.0, (done - started) / (done - self._last_start))
            self._busy = 0.7 * self._busy + 0.3 * share
        self._last_start = started
        self._offset = built.load.last_offset
        if defer is None or not self.log.background_commit:
            self.log.commit(self.group, built.load.last_offset)
        else:
            defer.submit(self._commit_log, built.load.last_offset)
        st = self.stats
        st.batches += 1
        st.events += built.events
        st.loaded += result.total_loaded
        st.last_commit_at = now_us()
        st.last_batch_seconds = built.build_seconds + time.perf_counter() - started
        st.last_error = None
        if self.on_commit is not None:
            self.on_commit(result)
        return result

    def _commit_log(self, offset: int) -> None:
        try:
            self.log.commit(self.group, offset)
        except Exception:  # the records stay; the next log commit frees them
            log.exception("log commit to offset %d failed; the next one frees its records", offset)

    def run_once(self, timeout_s: float | None = None) -> LoadResult | None:
        """Load at most one batch; returns None when the log had nothing new."""
        built = self._read_and_build(
            self._position(),
            self.settings.idle_poll_s if timeout_s is None else timeout_s,
            wait=timeout_s is None,
        )
        return None if built is None else self._commit(built)

    def _failed_again(self) -> bool:
        """Whether the batch at the current position has now failed twice in a row."""
        here = self._position()
        again = self._failed_at == here
        self._failed_at = here
        return again

    def isolate(self) -> int:
        """Load the failing batch one log entry at a time; an entry whose rows the warehouse
        refuses is put in quarantine whole (reason ``unloadable``) so the events behind it
        load. Returns how many entries were set aside.

        Telling bad data from a broken warehouse: the set-aside itself is a commit. If the
        warehouse is down, that commit fails too and nothing is quarantined; the loader backs
        off and tries again later.
        """
        batch = self.log.read(self.group, self.settings.max_events, 0, after=self._position())
        set_aside = 0
        for entry in batch.entries:
            try:
                load = build_batch(
                    [entry], self.packs, log_id=self.log_id, group=self.group, after=self.after
                )
                self._commit(_Built(load, entry.record.count, 0.0))
            except LeaseLapsed:
                raise  # says nothing about the rows
            except Exception as exc:  # the warehouse refused this entry's rows
                if transient(exc):
                    raise  # a lock conflict says nothing about the rows: retry, never quarantine
                detail = f"the warehouse refused these rows: {type(exc).__name__}: {exc}"[:2000]
                q = quarantine_batch(
                    [entry],
                    log_id=self.log_id,
                    group=self.group,
                    reason=Reason.UNLOADABLE,
                    detail=detail,
                )
                self._commit(_Built(q, entry.record.count, 0.0))
                set_aside += 1
                log.error("log entry %d set aside as unloadable: %s", entry.offset, detail)
        self._failed_at = None
        return set_aside

    def drain(self, timeout_s: float = 60.0) -> None:
        """Load until the log has nothing left (tests, the CLI, the demo, a backlog).

        Pipelined like :meth:`run_forever`: batch N+1 is read and built in a second thread
        while batch N commits, since both release the GIL for most of their time. Commits
        stay one at a time and in log order, so the offsets are as without the prefetch. A
        failure is raised after the prefetch has finished (nothing reads the log behind the
        caller's back); the failed batch stays in the log and the next call starts from the
        warehouse's offset."""
        deadline = time.monotonic() + timeout_s
        with _pools() as (pool, logs):
            pending = pool.submit(self._read_and_build, self._position(), 0, wait=False)
            try:
                while (built := pending.result()) is not None:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"log not drained within {timeout_s} s")
                    after = built.load.last_offset
                    pending = pool.submit(self._read_and_build, after, 0, wait=False)
                    self._commit(built, defer=logs)
            except BaseException:
                with contextlib.suppress(Exception):
                    pending.result()
                raise

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < self.settings.dedupe_prune_interval_s:
            return
        self._last_prune = now
        # Measured from the oldest event still waiting, not the clock: a backlog older than
        # the window still holds retries of events that were just loaded.
        oldest = self.log.snapshot(self.group).oldest_pending_received_at
        horizon = now_us() if oldest is None else min(now_us(), oldest)
        for pack in self.packs.values():
            self.warehouse.prune_dedupe(pack, horizon)

    def run_forever(self) -> None:
        """Load until stopped, building batch N+1 while batch N commits.

        Building is Python (holds the GIL); the warehouse commit mostly runs in DuckDB's own
        threads, so overlapping them uses the second core. The prefetch is discarded whenever
        a commit fails, and the position is re-read from the warehouse.
        """
        poll = self.settings.idle_poll_s
        try:  # before the first batch: what the first load would read (DuckDB's key sets)
            self.warehouse.warm(list(self.packs.values()))
        except Exception:  # best effort: the first load reads what it needs by itself
            log.exception("warming the warehouse failed")
        with _pools() as (pool, logs):
            pending: Future[_Built | None] | None = None
            while not self._stop.is_set():
                try:
                    if pending is None:
                        pending = pool.submit(self._read_and_build, self._position(), poll)
                    built = pending.result()
                    if built is None:
                        pending = None
                        with self._rounds:
                            self._empty_rounds += 1
                            self._rounds.notify_all()
                        self._maybe_prune()
                        continue
                    pending = pool.submit(self._read_and_build, built.load.last_offset, poll)
                    self._commit(built, defer=logs)
                    self._maybe_prune()
                except LeaseLapsed:
                    log.warning("%s: lease not renewed in time; stopping", self.group)
                    self._stop.set()
                    break
                except Exception as exc:  # keep the loop alive; the batch stays in the log
                    if pending is not None:
                        with contextlib.suppress(Exception):
                            pending.result()
                        pending = None
                    self.stats.failures += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                    self._offset = None  # re-read the position from the warehouse
                    log.exception("load failed; retrying in %.1f s", self.settings.retry_backoff_s)
                    if not transient(exc) and self._failed_again():
                        try:
                            self.isolate()
                        except Exception:  # the warehouse itself is failing: back off
                            log.exception("isolating the failing batch failed")
                        self._offset = None
                    self._stop.wait(self.settings.retry_backoff_s)
            if pending is not None:
                with contextlib.suppress(Exception):
                    pending.result()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_forever, name="loader", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def drain_mark(self) -> DrainMark:
        """Start a drain: from now a batch loads without waiting to grow, and :meth:`drained`
        says when the loop has found the log empty on a read that began after this call."""
        self._draining = True
        with self._rounds:
            # The next empty round may come from a read that began before this call; the
            # one after it began after (reads are issued one at a time, each after the last).
            return DrainMark(self._empty_rounds + 2, self.stats.failures)

    def drained(self, mark: DrainMark, deadline: float) -> bool:
        """Wait until the drain of ``mark`` is done (True), or a load fails, the loop is gone
        or ``deadline`` (monotonic) passes (False): a failing warehouse is not waited on."""
        with self._rounds:
            while self._empty_rounds < mark.rounds:
                left = deadline - time.monotonic()
                if left <= 0 or self.stats.failures > mark.failures or not self.alive:
                    return False
                self._rounds.wait(min(left, 0.1))
        return self.stats.failures == mark.failures

    def request_stop(self) -> None:
        """Ask the loop to stop after its batch in flight, without waiting for it."""
        self._stop.set()

    def stop(self, timeout_s: float = 30.0, *, drain_s: float = 0.0) -> None:
        """Stop the loop; with ``drain_s`` > 0, first load what the log holds (for up to that
        long, while loads succeed), so a stopped server leaves its warehouse current."""
        if drain_s > 0 and self.alive:
            finish_drain(self.log_id, [(self, self.drain_mark())], drain_s)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
