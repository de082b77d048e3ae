"""The OpenAPI description of the ingest endpoints: request bodies per dialect (JSON Schema
with an example each) and every status they answer.

Ingest requests are answered on the ASGI fast path (:mod:`gristmill.api.routers.ingest`), so
FastAPI cannot infer their bodies; they are described here, next to nothing else, and
attached by :func:`gristmill.api.openapi.describe`. The schemas say what the HTTP layer checks
(a body that is not this shape is a 400); whether each event fits the pack is answered per
event in the 200/207 body (the event is kept in quarantine if not).
"""

from __future__ import annotations

from typing import Any

import msgspec

from gristmill.collect.native import NativeEvent

JSON = "application/json"
OBJ: dict[str, Any] = {"type": "object", "additionalProperties": True}


def _native_event() -> dict[str, Any]:
    schema: dict[str, Any] = msgspec.json.schema(NativeEvent)
    defs = schema.pop("$defs", {})
    event = dict(defs.get("NativeEvent", schema))
    event["description"] = (
        "One event in Gristmill's own envelope; unknown top-level keys are refused."
    )
    return event


# The examples are events of the marketplace pack (packs/marketplace), accepted as they are.
NATIVE_EXAMPLE = {
    "event_id": "ord-1001",
    "event_type": "order_created",
    "schema_version": 1,
    "occurred_at": "2026-11-02T10:00:00Z",
    "user_id": "u-42",
    "properties": {
        "order_id": "o-1001",
        "store_id": "s1",
        "vendor_store_id": "v1",
        "amount_cents": 2550,
    },
}

SEGMENT_MESSAGE: dict[str, Any] = {
    "type": "object",
    "description": "A Segment/RudderStack message: track, identify, page, screen, group, alias.",
    "properties": {
        "type": {
            "type": "string",
            "enum": ["track", "identify", "page", "screen", "group", "alias"],
        },
        "messageId": {"type": "string", "description": "The event id (a hash when absent)."},
        "event": {"type": "string", "description": "The event name of a track call."},
        "userId": {"type": "string"},
        "anonymousId": {"type": "string"},
        "properties": OBJ,
        "traits": OBJ,
        "context": OBJ,
        "timestamp": {"type": "string", "format": "date-time"},
        "originalTimestamp": {"type": "string", "format": "date-time"},
        "sentAt": {"type": "string", "format": "date-time"},
    },
    "additionalProperties": True,
}

SEGMENT_EXAMPLE = {
    "writeKey": "wk_...",
    "sentAt": "2026-11-02T10:00:01Z",
    "batch": [
        {
            "type": "track",
            "messageId": "m-1",
            "event": "Order Created",
            "userId": "u-42",
            "properties": {
                "orderId": "o-1001",
                "buyerStoreId": "s1",
                "vendorStoreId": "v1",
                "amountCents": 2550,
            },
            "timestamp": "2026-11-02T10:00:00Z",
        }
    ],
}

POSTHOG_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string"},
        "distinct_id": {"type": "string"},
        "uuid": {"type": "string"},
        "timestamp": {"type": "string", "format": "date-time"},
        "properties": OBJ,
        "api_key": {"type": "string"},
    },
    "additionalProperties": True,
}

POSTHOG_EXAMPLE = {
    "api_key": "wk_...",
    "sent_at": "2026-11-02T10:00:01Z",
    "batch": [
        {
            "event": "order created",
            "distinct_id": "u-42",
            "uuid": "0190f4a2-7b6e-7c1d-9a55-000000000001",
            "timestamp": "2026-11-02T10:00:00Z",
            "properties": {
                "order_id": "o-1001",
                "store_id": "s1",
                "vendor_store_id": "v1",
                "amount_cents": 2550,
                "$session_id": "s-1",
            },
        }
    ],
}

SNOWPLOW_EXAMPLE = {
    "schema": "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4",
    "data": [
        {
            "e": "ue",
            "eid": "6a7f0e1e-0000-4000-8000-000000000001",
            "aid": "wk_...",
            "ue_pr": (
                '{"schema":"iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0",'
                '"data":{"schema":"iglu:com.marketplace/order_created/jsonschema/1-0-0",'
                '"data":{"order_id":"o-1001","store_id":"s1","vendor_store_id":"v1",'
                '"amount_cents":2550}}}'
            ),
            "dtm": "1793613600000",
            "stm": "1793613601000",
            "uid": "u-42",
        }
    ],
}

CLOUDEVENT: dict[str, Any] = {
    "type": "object",
    "required": ["specversion", "id", "source", "type"],
    "properties": {
        "specversion": {"type": "string", "enum": ["1.0"]},
        "id": {"type": "string", "minLength": 1},
        "source": {"type": "string", "minLength": 1},
        "type": {"type": "string", "minLength": 1},
        "time": {"type": ["string", "null"], "format": "date-time"},
        "subject": {"type": ["string", "null"], "description": "The user id."},
        "data": {},
    },
    "additionalProperties": True,
}

CLOUDEVENT_EXAMPLE = {
    "specversion": "1.0",
    "id": "evt-1",
    "source": "billing",
    "type": "com.marketplace.order.created",
    "time": "2026-11-02T10:00:00Z",
    "subject": "u-42",
    "data": {"order_id": "o-1001", "store_id": "s1", "vendor_store_id": "v1", "amount_cents": 2550},
}


def _one_or_many(item: dict[str, Any]) -> dict[str, Any]:
    return {"oneOf": [item, {"type": "array", "items": item, "minItems": 1}]}


