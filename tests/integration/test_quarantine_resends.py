"""A quarantined body re-sent N times by the same source is stored once, with the number of
sendings and the last one's time; another body, or the same body from another source, is a
row of its own. Every sending still counts in conservation (``quarantined``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from gristmill.api.app import create_app
from gristmill.config import PostgresSettings
from gristmill.load.quarantine import QuarantineFilter, list_quarantine, replay
from gristmill.runtime import Runtime
from tests.conftest import make_settings
from tests.factories import order
from tests.integration.analytics_fixtures import send
from tests.pg import scratch_database
from tests.prom import find


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def rt(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    with ExitStack() as stack:
        overrides: dict[str, Any] = {"server": {"metrics_allow": ["testclient"]}}
        if request.param == "postgres":
            overrides["warehouse"] = PostgresSettings(dsn=stack.enter_context(scratch_database()))
        runtime = Runtime(make_settings(tmp_path / "d", **overrides))
        stack.callback(runtime.stop)
        yield runtime


def test_resends_are_kept_once_per_body_and_source(rt: Runtime) -> None:
    web = rt.meta.create_key("write", "web", pack="marketplace", source="web")[1]
    app = rt.meta.create_key("write", "app", pack="marketplace", source="app")[1]
    ops = {"Authorization": f"Bearer {rt.meta.create_key('secret', 'o', role='operator')[1]}"}
    same = order("order_refunded", event_id="e-1")
    other = order("order_refunded", event_id="e-2")

    def send(c: TestClient, key: str, *events: dict[str, Any]) -> None:
        body = b"[" + b",".join(orjson.dumps(e) for e in events) + b"]"
        r = c.post("/v1/events", content=body, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code in (200, 422), r.text  # 422: nothing accepted, all kept
        rt.loader.drain()  # each request its own load batch: resends meet stored rows

    with TestClient(create_app(rt, start=False)) as c:
        send(c, web, same)
        send(c, web, same, same)  # twice in one batch, then once more
        send(c, web, same, other)
        send(c, app, same)  # the same bytes from another source
        items = c.get("/v1/quarantine", headers=ops).json()["items"]
        stats = c.get("/v1/pipeline/stats", headers=ops).json()
        web_row = next(i for i in items if i["source"] == "web" and i["event_id"] == "e-1")
        replay = c.post(
            "/v1/quarantine/replay", json={"ids": [web_row["quarantine_id"]]}, headers=ops
        )
        assert replay.json()["replayed"] == 1
        rt.loader.drain()  # the replay quarantined it again (the pack still lacks the type)
        again = c.get("/v1/quarantine", headers=ops).json()["items"]
        metrics = c.get("/metrics").text
    # on /metrics: every sending once; the replay is not new traffic
    assert [s.value for s in find(metrics, "gristmill_collected_total", source="web")] == [5.0]
    got = sorted((i["source"], i["event_id"], i["resends"]) for i in items)
    assert got == [("app", "e-1", 1), ("web", "e-1", 4), ("web", "e-2", 1)]
    assert web_row["last_seen_at"] >= web_row["received_at"]
    assert web_row["last_seen_at"] > web_row["received_at"] or web_row["resends"] == 1
    by = {s["source"]: s for s in stats["sources"]}
    assert by["web"]["quarantined"] == 5  # every sending counts
    assert by["web"]["last_reasons"][0]["count"] == 5
    assert by["app"]["quarantined"] == 1
    assert stats["balanced"]
    # a replayed row is history: the same body quarantined again starts a new row
    assert sorted((i["source"], i["event_id"], i["resends"]) for i in again) == [
        ("app", "e-1", 1),
        ("web", "e-1", 1),
        ("web", "e-2", 1),
    ]


def test_last_reasons_are_the_five_newest_within_the_window(rt: Runtime) -> None:
    from datetime import UTC, datetime, timedelta

    from gristmill.load.quarantine_stats import source_quarantine

    web = rt.meta.create_key("write", "web", pack="marketplace", source="web")[1]
    bad = {
        "undecodable": b"{not json",
        "unknown_event_type": orjson.dumps([order("order_refunded")]),
        "unknown_schema_version": orjson.dumps([order(schema_version=9)]),
        "schema_violation": orjson.dumps([order(amount="lots")]),
        "invalid_envelope": orjson.dumps([{"event_type": "order_created"}]),
        "oversize": orjson.dumps([order(pad="x" * 70_000)]),
    }
    with TestClient(create_app(rt, start=False)) as c:
        for body in bad.values():  # one load batch each: one quarantine time each
            c.post("/v1/events", content=body, headers={"Authorization": f"Bearer {web}"})
            rt.loader.drain()
    now = datetime.now(UTC)
    (got,) = source_quarantine(rt.warehouse, timedelta(hours=1), now + timedelta(seconds=1))
    assert got["quarantined"] == 6
    assert [r["reason"] for r in got["last_reasons"]] == list(reversed(bad))[:5]
    assert all(r["count"] == 1 for r in got["last_reasons"])
    # two hours on, nothing is in a one-hour window
    assert source_quarantine(rt.warehouse, timedelta(hours=1), now + timedelta(hours=2)) == []


def test_a_reject_loaded_before_its_replay_is_marked_stays_open(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replay appends its frames, then marks the rows it read as replayed. A running
    loader can load the replay's reject in between: it merges into the same open row. That
    row must stay open (it is still bad, sent once more), not be hidden as replayed."""
    web = rt.meta.create_key("write", "web", pack="marketplace", source="web")[1]
    with TestClient(create_app(rt, start=False)) as c:
        body = orjson.dumps([order("order_refunded", event_id="e-1")])
        r = c.post("/v1/events", content=body, headers={"Authorization": f"Bearer {web}"})
        assert r.status_code == 422, r.text
    rt.loader.drain()
    log = rt.collector.log
    append = log.append

    def append_then_load(records: Any) -> Any:  # the loader wins the race, every time
        out = append(records)
        rt.loader.drain()
        return out

    monkeypatch.setattr(log, "append", append_then_load)
    result = replay(rt.warehouse, rt.collector, QuarantineFilter(source="web"))
    assert (result.replayed, result.rejected) == (1, 1)
    rows = list_quarantine(rt.warehouse, QuarantineFilter(source="web"))
    assert [(r["event_id"], r["reason"], r["resends"]) for r in rows] == [
        ("e-1", "unknown_event_type", 2)
    ]
    c = rt.conservation()
    assert c.balanced
    assert c.total("quarantined") == 2


