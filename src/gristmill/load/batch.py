"""Turn log entries into a :class:`LoadBatch`: Arrow tables per pack table plus quarantine.

The collector already did the per-event work (JSON text of properties, promoted values in
column order), so building a batch is moving values into Arrow columns: frames decode into
tuples and ``zip(*rows)`` transposes them in C. Duplicates of earlier loads are removed by
the warehouse in one anti-join; repeats inside the batch are dropped here.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec
import orjson
import pyarrow as pa

from gristmill.core.envelope import (
    Envelope,
    EnvelopeRow,
    FrameRows,
    Reason,
    decode_frame_rows,
    envelope_to_native,
)
from gristmill.log.base import LogEntry
from gristmill.pack.models import ColumnType, Pack
from gristmill.warehouse.base import AfterInsert, LoadBatch, SourceCounts, TableRows

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
        ("body_hash", pa.string()),
        ("resends", pa.int64()),
        ("last_seen_at", TS),
    ]
)

_ROW_FIELDS: tuple[tuple[str, pa.DataType | None], ...] = (
    ("event_id", pa.string()),
    ("event_type", pa.string()),
    ("schema_version", pa.int64()),
    ("occurred_at", TS),
    ("properties", pa.string()),
    ("promoted", None),
    ("user_id", pa.string()),
    ("anonymous_id", pa.string()),
    ("session_id", pa.string()),
    ("entity_type", pa.string()),
    ("entity_id", pa.string()),
    ("context", pa.string()),
)
"""The fields of :data:`EnvelopeRow`, in order; ``promoted`` expands into the pack columns."""
assert tuple(n for n, _ in _ROW_FIELDS) == Envelope.__struct_fields__


class _TableBuilder:
    """Collects the rows of one pack table, with their frame-level values, then transposes."""

    def __init__(self, pack: Pack, table: str) -> None:
        self.pack = pack
        self.table = table
        self.promoted = [(c.name, ARROW[c.type]) for c in pack.columns(table) if c.promoted]
        slots = {name: i for i, (name, _) in enumerate(self.promoted)}
        self._scope_slots = [(f, slots.get(f)) for f in pack.spec.dedupe.scope]
        self.rows: list[EnvelopeRow] = []
        self.received_at: list[int] = []
        self.source: list[str] = []
        self.scope: list[str] = []

    def add(self, rows: list[EnvelopeRow], frame: FrameRows, scope: str | None) -> None:
        n = len(rows)
        self.rows.extend(rows)
        self.received_at.extend([frame.received_at] * n)
        self.source.extend([frame.source] * n)
        if scope is not None:
            self.scope.extend([scope] * n)
        else:  # the scope includes event_type or a column, so it differs per event
            self.scope.extend([self._row_scope(frame.source, r) for r in rows])

    def _row_scope(self, source: str, row: EnvelopeRow) -> str:
        parts: list[str] = []
        for field, slot in self._scope_slots:
            if field == "source":
                parts.append(source)
            elif field == "event_type":
                parts.append(row[1])
            else:
                v = None if slot is None else row[5][slot]
                parts.append("" if v is None else str(v))
        return SCOPE_SEPARATOR.join(parts)

    def drop_repeats(self) -> int:
        """Keep the first delivery of each (scope, event_id) in this batch; return how many
        repeats were dropped. The set check runs in C; only a batch with repeats pays a pass."""
        keys = list(zip(self.scope, [r[0] for r in self.rows], strict=True))
        if len(set(keys)) == len(keys):
            return 0
        seen: set[tuple[str, str]] = set()
        keep = [not (k in seen or seen.add(k)) for k in keys]  # type: ignore[func-returns-value]
        self.rows = [v for v, k in zip(self.rows, keep, strict=True) if k]
        self.received_at = [v for v, k in zip(self.received_at, keep, strict=True) if k]
        self.source = [v for v, k in zip(self.source, keep, strict=True) if k]
        self.scope = [v for v, k in zip(self.scope, keep, strict=True) if k]
        return len(keys) - len(self.rows)

    def build(self) -> pa.Table:
        cols = list(zip(*self.rows, strict=True))
        arrays: list[pa.Array] = []
        names: list[str] = []
        for (name, t), col in zip(_ROW_FIELDS, cols, strict=True):
            if t is None:
                promoted = list(zip(*col, strict=True))
                for (pname, ptype), pcol in zip(self.promoted, promoted, strict=True):
                    arrays.append(pa.array(pcol, type=ptype))
                    names.append(pname)
            else:
                arrays.append(pa.array(col, type=t))
                names.append(name)
        arrays += [
            pa.array(self.received_at, type=TS),
            pa.array(self.source, type=pa.string()),
            pa.array(self.scope, type=pa.string()),
        ]
        names += ["received_at", "source", "_dedupe_scope"]
        return pa.table(arrays, names=names)


SCOPE_SEPARATOR = "\x1e"


def dedupe_scope(
    pack: Pack, source: str, event_type: str, values: Mapping[str, Any] | None = None
) -> str:
    """The scope an event_id is unique in (``dedupe.scope``), as keys are built from it;
    ``values`` holds the row's columns when the scope names one (a missing value is "")."""
    parts: list[str] = []
    for f in pack.spec.dedupe.scope:
        if f == "source":
            parts.append(source)
        elif f == "event_type":
            parts.append(event_type)
        else:
            v = (values or {}).get(f)
            parts.append("" if v is None else str(v))
    return SCOPE_SEPARATOR.join(parts)