def request_bodies() -> dict[str, dict[str, Any]]:
    """Dialect -> the OpenAPI ``requestBody`` of its endpoints."""
    native = _native_event()
    segment_batch = {
        "type": "object",
        "properties": {
            "batch": {"type": "array", "items": SEGMENT_MESSAGE, "minItems": 1},
            "writeKey": {"type": "string", "description": "The write key, if not a header."},
            "sentAt": {"type": "string", "format": "date-time"},
        },
        "additionalProperties": True,
    }
    posthog_batch = {
        "type": "object",
        "properties": {
            "batch": {"type": "array", "items": POSTHOG_EVENT, "minItems": 1},
            "api_key": {"type": "string"},
            "token": {"type": "string"},
            "sent_at": {"type": "string", "format": "date-time"},
            "historical_migration": {"type": "boolean"},
        },
        "additionalProperties": True,
    }
    snowplow = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "schema": {"type": "string"},
            "data": {
                "type": "array",
                "items": {"type": "object", "additionalProperties": True},
                "minItems": 1,
            },
        },
    }
    return {
        "native": {
            "required": True,
            "description": "One event or a JSON array of events; also NDJSON (one event per "
            "line, ``application/x-ndjson``); gzip or deflate with Content-Encoding. Another "
            "declared Content-Type (``text/plain`` ...) is refused with 415.",
            "content": {
                JSON: {"schema": _one_or_many(native), "example": [NATIVE_EXAMPLE]},
            },
        },
        "segment": {
            "required": True,
            "description": "A batch (``/v1/batch``) or one message (``/v1/track`` ...). "
            "The same JSON sent as ``text/plain`` (browser beacons do) is accepted too.",
            "content": {
                JSON: {
                    "schema": {"anyOf": [segment_batch, SEGMENT_MESSAGE]},
                    "example": SEGMENT_EXAMPLE,
                },
            },
        },
        "posthog": {
            "required": True,
            "description": "A batch, one event or an array. posthog-js also sends the same "
            "JSON as ``text/plain``, as a form field ``data=`` "
            "(``application/x-www-form-urlencoded``) or base64; gzip is detected by its magic "
            "bytes. All are accepted.",
            "content": {
                JSON: {
                    "schema": {"anyOf": [posthog_batch, _one_or_many(POSTHOG_EVENT)]},
                    "example": POSTHOG_EXAMPLE,
                },
            },
        },
        "posthog_v1": {
            "required": True,
            "description": "PostHog capture v1: an array of events (or ``{batch: [...]}``).",
            "content": {
                JSON: {
                    "schema": {"anyOf": [posthog_batch, _one_or_many(POSTHOG_EVENT)]},
                    "example": [POSTHOG_EXAMPLE["batch"][0]],
                }
            },
        },
        "snowplow": {
            "required": True,
            "description": "A payload_data batch (trackers may label it ``text/plain``, "
            "which is accepted too).",
            "content": {JSON: {"schema": snowplow, "example": SNOWPLOW_EXAMPLE}},
        },
        "cloudevents": {
            "required": True,
            "description": "Structured (application/cloudevents+json), batch "
            "(application/cloudevents-batch+json) or binary mode (``ce-*`` headers, the body "
            "is ``data``).",
            "content": {
                "application/cloudevents+json": {
                    "schema": CLOUDEVENT,
                    "example": CLOUDEVENT_EXAMPLE,
                },
                "application/cloudevents-batch+json": {
                    "schema": {"type": "array", "items": CLOUDEVENT, "minItems": 1},
                    "example": [CLOUDEVENT_EXAMPLE],
                },
                JSON: {"schema": _one_or_many(CLOUDEVENT), "example": CLOUDEVENT_EXAMPLE},
            },
        },
    }


RESULTS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "accepted": {"type": "integer", "minimum": 0},
        "rejected": {"type": "integer", "minimum": 0},
        "results": {"type": "array", "items": OBJ},
    },
    "required": ["accepted", "rejected"],
    "additionalProperties": True,
}

SUCCESS: dict[str, dict[str, Any]] = {
    "native": {"200": "Every event accepted.", "207": "Some accepted, some kept in quarantine."},
    "cloudevents": {
        "200": "Every event accepted.",
        "207": "Some accepted, some kept in quarantine.",
    },
    "segment": {"200": "Accepted; rejected messages are listed and kept in quarantine."},
    "posthog": {"200": "Accepted; rejected events are kept in quarantine."},
    "posthog_v1": {"200": "Per-event results keyed by uuid."},
    "snowplow": {"200": "Accepted; rejected events are kept in quarantine."},
    "snowplow_pixel": {"200": "A transparent 1x1 GIF."},
}


def _query(name: str, description: str, required: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if required:
        schema["minLength"] = 1
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


PIXEL_QUERY = [
    _query("e", "Event kind: pv (page view), se (structured), ue (self-describing).", True),
    _query("eid", "Event id.", True),
    _query("aid", "App id: a Gristmill write key (or send Authorization)."),
    _query("ue_pr", "A self-describing event (JSON), for e=ue."),
    _query("dtm", "Device time, epoch ms."),
    _query("stm", "Sent time, epoch ms."),
]

POSTHOG_KEY = _query("api_key", "The write key, when the body cannot carry it.")
POSTHOG_GET = [
    {
        "name": "data",
        "in": "query",
        "required": True,
        "description": "The event(s) as JSON (posthog-js may send base64 of it).",
        "content": {JSON: {"schema": POSTHOG_EVENT}},
    },
    POSTHOG_KEY,
]


def success_content(dialect: str) -> dict[str, Any]:
    if dialect == "snowplow_pixel":
        return {"image/gif": {"schema": {"type": "string", "format": "binary"}}}
    if dialect == "snowplow":
        return {"text/plain": {"schema": {"type": "string"}, "example": "ok"}}
    return {JSON: {"schema": RESULTS if dialect in ("native", "cloudevents") else OBJ}}