def test_dedupe_keys_in_memory_on_metrics(tmp_path: Path) -> None:
    """DuckDB's in-memory key set is visible on /metrics: one key per loaded event, a
    re-sent event adds none."""
    rt = Runtime(make_settings(tmp_path / "d", server={"metrics_allow": ["testclient"]}))
    try:
        key = rt.meta.create_key("write", "web", pack="marketplace", source="web")[1]
        events = [order("order_created", event_id=f"k-{i}") for i in range(3)]
        with TestClient(create_app(rt)) as c:
            for batch in (events, events[:1]):  # the second request re-sends one event
                r = c.post(
                    "/v1/events",
                    content=orjson.dumps(batch),
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert r.status_code == 200, r.text
                rt.loader.drain()
            metrics = c.get("/metrics").text
        held = find(metrics, "gristmill_dedupe_keys_in_memory", pack="marketplace")
        assert [s.value for s in held] == [3.0]
    finally:
        rt.stop()


def test_a_started_loader_reads_the_key_set_before_the_first_batch(tmp_path: Path) -> None:
    """After a restart the running loader reads the dedupe keys into memory before any event
    arrives (the first load would otherwise read the key table itself), and a re-sent
    event is still a duplicate."""
    data = tmp_path / "d"
    events = [order("order_created", event_id=f"w-{i}") for i in range(4)]
    rt = Runtime(make_settings(data))
    try:
        send(rt, events, source="web")
    finally:
        rt.stop()
    rt = Runtime(make_settings(data))
    try:
        assert rt.warehouse.keys_in_memory() == {}  # type: ignore[attr-defined]
        with TestClient(create_app(rt)):  # starts the loader
            deadline = time.monotonic() + 30
            while rt.warehouse.keys_in_memory().get("marketplace") != 4:  # type: ignore[attr-defined]
                assert time.monotonic() < deadline, rt.warehouse.keys_in_memory()  # type: ignore[attr-defined]
                time.sleep(0.05)
            assert rt.loader.stats.batches == 0  # warmed, not loaded
            send(rt, [*events[:2], order("order_created", event_id="w-new")], source="web")
            c = rt.conservation()
            assert (c.total("loaded"), c.total("duplicates")) == (5, 2), c.as_dict()
    finally:
        rt.stop()
