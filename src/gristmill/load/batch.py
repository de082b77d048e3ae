"""Turn log entries into a :class:`LoadBatch`: Arrow tables per pack table plus quarantine.

The collector already did the per-event work (JSON text of properties, promoted values in
column order) and wrote its frames by column, most columns as typed chunks in Arrow's layout
(``core.columns``, version 3). Building a batch is keeping each block's chunks, then one
Arrow array per column from all of them (``load.columns``): no Python object per value.
Plain msgpack columns (versions 1 and 2, and values a chunk cannot hold) go through
``pa.array``. Duplicates of earlier loads are removed by the warehouse in one anti-join;
repeats inside the batch are dropped here, in Arrow.
"""

from __future__ import annotations

import hashlib
import struct
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from gristmill.core.columns import Chunk, unpack
from gristmill.core.columns import pack as pack_chunk
from gristmill.core.envelope import (
    Block,
    ColumnFrame,
    Envelope,
    EnvelopeRow,
    FrameRows,
    Reason,
    decode_frame_columns,
    decode_frame_rows,
    envelope_to_native,
    rows_block,
)
from gristmill.load.columns import arrow_column, first_deliveries, repeat
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
    """Collects the column chunks of one pack table, with their frame-level values, block
    by block (no per-event work); :meth:`build` makes one Arrow array per column and keeps
    the first delivery of each (scope, event_id) in the batch."""

    def __init__(self, pack: Pack, table: str) -> None:
        self.pack = pack
        self.table = table
        promoted = [c for c in pack.columns(table) if c.promoted]
        self.promoted = [(c.name, ARROW[c.type]) for c in promoted]
        self.names = tuple(c.name for c in promoted)
        self.cols: list[list[Chunk]] = [[] for _ in _ROW_FIELDS]
        """One chunk per block per :data:`EnvelopeRow` field; the ``promoted`` slot stays
        empty."""
        self.values: list[list[Chunk | None]] = [[] for _ in self.promoted]
        self.lengths: list[int] = []
        self.received_at: list[int | Chunk] = []
        """Per block, the frame's receive time, or the block's own column of them."""
        self.source: list[str] = []
        self.scope: list[str | None] = []
        """Per block, the dedupe scope when it is the same for all its events."""

    def _aligned(self, block: Block) -> Sequence[Chunk | None]:
        """The block's promoted columns in this table's column order: by name, a column the
        block does not hold (added to the pack after the collector framed it) None (NULL)."""
        if block.promoted is None or tuple(block.promoted) == self.names:
            return block.values
        have = dict(zip(block.promoted, block.values, strict=True))
        return [have.get(name) for name in self.names]

    def add(self, block: Block, frame: ColumnFrame | FrameRows, scope: str | None) -> None:
        for i, (dst, src) in enumerate(zip(self.cols, block.columns(), strict=True)):
            if i != _PROMOTED:
                dst.append(src)
        for chunks, chunk in zip(self.values, self._aligned(block), strict=True):
            chunks.append(chunk)
        self.lengths.append(len(block))
        self.received_at.append(
            frame.received_at if block.received_at is None else block.received_at
        )
        self.source.append(frame.source)
        self.scope.append(scope)

    def _scope(self, columns: Mapping[str, pa.Array], source: pa.Array) -> pa.Array:
        """Per event, what :func:`dedupe_scope` makes of it: ``source``, ``event_type`` and
        text columns joined in Arrow, a column of another type through ``str`` as there
        (a column not promoted is "")."""
        if None not in self.scope:
            return repeat(self.scope, self.lengths, pa.string())
        n = sum(self.lengths)
        parts: list[pa.Array] = []
        for field in self.pack.spec.dedupe.scope:
            if field == "source":
                parts.append(source)
            elif field == "event_type":
                parts.append(columns["event_type"])
            elif field not in self.names:
                parts.append(pa.array([""] * n, pa.string()))
            elif columns[field].type == pa.string():
                parts.append(pc.fill_null(columns[field], ""))
            else:
                chunks = self.values[self.names.index(field)]
                text = [
                    "" if v is None else str(v)
                    for chunk, k in zip(chunks, self.lengths, strict=True)
                    for v in ([None] * k if chunk is None else unpack(chunk, k))
                ]
                parts.append(pa.array(text, pa.string()))
        return pc.binary_join_element_wise(*parts, SCOPE_SEPARATOR)

    def _received(self) -> pa.Array:
        times = self.received_at
        if all(type(t) is int for t in times):
            return repeat(times, self.lengths, TS)
        chunks = [
            pack_chunk([t] * k) if type(t) is int else t
            for t, k in zip(times, self.lengths, strict=True)
        ]
        return arrow_column(chunks, self.lengths, TS)  # type: ignore[arg-type]

    def build(self) -> pa.Table:
        lengths = self.lengths
        built: dict[str, pa.Array] = {}
        for (name, t), chunks in zip(_ROW_FIELDS, self.cols, strict=True):
            if t is None:
                for (pname, ptype), pchunks in zip(self.promoted, self.values, strict=True):
                    built[pname] = arrow_column(pchunks, lengths, ptype)
            else:
                built[name] = arrow_column(chunks, lengths, t)
        built["received_at"] = self._received()
        built["source"] = source = repeat(self.source, lengths, pa.string())
        built["_dedupe_scope"] = self._scope(built, source)
        return first_deliveries(pa.table(built))


