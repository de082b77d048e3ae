"""Loaders over a partitioned log (a broker, or the embedded log split into files): one
:class:`Loader` per partition this process holds the lease of.

Any number of ``gristmill load`` processes may run. Each takes free partitions (up to
``max_partitions``), loads each with the ordinary loader under the group ``<group>.p<n>``, and
renews its leases. A partition whose lease is lost (a broker disconnect) stops loading before
another process can take it over; a killed process's leases lapse and a live one picks the
partitions up. Two loaders never load one partition at once, so the warehouse's per-partition
offset moves forward in one place only.

**Fencing.** A lease renewed less than two thirds of its TTL ago is the loader's licence to
commit: a loader whose renewals stopped (the pool's thread stalled, the broker unreachable)
stops before its next commit instead of committing beside the lease's next holder. While the
pool stops, its thread keeps renewing until every loader has stopped; only then are the
leases released, partition 0 last, and a loader that did not stop in time keeps its lease
until it lapses.

On an engine whose loads are not transactions (``caps.transactions`` false: ClickHouse), two
processes must not load one log at once even on different partitions: a rollup compaction
built while another process appends would drop that part, and two processes could both find
one event id fresh. There the pool is **exclusive**: it takes partition 0's lease first, then
the others in order, and starts loading only once it holds them all; losing any lease stops
every loader and releases the rest. So a second ``gristmill load`` waits as a standby instead
of splitting the log. :meth:`LoaderPool.drain` takes every lease too, or refuses. (The Kafka
log grants every lease, so there it cannot enforce this: the pool warns.)
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping

from gristmill.config import LoaderSettings
from gristmill.load.loader import Loader, LoaderStats, finish_drain
from gristmill.log.base import PartitionedLog
from gristmill.log.broker import partition_group
from gristmill.pack.models import Pack
from gristmill.warehouse.base import AfterInsert, Warehouse

log = logging.getLogger(__name__)

FENCE_SHARE = 2 / 3
"""A loader commits only while its lease was renewed less than this share of the TTL ago:
the last third is the time a commit in flight has to finish before the lease can lapse."""


class SplitLoads(ValueError):
    """``max_partitions`` below the log's partitions on an engine whose loads are not
    transactions: the rest of the log would have to load in another process."""


class LeasesHeld(RuntimeError):
    """An exclusive drain found a partition leased by another process."""


def check_split(warehouse: Warehouse, partitions: int, max_partitions: int | None) -> None:
    """Refuse a ``max_partitions`` that would split a log across processes where the
    engine cannot keep them apart (see the module docstring)."""
    if warehouse.caps.transactions or max_partitions is None or max_partitions >= partitions:
        return
    raise SplitLoads(
        f"{warehouse.name} loads are not transactions, so one process loads every partition "
        f"of a log: --max-partitions {max_partitions} is below the log's {partitions} "
        "partitions (run one `gristmill load` per log; another one waits as a standby)"
    )


class LoaderPool:
    def __init__(
        self,
        log: PartitionedLog,
        warehouse: Warehouse,
        packs: Mapping[str, Pack],
        settings: LoaderSettings,
        *,
        group: str = "loader",
        max_partitions: int | None = None,
        lease_every_s: float | None = None,
        after: Mapping[tuple[str, str], tuple[AfterInsert, ...]] | None = None,
    ) -> None:
        self.log = log
        self.warehouse = warehouse
        self.packs = dict(packs)
        self.settings = settings
        self.group = group
        self.max_partitions = max_partitions or log.partitions
        self.lease_every_s = lease_every_s or max(log.lease_ttl_s / 3, 0.05)
        """Renewal period: a third of the TTL by default, inside the fence's window."""
        self.after = dict(after or {})
        check_split(warehouse, log.partitions, max_partitions)
        self.exclusive = not warehouse.caps.transactions
        if self.exclusive and getattr(log, "grants_every_lease", False):
            _warn_unenforced(log, warehouse)
        self.loaders: dict[int, Loader] = {}
        self._held: set[int] = set()
        """Partitions whose lease this pool holds: those it loads, and (exclusive) those it
        holds while it waits for the rest."""
        self._renewed: dict[int, float] = {}
        """Partition -> monotonic time just before its lease was last taken or renewed."""
        self._tokens: dict[int, object] = {}
        """Partition -> the token of the one loader allowed to commit it: a loader that was
        stopped (or outlived its stop) keeps a token nobody vouches for any more."""
        self._stopping: list[tuple[int, Loader]] = []
        """Loaders asked to stop that had not stopped yet: no other starts on their partition
        until they have."""
        self._closing = threading.Event()
        """Set by :meth:`stop`: renew what is held, take nothing new."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _fresh(self, partition: int) -> bool:
        at = self._renewed.get(partition)
        window = self.log.lease_ttl_s * FENCE_SHARE
        return at is not None and time.monotonic() - at < window

    def _claim(self, partition: int, *, take: bool) -> bool:
        t = time.monotonic()
        ok = (self.log.lease if take else self.log.lease_held)(self.group, partition)
        if ok:
            self._renewed[partition] = t
        return ok

    def _loader(self, partition: int, fence: Callable[[], bool] | None) -> Loader:
        return Loader(
            self.log.view(partition),
            self.warehouse,
            self.packs,
            self.settings,
            group=partition_group(self.group, partition),
            after=self.after,
            fence=fence,
        )

    def balance(self) -> None:
        """Renew held leases (stopping loaders whose lease is gone), take free partitions up
        to ``max_partitions`` (exclusive: all of them, in order), and start a loader for each
        held partition that has none running."""
        with self._lock:
            self._reap()
            lost = [p for p in sorted(self._held) if not self._claim(p, take=False)]
            if lost and self.exclusive:
                log.warning("lease on partition %d lost; stopping every loader", lost[0])
                self._release(lost, lost=True)
                self._release(sorted(self._held, reverse=True))
            for p in lost if not self.exclusive else ():
                log.warning("lease on partition %d lost; stopping its loader", p)
                self._release([p], lost=True)
            if self._stop.is_set() or self._closing.is_set() or (lost and self.exclusive):
                return  # (exclusive: compete again next round, not with what was just freed)
            if self.exclusive:
                self._take_all()
            else:
                self._take_free()
            self._run_held()

    def _take_free(self) -> None:
        for p in range(self.log.partitions):
            if len(self._held) >= self.max_partitions:
                break
            if p not in self._held and self._claim(p, take=True):
                self._held.add(p)

    def _take_all(self) -> None:
        """Partition 0 first, then the others in order; the first one not free ends the
        round (holding what was taken: another exclusive pool cannot hold a later partition
        without partition 0 for longer than it takes to see it lost)."""
        before = len(self._held)
        for p in range(self.log.partitions):
            if p not in self._held:
                if not self._claim(p, take=True):
                    break
                self._held.add(p)
        if self._held and before != len(self._held) < self.log.partitions:
            log.info(
                "holding %d of %d partitions of %s; loading starts when this process holds "
                "them all (%s loads are not transactions)",
                len(self._held),
                self.log.partitions,
                self.log.log_id,
                self.warehouse.name,
            )

    def _run_held(self) -> None:
        """A running loader for every held partition (exclusive: once all are held). One
        that stopped (fenced while renewals stalled) is replaced; one that fails to start is
        tried again next round."""
        if self.exclusive and len(self._held) < self.log.partitions:
            return
        for p in sorted(self._held):
            loader = self.loaders.get(p)
            if loader is not None and loader.alive:
                continue
            if loader is not None:
                log.warning("partition %d's loader had stopped; starting it again", p)
                self._tokens.pop(p, None)
                loader.log.close()
                del self.loaders[p]
            if any(q == p for q, _ in self._stopping):
                continue  # the last one is still on its way out
            try:
                self._start(p)
            except Exception:
                log.exception("starting partition %d's loader failed", p)

    def _start(self, partition: int) -> None:
        token = object()
        loader = self._loader(
            partition, lambda: self._tokens.get(partition) is token and self._fresh(partition)
        )
        self._tokens[partition] = token  # before the loop can reach its first commit
        try:
            loader.start()
        except BaseException:
            self._tokens.pop(partition, None)
            raise
        self.loaders[partition] = loader
        log.info("loading partition %d of %s", partition, self.log.log_id)

    def _release(self, partitions: list[int], join_s: float = 0.2, *, lost: bool = False) -> None:
        """Withdraw the partitions' loaders' licence to commit (their token), ask them to
        stop, and release the leases. A loader still running after ``join_s`` (a read in
        flight) is reaped later: without its token it can no longer commit. A ``lost`` lease
        is released too, quietly, so the log forgets it (NATS caches a lease it took)."""
        for p in partitions:
            self._tokens.pop(p, None)
            self._renewed.pop(p, None)
            self._held.discard(p)
            loader = self.loaders.pop(p, None)
            if loader is not None:
                loader.request_stop()
                loader.stop(join_s)
                if loader.alive:
                    self._stopping.append((p, loader))
                else:
                    loader.log.close()
            try:
                self.log.release(self.group, p)
            except Exception:
                if not lost:
                    log.exception("releasing partition %d failed", p)

    def _reap(self) -> None:
        keep = []
        for p, loader in self._stopping:
            if loader.alive:
                keep.append((p, loader))
            else:
                loader.log.close()
        self._stopping = keep

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.balance()
            except Exception:  # the broker is unreachable: keep trying
                log.exception("partition lease round failed")
            self._stop.wait(self.lease_every_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="loader-pool", daemon=True)
        self._thread.start()

    def drain(self, timeout_s: float = 60.0) -> None:
        """Load every partition until empty, in this thread (tests, CLI). Exclusive: with
        every partition's lease, taken here (unless this pool holds it) and renewed while the
        drain commits; a lease lost meanwhile fails the drain (:class:`LeaseLapsed`)."""
        fence: Callable[[], bool] | None = None
        taken: list[int] = []
        if self.exclusive:
            try:
                with self._lock:
                    for p in range(self.log.partitions):
                        if p not in self._held:
                            if not self._claim(p, take=True):
                                raise LeasesHeld(
                                    f"partition {p} of {self.log.log_id} is leased by another "
                                    f"process, which loads these events ({self.warehouse.name} "
                                    "loads are not transactions: one process at a time)"
                                )
                            taken.append(p)
            except BaseException:
                self._give_back(taken)
                raise
            fence = self._renewing(taken)
        try:
            for p in range(self.log.partitions):
                loader = self.loaders.get(p) or self._loader(p, fence)
                loader.drain(timeout_s)
        finally:
            self._give_back(taken)

    def _renewing(self, taken: list[int]) -> Callable[[], bool]:
        """A fence for a drain's loaders that renews the leases the drain took (at most once
        per renewal period) and says whether all are still held."""
        last = [time.monotonic()]

        def fence() -> bool:
            if time.monotonic() - last[0] >= self.lease_every_s:
                last[0] = time.monotonic()
                if not all(self._claim(p, take=False) for p in taken):
                    return False
            return all(self._fresh(p) for p in taken)

        return fence

    def _give_back(self, taken: list[int]) -> None:
        for p in reversed(taken):
            self._renewed.pop(p, None)
            with contextlib.suppress(Exception):  # it lapses by itself
                self.log.release(self.group, p)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stats(self) -> LoaderStats:
        total = LoaderStats()
        for loader in list(self.loaders.values()):
            st = loader.stats
            total.batches += st.batches
            total.events += st.events
            total.loaded += st.loaded
            total.failures += st.failures
            total.last_error = total.last_error or st.last_error
            total.last_batch_seconds = max(total.last_batch_seconds, st.last_batch_seconds)
            if st.last_wait_seconds >= total.last_wait_seconds:  # the longest, and why it ended
                total.last_wait_seconds = st.last_wait_seconds
                total.last_wait_ended = st.last_wait_ended
            if st.last_commit_at is not None:
                total.last_commit_at = max(total.last_commit_at or 0, st.last_commit_at)
        return total

    def stop(self, timeout_s: float = 30.0, *, drain_s: float = 0.0) -> None:
        """Stop every partition's loader; with ``drain_s`` > 0 they first load what their
        partitions hold, all at once, for up to that long in all (see :meth:`Loader.stop`).
        The pool's thread renews the leases until the loaders have stopped; then the leases
        are released, partition 0 last."""
        self._closing.set()
        with self._lock:
            live = [x for x in self.loaders.values() if x.alive]
        if drain_s > 0 and live:
            finish_drain(self.log.log_id, [(x, x.drain_mark()) for x in live], drain_s)
        for loader in live:
            loader.request_stop()
        deadline = time.monotonic() + timeout_s
        for loader in live:
            loader.stop(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        with self._lock:
            self._release(sorted(self._held | set(self.loaders), reverse=True))


def _warn_unenforced(log_: PartitionedLog, warehouse: Warehouse) -> None:
    log.warning(
        "%s grants every lease, so one loader process per log cannot be enforced: run a "
        "single `gristmill load` against %s (its loads are not transactions)",
        log_.log_id,
        warehouse.name,
    )
