"""What the broker logs (RabbitMQ streams, NATS JetStream, Kafka) share.

A broker log is ``partitions`` ordered sequences. A collector appends each call's records to
one partition (round robin) and returns once the broker confirmed them. A loader holds a
lease on a partition and loads it through a :class:`PartitionLog` — an :class:`EventLog` view
of that one partition — with the ordinary :class:`~gristmill.load.loader.Loader` under the
consumer group ``<group>.p<n>``. The warehouse stores one offset per partition (``log_id``,
``<group>.p<n>``) in the load transaction; that offset, not the broker's, is the truth, so
exactly-once in effect holds per partition exactly as it does for the SQLite log.

Offsets are made unique across partitions (quarantine ids and batch ids are built from them):
a broker that numbers each partition from 0 maps its offset ``k`` of partition ``p`` to
``(k + 1) * partitions + p``. Increasing within a partition, never 0, never shared.

Conservation needs ``received`` and ``pending`` per (pack, source). They come from the broker's
own data: every message carries its pack, source and event count in headers, and a snapshot
scans the partitions (incrementally: what was scanned once is remembered by offset). That is
an independent count of what collectors appended, so a loader that skipped a message would
show as an imbalance. Depth for the 503 cap comes from the broker's positions (end offset
minus the group's committed offset) times the mean record size.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gristmill.log.base import (
    LogBatch,
    LogEntry,
    LogFull,
    LogRecord,
    LogSnapshot,
    PartitionView,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

HEADER_PACK = "gm-pack"
HEADER_SOURCE = "gm-source"
HEADER_COUNT = "gm-count"
HEADER_RECEIVED = "gm-received-at"


def record_headers(r: LogRecord) -> dict[str, str]:
    return {
        HEADER_PACK: r.pack,
        HEADER_SOURCE: r.source,
        HEADER_COUNT: str(r.count),
        HEADER_RECEIVED: str(r.received_at),
    }


def record_from(headers: dict[str, Any], body: bytes) -> LogRecord:
    def text(key: str) -> str:
        v = headers[key]
        return v.decode() if isinstance(v, bytes) else str(v)

    return LogRecord(
        text(HEADER_PACK),
        text(HEADER_SOURCE),
        int(text(HEADER_COUNT)),
        int(text(HEADER_RECEIVED)),
        body,
    )


def partition_group(group: str, partition: int) -> str:
    """The consumer group (and warehouse offset key) of one partition."""
    return f"{group}.p{partition}"


class LoopThread:
    """An asyncio loop in a daemon thread: broker clients are asyncio libraries, while the
    loader is threaded and the collector runs on the server's own loop."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for it; past ``timeout`` the coroutine is
        cancelled (not left running on the loop) and ``TimeoutError`` raised, so a broker
        that stopped answering fails the caller's step instead of hanging it."""
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(self.submit(coro))

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


@dataclass(slots=True)
class _Scanned:
    """What a snapshot scan learned about one partition: totals up to ``upto`` and the
    per-record headers past ``keep_after`` (the pending candidates)."""

    upto: int = 0
    received: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    tail: list[tuple[int, str, str, int, int, int]] = field(default_factory=list)
    """(offset, pack, source, events, bytes, received_at) for offsets after the last
    committed offset seen, oldest first."""


