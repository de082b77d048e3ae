"""PostHog capture: v0 (``/batch/``, ``/capture/``, ``/e/``, ``/i/v0/e/``; GET and POST; JSON,
form ``data=``, base64; gzip detected by magic bytes) and v1 (``POST /i/v1/analytics/events``,
``Authorization: Bearer``, per-event ``results`` answer).

The project key comes as ``api_key`` / ``token`` in the body, query or event properties (v0),
or as the Bearer token (v1): it is a Gristmill write key. ``uuid`` is the event id (a content
hash when absent); ``distinct_id`` is the user id (cut to 200 characters). Properties whose
names start with ``$`` are PostHog's own bookkeeping and go to ``context.posthog``;
``$session_id`` becomes the session id. ``sent_at`` (v0) or the ``PostHog-Request-Timestamp``
header (v1) corrects clock skew unless ``historical_migration`` is set or the event opts out.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from collections.abc import Mapping
from typing import Any

import msgspec
import orjson

from gristmill.collect.dialect import Answer, Resolved, accept, occurred, parse_time, resolve
from gristmill.collect.items import BodyNotJSON, Item, parse_object
from gristmill.collect.pipeline import Batch, Normalized, Outcome, RequestContext, reject
from gristmill.collect.segment import content_id
from gristmill.core.envelope import Reason, Reject
from gristmill.core.errors import PROBLEM_JSON, Problem, problem_bytes

_any = msgspec.json.Decoder(msgspec.Raw)


class _Envelope(msgspec.Struct):
    batch: list[msgspec.Raw] | None = None
    api_key: str | None = None
    token: str | None = None
    sent_at: str | None = None
    historical_migration: bool = False


_envelope = msgspec.json.Decoder(_Envelope)
_list = msgspec.json.Decoder(list[msgspec.Raw])


def _unwrap(body: bytes, content_type: str, query: Mapping[str, str]) -> tuple[bytes, str | None]:
    """The JSON inside (a form field ``data=``, a ``data`` query parameter on GET, base64),
    and a key given as a form field."""
    text = body.strip()
    key = None
    if not text and query.get("data"):
        text = query["data"].encode()
    elif content_type.startswith("application/x-www-form-urlencoded"):
        form = urllib.parse.parse_qs(text.decode("latin-1"))
        text = form.get("data", [""])[0].encode()
        keys = form.get("api_key") or form.get("token")
        key = keys[0] if keys else None
    if text[:1] not in (b"{", b"["):
        try:
            text = base64.b64decode(text + b"=" * (-len(text) % 4), altchars=b"-_")
        except (binascii.Error, ValueError) as exc:
            raise BodyNotJSON(f"body is neither JSON nor base64 JSON: {exc}") from exc
    return text, key


class PostHog:
    name = "posthog"
    mapping = "posthog"
    body_limit: int | None = None
    body_key = True
    v1 = False

    def split(self, body: bytes, content_type: str, query: Mapping[str, str]) -> Batch:
        text, form_key = _unwrap(body, content_type, query)
        try:
            if text.lstrip()[:1] == b"[":
                raws, env = _list.decode(text), _Envelope()
            else:
                env = _envelope.decode(text)
                raws = env.batch if env.batch is not None else [_any.decode(text)]
        except msgspec.DecodeError as exc:
            raise BodyNotJSON(f"body is not a PostHog batch or event: {exc}") from exc
        key = env.api_key or env.token or form_key or query.get("api_key") or query.get("token")
        items = [Item(i, bytes(r)) for i, r in enumerate(raws)]
        if key is None and items:
            first = parse_object(items[0])
            if isinstance(first, dict):
                props = first.get("properties") or {}
                key = (
                    first.get("api_key")
                    or first.get("token")
                    or (props.get("token") if isinstance(props, dict) else None)
                )
        sent = parse_time(env.sent_at or query.get("_request_timestamp"))
        return Batch(items, key, sent, historical=bool(env.historical_migration))

    def query_key(self, query: Mapping[str, str]) -> str | None:
        return query.get("api_key") or query.get("token")

    def normalize(self, item: Item, ctx: RequestContext) -> Normalized:
        ev = parse_object(item)
        if isinstance(ev, str):
            return reject(item, Reason.UNDECODABLE, ev)
        event_id = ev.get("uuid") or content_id(item.raw)
        name = ev.get("event")
        raw_props = ev.get("properties")
        props: dict[str, Any] = dict(raw_props) if isinstance(raw_props, dict) else {}
        distinct = ev.get("distinct_id", props.get("distinct_id"))
        if not isinstance(name, str) or not name:
            return reject(
                item, Reason.INVALID_ENVELOPE, "event is required", event_id=str(event_id)
            )
        if distinct in (None, ""):
            return reject(
                item,
                Reason.INVALID_ENVELOPE,
                "distinct_id is required",
                event_id=str(event_id),
                event_type=name,
            )
        own = {k: props.pop(k) for k in [k for k in props if k.startswith("$")]}
        props.pop("distinct_id", None)
        props.pop("token", None)
        for k in ("$set", "$set_once"):
            if isinstance(ev.get(k), dict):
                own[k] = ev[k]
        options = ev.get("options") if isinstance(ev.get("options"), dict) else {}
        mapped = resolve(ctx, item, name, props)
        if isinstance(mapped, Reject):
            mapped.event_id = str(event_id)
            return mapped
        device = parse_time(ev.get("timestamp"))
        no_skew = bool(own.get("$ignore_sent_at") or (options or {}).get("disable_skew_correction"))
        context: dict[str, Any] = {"posthog": own} if own else {}
        when, context = occurred(
            ctx,
            device,
            None,
            context,
            raw={"timestamp": ev.get("timestamp"), "offset": ev.get("offset")},
            exact=no_skew,
        )
        session = ev.get("session_id") or own.get("$session_id")
        return _accept(str(event_id), mapped, when, str(distinct)[:200], session, context)

    def answer(self, outcome: Outcome) -> Answer:
        return Answer(200, b'{"status":1}')

    def problem(self, p: Problem) -> Answer:
        """problem+json with PostHog's ``code`` (its clients read ``detail``, which it has)."""
        body = problem_bytes(p, {"code": p.slug})
        return Answer(p.status, body, PROBLEM_JSON, tuple(p.headers.items()))


def _accept(
    event_id: str, mapped: Resolved, when: int, distinct: str, session: Any, context: dict[str, Any]
) -> Normalized:
    return accept(
        event_id,
        mapped.event_type,
        when,
        mapped.properties,
        version=mapped.version,
        user_id=distinct,
        session_id=session,
        context=context,
    )


class PostHogV1(PostHog):
    """v1: the answer lists every event by uuid: ``ok``, or ``drop`` with the reason (the
    event is in quarantine; retrying would not help). Never ``retry``: 2xx means durable."""

    name = "posthog_v1"
    body_key = False
    v1 = True

    def answer(self, outcome: Outcome) -> Answer:
        results: dict[str, dict[str, str]] = {}
        for r in outcome.results:
            if r.get("event_id") is None:
                continue
            if r["status"] == "accepted":
                results[r["event_id"]] = {"result": "ok"}
            else:
                results[r["event_id"]] = {
                    "result": "drop",
                    "details": f"{r['reason']}: {r['detail']}"[:500],
                }
        return Answer(200, orjson.dumps({"results": results}))

    def problem(self, p: Problem) -> Answer:
        """problem+json with capture v1's ``error`` and ``error_description``."""
        body = problem_bytes(p, {"error": p.slug, "error_description": p.detail or p.title})
        return Answer(p.status, body, PROBLEM_JSON, tuple(p.headers.items()))
