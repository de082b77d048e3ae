"""Turn log entries into a :class:`LoadBatch`: Arrow tables per pack table plus quarantine.

Duplicates inside one batch are dropped here (first delivery wins) so the warehouse only has
to dedupe against what earlier batches loaded.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec
import orjson
import pyarrow as pa

from gristmill.core.clock import parse_rfc3339_us
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

QUARANTINE_SCHEMA = pa.schema(
    [
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
    ]
)


def _coerce(value: Any, ctype: ColumnType) -> Any:
    """Promoted values were schema-checked; this only bridges JSON's loose numbers to columns."""
    if value is None:
        return None
    if ctype is ColumnType.INT64:
        return int(value)
    if ctype is ColumnType.FLOAT64:
        return float(value)
    if ctype is ColumnType.JSON:
        return orjson.dumps(value).decode()
    if ctype is ColumnType.TIMESTAMP and isinstance(value, str):
        return parse_rfc3339_us(value)
    return value


class _TableBuilder:
    def __init__(self, pack: Pack, table: str) -> None:
        self.pack = pack
        self.table = table
        self.promoted = [(c.name, c.type) for c in pack.columns(table) if c.promoted]
        self.rows: list[tuple[Any, ...]] = []

    def add(self, ev: Envelope, frame: Frame, scope: str) -> None:
        props = ev.properties
        self.rows.append(
            (
                ev.event_id,
                ev.event_type,
                ev.schema_version,
                ev.occurred_at,
                frame.received_at,
                frame.source,
                ev.user_id,
                ev.anonymous_id,
                ev.session_id,
                ev.entity_type,
                ev.entity_id,
                orjson.dumps(props).decode(),
                None if ev.context is None else orjson.dumps(ev.context).decode(),
                *[_coerce(props.get(name), ctype) for name, ctype in self.promoted],
                scope,
            )
        )

    def build(self) -> pa.Table:
        names = [
            "event_id",
            "event_type",
            "schema_version",
            "occurred_at",
            "received_at",
            "source",
            "user_id",
            "anonymous_id",
            "session_id",
            "entity_type",
            "entity_id",
            "properties",
            "context",
            *[n for n, _ in self.promoted],
            "_dedupe_scope",
        ]
        types = [
            pa.string(),
            pa.string(),
            pa.int64(),
            TS,
            TS,
            pa.string(),
            pa.string(),
            pa.string(),
            pa.string(),
            pa.string(),
            pa.string(),
            pa.string(),
            pa.string(),
            *[ARROW[t] for _, t in self.promoted],
            pa.string(),
        ]
        cols: list[Sequence[Any]] = (
            list(zip(*self.rows, strict=True)) if self.rows else [[] for _ in names]
        )
        return pa.table(
            [pa.array(c, type=t) for c, t in zip(cols, types, strict=True)], names=names
        )


def _scope(pack: Pack, frame: Frame, ev: Envelope) -> str:
    parts = []
    for f in pack.spec.dedupe.scope:
        parts.append(frame.source if f == "source" else ev.event_type)
    return "\x1e".join(parts)


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
    seen: set[tuple[str, str, str]] = set()
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    q: list[tuple[Any, ...]] = []
    for entry in entries:
        rec = entry.record
        key = (rec.pack, rec.source)
        c = counts[key]
        c[0] += rec.count
        try:
            frame = decode_frame(rec.body)
        except msgspec.DecodeError as exc:
            # A frame the log holds but cannot decode: keep every byte, count its events.
            c[1] += rec.count
            q.append(
                (
                    f"q_{log_id[:8]}_{entry.offset}_f",
                    rec.pack,
                    rec.source,
                    "unknown",
                    Reason.UNDECODABLE.value,
                    f"log frame is not decodable: {exc}",
                    None,
                    None,
                    None,
                    rec.received_at,
                    rec.body,
                )
            )
            continue
        pack = packs.get(frame.pack)
        for r in frame.rejects:
            c[1] += 1
            q.append(
                (
                    f"q_{log_id[:8]}_{entry.offset}_{r.index}",
                    frame.pack,
                    frame.source,
                    frame.dialect,
                    r.reason,
                    r.detail,
                    orjson.dumps(r.errors).decode() if r.errors else None,
                    r.event_id,
                    r.event_type,
                    frame.received_at,
                    r.raw,
                )
            )
        for i, ev in enumerate(frame.events):
            spec = pack.spec.event_types.get(ev.event_type) if pack else None
            if pack is None or spec is None:
                # The pack changed (or was removed) between collection and load.
                c[1] += 1
                q.append(
                    (
                        f"q_{log_id[:8]}_{entry.offset}_e{i}",
                        frame.pack,
                        frame.source,
                        frame.dialect,
                        Reason.UNKNOWN_EVENT_TYPE.value,
                        f"event type {ev.event_type!r} is not in pack {frame.pack!r} any more",
                        None,
                        ev.event_id,
                        ev.event_type,
                        frame.received_at,
                        envelope_to_native(ev),
                    )
                )
                continue
            scope = _scope(pack, frame, ev)
            dk = (frame.pack, scope, ev.event_id)
            if dk in seen:
                c[2] += 1
                continue
            seen.add(dk)
            tkey = (frame.pack, spec.table)
            b = builders.get(tkey)
            if b is None:
                b = builders[tkey] = _TableBuilder(pack, spec.table)
            b.add(ev, frame, scope)
    batch.tables = [TableRows(b.pack, b.table, b.build()) for b in builders.values()]
    if q:
        cols = list(zip(*q, strict=True))
        batch.quarantine = pa.table(
            [pa.array(col, type=f.type) for col, f in zip(cols, QUARANTINE_SCHEMA, strict=True)],
            schema=QUARANTINE_SCHEMA,
        )
    batch.sources = {k: SourceCounts(v[0], v[1], v[2]) for k, v in counts.items()}
    return batch
