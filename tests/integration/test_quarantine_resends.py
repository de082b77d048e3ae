"""A quarantined body re-sent N times by the same source is stored once, with the number of
sendings and the last one's time; another body, or the same body from another source, is a
row of its own. Every sending still counts in conservation (``quarantined``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from gristmill.api.app import create_app
from gristmill.config import PostgresSettings
from gristmill.runtime import Runtime
from tests.conftest import make_settings
from tests.factories import order
from tests.pg import scratch_database


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def rt(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    with ExitStack() as stack:
        overrides: dict[str, Any] = {}
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
