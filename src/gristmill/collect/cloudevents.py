"""CloudEvents over HTTP (the OpenMeter style): ``POST /api/v1/events`` with
``application/cloudevents+json`` (one event), ``application/cloudevents-batch+json`` (an
array), or binary mode (``ce-*`` headers, the body is ``data``).

The dedupe key of a CloudEvent is (``source``, ``id``), so the event id is
``<source>#<id>``: two sources may reuse an id. ``type`` maps to a pack event type
(``mappings.cloudevents``); ``data`` (an object) is the properties; ``time`` is taken as is
(producers are servers); ``subject`` is the user id. The envelope attributes and any
extensions are kept in ``context.cloudevents``. Answers are the native ones (200/207/422).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gristmill.collect.dialect import Answer, accept, occurred, parse_time, resolve
from gristmill.collect.items import Item, parse_object, split_items
from gristmill.collect.native import Native
from gristmill.collect.pipeline import Batch, Normalized, Outcome, RequestContext, reject
from gristmill.core.envelope import Reason, Reject
from gristmill.core.errors import Problem

REQUIRED = ("specversion", "id", "source", "type")
OPTIONAL_TEXT = ("time", "subject", "datacontenttype", "dataschema")
"""Attributes that are strings when present (a subject of ``{}`` must not become user "{}")."""
ENVELOPE = frozenset(
    {*REQUIRED, "time", "subject", "data", "data_base64", "datacontenttype", "dataschema"}
)


class CloudEvents:
    name = "cloudevents"
    mapping = "cloudevents"
    body_limit: int | None = None
    body_key = False

    def split(self, body: bytes, content_type: str, query: Mapping[str, str]) -> Batch:
        return Batch(split_items(body, "application/json"))

    def query_key(self, query: Mapping[str, str]) -> str | None:
        return None

    def normalize(self, item: Item, ctx: RequestContext) -> Normalized:
        ev = parse_object(item)
        if isinstance(ev, str):
            return reject(item, Reason.UNDECODABLE, ev)
        missing = [k for k in REQUIRED if not isinstance(ev.get(k), str) or not ev.get(k)]
        if missing:
            return reject(
                item,
                Reason.INVALID_ENVELOPE,
                f"CloudEvents attributes required: {', '.join(missing)}",
            )
        if ev["specversion"] != "1.0":
            return reject(
                item,
                Reason.INVALID_ENVELOPE,
                f"specversion {ev['specversion'][:16]!r} is not supported (use 1.0)",
            )
        wrong = [k for k in OPTIONAL_TEXT if k in ev and not isinstance(ev[k], str | None)]
        if wrong:
            return reject(
                item,
                Reason.INVALID_ENVELOPE,
                f"CloudEvents attributes must be strings: {', '.join(wrong)}",
                [{"path": f"/{k}", "message": "must be a string"} for k in wrong],
            )
        device = parse_time(ev.get("time"))
        if ev.get("time") is not None and device is None:  # not silently the receive time
            return reject(
                item,
                Reason.INVALID_ENVELOPE,
                "time is not an RFC 3339 timestamp with an offset",
                [{"path": "/time", "message": "not an RFC 3339 timestamp with an offset"}],
            )
        event_id = f"{ev['source']}#{ev['id']}"[:200]
        data = ev.get("data")
        props: dict[str, Any] = (
            dict(data) if isinstance(data, dict) else ({} if data is None else {"value": data})
        )
        mapped = resolve(ctx, item, ev["type"], props)
        if isinstance(mapped, Reject):
            mapped.event_id = event_id
            return mapped
        attrs = {k: v for k, v in ev.items() if k not in ("data", "data_base64")}
        when, context = occurred(
            ctx,
            device,
            None,
            {"cloudevents": attrs},
            raw={"time": ev.get("time")},
            exact=True,
        )
        return accept(
            event_id,
            mapped.event_type,
            when,
            mapped.properties,
            version=mapped.version,
            user_id=ev.get("subject"),
            context=context,
        )

    def answer(self, outcome: Outcome) -> Answer:
        return Native().answer(outcome)

    def problem(self, p: Problem) -> Answer:
        return Native().problem(p)


def structured_from_binary(headers: Mapping[str, str], body: bytes) -> bytes | None:
    """Binary content mode: the ``ce-*`` headers carry the attributes and the body is
    ``data`` (JSON). Returns the equivalent structured event, or None if not binary mode."""
    import orjson

    attrs = {k[3:]: v for k, v in headers.items() if k.lower().startswith("ce-")}
    if "id" not in attrs:
        return None
    event: dict[str, Any] = dict(attrs)
    if body.strip():
        try:
            event["data"] = orjson.loads(body)
        except orjson.JSONDecodeError:
            event["data"] = body.decode("utf-8", "replace")
    return orjson.dumps(event)
