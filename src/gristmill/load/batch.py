"""Turn log entries into a :class:`LoadBatch`: Arrow tables per pack table plus quarantine.

The collector already did the per-event work (JSON text of properties, promoted values in
column order), so building a batch is moving values into Arrow columns. Duplicates — inside
the batch and against earlier loads — are removed by the warehouse in one set operation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
import orjson
import pyarrow as pa

from gristmill.core.envelope import Envelope, Frame, Reason, decode_frame, envelope_to_native
from gristmill.log.base import LogEntry
from gristmill.pack.models import ColumnType, Pack
from gristmill.warehouse.base import LoadBatch, SourceCounts, TableRows

TS = pa.timestamp("us", tz="UTC")
ARROW: dict[ColumnType, pa.DataType] = {
    ColumnType.STRING: pa.string(),
    ColumnType.INT64: pa.int64(),
    ColumnType.FLOAT64: pa.float64(),
    ColumnType.BOOL: pa.bool_(),
    ColumnType.TIMESTAMP: TS,
    ColumnType.DATE: pa.string(),
    ColumnType.JSON: pa.string(),
}
"""Arrow types the loader builds; DATE and JSON travel as text and are cast on insert."""

QUARANTINE_SCHEMA = pa.schema([
    ("quarantine_id", pa.string()),
    ("pack", pa.string()),
    ("source", pa.string()),
    ("dialect", pa.string()),
    ("reason", pa.string()),
    ("detail", pa.string()),
    ("errors", pa.string()),
    ("event_id", pa.string()),
    ("event_type", pa.string()),
    ("received_at", TS),
    ("raw", pa.binary()),
])

_FIXED: tuple[tuple[str, pa.DataType], ...] = (
    ("event_id", pa.string()),
    ("event_type", pa.string()),
    ("schema_version", pa.int64()),
    ("occurred_at", TS),
    ("properties", pa.string()),
    ("user_id", pa.string()),
    ("anonymous_id", pa.string()),
    ("session_id", pa.string()),
    ("entity_type", pa.string()),
    ("entity_id", pa.string()),
    ("context", pa.string()),
)
"""Envelope fields copied as they are, in :class:`Envelope` attribute order."""


class _TableBuilder:
    """Collects envelopes of one pack table, with their frame-level values, then transposes."""

    def __init__(self, pack: Pack, table: str) -> None:
        self.pack = pack
        self.table = table
        self.promoted = [(c.name, ARROW[c.type]) for c in pack.columns(table) if c.promoted]
        self.events: list[Envelope] = []
        self.received_at: list[int] = []
        self.source: list[str] = []
        self.scope: list[str] = []

    def add(self, events: list[Envelope], frame: Frame, scope: str | None) -> None:
        n = len(events)
        self.events.extend(events)
        self.received_at.extend([frame.received_at] * n)
        self.source.extend([frame.source] * n)
        if scope is not None:
            self.scope.extend([scope] * n)
        else:  # scope includes event_type: differs per event
            self.scope.extend([_scope(self.pack, frame.source, e.event_type) for e in events])

    def drop_repeats(self) -> int:
        """Keep the first delivery of each (scope, event_id) in this batch; return how many
        repeats were dropped. The set check runs in C; the rare repeat pays a Python pass."""
        keys = list(zip(self.scope, [e.event_id for e in self.events], strict=True))
        if len(set(keys)) == len(keys):
            return 0
        seen: set[tuple[str, str]] = set()
        keep = [not (k in seen or seen.add(k)) for k in keys]  # type: ignore[func-returns-value]
        self.events = [e for e, k in zip(self.events, keep, strict=True) if k]
        self.received_at = [v for v, k in zip(self.received_at, keep, strict=True) if k]
        self.source = [v for v, k in zip(self.source, keep, strict=True) if k]
        self.scope = [v for v, k in zip(self.scope, keep, strict=True) if k]
        return len(keys) - len(self.events)

    def build(self) -> pa.Table:
        evs = self.events
        arrays = [pa.array([getattr(e, name) for e in evs], type=t) for name, t in _FIXED]
        names = [name for name, _ in _FIXED]
        promoted = list(zip(*[e.promoted for e in evs], strict=True))
        for i, (name, t) in enumerate(self.promoted):
            arrays.append(pa.array(promoted[i], type=t))
            names.append(name)
        arrays += [
            pa.array(self.received_at, type=TS),
            pa.array(self.source, type=pa.string()),
            pa.array(self.scope, type=pa.string()),
        ]
        names += ["received_at", "source", "_dedupe_scope"]
        return pa.table(arrays, names=names)


def _scope(pack: Pack, source: str, event_type: str) -> str:
    return "\x1e".join(source if f == "source" else event_type for f in pack.spec.dedupe.scope)


def build_batch(
    entries: Iterable[LogEntry],
    packs: Mapping[str, Pack],
    *,
    log_id: str,
    group: str,
) -> LoadBatch:
    entries = list(entries)
    last = entries[-1].offset
    batch = LoadBatch(
        batch_id=f"{log_id}:{group}:{entries[0].offset}-{last}",
        log_name=log_id,
        group=group,
        last_offset=last,
    )
    builders: dict[tuple[str, str], _TableBuilder] = {}
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    q: list[tuple[Any, ...]] = []
    for entry in entries:
        rec = entry.record
        c = counts[(rec.pack, rec.source)]
        c[0] += rec.count
        prefix = f"q_{log_id[:15]}_{entry.offset}"
        try:
            frame = decode_frame(rec.body)
        except msgspec.DecodeError as exc:
            # A frame the log holds but cannot decode: keep every byte, count its events.
            c[1] += rec.count
            q.append((f"{prefix}_f", rec.pack, rec.source, "unknown", Reason.UNDECODABLE.value,
                      f"log frame is not decodable: {exc}", None, None, None, rec.received_at,
                      rec.body))
            continue
        for r in frame.rejects:
            q.append((f"{prefix}_{r.index}", frame.pack, frame.source, frame.dialect, r.reason,
                      r.detail, orjson.dumps(r.errors).decode() if r.errors else None,
                      r.event_id, r.event_type, frame.received_at, r.raw))
        c[1] += len(frame.rejects)
        pack = packs.get(frame.pack)
        by_table: dict[str, list[Envelope]] = defaultdict(list)
        for i, ev in enumerate(frame.events):
            spec = pack.spec.event_types.get(ev.event_type) if pack else None
            if pack is None or spec is None:
                # The pack changed (or was removed) between collection and load.
                c[1] += 1
                q.append((f"{prefix}_e{i}", frame.pack, frame.source, frame.dialect,
                          Reason.UNKNOWN_EVENT_TYPE.value,
                          f"event type {ev.event_type!r} is not in pack {frame.pack!r} any more",
                          None, ev.event_id, ev.event_type, frame.received_at,
                          envelope_to_native(ev)))
                continue
            by_table[spec.table].append(ev)
        if pack is None:
            continue
        scope = (None if "event_type" in pack.spec.dedupe.scope
                 else _scope(pack, frame.source, ""))
        for table, evs in by_table.items():
            b = builders.get((frame.pack, table))
            if b is None:
                b = builders[(frame.pack, table)] = _TableBuilder(pack, table)
            b.add(evs, frame, scope)
    for b in builders.values():
        b.drop_repeats()
    batch.tables = [TableRows(b.pack, b.table, b.build()) for b in builders.values()]
    if q:
        cols = list(zip(*q, strict=True))
        batch.quarantine = pa.table(
            [pa.array(col, type=f.type) for col, f in zip(cols, QUARANTINE_SCHEMA, strict=True)],
            schema=QUARANTINE_SCHEMA,
        )
    batch.sources = {k: SourceCounts(v[0], v[1]) for k, v in counts.items()}
    return batch