_PROMOTED = 5
"""Where ``promoted`` sits in :data:`EnvelopeRow` (values travel apart, one list per column)."""


def _blocks(frame: ColumnFrame | FrameRows, route: Mapping[str, str]) -> list[Block]:
    """A frame's column blocks; a version 1 frame's rows are cut into blocks as the pack
    routes them now (rows of one table have promoted tuples of one length)."""
    if not isinstance(frame, FrameRows):
        return frame.blocks
    rows = frame.events
    if not rows:
        return []
    tables = [route.get(row[1]) for row in rows]
    if tables.count(tables[0]) == len(tables) and tables[0] is not None:
        return [rows_block(rows)]
    groups: dict[tuple[str | None, int], list[EnvelopeRow]] = defaultdict(list)
    for table, row in zip(tables, rows, strict=True):
        groups[(table, len(row[5]))].append(row)
    return [rows_block(g) for g in groups.values()]


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
    """The batch of ``entries``. Frames' column chunks are checked a batch at a time as
    they are built; when one does not hold what it says (or cannot even be routed), the
    batch is built again with each frame checked as it is decoded, so a damaged frame is
    quarantined whole with its bytes and the rest load. An error that is not a damaged
    chunk (a value the table's type refuses) fails the second build too, and the loader
    isolates the entry as before."""
    entries = list(entries)
    try:
        return _build(entries, packs, log_id=log_id, group=group, after=after, checked=False)
    except (ValueError, IndexError, struct.error):  # ChunkError, or a header past its end
        return _build(entries, packs, log_id=log_id, group=group, after=after, checked=True)


def _build(
    entries: Sequence[LogEntry],
    packs: Mapping[str, Pack],
    *,
    log_id: str,
    group: str,
    after: Mapping[tuple[str, str], tuple[AfterInsert, ...]] | None,
    checked: bool,
) -> LoadBatch:
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
            frame = decode_frame_columns(rec.body, check=checked)
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
        q += _rejects(frame, prefix)
        c[1] += len(frame.rejects)
        pack = packs.get(frame.pack)
        route = routes.get(frame.pack, {})
        gone = 0
        for block in _blocks(frame, route):
            targets = {et: route.get(et) for et in block.event_types()}
            by_table: dict[str | None, Block]
            if len(set(targets.values())) == 1:
                by_table = {next(iter(targets.values())): block}
            else:  # the pack's routing differs from the collector's: split by event type
                index: dict[str | None, list[int]] = defaultdict(list)
                for i, et in enumerate(block.column("event_type")):
                    index[targets[et]].append(i)
                by_table = {t: block.take(ix) for t, ix in index.items()}
            for table, part in by_table.items():
                if pack is None or table is None:
                    # The pack changed (or was removed) between collection and load.
                    c[1] += len(part)
                    q += _gone(part, frame, prefix, gone)
                    gone += len(part)
                    continue
                tb = builders.get((frame.pack, table))
                if tb is None:
                    tb = builders[(frame.pack, table)] = _TableBuilder(pack, table)
                scope = (
                    dedupe_scope(pack, frame.source, "")
                    if set(pack.spec.dedupe.scope) == {"source"}
                    else None
                )
                tb.add(part, frame, scope)
    after = after or {}
    # Tables in one order for every batch, not in order of first appearance. On PostgreSQL
    # a load takes a table's dedupe key locks, then its rollups' advisory locks, table after
    # table; two loaders going through the tables in opposite orders could each wait for a
    # key or a lock the other holds (a deadlock, seen with an event re-sent to two partitions).
    batch.tables = [
        TableRows(b.pack, b.table, b.build(), after.get(key, ()))
        for key, b in sorted(builders.items())
    ]
    if q:
        batch.quarantine = quarantine_table(q)
    batch.sources = {k: SourceCounts(v[0], v[1]) for k, v in counts.items()}
    return batch


def _rejects(frame: ColumnFrame | FrameRows, prefix: str) -> list[tuple[Any, ...]]:
    """Quarantine rows for the items the collector rejected, with their original bytes."""
    return [
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
        for r in frame.rejects
    ]


def _gone(block: Block, frame: ColumnFrame | FrameRows, prefix: str, start: int) -> list[Any]:
    """Quarantine rows for events whose type the pack no longer routes, each as the native
    JSON ``POST /v1/events`` would take again (numbered from ``start`` within the frame)."""
    return [
        (
            f"{prefix}_e{start + i}",
            frame.pack,
            frame.source,
            frame.dialect,
            Reason.UNKNOWN_EVENT_TYPE.value,
            f"event type {row[1]!r} is not in pack {frame.pack!r} any more",
            None,
            row[0],
            row[1],
            received_at,
            envelope_to_native(Envelope(*row)),
        )
        for i, (row, received_at) in enumerate(
            zip(block.rows(), block.received(frame.received_at), strict=True)
        )
    ]


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
        q += _rejects(frame, prefix)
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
