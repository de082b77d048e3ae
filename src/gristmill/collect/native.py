"""The native dialect: Gristmill's own envelope, as ``POST /v1/events`` accepts it.

::

    {"event_id": "...", "event_type": "order_created", "occurred_at": "2026-11-02T10:00:00Z",
     "schema_version": 1, "properties": {...}, "user_id": "...", "anonymous_id": "...",
     "session_id": "...", "context": {...}}

Each item is decoded straight into a typed struct by msgspec (about a microsecond), which
also yields a precise message for the first fault (``Expected `str`, got `int` - at
`$.event_id```). Unknown top-level keys are refused: a typo such as ``"propreties"`` would
otherwise load an event with empty properties that a schema might even accept.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

import msgspec
import orjson

from gristmill.collect.dialect import Answer
from gristmill.collect.items import Item, parse_object, split_items
from gristmill.collect.pipeline import (
    Accept,
    Batch,
    Normalized,
    Outcome,
    RequestContext,
    reject,
)
from gristmill.core.clock import check_time, clamp_future, from_datetime
from gristmill.core.envelope import Reason
from gristmill.core.errors import PROBLEM_JSON, Problem, problem_bytes

MAX_ID = 200
Id = Annotated[str, msgspec.Meta(max_length=MAX_ID)]


class NativeEvent(msgspec.Struct, forbid_unknown_fields=True):
    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID)]
    event_type: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    occurred_at: datetime
    properties: dict[str, Any] = {}
    schema_version: Annotated[int, msgspec.Meta(ge=1)] | None = None
    user_id: Id | None = None
    anonymous_id: Id | None = None
    session_id: Id | None = None
    context: dict[str, Any] | None = None


_decoder = msgspec.json.Decoder(NativeEvent)


def _fault(message: str) -> dict[str, str]:
    """Turn msgspec's ``... - at `$.a.b``` into a JSON-pointer path and a message."""
    text, sep, where = message.rpartition(" - at `")
    if not sep:
        return {"path": "", "message": message}
    path = where.rstrip("`").removeprefix("$")
    return {"path": path.replace(".", "/").replace("[", "/").replace("]", ""), "message": text}


def normalize_native(item: Item, ctx: RequestContext) -> Normalized:
    try:
        ev = _decoder.decode(item.raw)
    except msgspec.ValidationError as exc:
        obj = parse_object(item)
        if isinstance(obj, str):
            return reject(item, Reason.UNDECODABLE, obj)
        fault = _fault(str(exc))
        where = fault["path"].lstrip("/") or "event"
        return reject(
            item,
            Reason.INVALID_ENVELOPE,
            f"{where}: {fault['message']}",
            [fault],
            event_id=obj.get("event_id"),
            event_type=obj.get("event_type"),
        )
    except msgspec.DecodeError as exc:
        obj = parse_object(item)
        return reject(item, Reason.UNDECODABLE, obj if isinstance(obj, str) else str(exc))
    if ev.occurred_at.tzinfo is None:
        fault = {"path": "/occurred_at", "message": "timestamp has no UTC offset; append Z"}
        return reject(
            item,
            Reason.INVALID_ENVELOPE,
            "occurred_at: " + fault["message"],
            [fault],
            event_id=ev.event_id,
            event_type=ev.event_type,
        )
    if not ev.event_id.strip():
        fault = {"path": "/event_id", "message": "must not be blank"}
        return reject(
            item,
            Reason.INVALID_ENVELOPE,
            "event_id: must not be blank",
            [fault],
            event_type=ev.event_type,
        )
    occurred, clamped = clamp_future(from_datetime(ev.occurred_at), ctx.received_at)
    check_time(occurred)
    context = ev.context
    if clamped:
        context = {
            **(context or {}),
            "gristmill": {"clamped_future": True, "device_time": ev.occurred_at.isoformat()},
        }
    return Accept(
        event_id=ev.event_id,
        event_type=ev.event_type,
        version=ev.schema_version,
        occurred_at=occurred,
        properties=ev.properties,
        user_id=ev.user_id,
        anonymous_id=ev.anonymous_id,
        session_id=ev.session_id,
        context=context,
    )


def render_native(outcome: Outcome) -> tuple[int, bytes, str | None]:
    """The ``POST /v1/events`` answer: 200 all accepted, 207 some, 422 none (problem+json).

    Returns (status, body, problem slug or None)."""
    if outcome.accepted == 0:
        p = Problem(
            422,
            "events-rejected",
            "No event accepted",
            f"all {outcome.rejected} events were rejected and kept in quarantine",
            errors=outcome.results,
        )
        return 422, problem_bytes(p), p.slug
    body = orjson.dumps(
        {"accepted": outcome.accepted, "rejected": outcome.rejected, "results": outcome.results}
    )
    return (200 if outcome.rejected == 0 else 207), body, None


JSON_MEDIA = frozenset(
    {"application/json", "application/x-ndjson", "application/ndjson", "application/jsonl"}
)


def check_media_type(content_type: str) -> None:
    """415 for a declared type that is not JSON (no header is taken as JSON). Native clients
    are ours and send application/json; a JSON body labelled text/plain is a client bug that
    would otherwise pass unnoticed until a proxy or a WAF treats it as text."""
    media = content_type.split(";")[0].strip().lower()
    if media and media not in JSON_MEDIA and not media.endswith("+json"):
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            f"Content-Type {media[:100]!r} is not accepted here: send application/json "
            "(one event or an array) or application/x-ndjson",
            headers={"Accept-Post": "application/json, application/x-ndjson"},
        )


class Native:
    """Gristmill's own format (``POST /v1/events``) as a :class:`~gristmill.collect.dialect.
    Dialect`: 200 all accepted, 207 some, 422 none (problem+json); errors as problem+json."""

    name = "native"
    mapping = "native"
    body_limit: int | None = None
    body_key = False

    def split(self, body: bytes, content_type: str, query: Mapping[str, str]) -> Batch:
        check_media_type(content_type)
        return Batch(split_items(body, content_type))

    def query_key(self, query: Mapping[str, str]) -> str | None:
        return None

    def normalize(self, item: Item, ctx: RequestContext) -> Normalized:
        return normalize_native(item, ctx)

    def answer(self, outcome: Outcome) -> Answer:
        status, body, problem = render_native(outcome)
        return Answer(status, body, PROBLEM_JSON if problem else "application/json")

    def problem(self, p: Problem) -> Answer:
        return Answer(p.status, problem_bytes(p), PROBLEM_JSON, tuple(p.headers.items()))
