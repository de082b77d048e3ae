"""The canonical event envelope and the frame that carries envelopes through the log.

A *frame* is what one collector request (or one source read) hands to the log: the accepted
envelopes plus the rejected items with their original bytes. Keeping rejects in the same
durable frame is what makes ``received = loaded + quarantined + duplicates + in_flight`` exact:
one append, one counter update, one place the loader routes from.

Frames are msgpack via msgspec. In memory a :class:`Frame` holds :class:`Envelope` structs;
on the wire (version 3, :class:`ColumnFrame`) its envelopes are written **by column**, one
:class:`Block` per table the collector routed them to, and each column as a typed chunk in
Arrow's memory layout where its values allow (``core.columns``), so the loader concatenates
bytes per column instead of turning a Python object per value back into Arrow.

Why chunks and not an Arrow IPC record batch per frame (both measured in one run,
BENCHMARKS.md "Column frames"): the loader's build is about as cheap either way (1.08M rows/s
for chunks, 1.29M for IPC decode and concat alone), but IPC costs the collector ~3x as much
per request (``pa.array`` per column on 100 values, IPC framing). Chunks cost the collector
a ``len`` per value and two copies per text column over version 2's msgpack arrays; that
work is spread over collector processes (``serve --workers``) and taken off the one loader.
Identifiers stay plain UTF-8 inside the chunks, so erasure's byte scan of the log files
finds subjects as it did in msgpack strings.

A frame the embedded log merged from several requests (:func:`encode_frames`) carries each
event's receive time in its blocks' trailing ``received_at`` column; without it, every event
was received at the frame's ``received_at``.

Versions 1 (row frames: every envelope a 12-element array) and 2 (column blocks of plain
msgpack arrays) are what logs written before hold; :func:`decode_frame`,
:func:`decode_frame_rows` and :func:`decode_frame_columns` read all three, told apart by the
first bytes (a version 1 frame is a 7-element array starting with a string, versions 2 and
3 an 8-element one starting with their number).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from itertools import compress
from typing import Any

import msgspec

from gristmill.core import columns
from gristmill.core.columns import Chunk

ENVELOPE_COLUMNS: tuple[str, ...] = (
    "event_id",
    "event_type",
    "schema_version",
    "occurred_at",
    "received_at",
    "loaded_at",
    "source",
    "user_id",
    "anonymous_id",
    "session_id",
    "entity_type",
    "entity_id",
    "properties",
    "context",
)
"""Columns every pack table carries, in this order, before the columns it promotes."""


class Reason(StrEnum):
    """Why an event is in quarantine. A closed list: dashboards and alerts can count on it."""

    UNDECODABLE = "undecodable"
    """Not JSON, not an object, bad compression or bad text encoding."""
    INVALID_ENVELOPE = "invalid_envelope"
    """A required envelope field is missing or has the wrong type or format."""
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    SCHEMA_VIOLATION = "schema_violation"
    OVERSIZE = "oversize"
    """The event alone is over the per-event limit."""
    UNMAPPED = "unmapped"
    """A dialect event (Segment track name, Snowplow schema, ...) the pack does not map."""
    UNLOADABLE = "unloadable"
    """Accepted, but the warehouse refused its rows; set aside so later events still load."""


class Envelope(msgspec.Struct, array_like=True, gc=False):
    """An accepted event after normalization, as it travels through the log.

    The collector does the per-event work once: ``properties`` and ``context`` are already
    JSON text, and ``promoted`` holds the values of the table's promoted columns in the
    pack's column order, so the loader only moves values into Arrow columns.
    Times are integer microseconds since the epoch, UTC. ``gc=False`` and a tuple for
    ``promoted``: a batch holds hundreds of thousands of these, and the cyclic garbage
    collector re-scanning them tripled the loader's time; they hold no reference cycles.
    """

    event_id: str
    event_type: str
    schema_version: int
    occurred_at: int
    properties: bytes
    promoted: tuple[Any, ...]
    user_id: str | None = None
    anonymous_id: str | None = None
    session_id: str | None = None
    entity_type: str | None = None
    entity_id: str | None = None
    context: bytes | None = None


class Reject(msgspec.Struct, array_like=True, omit_defaults=True):
    """A rejected item: the reason, a human detail, and the original bytes, untouched."""

    index: int
    reason: str
    detail: str
    raw: bytes
    event_id: str | None = None
    event_type: str | None = None
    errors: list[dict[str, Any]] | None = None


class Frame(msgspec.Struct, array_like=True):
    """What one append carries: envelopes and rejects from one source, received together."""

    pack: str
    source: str
    received_at: int
    events: list[Envelope]
    rejects: list[Reject]
    dialect: str = "native"
    suppressed: int = 0
    """Items dropped because their subject was erased (not in ``count``: the log counts
    them apart, and conservation shows them as ``suppressed``)."""

    @property
    def count(self) -> int:
        return len(self.events) + len(self.rejects)


def envelope_to_native(ev: Envelope) -> bytes:
    """The native-dialect JSON of an envelope: what ``POST /v1/events`` would accept again."""
    from gristmill.core.clock import iso

    doc: dict[str, Any] = {
        "event_id": ev.event_id,
        "event_type": ev.event_type,
        "schema_version": ev.schema_version,
        "occurred_at": iso(ev.occurred_at),
        "properties": msgspec.Raw(ev.properties),
    }
    for key in ("user_id", "anonymous_id", "session_id"):
        value = getattr(ev, key)
        if value is not None:
            doc[key] = value
    if ev.context is not None:
        doc["context"] = msgspec.Raw(ev.context)
    return msgspec.json.encode(doc)


EnvelopeRow = tuple[
    str,
    str,
    int,
    int,
    bytes,
    tuple[Any, ...],
    str | None,
    str | None,
    str | None,
    str | None,
    str | None,
    bytes | None,
]
"""An :class:`Envelope` as the loader reads it: a plain tuple, so a batch is transposed into
columns by ``zip(*rows)`` in C instead of an attribute lookup per field per event. Every
field is always encoded (no ``omit_defaults``), so every row has all twelve."""


class FrameRows(msgspec.Struct, array_like=True):
    """:class:`Frame` as the loader decodes it (same wire format, rows as tuples)."""

    pack: str
    source: str
    received_at: int
    events: list[EnvelopeRow]
    rejects: list[Reject]
    dialect: str = "native"
    suppressed: int = 0


FRAME_VERSION = 3
"""The wire version :func:`encode_frame` writes: 3, column blocks with typed chunks
(``core.columns``). The loader reads 1 (row frames) and 2 (column blocks of plain arrays),
which logs written before hold, too."""
COLUMN_VERSIONS = frozenset({2, FRAME_VERSION})

Layout = Mapping[str, tuple[str, tuple[str, ...]]]
"""Per event type, the table the collector routes it to and that table's promoted columns in
``Envelope.promoted`` order: what :func:`encode_frame` needs to write column blocks."""


class Block(msgspec.Struct, array_like=True, gc=False):
    """The accepted events of one frame that go to one table, one column chunk per field.

    Each column is a :data:`~gristmill.core.columns.Chunk`: from version 3 a typed chunk
    (``bytes``) where its values allow one, else (and in version 2) a plain sequence.
    ``promoted`` names ``values`` (so a load after a pack added a column can fill NULLs by
    name); ``None`` only for a block made from a version 1 frame, whose values are in the
    table's current column order. ``table`` is the collector's routing, a hint: the loader
    routes by ``event_type`` with the pack it has.
    """

    table: str
    promoted: Sequence[str] | None
    event_id: Sequence[str] | bytes
    event_type: Sequence[str] | bytes
    schema_version: Sequence[int] | bytes
    occurred_at: Sequence[int] | bytes
    properties: Sequence[bytes] | bytes
    values: Sequence[Sequence[Any] | bytes]
    user_id: Sequence[str | None] | bytes
    anonymous_id: Sequence[str | None] | bytes
    session_id: Sequence[str | None] | bytes
    entity_type: Sequence[str | None] | bytes
    entity_id: Sequence[str | None] | bytes
    context: Sequence[bytes | None] | bytes
    received_at: Sequence[int] | bytes | None = None
    """Per event, when the collector received it (µs, an int64 chunk), in a frame that
    carries several requests (:func:`encode_frames`: the embedded log's group commit);
    ``None``: every event at the frame's ``received_at``. Added without a version bump: a
    reader that predates it ignores the trailing field and takes the frame's time, the
    earliest of its requests (msgspec drops trailing array elements a struct lacks)."""

    def __len__(self) -> int:
        return columns.count(self.event_id)

    def columns(self) -> tuple[Chunk, ...]:
        """The columns in :data:`EnvelopeRow` order (``values`` in the ``promoted`` slot)."""
        return tuple(getattr(self, f) for f in _BLOCK_COLUMNS)

    def event_types(self) -> set[str]:
        """The block's distinct event types (from a ``k`` chunk's header: no value read)."""
        col = self.event_type
        if isinstance(col, bytes) and col[0] == columns.KINDS:
            return set(columns.kinds(col))
        return set(columns.unpack(col, len(self)))

    def column(self, name: str) -> list[Any]:
        """One envelope column's values as Python objects."""
        return columns.unpack(getattr(self, name), len(self))

    def value_lists(self) -> list[list[Any]]:
        """The promoted columns' values as Python objects, in ``promoted`` order."""
        n = len(self)
        return [columns.unpack(v, n) for v in self.values]

    def check(self) -> None:
        """Raise ValueError unless every column holds this block's number of values."""
        n = len(self)
        for i, col in enumerate(self.columns()):
            if i != 5:
                columns.check(col, n)
        for col in self.values:
            columns.check(col, n)
        if self.received_at is not None:
            columns.check(self.received_at, n)

    def rows(self) -> list[EnvelopeRow]:
        """The block as envelope rows (``promoted`` in block order): for the rare paths that
        need an event back whole (quarantine of events the pack no longer routes)."""
        n = len(self)
        cols: list[Sequence[Any]] = [columns.unpack(c, n) for c in self.columns()]
        values = self.value_lists()
        cols[5] = list(zip(*values, strict=True)) if values else [()] * n
        return list(zip(*cols, strict=True))

    def take(self, index: Sequence[int]) -> Block:
        """The rows at ``index``, in that order (a block whose event types now go to
        several tables is split by them), as plain sequences."""
        n = len(self)

        def pick(col: Chunk) -> list[Any]:
            values = columns.unpack(col, n)
            return [values[i] for i in index]

        cols = [[] if i == 5 else pick(c) for i, c in enumerate(self.columns())]
        received = None if self.received_at is None else pick(self.received_at)
        return _block(self.table, self.promoted, cols, [pick(v) for v in self.values], received)

    def received(self, default: int) -> list[int]:
        """Each event's receive time: its own in a merged frame, else ``default`` (the
        frame's)."""
        if self.received_at is None:
            return [default] * len(self)
        return columns.unpack(self.received_at, len(self))


