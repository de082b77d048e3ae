"""Loaders over a partitioned log (a broker, or the embedded log split into files): one
:class:`Loader` per partition this process holds the lease of.

Any number of ``gristmill load`` processes may run. Each takes free partitions (up to
``max_partitions``), loads each with the ordinary loader under the group ``<group>.p<n>``, and
renews its leases. A partition whose lease is lost (a broker disconnect) stops loading before
another process can take it over; a killed process's leases lapse and a live one picks the
partitions up. Two loaders never load one partition at once, so the warehouse's per-partition
offset moves forward in one place only.

On an engine whose loads are not transactions (``caps.transactions`` false: ClickHouse), two
processes must not load one log at once even on different partitions: a rollup compaction
built while another process appends would drop that part, and two processes could both find
one event id fresh. There the pool is **exclusive**: it takes partition 0's lease first, then
the others in order, and starts loading only once it holds them all; losing any lease stops
every loader and releases the rest. So a second ``gristmill load`` waits as a standby instead
of splitting the log. (The Kafka log grants every lease, so there it cannot enforce this.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from gristmill.config import LoaderSettings
from gristmill.load.loader import Loader, LoaderStats, finish_drain
from gristmill.log.base import PartitionedLog
from gristmill.log.broker import partition_group
from gristmill.pack.models import Pack
from gristmill.warehouse.base import AfterInsert, Warehouse

log = logging.getLogger(__name__)


class SplitLoads(ValueError):
    """``max_partitions`` below the log's partitions on an engine whose loads are not
    transactions: the rest of the log would have to load in another process."""


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
        lease_every_s: float = 2.0,
        after: Mapping[tuple[str, str], tuple[AfterInsert, ...]] | None = None,
    ) -> None:
        self.log = log
        self.warehouse = warehouse
        self.packs = dict(packs)
        self.settings = settings
        self.group = group
        self.max_partitions = max_partitions or log.partitions
        self.lease_every_s = lease_every_s
        self.after = dict(after or {})
        check_split(warehouse, log.partitions, max_partitions)
        self.exclusive = not warehouse.caps.transactions
        self.loaders: dict[int, Loader] = {}
        self._held: set[int] = set()
        """Partitions whose lease this pool holds: those it loads, and (exclusive) those it
        holds while it waits for the rest."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _loader(self, partition: int) -> Loader:
        return Loader(
            self.log.view(partition),
            self.warehouse,
            self.packs,
            self.settings,
            group=partition_group(self.group, partition),
            after=self.after,
        )

    def balance(self) -> None:
        """Renew held leases (stopping loaders whose lease is gone), then take free
        partitions up to ``max_partitions`` (exclusive: all of them, in order)."""
        with self._lock:
            lost = [p for p in sorted(self._held) if not self.log.lease_held(self.group, p)]
            if lost and self.exclusive:
                log.warning("lease on partition %d lost; stopping every loader", lost[0])
                self._release(lost, give_up=False)
                self._release(sorted(self._held))
            for p in lost if not self.exclusive else ():
                log.warning("lease on partition %d lost; stopping its loader", p)
                self._release([p], give_up=False)
            if self._stop.is_set():
                return
            if self.exclusive:
                self._take_all()
            else:
                self._take_free()

    def _take_free(self) -> None:
        for p in range(self.log.partitions):
            if len(self._held) >= self.max_partitions:
                break
            if p not in self._held and self.log.lease(self.group, p):
                self._held.add(p)
                self._start(p)

    def _take_all(self) -> None:
        """Partition 0 first, then the others in order; the first one not free ends the
        round (holding what was taken: another exclusive pool cannot hold a later partition
        without partition 0 for longer than it takes to see it lost). Loaders start only
        once every lease is held."""
        before = len(self._held)
        for p in range(self.log.partitions):
            if p not in self._held:
                if not self.log.lease(self.group, p):
                    break
                self._held.add(p)
        if len(self._held) < self.log.partitions:
            if self._held and len(self._held) != before:
                log.info(
                    "holding %d of %d partitions of %s; loading starts when this process "
                    "holds them all (%s loads are not transactions)",
                    len(self._held),
                    self.log.partitions,
                    self.log.log_id,
                    self.warehouse.name,
                )
            return
        for p in range(self.log.partitions):
            if p not in self.loaders:
                self._start(p)

    def _start(self, partition: int) -> None:
        loader = self._loader(partition)
        loader.start()
        self.loaders[partition] = loader
        log.info("loading partition %d of %s", partition, self.log.log_id)

    def _release(
        self, partitions: list[int], timeout_s: float = 30.0, *, give_up: bool = True
    ) -> None:
        """Stop the partitions' loaders (a loader stops after its batch in flight), then,
        with ``give_up``, release their leases (a lease already lost has nothing to release;
        one that cannot be released lapses by itself)."""
        for p in partitions:
            loader = self.loaders.pop(p, None)
            if loader is not None:
                loader.stop(timeout_s)
                loader.log.close()
            self._held.discard(p)
            if not give_up:
                continue
            try:
                self.log.release(self.group, p)
            except Exception:
                log.exception("releasing partition %d failed", p)

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
        """Load every partition until empty, in this thread (tests, CLI)."""
        for p in range(self.log.partitions):
            loader = self.loaders.get(p) or self._loader(p)
            loader.drain(timeout_s)

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
        partitions hold, all at once, for up to that long in all (see :meth:`Loader.stop`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        with self._lock:
            if drain_s > 0 and (live := [x for x in self.loaders.values() if x.alive]):
                finish_drain(self.log.log_id, [(x, x.drain_mark()) for x in live], drain_s)
            self._release(sorted(self._held | set(self.loaders)), timeout_s)
