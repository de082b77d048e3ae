"""CloudEvents: structured, batch and binary modes; dedupe per (source, id)."""

from __future__ import annotations

import orjson
from fastapi.testclient import TestClient
from sqlglot import exp

from gristmill.runtime import Runtime
from gristmill.sql.ddl import table_ref


def ce(i: str, source: str = "//billing", t: str = "com.marketplace.payout.completed") -> dict:
    return {
        "specversion": "1.0",
        "id": i,
        "source": source,
        "type": t,
        "time": "2026-11-10T12:00:00Z",
        "subject": "vendor-9",
        "data": {"payout_id": f"p-{i}", "vendor_store_id": "v-9", "amount_cents": 700},
        "traceparent": "00-abc-def-01",
    }


def test_modes_and_dedupe(client: TestClient, runtime: Runtime, write_key: str) -> None:
    h = {"Authorization": f"Bearer {write_key}"}
    one = client.post(
        "/api/v1/events",
        content=orjson.dumps(ce("1")),
        headers={**h, "Content-Type": "application/cloudevents+json"},
    )
    assert one.status_code == 200, one.text
    batch = [ce("2"), ce("1"), ce("1", source="//other"), ce("3", t="com.unknown")]
    r = client.post(
        "/api/v1/events",
        content=orjson.dumps(batch),
        headers={**h, "Content-Type": "application/cloudevents-batch+json"},
    )
    assert r.status_code == 207
    assert r.json()["results"][3]["reason"] == "unmapped"
    binary = client.post(
        "/api/v1/events",
        content=orjson.dumps(ce("4")["data"]),
        headers={
            **h,
            "Content-Type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": "4",
            "ce-source": "//billing",
            "ce-type": "com.marketplace.payout.completed",
            "ce-time": "2026-11-10T13:00:00Z",
        },
    )
    assert binary.status_code == 200, binary.text
    bad = client.post(
        "/api/v1/events",
        content=orjson.dumps({**ce("5"), "specversion": "0.3"}),
        headers={**h, "Content-Type": "application/cloudevents+json"},
    )
    assert bad.status_code == 422
    runtime.loader.drain()
    rows = runtime.warehouse.query(
        exp.select("event_id", "user_id", "occurred_at", "context")
        .from_(table_ref("marketplace", "marketplace_events"))
        .order_by("event_id")
    ).to_pylist()
    assert [r["event_id"] for r in rows] == [
        "//billing#1",
        "//billing#2",
        "//billing#4",
        "//other#1",
    ]
    assert rows[0]["user_id"] == "vendor-9"
    assert rows[0]["occurred_at"].isoformat() == "2026-11-10T12:00:00+00:00"
    assert orjson.loads(rows[0]["context"])["cloudevents"]["traceparent"] == "00-abc-def-01"
    c = runtime.conservation()
    assert c.balanced
    assert (c.total("loaded"), c.total("duplicates"), c.total("quarantined")) == (4, 1, 2)


def test_needs_a_header_key(client: TestClient) -> None:
    r = client.post(
        "/api/v1/events",
        content=orjson.dumps(ce("1")),
        headers={"Content-Type": "application/cloudevents+json"},
    )
    assert r.status_code == 401