_BLOCK_COLUMNS: tuple[str, ...] = Block.__struct_fields__[2:14]
"""The :data:`EnvelopeRow` fields, in order (``received_at`` is not one)."""


def _block(
    table: str,
    promoted: Sequence[str] | None,
    cols: Sequence[Any],
    values: Sequence[Any],
    received: Chunk | None = None,
) -> Block:
    """A block from columns in :data:`EnvelopeRow` order (``cols[5]``, the promoted tuples,
    is not used: ``values`` holds them by column)."""
    return Block(
        table,
        promoted,
        cols[0],
        cols[1],
        cols[2],
        cols[3],
        cols[4],
        values,
        cols[6],
        cols[7],
        cols[8],
        cols[9],
        cols[10],
        cols[11],
        received,
    )


def rows_block(rows: Sequence[EnvelopeRow]) -> Block:
    """Envelope rows (a version 1 frame's) as one block with positional ``values``."""
    cols = list(zip(*rows, strict=True))
    return _block("", None, cols, list(zip(*cols[5], strict=True)))


class ColumnFrame(msgspec.Struct, array_like=True, gc=False):
    """A frame as versions 2 and 3 write it: :class:`Frame` with its envelopes in column
    blocks (version 3: of typed chunks)."""

    version: int
    pack: str
    source: str
    received_at: int
    blocks: list[Block]
    rejects: list[Reject]
    dialect: str = "native"
    suppressed: int = 0

    @property
    def accepted(self) -> int:
        return sum(len(b) for b in self.blocks)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Frame)
