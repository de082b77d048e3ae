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


def test_operator_moves_a_pin_and_collectors_follow(
    tmp_path: Path, packs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``gristmill schema pin`` moves a source; a collector sharing the metadata store checks
    its next unversioned event against the new version once its cached pin expires."""
    import orjson
    from typer.testing import CliRunner

    from gristmill.cli.main import app as cli_app
    from gristmill.collect.pins import Pins
    from gristmill.collect.service import Parser
    from gristmill.config import LimitSettings
    from gristmill.meta.store import MetaStore
    from gristmill.pack.loader import load_pack

    publish_v2(packs)
    monkeypatch.setenv("GRISTMILL_PACKS_DIR", str(packs))
    monkeypatch.setenv("GRISTMILL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "200")  # rich tables unwrapped
    cli = CliRunner()
    (tmp_path / "data").mkdir()
    meta = MetaStore(f"sqlite:///{tmp_path / 'data' / 'meta.sqlite'}")
    meta.pins.pin_first("marketplace", "web", "order_paid", 1)  # web first sent under v1
    parser = Parser(
        {"marketplace": load_pack(packs / "marketplace")},
        LimitSettings(),
        pins=Pins(meta.pins, ttl_s=0),
    )

    def version_of(props: dict[str, Any]) -> Any:
        ev = {"event_id": "e", "event_type": "order_paid", "properties": props,
              "occurred_at": "2026-01-02T03:04:05Z"}  # fmt: skip
        p = parser.prepare(pack="marketplace", source="web", dialect="native", raw=orjson.dumps(ev))
        if p.frame.events:
            return p.frame.events[0].schema_version
        return p.frame.rejects[0].reason

    v1 = {"order_id": "o", "store_id": "s", "vendor_store_id": "v", "amount_cents": 1}
    assert version_of(v1) == 1
    r = cli.invoke(cli_app, ["schema", "pin", "--pack", "marketplace", "--source", "web",
                             "--event-type", "order_paid", "--version", "2"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert version_of({**v1, "currency": "EUR"}) == 2
    assert version_of(v1) == "schema_violation"  # web is on v2 now
    listing = orjson.loads(cli.invoke(cli_app, ["schema", "pins", "--json"]).output)
    assert [(p["source"], p["version"], p["pinned_by"]) for p in listing] == [
        ("web", 2, "operator")
    ]
    meta.pins.pin_first("marketplace", "app", "order_paid", 1)
    status = cli.invoke(cli_app, ["status"])  # no server: read from the files
    assert status.exit_code == 0, status.output
    table = status.output.split("Schema versions of unversioned events, per source")[1]
    rows = {tuple(line.split("│")[1:5]) for line in table.splitlines() if "order_paid" in line}
    assert {tuple(c.strip() for c in r) for r in rows} == {
        ("marketplace", "web", "order_paid", "2"),
        ("marketplace", "app", "order_paid", "1"),  # behind the newest: to migrate
    }
    bad = cli.invoke(cli_app, ["schema", "pin", "--pack", "marketplace", "--source", "web",
                               "--event-type", "order_paid", "--version", "7"])  # fmt: skip
    assert bad.exit_code == 1
    assert "no version 7" in bad.output
    meta.close()


def test_first_send_pin_is_shared_by_processes(tmp_path: Path) -> None:
    """Two collector processes racing on one metadata store: the first pin holds for both."""
    from gristmill.meta.schema_pins import PinStore
    from gristmill.meta.store import MetaStore

    url = f"sqlite:///{tmp_path / 'meta.sqlite'}"
    a, b = MetaStore(url), MetaStore(url)
    assert a.pins.pin_first("p", "web", "t", 1) == 1
    assert b.pins.pin_first("p", "web", "t", 2) == 1  # the pack was upgraded in process b
    assert b.pins.pin_first("p", "app", "t", 2) == 2
    assert isinstance(a.pins, PinStore)
    assert [(p.source, p.version) for p in a.pins.list("p")] == [("app", 2), ("web", 1)]
    a.close()
    b.close()
