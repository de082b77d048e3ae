"""PostHog: the real ``posthog`` client in v0 (``/batch/``) and v1 (``/i/v1/analytics/events``)
capture modes sends to a live server: each event once, mapped and typed, right occurred_at,
exactly once even when the first request is answered 503 after it was stored."""

from __future__ import annotations

import base64
import gzip
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from gristmill.runtime import Runtime
from tests.integration.test_dialect_segment import rows
from tests.live import live, wait_loaded


def props(i: int) -> dict[str, Any]:
    return {
        "order_id": f"o-{i}",
        "store_id": "b-1",
        "vendor_store_id": "v-1",
        "amount_cents": 500 + i,
        "$current_url": "https://shop.example/cart",
    }


@pytest.mark.parametrize("mode", ["v0", "v1"])
def test_real_client(rt: Runtime, mode: str) -> None:
    from posthog import Posthog

    key = rt.meta.create_key("write", "ph", pack="marketplace", source=f"posthog-{mode}")[1]
    when = datetime.now(UTC) - timedelta(days=2)
    with live(rt) as (url, faults):
        faults.arm("/batch/" if mode == "v0" else "/i/v1/analytics/events", 1)
        kwargs: dict[str, Any] = {"capture_mode": "v1"} if mode == "v1" else {}
        ph = Posthog(key, host=url, flush_interval=0.05, flush_at=10, max_retries=4, **kwargs)
        uuids = []
        for i in range(20):
            uid = f"00000000-0000-4000-8000-{i:012d}"
            uuids.append(uid)
            ph.capture(
                distinct_id=f"user-{i}",
                event="order created",
                properties=props(i),
                timestamp=when + timedelta(minutes=i),
                uuid=uid,
            )
        ph.capture(distinct_id="user-x", event="$pageview", properties={})  # unmapped
        ph.flush()
        ph.shutdown()
        assert len(faults.failed) == 1
        wait_loaded(rt, 21)
        got = {r["event_id"]: r for r in rows(rt)}
        c = rt.conservation()
    assert sorted(got) == sorted(uuids)
    for i, uid in enumerate(uuids):
        r = got[uid]
        assert (r["event_type"], r["order_id"], r["amount_cents"], r["user_id"]) == (
            "order_created",
            f"o-{i}",
            500 + i,
            f"user-{i}",
        )
        assert abs((r["occurred_at"] - (when + timedelta(minutes=i))).total_seconds()) < 2
        ctx = orjson.loads(r["context"])
        assert ctx["posthog"]["$current_url"] == "https://shop.example/cart"
        assert "$lib" in ctx["posthog"] or mode == "v1"  # v1 strips $lib from properties
    assert c.balanced
    assert c.total("loaded") == 20
    assert c.total("quarantined") == 1


def test_v1_results_report_drops(rt: Runtime) -> None:
    key = rt.meta.create_key("write", "ph", pack="marketplace", source="ph")[1]
    ok = {
        "event": "order paid",
        "uuid": "u-ok",
        "distinct_id": "d",
        "timestamp": datetime.now(UTC).isoformat(),
        "properties": props(1),
    }
    bad = {**ok, "uuid": "u-bad", "properties": {"order_id": "x"}}
    with live(rt) as (url, _):
        r = httpx.post(
            url + "/i/v1/analytics/events",
            content=orjson.dumps({"created_at": ok["timestamp"], "batch": [ok, bad]}),
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 200
        res = r.json()["results"]
        assert res["u-ok"] == {"result": "ok"}
        assert res["u-bad"]["result"] == "drop"
        assert "schema_violation" in res["u-bad"]["details"]
        r = httpx.post(
            url + "/i/v1/analytics/events", content=b"{}", headers={"Authorization": "Bearer nope"}
        )
        assert r.status_code == 401
        assert "error" in r.json()


def test_v0_shapes(rt: Runtime) -> None:
    key = rt.meta.create_key("write", "ph", pack="marketplace", source="js")[1]
    ev = {
        "event": "order paid",
        "uuid": "u-1",
        "properties": {**props(1), "distinct_id": "d", "token": key},
    }
    with live(rt) as (url, _):
        # single event, key inside properties.token, gzip without a header (magic bytes)
        r = httpx.post(url + "/e/", content=gzip.compress(orjson.dumps(ev)))
        assert r.status_code == 200, r.text
        assert r.json() == {"status": 1}
        # GET with base64 data= and the key as a query parameter
        ev2 = {**ev, "uuid": "u-2", "properties": {**props(2), "distinct_id": "d"}}
        data = base64.b64encode(orjson.dumps(ev2)).decode()
        r = httpx.get(url + "/capture/", params={"data": data, "api_key": key})
        assert r.status_code == 200, r.text
        # form-encoded data=, a list of events
        ev3 = {**ev2, "uuid": "u-3"}
        form = {"data": base64.b64encode(orjson.dumps([ev3])).decode(), "api_key": key}
        r = httpx.post(url + "/batch/", data=form)
        assert r.status_code == 200, r.text
        r = httpx.post(url + "/batch/", content=b"garbage!!", params={"api_key": key})
        assert r.status_code == 400
        wait_loaded(rt, 4)
        assert sorted(rows(rt, "marketplace_events"), key=str)
        assert {r["event_id"] for r in rows(rt)} == {"u-1", "u-2", "u-3"}