class BrokerLog:
    """The generic half of a broker log. Subclasses implement the ``_``-prefixed coroutines
    (they run on :attr:`io`'s loop); everything else is shared."""

    name = "broker"
    partitioned = True
    background_commit = False
    idle_when_empty = False

    def __init__(
        self,
        *,
        log_id: str,
        partitions: int,
        max_bytes: int,
        retry_after_s: int,
        lease_ttl_s: float = 10.0,
    ) -> None:
        self.log_id = log_id
        self.lease_ttl_s = lease_ttl_s
        self.partitions = partitions
        self.max_bytes = max_bytes
        self.retry_after_s = retry_after_s
        self.io = LoopThread(f"{self.name}-io")
        self._next = 0
        self._next_lock = threading.Lock()
        self._scan_lock = threading.Lock()
        self._scanned = [_Scanned() for _ in range(partitions)]
        self._depth_bytes = 0
        self._refresher: Future[None] | None = None
        self._mean_bytes = 1024.0
        self._closed = False

    # -- subclass primitives (coroutines on the io loop) -----------------------------------
    async def _connect(self) -> None:
        raise NotImplementedError

    async def _publish(self, partition: int, records: Sequence[LogRecord]) -> None:
        raise NotImplementedError

    def _consume(self, partition: int, after: int) -> AsyncIterator[LogEntry]:
        """Records of one partition with offsets past ``after``, until the end: used by scans."""
        raise NotImplementedError

    async def _end(self, partition: int) -> int:
        """The offset of the partition's newest record (0 when empty)."""
        raise NotImplementedError

    async def _committed(self, group: str, partition: int) -> int:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError

    def reader(self, group: str, partition: int) -> PartitionReader:
        raise NotImplementedError

    async def _lease(self, group: str, partition: int) -> bool:
        """Try to become the only loader of ``partition`` for ``group``."""
        raise NotImplementedError

    async def _lease_held(self, group: str, partition: int) -> bool:
        """Whether the lease is still ours (renewing it where it expires)."""
        raise NotImplementedError

    async def _release(self, group: str, partition: int) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self.io.run(self._connect(), timeout=30)
        self._refresher = self.io.submit(self._refresh_depth())

    # -- append -----------------------------------------------------------------------------
    def _partition(self) -> int:
        with self._next_lock:
            p = self._next
            self._next = (p + 1) % self.partitions
        return p

    def _check_cap(self) -> None:
        """503 past the cap. Depth is refreshed once a second by a background task: asking
        the broker on every append would cost round trips per request."""
        if self._depth_bytes > self.max_bytes:
            raise LogFull(self._depth_bytes, self.max_bytes, self.retry_after_s)

    async def _refresh_depth(self) -> None:
        while not self._closed:
            try:
                self._depth_bytes = await self._estimate_depth_bytes()
            except Exception:  # a broker hiccup: keep the last estimate, try again
                log.debug("depth refresh failed", exc_info=True)
            await asyncio.sleep(1.0)

    async def _estimate_depth_bytes(self) -> int:
        records = 0
        for p in range(self.partitions):
            end = await self._end(p)
            done = await self._committed(partition_group(self.cap_group, p), p)
            records += max(0, (end - done) // self._stride)
        return int(records * self._mean_bytes)

    cap_group = "loader"
    """The consumer group whose backlog the cap measures (the warehouse loaders)."""

    @property
    def _stride(self) -> int:
        """Offsets advance by this much per record (``partitions``, except NATS)."""
        return self.partitions

    @property
    def depth_bytes(self) -> int:
        """Bytes not yet committed by the loaders, as last estimated (once a second)."""
        return self._depth_bytes

    def _note_sizes(self, records: Sequence[LogRecord]) -> None:
        size = sum(len(r.body) for r in records) / len(records)
        self._mean_bytes = 0.9 * self._mean_bytes + 0.1 * size

    def append(self, records: Sequence[LogRecord]) -> None:
        if not records:
            return
        self._check_cap()
        self._note_sizes(records)
        self.io.run(self._publish(self._partition(), records))

    async def append_async(self, records: Sequence[LogRecord]) -> None:
        if not records:
            return
        self._check_cap()
        self._note_sizes(records)
        await self.io.run_async(self._publish(self._partition(), records))

    # -- consume (whole-log calls are for one-partition logs; loaders use views) ----------
    def view(self, partition: int) -> PartitionLog:
        return PartitionLog(self, partition)

    def lease(self, group: str, partition: int) -> bool:
        return self.io.run(self._lease(group, partition), timeout=30)

    def lease_held(self, group: str, partition: int) -> bool:
        try:
            return self.io.run(self._lease_held(group, partition), timeout=30)
        except Exception:  # a broker we cannot reach does not vouch for the lease
            log.exception("lease check failed")
            return False

    def release(self, group: str, partition: int) -> None:
        self.io.run(self._release(group, partition), timeout=30)

    def read(
        self, group: str, max_events: int, timeout_s: float, after: int | None = None
    ) -> LogBatch:
        raise TypeError(f"{self.name} log is partitioned: read through view(partition)")

    def commit(self, group: str, offset: int) -> None:
        raise TypeError(f"{self.name} log is partitioned: commit through view(partition)")

    def committed(self, group: str) -> int:
        raise TypeError(f"{self.name} log is partitioned: ask view(partition)")

    # -- observe ----------------------------------------------------------------------------
    def snapshot(self, group: str, after_offset: int | None = None) -> LogSnapshot:
        """Whole-log snapshot after each partition's committed offset (for depth)."""
        after = {
            p: self.io.run(self._committed(partition_group(group, p), p))
            for p in range(self.partitions)
        }
        return self.snapshot_partitions(after)

    def snapshot_partitions(self, after: dict[int, int]) -> LogSnapshot:
        """Counters with ``pending`` measured past ``after[partition]`` (the warehouse's
        offsets). Scans only what earlier snapshots of this process did not see."""
        with self._scan_lock:
            for p in range(self.partitions):
                self.io.run(self._scan(p, after.get(p, 0)))
            return self._assemble(after)

    async def _scan(self, partition: int, after: int) -> None:
        s = self._scanned[partition]
        async for e in self._consume(partition, s.upto):
            r = e.record
            s.received[(r.pack, r.source)] += r.count
            s.tail.append((e.offset, r.pack, r.source, r.count, len(r.body), r.received_at))
            s.upto = e.offset
        # Forget what the loaders committed to the broker: that commit follows the warehouse
        # commit, so no later snapshot can ask for records at or before it.
        floor = min(
            after, await self._committed(partition_group(self.cap_group, partition), partition)
        )
        if s.tail and s.tail[0][0] <= floor:
            s.tail = [t for t in s.tail if t[0] > floor]

    def _assemble(self, after: dict[int, int]) -> LogSnapshot:
        received: dict[tuple[str, str], int] = defaultdict(int)
        pending: dict[tuple[str, str], int] = defaultdict(int)
        oldest: dict[str, int] = {}
        records = events = size = 0
        oldest_any: int | None = None
        depths: dict[int, tuple[int, int, int]] = {}
        for p, s in enumerate(self._scanned):
            d_records = d_events = d_bytes = 0
            for k, n in s.received.items():
                received[k] += n
            for off, pack, source, n, nbytes, rec_at in s.tail:
                if off <= after.get(p, 0):
                    continue
                pending[(pack, source)] += n
                d_records += 1
                d_events += n
                d_bytes += nbytes
                oldest[pack] = min(oldest.get(pack, rec_at), rec_at)
                oldest_any = rec_at if oldest_any is None else min(oldest_any, rec_at)
            depths[p] = (d_records, d_events, d_bytes)
            records += d_records
            events += d_events
            size += d_bytes
        return LogSnapshot(
            received=dict(received),
            pending=dict(pending),
            committed_offset=0,
            depth_records=records,
            depth_events=events,
            depth_bytes=size,
            oldest_pending_received_at=oldest_any,
            oldest_pending=oldest,
            by_partition=depths,
        )

    def check_ready(self) -> list[str]:
        if not self.io.alive:
            return [f"{self.name} log: its io thread is not running"]
        try:
            self.io.run(self._ping(), timeout=5)
        except Exception as exc:
            return [f"{self.name} log is not reachable: {type(exc).__name__}: {exc}"]
        return []

    async def _ping(self) -> None:
        for p in range(self.partitions):
            await self._end(p)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._refresher is not None:
            self._refresher.cancel()
        try:
            self.io.run(self._close(), timeout=10)
        except Exception:  # closing a dead connection must not hide the caller's error
            log.exception("closing the %s log failed", self.name)
        self.io.stop()


class PartitionReader:
    """A group's cursor on one partition, kept open between reads. ``fetch`` returns records
    past ``after``; a reader that was elsewhere (a failed batch re-read from the warehouse's
    offset) repositions itself first."""

    async def fetch(self, after: int, max_events: int, timeout_s: float) -> list[LogEntry]:
        raise NotImplementedError

    async def commit(self, offset: int) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


READ_GRACE_S = 60.0
"""How long past its own timeout a partition read may take (repositioning a consumer, a slow
broker) before it is abandoned and the loader retries from the warehouse's offset."""


class PartitionLog(PartitionView):
    """One partition as an :class:`EventLog`, for the ordinary loader. ``group`` is the
    partition group (``<group>.p<n>``); the warehouse keys its offset by it."""

    def __init__(self, parent: BrokerLog, partition: int) -> None:
        self.parent = parent
        self.partition = partition
        self.name = parent.name
        self.log_id = parent.log_id
        self._readers: dict[str, PartitionReader] = {}

    def _reader(self, group: str) -> PartitionReader:
        r = self._readers.get(group)
        if r is None:
            r = self._readers[group] = self.parent.reader(group, self.partition)
        return r

    def read(
        self, group: str, max_events: int, timeout_s: float, after: int | None = None
    ) -> LogBatch:
        start = self.committed(group) if after is None else after
        entries = self.parent.io.run(
            self._reader(group).fetch(start, max_events, timeout_s),
            timeout=timeout_s + READ_GRACE_S,
        )
        return LogBatch(group, entries)

    def commit(self, group: str, offset: int) -> None:
        self.parent.io.run(self._reader(group).commit(offset), timeout=60)

    def committed(self, group: str) -> int:
        return self.parent.io.run(self.parent._committed(group, self.partition), timeout=30)

    def snapshot(self, group: str, after_offset: int | None = None) -> LogSnapshot:
        after = self.committed(group) if after_offset is None else after_offset
        return self.parent.snapshot_partitions({self.partition: after})

    def check_ready(self) -> list[str]:
        return self.parent.check_ready()

    def close(self) -> None:
        for r in self._readers.values():
            self.parent.io.run(r.close(), timeout=10)
        self._readers.clear()


async def gather_all(aws: Sequence[Awaitable[Any]]) -> None:
    """Await all; raise the first failure only after every one finished (no orphan tasks)."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
