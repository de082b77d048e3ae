"""The delivery pack (seed 002) end to end on DuckDB: traffic shuffled, sent twice in part and
re-emitted under new ids is loaded, and every lifecycle and track answer equals an
independent Python computation (delivery_fixtures), per branch, across the night clocks go
back in Europe/London (2026-10-25); branch managers see their branch only (another → 404)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from gristmill.api.app import create_app
from gristmill.demo.delivery import DeliveryConfig, DeliveryTraffic, generate_delivery
from gristmill.runtime import Runtime
from tests.conftest import make_settings
from tests.integration.delivery_fixtures import (
    expected_lifecycle,
    expected_tracks,
    haversine,
    send,
)

END = datetime(2026, 10, 27, 6, tzinfo=UTC)  # three days around the end of BST
START = END - timedelta(days=3)
RANGE = {"start": START.isoformat(), "end": END.isoformat()}
TZ = "Europe/London"


def _dst_order() -> list[dict[str, Any]]:
    """Created 01:30 BST (00:30 UTC), delivered 01:15 GMT (01:15 UTC) on 2026-10-25: the wall
    clock goes backwards, the order took 45 minutes."""

    def ev(eid: str, et: str, at: str, **p: Any) -> dict[str, Any]:
        props = {"order_id": "ord_dst", "branch_id": "br_dst", **p}
        return {"event_id": eid, "event_type": et, "occurred_at": at, "properties": props}

    return [
        ev(
            "dst-3",
            "delivery_status_changed",
            "2026-10-25T01:15:00Z",
            status="delivered",
            driver_id="d",
        ),
        ev("dst-1", "created", "2026-10-25T00:30:00Z"),
        ev("dst-2", "request_accepted", "2026-10-25T00:40:00Z", driver_id="d"),
        ev("dst-1", "created", "2026-10-25T00:30:00Z"),
    ]


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Runtime, TestClient, DeliveryTraffic, dict[str, str]]]:
    tmp = Path(tmp_path_factory.mktemp("delivery"))
    rt = Runtime(make_settings(tmp, packs=["delivery"]))
    t = generate_delivery(
        DeliveryConfig(days=3, branches=3, drivers_per_branch=3, ping_s=120, end=END)
    )
    t.events.extend(_dst_order())
    t.distinct.extend(_dst_order()[:3])
    rng = random.Random(5)
    late = [e for e in t.events if rng.random() < 0.1]
    late_ids = {id(e) for e in late}
    try:
        send(rt, [e for e in t.events if id(e) not in late_ids])
        send(rt, late)  # late arrivals after rollups and later events were loaded
        send(rt, t.distinct[::40])  # a retry of already loaded events: dropped by dedupe
        tokens = {"ops": rt.meta.create_key("secret", "ops", pack="delivery", role="operations")[1]}
        for b in (*t.branches, "br_dst"):
            tokens[b] = rt.meta.create_key(
                "secret", b, pack="delivery", role="branch_manager", claims={"branch_id": b}
            )[1]
        with TestClient(create_app(rt, start=False)) as client:
            yield rt, client, t, tokens
    finally:
        rt.stop()


def _get(client: TestClient, token: str, url: str, **params: Any) -> Any:
    r = client.get(url, params=params, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r.json()


def _same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["entities"] == want["entities"]
    assert got["reached"] == want["reached"]
    assert got["by_status"] == want["by_status"]
    for name, w in want["durations"].items():
        g = got["durations"][name]
        assert g["n"] == w["n"], name
        for k in ("p50_s", "p95_s"):
            assert (g[k] is None) == (w[k] is None), (name, k)
            if w[k] is not None:
                assert g[k] == pytest.approx(w[k], abs=1e-3), (name, k)
        if "on_time" in w:
            assert g["on_time"] == w["on_time"], name


def test_lifecycle_equals_python_per_branch_and_local_day(world: Any) -> None:
    _, client, t, tokens = world
    body = _get(client, tokens["ops"], "/delivery/v1/lifecycle", **RANGE, tz=TZ)
    want = expected_lifecycle(t.events, START, END, TZ)
    by_branch = {r["branch_id"]: r for r in body["by_branch_id"]}
    assert set(by_branch) == {b for (day, b) in want if day == "*"}
    for b, row in by_branch.items():
        _same(row, want[("*", b)])
    buckets = {(r["bucket"], r["branch_id"]): r for r in body["buckets"]}
    assert set(buckets) == {k for k in want if k[0] != "*"}
    for key, row in buckets.items():
        _same(row, want[key])
    assert sum(r["entities"] for r in body["by_branch_id"]) == body["totals"]["entities"]
    on_time = body["totals"]["durations"]["to_deliver"]
    assert on_time["on_time_share"] == round(on_time["on_time"] / on_time["n"], 4)


def test_lifecycle_across_the_dst_change(world: Any) -> None:
    _, client, _, tokens = world
    body = _get(client, tokens["br_dst"], "/delivery/v1/branches/br_dst/lifecycle", **RANGE)
    assert body["range"]["timezone"] == TZ  # the pack's zone by default
    d = body["totals"]["durations"]
    assert d["to_deliver"]["p50_s"] == 2700.0  # 45 minutes, not the wall clock's -15
    assert d["to_accept"]["p50_s"] == 600.0
    assert body["totals"]["by_status"]["delivered"] == 1
    # created 01:30 BST on the 25th: that local day, although 00:30 UTC is the same date
    assert [r["bucket"] for r in body["buckets"]] == ["2026-10-25"]


def test_lifecycle_pairs_the_same_whatever_the_arrival_order(tmp_path: Path) -> None:
    """The same events shuffled and doubled answer exactly what they answer in order."""
    events = generate_delivery(
        DeliveryConfig(
            days=1, branches=2, drivers_per_branch=1, ping_s=3600, end=END, duplicate_rate=0
        )
    ).distinct
    events = [e for e in events if e["event_type"] != "location_updated"]
    answers = []
    for i, batch in enumerate((sorted(events, key=lambda e: e["occurred_at"]), None)):
        rt = Runtime(make_settings(tmp_path / str(i), packs=["delivery"]))
        try:
            if batch is None:
                batch = events + events[::3]
                random.Random(1).shuffle(batch)
                send(rt, batch[: len(batch) // 2])
                send(rt, batch[len(batch) // 2 :], source="api")
            else:
                send(rt, batch)
            token = rt.meta.create_key("secret", "ops", pack="delivery", role="operations")[1]
            with TestClient(create_app(rt, start=False)) as c:
                body = _get(c, token, "/delivery/v1/lifecycle", **RANGE)
                answers.append({k: body[k] for k in ("totals", "by_branch_id", "buckets")})
        finally:
            rt.stop()
    assert answers[0] == answers[1]


def test_distance_and_shifts_equal_python(world: Any) -> None:
    _, client, t, tokens = world
    body = _get(client, tokens["ops"], "/delivery/v1/drivers", **RANGE)
    want = expected_tracks(t.events, START, END)
    got = {e["driver_id"]: e for e in body["entities"]}
    assert set(got) == set(want)
    for d, w in want.items():
        assert got[d]["pings"] == w["pings"]
        assert got[d]["km"] == pytest.approx(w["km"], abs=1e-3)
        assert len(got[d]["shifts"]) == w["shifts"]
        assert got[d]["branch_id"] == t.drivers[d]
    assert body["totals"]["km"] > 0


def test_haversine_known_distance(tmp_path: Path) -> None:
    """Two pings a minute apart, London to Paris (343.5 km apart): that many km, with the
    speed limit lifted (a GPS jump otherwise)."""
    assert haversine(51.5074, -0.1278, 48.8566, 2.3522) == pytest.approx(343.5, abs=0.5)


def test_stale_drivers_by_threshold(world: Any) -> None:
    _, client, _, tokens = world
    stale_driver = "drv_00_2"  # stopped 40 minutes before END
    for minutes, stale in ((30, True), (60, False)):
        body = _get(client, tokens["ops"], "/delivery/v1/drivers", **RANGE, stale_minutes=minutes)
        names = [s["driver_id"] for s in body["stale"]]
        assert (stale_driver in names) is stale
        assert names == ([stale_driver] if stale else [])
    default = _get(client, tokens["br_00"], "/delivery/v1/branches/br_00/drivers", **RANGE)
    assert default["stale_minutes"] == 10.0
    assert [s["driver_id"] for s in default["stale"]] == [stale_driver]


ROUTES = ["lifecycle", "drivers", "deliveries", "outreach"]


@pytest.mark.parametrize("route", ROUTES)
def test_branch_manager_sees_own_branch_only(world: Any, route: str) -> None:
    _, client, _, tokens = world
    h = {"Authorization": f"Bearer {tokens['br_00']}"}
    own = client.get(f"/delivery/v1/branches/br_00/{route}", params=RANGE, headers=h)
    assert own.status_code == 200
    assert b"br_01" not in own.content
    assert b"br_02" not in own.content
    for other in ("br_01", "br_nope"):  # another branch, or one that does not exist: 404
        r = client.get(f"/delivery/v1/branches/{other}/{route}", params=RANGE, headers=h)
        assert r.status_code == 404, r.text
    # a filter naming another branch: 404 where the view filters by branch, else ignored
    asked = {**RANGE, "branch_id": "br_01"}
    r = client.get(f"/delivery/v1/branches/br_00/{route}", params=asked, headers=h)
    assert r.status_code == (404 if route in ("lifecycle", "drivers") else 200), r.text
    assert b"br_01" not in r.content or r.status_code == 404
    assert client.get(f"/delivery/v1/{route}", params=RANGE, headers=h).status_code == 403


def test_operations_reads_any_branch_route(world: Any) -> None:
    _, client, _, tokens = world
    a = _get(client, tokens["ops"], "/delivery/v1/branches/br_01/lifecycle", **RANGE)
    b = _get(client, tokens["ops"], "/delivery/v1/lifecycle", **RANGE, branch_id="br_01")
    assert a["totals"] == b["totals"]


def test_deliveries_per_driver_and_outreach_conversion(world: Any) -> None:
    _, client, t, tokens = world
    body = _get(client, tokens["br_01"], "/delivery/v1/branches/br_01/deliveries", **RANGE)
    want: dict[str, set[str]] = {}
    for e in t.distinct:
        p = e["properties"]
        at = datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00"))
        if p.get("status") == "delivered" and p["branch_id"] == "br_01" and START <= at < END:
            want.setdefault(p["driver_id"], set()).add(p["order_id"])
    got = {r["driver_id"]: r["deliveries"] for r in body["by_driver_id"] if r["deliveries"]}
    assert got == {d: len(o) for d, o in want.items()}
    out = _get(client, tokens["ops"], "/delivery/v1/outreach", **RANGE)
    for row in out["by_template_key"]:
        assert row["completion_rate"] == round(row["completions"] / row["attempts"], 4)


def test_payload_is_the_event_as_sent(world: Any) -> None:
    rt, _, _, _ = world
    got = rt.warehouse.query_sql(
        'SELECT "payload" FROM "delivery"."analytics_order_lifecycle_events" WHERE "event_id" = $e',
        {"e": "dst-2"},
    ).to_pylist()
    assert len(got) == 1
    assert orjson.loads(got[0]["payload"]) == _dst_order()[2]


def test_dashboard_draws_lifecycle_and_track_panels(world: Any) -> None:
    _, client, _, tokens = world
    r = client.get("/ui", headers={"Authorization": f"Bearer {tokens['br_00']}"})
    assert r.status_code == 200, r.text
    page = r.text
    assert "Order lifecycle of a branch · br_00" in page
    assert "to deliver p50 / p95" in page.lower()
    assert "km travelled" in page
    assert "br_01" not in page
