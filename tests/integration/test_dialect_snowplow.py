"""Snowplow: the real ``snowplow-tracker`` sends self-describing and structured events (plain
and base64) to a live server; the app id is the write key; exactly once across a 503."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest

from gristmill.runtime import Runtime
from tests.integration.test_dialect_segment import rows
from tests.live import live, wait_loaded


@pytest.mark.parametrize("base64", [True, False])
def test_real_tracker(rt: Runtime, base64: bool) -> None:
    from snowplow_tracker import Emitter, SelfDescribingJson, Tracker
    from snowplow_tracker.events import SelfDescribing, StructuredEvent

    key = rt.meta.create_key("write", "sp", pack="marketplace", source="snowplow")[1]
    when = datetime.now(UTC) - timedelta(hours=6)
    with live(rt) as (url, faults):
        faults.arm("/com.snowplowanalytics.snowplow/tp2", 1)
        emitter = Emitter(url, batch_size=5, max_retry_delay_seconds=1)
        tracker = Tracker("shop", emitter, app_id=key, encode_base64=base64)
        for i in range(10):
            ctx = [SelfDescribingJson("iglu:com.marketplace/cart/jsonschema/1-0-0", {"items": i})]
            tracker.track(
                SelfDescribing(
                    SelfDescribingJson(
                        "iglu:com.marketplace/order_paid/jsonschema/1-0-2",
                        {
                            "order_id": f"o-{i}",
                            "store_id": "b",
                            "vendor_store_id": "v",
                            "amount_cents": 100 * i,
                        },
                    ),
                    context=ctx,
                    true_timestamp=(when + timedelta(seconds=i)).timestamp() * 1000,
                )
            )
        tracker.track(StructuredEvent("orders", "hover"))  # unmapped: quarantined
        tracker.flush()
        deadline = time.monotonic() + 30
        while rt.conservation().total("received") < 16 and time.monotonic() < deadline:
            tracker.flush()  # the retry timer re-sends the batch answered 503
            time.sleep(0.2)
        wait_loaded(rt, 16)
        got = rows(rt)
        c = rt.conservation()
    assert len(got) == 10
    assert sorted(r["amount_cents"] for r in got) == [100 * i for i in range(10)]
    assert {r["event_type"] for r in got} == {"order_paid"}
    first = min(got, key=lambda r: r["amount_cents"])
    assert abs((first["occurred_at"] - when).total_seconds()) < 1  # ttm taken as is
    ctx = orjson.loads(first["context"])["snowplow"]
    assert ctx["contexts"][0]["data"] == {"items": 0}
    assert c.balanced
    assert c.total("quarantined") == 1
    assert c.total("duplicates") >= 5


def test_get_pixel_and_missing_key(rt: Runtime) -> None:
    key = rt.meta.create_key("write", "sp", pack="marketplace", source="px")[1]
    with live(rt) as (url, _):
        r = httpx.get(
            url + "/i",
            params={
                "e": "pv",
                "eid": "p-1",
                "aid": key,
                "url": "https://shop/",
                "dtm": "1700000000000",
            },
        )
        assert r.status_code == 200
        assert r.headers["content-type"] == "image/gif"
        r = httpx.get(url + "/i", params={"e": "pv", "eid": "p-2", "aid": "not-a-key"})
        assert r.status_code == 401
        wait_loaded(rt, 1)
        assert rt.conservation().total("quarantined") == 1  # pv is not mapped in marketplace