def build_batch(
    entries: Iterable[LogEntry],
    packs: Mapping[str, Pack],
    *,
    log_id: str,
    group: str,
    after: Mapping[tuple[str, str], tuple[AfterInsert, ...]] | None = None,
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
    routes = {
        name: {et: spec.table for et, spec in p.spec.event_types.items()}
        for name, p in packs.items()
    }
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    q: list[tuple[Any, ...]] = []
    for entry in entries:
        rec = entry.record
        c = counts[(rec.pack, rec.source)]
        c[0] += rec.count
        prefix = f"q_{log_id[:15]}_{entry.offset}"
        try:
            frame = decode_frame_rows(rec.body)
        except msgspec.DecodeError as exc:
            # A frame the log holds but cannot decode: keep every byte, count its events.
            c[1] += rec.count
            q.append(
                (
                    f"{prefix}_f",
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
        for r in frame.rejects:
            q.append(
                (
                    f"{prefix}_{r.index}",
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
        c[1] += len(frame.rejects)
        if not frame.events:
            continue
        pack = packs.get(frame.pack)
        route = routes.get(frame.pack, {})
        tables = [route.get(row[1]) for row in frame.events]
        by_table: dict[str | None, list[EnvelopeRow]]
        if len(set(tables)) == 1:
            by_table = {tables[0]: frame.events}
        else:
            by_table = defaultdict(list)
            for table, row in zip(tables, frame.events, strict=True):
                by_table[table].append(row)
        for table, rows in by_table.items():
            if pack is None or table is None:
                # The pack changed (or was removed) between collection and load.
                c[1] += len(rows)
                for i, row in enumerate(rows):
                    q.append(
                        (
                            f"{prefix}_e{i}",
                            frame.pack,
                            frame.source,
                            frame.dialect,
                            Reason.UNKNOWN_EVENT_TYPE.value,
                            f"event type {row[1]!r} is not in pack {frame.pack!r} any more",
                            None,
                            row[0],
                            row[1],
                            frame.received_at,
                            envelope_to_native(Envelope(*row)),
                        )
                    )
                continue
            b = builders.get((frame.pack, table))
            if b is None:
                b = builders[(frame.pack, table)] = _TableBuilder(pack, table)
            scope = (
                dedupe_scope(pack, frame.source, "")
                if set(pack.spec.dedupe.scope) == {"source"}
                else None
            )
            b.add(rows, frame, scope)
    for b in builders.values():
        b.drop_repeats()
    after = after or {}
    batch.tables = [
        TableRows(b.pack, b.table, b.build(), after.get((b.pack.name, b.table), ()))
        for b in builders.values()
    ]
    if q:
        batch.quarantine = quarantine_table(q)
    batch.sources = {k: SourceCounts(v[0], v[1]) for k, v in counts.items()}
    return batch


def quarantine_table(rows: Sequence[tuple[Any, ...]]) -> pa.Table:
    """Quarantine rows (``quarantine_id`` … ``raw``) kept once per (pack, source, body): the
    first sending's row with the number of sendings and the last one's receive time. The
    warehouse adds them to a row it already holds for the same body (``merge_quarantine``)."""
    kept: dict[tuple[str, str, str], list[Any]] = {}
    for r in rows:
        pack, source, received_at, raw = r[1], r[2], r[9], r[10]
        key = (pack, source, hashlib.sha256(raw).hexdigest())
        have = kept.get(key)
        if have is None:
            kept[key] = [*r, key[2], 1, received_at]
        else:
            have[-2] += 1
            have[-1] = max(have[-1], received_at)
    cols = list(zip(*kept.values(), strict=True))
    return pa.table(
        [pa.array(col, type=f.type) for col, f in zip(cols, QUARANTINE_SCHEMA, strict=True)],
        schema=QUARANTINE_SCHEMA,
    )


def quarantine_batch(
    entries: Iterable[LogEntry], *, log_id: str, group: str, reason: Reason, detail: str
) -> LoadBatch:
    """A batch that loads nothing and puts every event of ``entries`` in quarantine, each
    accepted event as the native JSON ``POST /v1/events`` would take again."""
    entries = list(entries)
    batch = LoadBatch(
        batch_id=f"{log_id}:{group}:{entries[0].offset}-{entries[-1].offset}:q",
        log_name=log_id,
        group=group,
        last_offset=entries[-1].offset,
    )
    q: list[tuple[Any, ...]] = []
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for entry in entries:
        rec = entry.record
        c = counts[(rec.pack, rec.source)]
        c[0] += rec.count
        c[1] += rec.count
        prefix = f"q_{log_id[:15]}_{entry.offset}"
        try:
            frame = decode_frame_rows(rec.body)
        except msgspec.DecodeError:
            q.append(
                (
                    f"{prefix}_f",
                    rec.pack,
                    rec.source,
                    "unknown",
                    reason.value,
                    detail,
                    None,
                    None,
                    None,
                    rec.received_at,
                    rec.body,
                )
            )
            continue
        for r in frame.rejects:
            q.append(
                (
                    f"{prefix}_{r.index}",
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
        for i, row in enumerate(frame.events):
            q.append(
                (
                    f"{prefix}_e{i}",
                    frame.pack,
                    frame.source,
                    frame.dialect,
                    reason.value,
                    detail,
                    None,
                    row[0],
                    row[1],
                    frame.received_at,
                    envelope_to_native(Envelope(*row)),
                )
            )
    batch.quarantine = quarantine_table(q)
    batch.sources = {k: SourceCounts(v[0], v[1]) for k, v in counts.items()}
    return batch
