"""Split a JSON array or NDJSON body into items, keeping each item's original bytes.

A JSON array is scanned with msgspec into ``Raw`` slices (no per-item re-encoding), so a
rejected item is quarantined byte for byte as the client sent it, and per-event size limits
measure exactly what arrived. Items are not parsed here: each dialect decodes its own items
(the native one straight into typed structs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

_raw_list = msgspec.json.Decoder(list[msgspec.Raw])
_raw_one = msgspec.json.Decoder(msgspec.Raw)


@dataclass(slots=True)
class Item:
    index: int
    raw: bytes


class BodyNotJSON(Exception):
    pass


def parse_object(item: Item) -> dict[str, Any] | str:
    """The item as a dict, or the reason it is not a JSON object."""
    try:
        value = orjson.loads(item.raw)
    except orjson.JSONDecodeError as exc:
        return f"not valid JSON: {exc}"
    if not isinstance(value, dict):
        return f"an event must be a JSON object, got {type(value).__name__}"
    return value


TRUNCATED = "truncated"


def _why(exc: Exception) -> str:
    return explain(str(exc))


def explain(text: str) -> str:
    """msgspec says "Input data was truncated"; say what that means for a request body."""
    return text.replace(
        "Input data was truncated", "it is truncated (the body ends before the JSON value does)"
    )


def split_items(body: bytes, content_type: str = "") -> list[Item]:
    """Items of a JSON array, a single JSON object, or NDJSON (one object per line).

    Raises :class:`BodyNotJSON` when the body as a whole cannot be split (a broken array).
    A broken NDJSON line rejects only that line. An empty body gives no items.
    """
    text = body.lstrip()
    if text[:1] == b"[":
        try:
            raws = _raw_list.decode(text)
        except msgspec.DecodeError as exc:
            raise BodyNotJSON(f"body is not a valid JSON array: {_why(exc)}") from exc
        return [Item(i, bytes(r)) for i, r in enumerate(raws)]
    ctype = content_type.split(";")[0].strip().lower()
    if text[:1] == b"{" and ctype not in ("application/x-ndjson", "application/jsonl"):
        try:
            one = _raw_one.decode(text)
        except msgspec.DecodeError as exc:
            if TRUNCATED in str(exc) and b"\n" not in text.strip():
                # One object that stops early is a cut-off upload, not a line of NDJSON.
                raise BodyNotJSON(f"body is not valid JSON: {_why(exc)}") from exc
            # more than one object: NDJSON
        else:
            return [Item(0, bytes(one))]
    items: list[Item] = []
    for line in body.split(b"\n"):
        line = line.strip()
        if line:
            items.append(Item(len(items), line))
    return items
