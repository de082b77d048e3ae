"""Loaders over a partitioned log (a broker, or the embedded log split into files): one
:class:`Loader` per partition this process holds the lease of.

Any number of ``gristmill load`` processes may run. Each takes free partitions (up to
``max_partitions``), loads each with the ordinary loader under the group ``<group>.p<n>``, and
renews its leases. A partition whose lease is lost (a broker disconnect) stops loading before
another process can take it over; a killed process's leases lapse and a live one picks the
partitions up. Two loaders never load one partition at once, so the warehouse's per-partition
offset moves forward in one place only.
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
        self.loaders: dict[int, Loader] = {}
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
        partitions up to ``max_partitions``."""
        with self._lock:
            for p, loader in list(self.loaders.items()):
                if not self.log.lease_held(self.group, p):
                    log.warning("lease on partition %d lost; stopping its loader", p)
                    loader.stop()
                    loader.log.close()
                    del self.loaders[p]
            for p in range(self.log.partitions):
                if len(self.loaders) >= self.max_partitions or self._stop.is_set():
                    break
                if p in self.loaders or not self.log.lease(self.group, p):
                    continue
                loader = self._loader(p)
                loader.start()
                self.loaders[p] = loader
                log.info("loading partition %d of %s", p, self.log.log_id)

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
            for p, loader in self.loaders.items():
                loader.stop(timeout_s)
                loader.log.close()
                try:
                    self.log.release(self.group, p)
                except Exception:  # the lease lapses by itself
                    log.exception("releasing partition %d failed", p)
            self.loaders.clear()