_rows_decoder = msgspec.msgpack.Decoder(FrameRows)
_columns_decoder = msgspec.msgpack.Decoder(ColumnFrame)
_astuple = msgspec.structs.astuple
_V1_HEAD = b"\x97"
"""A version 1 frame: msgpack array of Frame's 7 fields (none omitted)."""


def encode_frame(
    frame: Frame,
    layout: Layout,
    *,
    version: int = FRAME_VERSION,
    received: Sequence[int] | None = None,
) -> bytes:
    """The frame as ``version`` (3; 2 for tests and the frames bench), its events in one
    column block per table ``layout`` routes them to. A frame with an event type ``layout``
    does not know (none the collector accepts) is written as version 1 rather than lose its
    promoted values. ``received``: each event's receive time, written as the blocks'
    ``received_at`` (a merged frame, :func:`encode_frames`)."""
    if version not in COLUMN_VERSIONS:
        raise ValueError(f"frame version {version} is not one this writes")
    events = frame.events
    blocks: list[Block] = []
    if events:
        types = [ev.event_type for ev in events]
        kinds = dict.fromkeys(types)  # in order of first appearance: the same bytes every time
        if not kinds.keys() <= layout.keys():
            return encode_row_frame(frame)
        rows = list(map(_astuple, events))
        if received is not None:  # the receive time travels as a 13th field of each row
            rows = [(*row, t) for row, t in zip(rows, received, strict=True)]
        targets = list(dict.fromkeys(layout[k] for k in kinds))
        if len(targets) == 1:
            groups = [(targets[0], rows)]
        else:  # one pass per table (a request holds a few): a comprehension and a compress
            groups = []
            for target in targets:
                mine = {k for k in kinds if layout[k] == target}
                groups.append((target, list(compress(rows, [t in mine for t in types]))))
        coded = version == FRAME_VERSION  # event_type (1) as a kinds chunk; 5: values
        pack = columns.pack if coded else _plain
        for (table, names), group in groups:
            raw = list(zip(*group, strict=True))
            cols = [() if i == 5 or (coded and i == 1) else pack(c) for i, c in enumerate(raw[:12])]
            if coded:
                cols[1] = columns.pack_kinds(raw[1], list(dict.fromkeys(raw[1])))
            values = [pack(v) for v in zip(*raw[5], strict=True)]
            times = pack(raw[12]) if received is not None else None
            blocks.append(_block(table, names, cols, values, times))
    return _encoder.encode(
        ColumnFrame(
            version,
            frame.pack,
            frame.source,
            frame.received_at,
            blocks,
            frame.rejects,
            frame.dialect,
            frame.suppressed,
        )
    )


