"""Conservation: ``received = loaded + quarantined + duplicates + in_flight``, per source
(and ``suppressed`` beside it: events of erased subjects the collector dropped).

The terms come from different stores, so the check is real: ``received`` is counted by the log
in the append transaction, ``in_flight`` is what the log still holds past the warehouse's
offset, and the other three are sums of the warehouse's load ledger.
"""

from __future__ import annotations

from dataclasses import dataclass

from gristmill.log.base import EventLog, LogSnapshot, PartitionedLog
from gristmill.log.broker import partition_group
from gristmill.warehouse.base import LedgerTotals, Warehouse


@dataclass(frozen=True, slots=True)
class SourceBalance:
    pack: str
    source: str
    received: int
    loaded: int
    quarantined: int
    duplicates: int
    in_flight: int
    suppressed: int = 0
    """Events of erased subjects dropped at collect time: never received, shown so that what
    senders offered (``received + suppressed``) is accounted for too."""

    @property
    def balanced(self) -> bool:
        return self.received == self.loaded + self.quarantined + self.duplicates + self.in_flight


@dataclass(frozen=True, slots=True)
class Conservation:
    sources: tuple[SourceBalance, ...]
    log: LogSnapshot
    warehouse_offset: int

    @property
    def balanced(self) -> bool:
        return all(s.balanced for s in self.sources)

    def only_pack(self, pack: str) -> Conservation:
        """The same snapshot limited to one pack's sources (log depth stays whole-log)."""
        return Conservation(
            tuple(s for s in self.sources if s.pack == pack), self.log, self.warehouse_offset
        )

    def total(self, field: str) -> int:
        return sum(int(getattr(s, field)) for s in self.sources)

    def as_dict(self) -> dict[str, object]:
        fields = ("received", "loaded", "quarantined", "duplicates", "in_flight", "suppressed")
        return {
            "balanced": self.balanced,
            "totals": {f: self.total(f) for f in fields},
            "sources": [
                {
                    "pack": s.pack,
                    "source": s.source,
                    "balanced": s.balanced,
                    **{f: getattr(s, f) for f in fields},
                }
                for s in self.sources
            ],
            "log": {
                "depth_records": self.log.depth_records,
                "depth_events": self.log.depth_events,
                "depth_bytes": self.log.depth_bytes,
                "oldest_pending_received_at": self.log.oldest_pending_received_at,
                "committed_offset": self.log.committed_offset,
                **(
                    {"partitions": [d.as_dict() for d in self.log.partition_depths()]}
                    if self.log.by_partition
                    else {}
                ),
            },
            "warehouse_offset": self.warehouse_offset,
        }


def conservation(log: EventLog, warehouse: Warehouse, group: str = "loader") -> Conservation:
    """A consistent conservation snapshot.

    The warehouse ledger is read first, then the log in one transaction from the ledger's
    offset. If the log already freed records past that offset (a load committed in between),
    the pending count would be short, so the snapshot is retaken.
    """
    if isinstance(log, PartitionedLog):
        return _partitioned(log, warehouse, group)
    for _ in range(20):
        ledger = warehouse.ledger(log.log_id, group)
        snap = log.snapshot(group, after_offset=ledger.offset)
        if snap.committed_offset <= ledger.offset:
            return _combine(ledger, snap)
    raise RuntimeError("could not take a consistent conservation snapshot")


def _combine(ledger: LedgerTotals, snap: LogSnapshot) -> Conservation:
    keys = sorted(
        set(snap.received)
        | set(ledger.loaded)
        | set(ledger.quarantined)
        | set(snap.pending)
        | set(snap.suppressed)
    )
    return Conservation(
        sources=tuple(
            SourceBalance(
                pack=k[0],
                source=k[1],
                received=snap.received.get(k, 0),
                loaded=ledger.loaded.get(k, 0),
                quarantined=ledger.quarantined.get(k, 0),
                duplicates=ledger.duplicates.get(k, 0),
                in_flight=snap.pending.get(k, 0),
                suppressed=snap.suppressed.get(k, 0),
            )
            for k in keys
        ),
        log=snap,
        warehouse_offset=ledger.offset,
    )


def _partitioned(log: PartitionedLog, warehouse: Warehouse, group: str) -> Conservation:
    """A partitioned log: the warehouse holds one offset per partition. The ledger sums are
    consistent with the offsets when no offset moved while they were read (every load moves
    one). The partitioned SQLite log deletes what its loaders committed, which they do only
    after the warehouse did: offsets unmoved after the log was read too mean nothing past
    them was deleted during the read (a broker keeps its records; the check costs it one
    more round of offsets)."""
    groups = [partition_group(group, p) for p in range(log.partitions)]
    for _ in range(50):
        before = [warehouse.stored_offset(log.log_id, g) for g in groups]
        ledger = warehouse.ledger(log.log_id, groups[0])
        after = [warehouse.stored_offset(log.log_id, g) for g in groups]
        if before != after:
            continue
        snap = log.snapshot_partitions(dict(enumerate(after)))
        if [warehouse.stored_offset(log.log_id, g) for g in groups] == after:
            return _combine(ledger, snap)
    raise RuntimeError("could not take a consistent conservation snapshot")
