"""Segment and RudderStack: ``POST /v1/batch`` and the single calls ``/v1/track``,
``/v1/identify``, ``/v1/page``, ``/v1/screen``, ``/v1/group``, ``/v1/alias``.

The write key comes as HTTP Basic user (``writeKey:``), as a Bearer token, or as
``writeKey`` in the body. Success is **exactly 200** (RudderStack's client retries any other
2xx); errors are ``{"code": ..., "message": ...}`` (RudderStack retries an error body without
``code``). Segment's own limits apply: 32 KB per event, 500 KB per batch.

``messageId`` is the event id; a message without one gets a content hash, so a client's
retry of the same bytes still dedupes. Track events map by ``event`` name; the other calls by
``$identify``, ``$page``, ``$screen``, ``$group``, ``$alias`` (see ``mappings.segment``).
RudderStack puts identify traits in ``context.traits``; both places are read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec
import orjson

from gristmill.collect.dialect import Answer, accept, occurred, parse_time, resolve
from gristmill.collect.items import BodyNotJSON, Item, parse_object
from gristmill.collect.pipeline import Batch, Normalized, Outcome, RequestContext, reject
from gristmill.core.envelope import Reason, Reject
from gristmill.core.errors import PROBLEM_JSON, Problem, problem_bytes

CALLS = ("track", "identify", "page", "screen", "group", "alias")


class _Envelope(msgspec.Struct):
    batch: list[msgspec.Raw] | None = None
    sentAt: str | None = None  # noqa: N815 - Segment's wire name
    writeKey: str | None = None  # noqa: N815


_decoder = msgspec.json.Decoder(_Envelope)


def content_id(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:32]


class Segment:
    name = "segment"
    mapping = "segment"
    body_limit: int | None = 500 * 1024
    body_key = True

    def split(self, body: bytes, content_type: str, query: Mapping[str, str]) -> Batch:
        try:
            env = _decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise BodyNotJSON(f"body is not a Segment batch or message: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise BodyNotJSON(f"body is not valid JSON: {exc}") from exc
        sent = parse_time(env.sentAt)
        call = query.get("_call")
        if env.batch is None:  # a single call: the body is the message
            return Batch([Item(0, body)], env.writeKey, sent, call=call)
        items = [Item(i, bytes(r)) for i, r in enumerate(env.batch)]
        return Batch(items, env.writeKey, sent, call=call)

    def query_key(self, query: Mapping[str, str]) -> str | None:
        return None

    def normalize(self, item: Item, ctx: RequestContext) -> Normalized:
        msg = parse_object(item)
        if isinstance(msg, str):
            return reject(item, Reason.UNDECODABLE, msg)
        call = msg.get("type") or ctx.batch.call or ("track" if "event" in msg else None)
        event_id = msg.get("messageId") or content_id(item.raw)
        if call not in CALLS:
            return reject(
                item,
                Reason.INVALID_ENVELOPE,
                f"type must be one of {', '.join(CALLS)}",
                event_id=event_id,
            )
        if not isinstance(event_id, str):
            return reject(item, Reason.INVALID_ENVELOPE, "messageId must be a string")
        user, anon = msg.get("userId"), msg.get("anonymousId")
        if user in (None, "") and anon in (None, ""):
            return reject(
                item,
                Reason.INVALID_ENVELOPE,
                "userId or anonymousId is required",
                event_id=event_id,
            )
        raw_ctx = msg.get("context")
        context: dict[str, Any] = dict(raw_ctx) if isinstance(raw_ctx, dict) else {}
        props = _properties(call, msg, context)
        name = msg.get("event") if call == "track" else f"${call}"
        if call == "track" and not isinstance(name, str):
            return reject(
                item, Reason.INVALID_ENVELOPE, "a track call needs an event name", event_id=event_id
            )
        mapped = resolve(ctx, item, name, props)
        if isinstance(mapped, Reject):
            mapped.event_id = event_id
            return mapped
        device = parse_time(msg.get("originalTimestamp") or msg.get("timestamp"))
        sent = parse_time(msg.get("sentAt"))
        when, context = occurred(
            ctx,
            device,
            sent,
            context,
            raw={
                "timestamp": msg.get("timestamp"),
                "originalTimestamp": msg.get("originalTimestamp"),
                "sentAt": msg.get("sentAt") or (ctx.batch.sent_at and "batch"),
            },
        )
        return accept(
            event_id,
            mapped.event_type,
            when,
            mapped.properties,
            version=mapped.version,
            user_id=user,
            anonymous_id=anon,
            session_id=context.get("sessionId"),
            context=context,
        )

    def answer(self, outcome: Outcome) -> Answer:
        errors = [r for r in outcome.results if r["status"] == "rejected"]
        body: dict[str, Any] = {
            "success": True,
            "accepted": outcome.accepted,
            "rejected": outcome.rejected,
        }
        if errors:
            body["errors"] = errors
        return Answer(200, orjson.dumps(body))

    def problem(self, p: Problem) -> Answer:
        """problem+json with Segment's ``code`` and ``message`` (its clients read those)."""
        body = problem_bytes(p, {"code": p.slug, "message": p.detail or p.title})
        return Answer(p.status, body, PROBLEM_JSON, tuple(p.headers.items()))


def _properties(call: str, msg: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    def obj(v: Any) -> dict[str, Any]:
        return dict(v) if isinstance(v, dict) else {}

    if call == "track":
        return obj(msg.get("properties"))
    if call in ("page", "screen"):
        props = obj(msg.get("properties"))
        for k in ("name", "category"):
            if msg.get(k) is not None:
                props.setdefault(k, msg[k])
        return props
    if call == "identify":
        return {**obj(context.get("traits")), **obj(msg.get("traits"))}
    if call == "group":
        return {**obj(msg.get("traits")), "groupId": msg.get("groupId")}
    return {"previousId": msg.get("previousId")}