def encode_frames(frames: Sequence[Frame], layout: Layout) -> bytes:
    """Frames of one pack, source and dialect, without rejects (a reject's ``index`` is its
    place in its own request), as one frame: their events in order, each block carrying
    every event's receive time, the frame's ``received_at`` the earliest. The embedded log
    writes the single-event requests of one group commit so: the per-frame costs (a chunk
    per column, a record, a decode at load) are paid once for all of them."""
    if len(frames) == 1:
        return encode_frame(frames[0], layout)
    first = frames[0]
    for f in frames:
        if f.rejects or (f.pack, f.source, f.dialect) != (first.pack, first.source, first.dialect):
            raise ValueError("only frames of one pack, source and dialect, without rejects")
    received = [f.received_at for f in frames for _ in f.events]
    merged = Frame(
        first.pack,
        first.source,
        min(f.received_at for f in frames),
        [ev for f in frames for ev in f.events],
        [],
        first.dialect,
        sum(f.suppressed for f in frames),
    )
    same = not received or received.count(received[0]) == len(received)
    return encode_frame(merged, layout, received=None if same else received)


def _plain(col: Sequence[Any]) -> Sequence[Any]:
    return col


def encode_row_frame(frame: Frame) -> bytes:
    """The frame as version 1 (row frames), as logs written before version 2 hold them."""
    return _encoder.encode(frame)


def decode_frame_columns(data: bytes, *, check: bool = True) -> ColumnFrame | FrameRows:
    """A frame of any version as it is stored: what the loader reads. ``check=False``
    leaves checking version 3's chunks to the caller (the loader checks a batch's chunks
    as a whole, ``gristmill.load.columns``, and decodes again with the check when one is
    bad, to find its frame)."""
    if data[:1] == _V1_HEAD:
        return _rows_decoder.decode(data)
    frame = _columns_decoder.decode(data)
    if frame.version not in COLUMN_VERSIONS:
        raise msgspec.DecodeError(f"frame version {frame.version} is not one this reads")
    if check and frame.version == FRAME_VERSION:
        try:
            for block in frame.blocks:
                block.check()
        except ValueError as exc:
            raise msgspec.DecodeError(f"frame version 3 column chunk: {exc}") from exc
    return frame


def decode_frame_rows(data: bytes) -> FrameRows:
    """A frame of either version with its envelopes as rows (block by block for version 2)."""
    f = decode_frame_columns(data)
    if isinstance(f, FrameRows):
        return f
    events = [row for b in f.blocks for row in b.rows()]
    return FrameRows(f.pack, f.source, f.received_at, events, f.rejects, f.dialect, f.suppressed)


def decode_frame(data: bytes) -> Frame:
    """A frame of either version as :class:`Frame` (version 2: events grouped by table)."""
    if data[:1] == _V1_HEAD:
        return _decoder.decode(data)
    f = decode_frame_rows(data)
    events = [Envelope(*row) for row in f.events]
    return Frame(f.pack, f.source, f.received_at, events, f.rejects, f.dialect, f.suppressed)
