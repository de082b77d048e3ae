"""The native dialect: Gristmill's own envelope, as ``POST /v1/events`` accepts it.

::

    {"event_id": "...", "event_type": "order_created", "occurred_at": "2026-11-02T10:00:00Z",
     "schema_version": 1, "properties": {...}, "user_id": "...", "anonymous_id": "...",
     "session_id": "...", "context": {...}}

Unknown top-level keys are refused: a typo such as ``"propreties"`` would otherwise load an
event with empty properties that a schema might even accept.
"""

from __future__ import annotations

from typing import Any

from gristmill.collect.items import Item
from gristmill.collect.pipeline import Accept, Normalized, RequestContext, reject
from gristmill.core.clock import clamp_future, parse_rfc3339_us
from gristmill.core.envelope import Reason

MAX_ID = 200
ALLOWED = frozenset(
    {
        "event_id",
        "event_type",
        "occurred_at",
        "schema_version",
        "properties",
        "user_id",
        "anonymous_id",
        "session_id",
        "context",
    }
)


def _opt_str(item: dict[str, Any], key: str, errors: list[dict[str, str]]) -> str | None:
    v = item.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or len(v) > MAX_ID:
        errors.append(
            {"path": f"/{key}", "message": f"must be a string of at most {MAX_ID} characters"}
        )
        return None
    return v


def normalize_native(item: Item, ctx: RequestContext) -> Normalized:
    obj = item.value
    assert obj is not None
    errors: list[dict[str, str]] = []
    event_id = obj.get("event_id")
    if not isinstance(event_id, str) or not event_id.strip() or len(event_id) > MAX_ID:
        errors.append(
            {
                "path": "/event_id",
                "message": f"required: a non-empty string of at most {MAX_ID} characters",
            }
        )
        event_id = event_id if isinstance(event_id, str) else None
    event_type = obj.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        errors.append({"path": "/event_type", "message": "required: a non-empty string"})
        event_type = None
    occurred: int | None = None
    raw_occ = obj.get("occurred_at")
    if not isinstance(raw_occ, str):
        errors.append(
            {
                "path": "/occurred_at",
                "message": "required: an RFC 3339 timestamp with offset, e.g. 2026-11-02T10:00:00Z",
            }
        )
    else:
        try:
            occurred = parse_rfc3339_us(raw_occ)
        except ValueError as exc:
            errors.append({"path": "/occurred_at", "message": f"not an RFC 3339 timestamp: {exc}"})
    version = obj.get("schema_version")
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 1
    ):
        errors.append({"path": "/schema_version", "message": "must be a positive integer"})
    props = obj.get("properties", {})
    if not isinstance(props, dict):
        errors.append({"path": "/properties", "message": "must be an object"})
    context = obj.get("context")
    if context is not None and not isinstance(context, dict):
        errors.append({"path": "/context", "message": "must be an object"})
    user_id = _opt_str(obj, "user_id", errors)
    anonymous_id = _opt_str(obj, "anonymous_id", errors)
    session_id = _opt_str(obj, "session_id", errors)
    unknown = sorted(set(obj) - ALLOWED)
    for key in unknown:
        errors.append({"path": f"/{key}", "message": "unknown field"})
    if errors:
        return reject(
            item,
            Reason.INVALID_ENVELOPE,
            f"{errors[0]['path'][1:]}: {errors[0]['message']}",
            errors,
            event_id=event_id,
            event_type=event_type,
        )
    assert occurred is not None
    assert isinstance(event_id, str)
    assert event_type is not None
    occurred, clamped = clamp_future(occurred, ctx.received_at)
    if clamped:
        context = {**(context or {}), "gristmill": {"clamped_future": True, "device_time": raw_occ}}
    return Accept(
        event_id=event_id,
        event_type=event_type,
        version=version,
        occurred_at=occurred,
        properties=props,
        user_id=user_id,
        anonymous_id=anonymous_id,
        session_id=session_id,
        context=context,
    )
