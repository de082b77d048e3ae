"""The log contract every implementation (SQLite, RabbitMQ, NATS, Kafka) keeps.

* ``append`` returns only when the records are durable; a collector answers 2xx after it.
* ``read`` hands a consumer group the next records in order; ``commit`` is called only after
  the warehouse committed them, so a crash in between re-delivers (the warehouse dedupes).
* Past ``max_bytes`` of unconsumed data ``append`` raises :class:`LogFull` rather than
  dropping or blocking forever; collectors turn it into 503 with ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from gristmill.core.envelope import Frame, Layout


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One frame plus the header fields the log keeps counters by."""

    pack: str
    source: str
    count: int
    """Events (accepted and rejected) inside ``body``; conservation counts these."""
    received_at: int
    body: bytes
    suppressed: int = 0
    """Events of erased subjects the collector dropped from this frame (not in ``count``)."""


@dataclass(frozen=True, slots=True)
class LogEntry:
    offset: int
    record: LogRecord


@dataclass(slots=True)
class LogBatch:
    group: str
    entries: list[LogEntry] = field(default_factory=list)

    @property
    def last_offset(self) -> int:
        return self.entries[-1].offset

    @property
    def events(self) -> int:
        return sum(e.record.count for e in self.entries)


@dataclass(frozen=True, slots=True)
class PartitionDepth:
    """What one partition holds past its loader's committed offset."""

    partition: int
    records: int
    events: int
    bytes: int

    def as_dict(self) -> dict[str, int]:
        return {
            "partition": self.partition,
            "depth_records": self.records,
            "depth_events": self.events,
            "depth_bytes": self.bytes,
        }


@dataclass(frozen=True, slots=True)
class LogSnapshot:
    """A consistent view of the log's counters, taken in one read transaction."""

    received: dict[tuple[str, str], int]
    """(pack, source) -> events ever appended."""
    pending: dict[tuple[str, str], int]
    """(pack, source) -> events after the given offset (not yet in the warehouse)."""
    committed_offset: int
    depth_records: int
    depth_events: int
    depth_bytes: int
    oldest_pending_received_at: int | None
    oldest_pending: dict[str, int]
    """pack -> receive time of its oldest event not yet loaded."""
    suppressed: dict[tuple[str, str], int] = field(default_factory=dict)
    """(pack, source) -> events of erased subjects dropped at collect time."""
    by_partition: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    """partition -> (records, events, bytes) pending, for a partitioned log."""

    def partition_depths(self) -> list[PartitionDepth]:
        return [PartitionDepth(p, *d) for p, d in sorted(self.by_partition.items())]


class LogFull(Exception):
    """The log holds more unconsumed bytes than its cap; retry after ``retry_after_s``."""

    def __init__(
        self, pending_bytes: int, cap: int, retry_after_s: int, request_bytes: int = 0
    ) -> None:
        # The refusal is "pending + this request > cap": say so with the same numbers the
        # 503 carries as fields, rather than "holds N, over its cap" with N under the cap.
        if request_bytes:
            text = (
                f"the log holds {pending_bytes} bytes not yet loaded; this request's "
                f"{request_bytes} bytes would take it to {pending_bytes + request_bytes}, "
                f"over its cap of {cap} bytes; retry in {retry_after_s} s"
            )
        else:
            text = (
                f"the log holds {pending_bytes} bytes not yet loaded, over its cap of {cap} "
                f"bytes; retry in {retry_after_s} s"
            )
        super().__init__(text)
        self.pending_bytes = pending_bytes
        self.cap = cap
        self.retry_after_s = retry_after_s
        self.request_bytes = request_bytes

    def fields(self) -> dict[str, int]:
        """The numbers of the message, as problem+json members."""
        return {
            "log_pending_bytes": self.pending_bytes,
            "log_cap_bytes": self.cap,
            "request_bytes": self.request_bytes,
        }


class EventLog(Protocol):
    name: str
    log_id: str
    """Identity of this log's data; warehouse offsets are stored per log_id."""
    background_commit: bool
    """Whether the pipelined loader may commit offsets from a thread of its own while it reads
    the next batch. The SQLite logs commit on a connection of their own, and their commit
    (deleting what was consumed) is worth overlapping; the broker logs keep commits in the
    loader's thread, beside reads and snapshots on one broker connection."""
    idle_when_empty: bool
    """Whether a read that returns nothing means nothing was appended since: the SQLite logs
    read every committed append at once, so the loader's adaptive wait ends on empty reads
    (the end of a burst); a broker's fetch can come back empty with messages on the way."""

    def append(self, records: Sequence[LogRecord]) -> None: ...

    async def append_async(self, records: Sequence[LogRecord]) -> None: ...

    def read(
        self, group: str, max_events: int, timeout_s: float, after: int | None = None
    ) -> LogBatch: ...

    def commit(self, group: str, offset: int) -> None: ...

    def committed(self, group: str) -> int: ...

    def snapshot(self, group: str, after_offset: int | None = None) -> LogSnapshot: ...

    def check_ready(self) -> list[str]: ...

    def close(self) -> None: ...


@runtime_checkable
class FrameLog(Protocol):
    """A log that takes a collector's frame unencoded and encodes it at its group commit,
    merged with the frames of the same source queued beside it (the embedded log,
    ``log.frames``). The collector appends to any other log an encoded record per request."""

    async def append_frame_async(self, frame: Frame, layout: Layout) -> None: ...


@runtime_checkable
class PartitionedLog(Protocol):
    """A log split into ``partitions`` ordered sequences (the broker logs, the embedded log
    with ``log.partitions`` > 1). Loaders lease a partition and load it through
    ``view(partition)`` under the group ``<group>.p<n>``; offsets are unique across
    partitions, so the warehouse's per-partition offsets and batch ids never collide."""

    name: str
    log_id: str
    partitions: int
    lease_ttl_s: float

    def view(self, partition: int) -> EventLog: ...

    def lease(self, group: str, partition: int) -> bool: ...

    def lease_held(self, group: str, partition: int) -> bool: ...

    def release(self, group: str, partition: int) -> None: ...

    def snapshot_partitions(self, after: dict[int, int]) -> LogSnapshot: ...

    def check_ready(self) -> list[str]: ...


class PartitionView:
    """What every one-partition view of a partitioned log shares: the loader reads and
    commits through it, but appends go to the whole log, which picks the partition."""

    background_commit = False
    idle_when_empty = False

    def append(self, records: Sequence[LogRecord]) -> None:
        raise TypeError("append to the whole log, not a partition view")

    async def append_async(self, records: Sequence[LogRecord]) -> None:
        raise TypeError("append to the whole log, not a partition view")
