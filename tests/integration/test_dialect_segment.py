"""Segment and RudderStack: the real client libraries from PyPI send to a live server.

Every event lands once, typed by the pack's mapping, with the right occurred_at; when the
first request is answered 503 *after* it was stored, the client's retry still yields exactly
one row per event."""

from __future__ import annotations

import base64
import gzip
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from sqlglot import exp

from gristmill.runtime import Runtime
from gristmill.sql.ddl import table_ref
from tests.live import live, wait_loaded


def rows(rt: Runtime, table: str = "marketplace_events") -> list[dict[str, Any]]:
    q = (
        exp.select(
            "event_id",
            "event_type",
            "occurred_at",
            "user_id",
            "source",
            "order_id",
            "amount_cents",
            "store_id",
            "vendor_store_id",
            "context",
        )
        .from_(table_ref("marketplace", table))
        .order_by("event_id")
    )
    return list(rt.warehouse.query(q).to_pylist())


def order_props(i: int) -> dict[str, Any]:
    return {
        "orderId": f"o-{i}",
        "buyerStoreId": "b-1",
        "vendorStoreId": "v-1",
        "amountCents": 1000 + i,
    }


@pytest.mark.parametrize("library", ["segment", "rudderstack"])
def test_real_client_lands_each_event_once_despite_a_503(rt: Runtime, library: str) -> None:
    key = rt.meta.create_key("write", library, pack="marketplace", source=library)[1]
    when = datetime.now(UTC) - timedelta(hours=3)
    with live(rt) as (url, faults):
        faults.arm("/v1/batch", 1)
        if library == "segment":
            from segment.analytics import Client
        else:
            from rudderstack.analytics import Client  # type: ignore[import-not-found,no-redef]
        client = Client(key, host=url, max_retries=5, upload_interval=0.05, upload_size=10)
        for i in range(25):
            client.track(
                user_id=f"u-{i}",
                event="Order Created",
                properties=order_props(i),
                timestamp=when + timedelta(seconds=i),
                message_id=f"{library}-{i}",
            )
        client.identify(user_id="u-1", traits={"plan": "pro"})  # lands in segment_calls
        client.flush()
        client.shutdown()
        assert faults.failed == ["/v1/batch"]
        wait_loaded(rt, 26)
        got = rows(rt)
        c = rt.conservation()
    assert [r["event_id"] for r in got] == sorted(f"{library}-{i}" for i in range(25))
    by_id = {r["event_id"]: r for r in got}
    for i in range(25):
        r = by_id[f"{library}-{i}"]
        assert r["event_type"] == "order_created"
        assert (r["order_id"], r["amount_cents"], r["store_id"], r["vendor_store_id"]) == (
            f"o-{i}",
            1000 + i,
            "b-1",
            "v-1",
        )
        assert r["user_id"] == f"u-{i}"
        # skew-corrected: the device clock is right here, so within network time of it
        assert abs((r["occurred_at"] - (when + timedelta(seconds=i))).total_seconds()) < 2
        assert orjson.loads(r["context"])["library"]["name"] == "analytics-python"
    assert c.balanced
    assert c.total("loaded") == 26  # and the identify, in the traits table
    assert c.total("quarantined") == 0
    assert c.total("duplicates") >= 10  # the batch answered 503 came again


