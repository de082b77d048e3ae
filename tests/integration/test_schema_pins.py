"""Publishing a new schema version changes nothing for clients already sending.

A source is pinned to the version that was newest when it first sent an event type without
``schema_version``; the real Segment client (analytics-python) sends to a live server before
and after the pack gains v2 with a new required property.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlglot import exp

from gristmill.api.routers.ops import pipeline_stats
from gristmill.runtime import Runtime
from gristmill.sql.ddl import table_ref
from tests.conftest import PACKS, make_settings
from tests.live import live, wait_loaded

V2 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["order_id", "store_id", "vendor_store_id", "amount_cents", "currency"],
    "properties": {
        "order_id": {"type": "string"},
        "store_id": {"type": "string"},
        "vendor_store_id": {"type": "string"},
        "amount_cents": {"type": "integer"},
        "currency": {"type": "string", "minLength": 3, "maxLength": 3},
    },
}


def publish_v2(packs: Path) -> None:
    root = packs / "marketplace"
    (root / "schemas" / "order_paid" / "2.json").write_text(json.dumps(V2))
    text = (root / "pack.yaml").read_text()
    old = "  order_paid:\n    description: An order was paid (card, ACH or on account).\n"
    old += "    category: transaction\n    table: marketplace_events\n    versions: [1]\n"
    assert old in text
    (root / "pack.yaml").write_text(text.replace(old, old.replace("[1]", "[1, 2]")))


def rows(rt: Runtime) -> dict[str, dict[str, Any]]:
    q = exp.select("*").from_(table_ref("marketplace", "marketplace_events"))
    return {r["event_id"]: r for r in rt.warehouse.query(q).to_pylist()}


def segment_send(url: str, key: str, ids: list[str], **extra: Any) -> None:
    from segment.analytics import Client

    client = Client(key, host=url, max_retries=3, upload_interval=0.05, upload_size=50)
    for mid in ids:
        client.track(
            user_id="u-1",
            event="Order Paid",
            properties={
                "orderId": f"o-{mid}",
                "buyerStoreId": "b-1",
                "vendorStoreId": "v-1",
                "amountCents": 100,
                **extra,
            },
            message_id=mid,
        )
    client.flush()
    client.shutdown()


@pytest.fixture
def packs(tmp_path: Path) -> Path:
    out = tmp_path / "packs"
    shutil.copytree(PACKS / "marketplace", out / "marketplace")
    return out


def test_pack_upgrade_keeps_unversioned_clients_on_their_version(
    tmp_path: Path, packs: Path
) -> None:
    settings = make_settings(tmp_path / "d", packs_dir=packs)
    rt = Runtime(settings)
    try:
        web = rt.meta.create_key("write", "web", pack="marketplace", source="web")[1]
        with live(rt) as (url, _):
            segment_send(url, web, ["w-1", "w-2"])
            wait_loaded(rt, 2)
            before = rows(rt)
    finally:
        rt.stop()
    assert {r["schema_version"] for r in before.values()} == {1}

    publish_v2(packs)
    rt = Runtime(settings)  # a new process with the upgraded pack, the same metadata store
    try:
        assert rt.packs["marketplace"].latest_version("order_paid") == 2
        app = rt.meta.create_key("write", "app", pack="marketplace", source="app")[1]
        api = rt.meta.create_key("write", "api", pack="marketplace", source="api")[1]
        with live(rt) as (url, _):
            segment_send(url, web, ["w-3", "w-4"])  # the old client, unchanged
            segment_send(url, app, ["a-1"], currency="EUR")  # a new client: v2
            segment_send(url, app, ["a-2"])  # ... so v1-shaped events fail v2
            native = {
                "event_id": "n-1",
                "event_type": "order_paid",
                "schema_version": 2,
                "occurred_at": "2026-01-02T03:04:05Z",
                "properties": {
                    "order_id": "o-n",
                    "store_id": "b-1",
                    "vendor_store_id": "v-1",
                    "amount_cents": 5,
                    "currency": "USD",
                },
            }
            for key, eid in ((api, "n-1"), (web, "n-2")):  # asked for v2: v2, pinned or not
                r = httpx.post(
                    url + "/v1/events",
                    json={**native, "event_id": eid},
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert r.status_code == 200, r.text
            wait_loaded(rt, 8)  # 2 before the upgrade, 6 after
            after = rows(rt)
            c = rt.conservation()
            stats = pipeline_stats(rt)
    finally:
        rt.stop()
    assert set(after) == {"w-1", "w-2", "w-3", "w-4", "a-1", "n-1", "n-2"}
    # the old client: same version, same columns and values as before the upgrade
    for new, old in (("w-3", "w-1"), ("w-4", "w-2")):
        assert after[new]["schema_version"] == 1
        assert set(after[new]) == set(before[old])
        for col in ("event_type", "source", "store_id", "vendor_store_id", "amount_cents"):
            assert after[new][col] == before[old][col]
    assert after["a-1"]["schema_version"] == 2
    assert after["n-1"]["schema_version"] == after["n-2"]["schema_version"] == 2
    by_source = {s.source: s for s in c.sources}
    assert by_source["web"].quarantined == 0
    assert by_source["app"].quarantined == 1  # a-2: no currency, and app is on v2
    pins = {(p["source"], p["event_type"]): p for p in stats["schema_pins"]}
    assert pins[("web", "order_paid")]["version"] == 1
    assert pins[("app", "order_paid")]["version"] == 2
    assert pins[("web", "order_paid")]["newest"] == 2
    assert ("api", "order_paid") not in pins  # it always names its version
