"""Quarantine listing, inspection and replay after the pack is fixed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import orjson
from fastapi.testclient import TestClient
from sqlglot import exp

from gristmill.api.app import create_app
from gristmill.runtime import Runtime
from gristmill.sql.ddl import table_ref
from tests.conftest import PACKS, make_settings
from tests.factories import order


def test_list_show_and_permissions(
    client: TestClient, runtime: Runtime, write_key: str, operator_key: str
) -> None:
    raw = orjson.dumps([order(), order("order_refunded")])
    client.post("/v1/events", content=raw, headers={"Authorization": f"Bearer {write_key}"})
    runtime.loader.drain()
    ops = {"Authorization": f"Bearer {operator_key}"}
    assert client.get("/v1/quarantine").status_code == 401
    assert (
        client.get("/v1/quarantine", headers={"Authorization": f"Bearer {write_key}"}).status_code
        == 403
    )
    listing = client.get("/v1/quarantine", headers=ops).json()
    assert listing["counts"] == {"unknown_event_type": 1}
    (item,) = listing["items"]
    assert item["event_type"] == "order_refunded"
    assert item["source"] == "web"
    one = client.get(f"/v1/quarantine/{item['quarantine_id']}", headers=ops).json()
    assert orjson.loads(one["raw"]) == orjson.loads(raw)[1]
    assert client.get("/v1/quarantine/nope", headers=ops).status_code == 404
    assert client.get("/v1/quarantine?reason=bogus", headers=ops).status_code == 422


def test_replay_after_the_pack_learns_the_event(tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    shutil.copytree(PACKS / "marketplace", packs / "marketplace")
    settings = make_settings(tmp_path / "data", packs_dir=packs)
    rt = Runtime(settings)
    key = rt.meta.create_key("write", "t", pack="marketplace", source="web")[1]
    ev = order(schema_version=3)
    with TestClient(create_app(rt, start=False)) as c:
        r = c.post(
            "/v1/events", content=orjson.dumps([ev]), headers={"Authorization": f"Bearer {key}"}
        )
        assert r.json()["errors"][0]["reason"] == "unknown_schema_version"
    rt.loader.drain()
    rt.stop()

    # The team ships schema version 3 of order_created, then replays.
    et_dir = packs / "marketplace" / "schemas" / "order_created"
    doc = json.loads((et_dir / "1.json").read_text())
    doc["$id"] = "gristmill:marketplace/order_created/3"
    (et_dir / "3.json").write_text(json.dumps(doc))
    yaml_file = packs / "marketplace" / "pack.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("versions: [1, 2]", "versions: [1, 2, 3]"))

    rt = Runtime(settings)
    op = rt.meta.create_key("secret", "ops", role="operator")[1]
    with TestClient(create_app(rt, start=False)) as c:
        h = {"Authorization": f"Bearer {op}"}
        res = c.post("/v1/quarantine/replay", json={"reason": "unknown_schema_version"}, headers=h)
        assert res.json() == {"replayed": 1, "accepted": 1, "rejected": 0, "failed": 0}
        rt.loader.drain()
        again = c.post(
            "/v1/quarantine/replay", json={"reason": "unknown_schema_version"}, headers=h
        )
        assert again.json()["replayed"] == 0
        listing = c.get("/v1/quarantine?include_replayed=true", headers=h).json()
        assert listing["items"][0]["replayed_at"] is not None
    cons = rt.conservation()
    assert cons.balanced
    assert (cons.total("received"), cons.total("loaded"), cons.total("quarantined")) == (2, 1, 1)
    rt.stop()


def test_replay_of_dialect_items_and_unreplayable_rows(tmp_path: Path) -> None:
    """A Snowplow page view quarantined as unmapped loads once the pack maps ``pv``; a body
    that is still unreadable is quarantined again without failing the replay call."""
    packs = tmp_path / "packs"
    shutil.copytree(PACKS / "marketplace", packs / "marketplace")
    settings = make_settings(tmp_path / "data", packs_dir=packs)
    rt = Runtime(settings)
    key = rt.meta.create_key("write", "t", pack="marketplace", source="web")[1]
    pv = {
        "e": "pv",
        "eid": "pv-1",
        "aid": key,
        "url": "https://shop/",
        "dtm": "1700000000000",
        "stm": "1700000000500",
    }
    with TestClient(create_app(rt, start=False)) as c:
        r = c.post(
            "/com.snowplowanalytics.snowplow/tp2",
            content=orjson.dumps({"schema": "iglu:x/payload_data/jsonschema/1-0-4", "data": [pv]}),
        )
        assert r.status_code == 200
        r = c.post(
            "/v1/events",
            content=b"\x1f\x8b not really gzip",
            headers={"Authorization": f"Bearer {key}", "Content-Encoding": "gzip"},
        )
        assert r.status_code == 400
    rt.loader.drain()
    rt.stop()

    # The team maps page views to a new event type with a permissive schema, then replays.
    et = packs / "marketplace" / "schemas" / "page_viewed"
    et.mkdir()
    (et / "1.json").write_text(
        json.dumps(
            {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": {"url": {"type": "string"}, "vendor_store_id": {"type": "string"}},
            }
        )
    )
    f = packs / "marketplace" / "pack.yaml"
    f.write_text(
        f.read_text()
        .replace(
            "  ad_click:\n",
            "  page_viewed:\n    category: advertising\n    table: ad_events\n"
            "    versions: [1]\n    promote: [vendor_store_id]\n  ad_click:\n",
        )
        .replace("  snowplow:\n", "  snowplow:\n    pv: page_viewed\n")
    )
    rt = Runtime(settings)
    op = rt.meta.create_key("secret", "ops", role="operator")[1]
    with TestClient(create_app(rt, start=False)) as c:
        res = c.post(
            "/v1/quarantine/replay",
            json={"reason": "unmapped"},
            headers={"Authorization": f"Bearer {op}"},
        ).json()
        assert res == {"replayed": 1, "accepted": 1, "rejected": 0, "failed": 0}
        res = c.post(
            "/v1/quarantine/replay",
            json={"reason": "undecodable"},
            headers={"Authorization": f"Bearer {op}"},
        ).json()
        assert res["replayed"] == 1  # framed again, quarantined again; the call succeeds
    rt.loader.drain()
    out = rt.warehouse.query(
        exp.select("event_id", "occurred_at").from_(table_ref("marketplace", "ad_events"))
    ).to_pylist()
    assert [r["event_id"] for r in out] == ["pv-1"]
    assert out[0]["occurred_at"].timestamp() == 1_700_000_000  # device time kept on replay
    rt.stop()