def post(
    url: str,
    body: Any,
    key: str | None = None,
    *,
    path: str = "/v1/batch",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    h = dict(headers or {})
    if key:
        h["Authorization"] = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(url + path, content=data, headers=h)


def test_wire_details(rt: Runtime) -> None:
    key = rt.meta.create_key("write", "web", pack="marketplace", source="web")[1]
    now = datetime.now(UTC)
    msg = {
        "type": "track",
        "event": "Order Paid",
        "userId": "u",
        "messageId": "m-1",
        "timestamp": (now - timedelta(minutes=10)).isoformat(),
        "properties": {**order_props(1), "paymentMethod": "card"},
    }
    with live(rt) as (url, _):
        # writeKey in the body, no header; skewed device clock corrected by sentAt
        skewed = {
            **msg,
            "messageId": "m-2",
            "timestamp": (now + timedelta(hours=5) - timedelta(minutes=10)).isoformat(),
        }
        r = post(
            url,
            {"batch": [skewed], "writeKey": key, "sentAt": (now + timedelta(hours=5)).isoformat()},
        )
        assert r.status_code == 200
        assert r.json()["accepted"] == 1
        # single call endpoint, gzip, Basic auth
        r = post(
            url,
            gzip.compress(orjson.dumps({k: v for k, v in msg.items() if k != "type"})),
            key,
            path="/v1/track",
            headers={"Content-Encoding": "gzip"},
        )
        assert r.status_code == 200, r.text
        # errors are problem+json that also carry Segment's {code, message}
        r = post(url, b"{not json", key)
        assert r.status_code == 400
        assert r.headers["content-type"] == "application/problem+json"
        assert {"code", "message", "type", "title", "status", "detail"} <= set(r.json())
        r = post(url, {"batch": [msg]}, "gmw_wrong")
        assert r.status_code == 401
        assert r.json()["code"] == "unauthorized"
        r = post(url, b"[" + b" " * (500 * 1024) + b"]", key)
        assert r.status_code == 413
        # an invalid event in a batch: still exactly 200, the reason in the body
        bad = {**msg, "messageId": "m-3", "properties": {"orderId": "o"}}
        r = post(url, {"batch": [bad]}, key)
        assert r.status_code == 200
        assert r.json()["errors"][0]["reason"] == "schema_violation"
        # a historical import (header or query flag): old device times kept, no correction
        old = now - timedelta(days=400)
        for mid, extra_path, hdrs in (
            ("m-4", "", {"Gristmill-Historical": "true"}),
            ("m-5", "?_historical=1", {}),
        ):
            imported = {**msg, "messageId": mid, "timestamp": old.isoformat()}
            body = {"batch": [imported], "sentAt": (now + timedelta(hours=5)).isoformat()}
            r = post(url, body, key, path="/v1/batch" + extra_path, headers=hdrs)
            assert r.status_code == 200, r.text
            assert r.json()["accepted"] == 1
        wait_loaded(rt, 6)
        got = {r["event_id"]: r for r in rows(rt)}
    assert set(got) == {"m-1", "m-2", "m-4", "m-5"}
    for mid in ("m-4", "m-5"):
        assert got[mid]["occurred_at"] == old
        assert orjson.loads(got[mid]["context"])["gristmill"]["historical"] is True
    device = now - timedelta(minutes=10)
    assert abs((got["m-2"]["occurred_at"] - device).total_seconds()) < 2  # corrected
    raw = orjson.loads(got["m-2"]["context"])["gristmill"]["device_times"]
    assert raw["timestamp"].startswith(str((now + timedelta(hours=5)).year))


def _msg_of_size(size: int, mid: str) -> bytes:
    msg = {
        "type": "track",
        "event": "Order Paid",
        "userId": "u",
        "messageId": mid,
        "properties": {**order_props(1), "paymentMethod": "card", "pad": ""},
    }
    base = len(orjson.dumps(msg))
    msg["properties"]["pad"] = "x" * (size - base)
    out = orjson.dumps(msg)
    assert len(out) == size
    return out


def test_segment_limits_exact_boundaries(
    client: TestClient, runtime: Runtime, write_key: str
) -> None:
    h = {"Authorization": "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()}
    event_limit = runtime.settings.limits.max_event_bytes  # 32 KB, Segment's own
    at, over = _msg_of_size(event_limit, "at"), _msg_of_size(event_limit + 1, "over")
    r = client.post("/v1/batch", content=b'{"batch":[' + at + b"," + over + b"]}", headers=h)
    assert r.status_code == 200
    assert [e["event_id"] for e in r.json()["errors"]] == ["over"]
    assert r.json()["errors"][0]["reason"] == "oversize"
    # 500 KB per batch, measured uncompressed, gzip or not
    pad = b" " * (500 * 1024 - len(b'{"batch":[' + at + b"]}"))
    exactly = b'{"batch":[' + at + b"]}" + pad
    assert len(exactly) == 500 * 1024
    assert (
        client.post(
            "/v1/batch", content=gzip.compress(exactly), headers={**h, "Content-Encoding": "gzip"}
        ).status_code
        == 200
    )
    r = client.post(
        "/v1/batch",
        content=gzip.compress(exactly + b" "),
        headers={**h, "Content-Encoding": "gzip"},
    )
    assert r.status_code == 413
    assert r.json()["code"] == "payload-too-large"
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024))
    r = client.post("/v1/batch", content=bomb, headers={**h, "Content-Encoding": "gzip"})
    assert r.status_code == 413
