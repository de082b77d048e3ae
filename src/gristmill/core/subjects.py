"""Erased subjects as the collector sees them: keyed hashes, never the identifiers.

An erasure request adds the subject's identifiers (user id, anonymous ids, emails) to a
suppression list so a later re-send, quarantine replay or backfill of that subject's events
does not bring them back. The list holds ``HMAC-SHA256(install secret, kind ␟ value)``: the
metadata store must not keep the very identifier the request erased, and a keyed hash, unlike
a plain one, cannot be reversed by hashing a list of known emails without the secret.

:class:`SuppressionSet` is an immutable snapshot the collector reads without locks;
:class:`Suppression` is the holder the governance layer swaps a new snapshot into.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgspec


class Mode(StrEnum):
    DELETE = "delete"
    """Rows gone; later events of the subject are dropped at collect time."""
    ANONYMIZE = "anonymize"
    """Rows kept without identity; later events are anonymized at collect time."""


SUBJECT_KEYS = ("user_id", "anonymous_id")
"""Envelope fields that name a subject."""

WIRE_SUBJECT_KEYS = ("user_id", "userId", "anonymous_id", "anonymousId", "distinct_id", "uid")
"""Where the dialects carry a subject in a raw item (native, Segment, PostHog, Snowplow)."""


def subject_hash(secret: bytes, value: str) -> str:
    """The suppression key of one identifier. The kind is not part of it: an id sent as
    ``user_id`` in one place and as ``anonymous_id`` or an ``email`` property in another is
    the same person."""
    return hmac.new(secret, value.strip().encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class SuppressionSet:
    secret: bytes = b""
    modes: Mapping[str, Mode] = field(default_factory=dict)
    """subject hash -> what to do with that subject's events."""

    def __bool__(self) -> bool:
        return bool(self.modes)

    def match(self, values: Iterable[Any]) -> Mode | None:
        """The strictest mode among the values that are suppressed (delete beats anonymize)."""
        found: Mode | None = None
        for v in values:
            if not isinstance(v, str) or not v:
                continue
            mode = self.modes.get(subject_hash(self.secret, v))
            if mode is Mode.DELETE:
                return mode
            found = mode or found
        return found


class Suppression:
    """The current :class:`SuppressionSet`, replaced whole (readers never see it half-built)."""

    def __init__(self, current: SuppressionSet | None = None) -> None:
        self.current = current or SuppressionSet()

    def replace(self, new: SuppressionSet) -> None:
        self.current = new


def strip_keys(doc: bytes | None, keys: Iterable[str]) -> bytes | None:
    """JSON object text without ``keys`` (top level and one level down, where dialects nest
    ``context.ip`` or ``traits.email``); anything that is not an object is returned as is."""
    if doc is None:
        return None
    drop = set(keys)
    if not drop:
        return doc
    try:
        obj = msgspec.json.decode(doc)
    except msgspec.DecodeError:
        return doc
    if not isinstance(obj, dict):
        return doc
    return msgspec.json.encode(_strip(obj, drop, 2))


def _strip(obj: dict[str, Any], drop: set[str], depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if k in drop:
            continue
        out[k] = _strip(v, drop, depth - 1) if depth > 1 and isinstance(v, dict) else v
    return out


def raw_subjects(raw: bytes, subject_properties: Iterable[str]) -> list[Any]:
    """Identifiers in a raw item the collector could not accept (for rejects): the wire's
    subject keys at the top, in ``context``/``properties``/``traits``, and the pack's subject
    properties."""
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return []
    if not isinstance(obj, dict):
        return []
    props = list(subject_properties)
    out: list[Any] = [obj.get(k) for k in (*WIRE_SUBJECT_KEYS, *props)]
    for nest in ("properties", "context", "traits"):
        inner = obj.get(nest)
        if isinstance(inner, dict):
            out += [inner.get(k) for k in (*WIRE_SUBJECT_KEYS, *props)]
    return out
