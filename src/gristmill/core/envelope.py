"""The canonical event envelope and the frame that carries envelopes through the log.

A *frame* is what one collector request (or one source read) hands to the log: the accepted
envelopes plus the rejected items with their original bytes. Keeping rejects in the same
durable frame is what makes ``received = loaded + quarantined + duplicates + in_flight`` exact:
one append, one counter update, one place the loader routes from.

Frames are msgpack via msgspec (array-like structs): compact, and decoding 100k envelopes
costs tens of milliseconds, which matters because the loader runs on the same two cores.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec

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


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Frame)
_rows_decoder = msgspec.msgpack.Decoder(FrameRows)


def encode_frame(frame: Frame) -> bytes:
    return _encoder.encode(frame)


def decode_frame(data: bytes) -> Frame:
    return _decoder.decode(data)


def decode_frame_rows(data: bytes) -> FrameRows:
    return _rows_decoder.decode(data)
