"""The seed's endpoints on the platform pack (view kinds events, aggregations, realtime,
sync_status). Aggregations are checked against buckets computed here in plain Python from
the events sent — hourly, daily and weekly (weeks starting Sunday) in New York across the
2026-11-01 DST change, with late and duplicate events."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from gristmill.api.app import create_app
from gristmill.runtime import Runtime
from tests.conftest import make_settings
from tests.integration.governance_fixtures import platform_event, send

NY = ZoneInfo("America/New_York")
START = datetime(2026, 10, 25, 4, tzinfo=UTC)
END = datetime(2026, 11, 8, 4, tzinfo=UTC)
CATEGORY = {"payment.completed": "transaction", "search.performed": "interaction"}


def traffic() -> list[dict[str, Any]]:
    out = []
    t, n = START, 0
    while t < END:
        et = "payment.completed" if n % 3 else "search.performed"
        props = {"payment_id": f"pay{n}", "amount": 10.0} if n % 3 else {"query": "q"}
        out.append(platform_event(et, f"u{n % 7}", t, n, props=props))
        t += timedelta(minutes=37)
        n += 1
    return out


class Loaded:
    def __init__(self, rt: Runtime, client: TestClient, events: list[dict[str, Any]]) -> None:
        self.rt, self.client, self.events = rt, client, events
        self.keys = {
            "admin": rt.meta.create_key("secret", "a", pack="platform", role="admin")[1],
            "analyst": rt.meta.create_key("secret", "b", pack="platform", role="analyst")[1],
        }

    def get(self, who: str, path: str, **params: Any) -> Any:
        r = self.client.get(
            path, params=params, headers={"Authorization": f"Bearer {self.keys[who]}"}
        )
        assert r.status_code == 200, (path, params, r.text)
        return r.json()


@pytest.fixture(scope="module")
def lo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    rt = Runtime(make_settings(Path(tmp_path_factory.mktemp("platform")), packs=["platform"]))
    events = traffic()
    send(rt, events[: len(events) // 2])
    send(rt, events[len(events) // 2 :])
    send(rt, events[::5])  # duplicates: dropped by dedupe
    late = [e for i, e in enumerate(events) if i % 11 == 0]
    send(rt, late)  # re-sent late: still duplicates
    with TestClient(create_app(rt, start=False)) as client:
        yield Loaded(rt, client, events)
    rt.stop()


def expected(events: list[dict[str, Any]], grain: str, category: str) -> dict[str, tuple[int, int]]:
    """bucket label -> (events, unique users), from the events sent, in New York time."""
    count: dict[str, int] = defaultdict(int)
    users: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if CATEGORY[e["event_type"]] != category:
            continue
        t = datetime.fromisoformat(e["occurred_at"])
        local = t.astimezone(NY)
        if grain == "hourly":
            label = (t - timedelta(minutes=t.minute, seconds=t.second)).astimezone(NY).isoformat()
        elif grain == "daily":
            label = local.date().isoformat()
        else:  # weeks start on Sunday
            d = local.date()
            label = (d - timedelta(days=(d.weekday() + 1) % 7)).isoformat()
        count[label] += 1
        users[label].add(e["user_id"])
    return {k: (count[k], len(users[k])) for k in count}


@pytest.mark.parametrize("grain", ["hourly", "daily", "weekly"])
@pytest.mark.parametrize("category", ["transaction", "interaction"])
def test_aggregations_equal_an_independent_computation(
    lo: Loaded, grain: str, category: str
) -> None:
    body = lo.get(
        "analyst",
        "/v1/platform/aggregations",
        aggregation_type=grain,
        event_category=category,
        start_date="2026-10-25",
        end_date="2026-11-07",
        tz="America/New_York",
        week_start="sunday",
    )
    got = {b["bucket"]: (b["total_events"], b["unique_users"]) for b in body["buckets"]}
    want = expected(
        [
            e
            for e in lo.events
            if datetime(2026, 10, 25, tzinfo=NY)
            <= datetime.fromisoformat(e["occurred_at"])
            < datetime(2026, 11, 8, tzinfo=NY)
        ],
        grain,
        category,
    )
    assert {k: v for k, v in got.items() if v[0]} == want
    assert body["total_events"] == sum(v[0] for v in want.values())
    assert body["unique_users"] == len(
        {
            e["user_id"]
            for e in lo.events
            if CATEGORY[e["event_type"]] == category
            and datetime(2026, 10, 25, tzinfo=NY)
            <= datetime.fromisoformat(e["occurred_at"])
            < datetime(2026, 11, 8, tzinfo=NY)
        }
    )
    if grain == "hourly":  # the night clocks fell back has 25 local hours
        nov1 = [b for b in got if b.startswith("2026-11-01")]
        assert len(nov1) == 25


def test_events_query_like_the_seed(lo: Loaded) -> None:
    body = lo.get(
        "analyst",
        "/v1/platform/events",
        event_types="payment.completed",
        start_date="2026-11-01T00:00:00Z",
        end_date="2026-11-02T00:00:00Z",
        limit=10,
    )
    want = [
        e
        for e in lo.events
        if e["event_type"] == "payment.completed"
        and "2026-11-01T00:00:00Z" <= e["occurred_at"] < "2026-11-02T00:00:00Z"
    ]
    assert body["total"] == len(want)
    assert len(body["events"]) == 10
    assert body["next_cursor"]
    assert {e["event_type"] for e in body["events"]} == {"payment.completed"}


def test_dashboard_is_cached_until_the_next_load(lo: Loaded) -> None:
    first = lo.get("analyst", "/v1/platform/dashboard")
    assert set(first["values"]) >= {
        "active_users_last_hour",
        "projects_created_today",
        "proposals_submitted_today",
    }
    assert all("computed_at" in v for v in first["values"].values())
    again = lo.get("analyst", "/v1/platform/dashboard")
    assert again["cached"] is True
    assert again["values"] == first["values"]
    now = datetime.now(UTC)
    send(
        lo.rt,
        [
            platform_event("project.created", "fresh", now, 1, props={"project_id": "np"}),
            platform_event("user.login", "fresh", now, 2, props={"login_method": "github"}),
        ],
    )
    after = lo.get("analyst", "/v1/platform/dashboard")
    assert after["cached"] is False
    values = after["values"]
    assert values["projects_created_today"]["value"] == (
        first["values"]["projects_created_today"]["value"] + 1
    )
    assert values["active_users_last_hour"]["value"] == (
        first["values"]["active_users_last_hour"]["value"] + 1
    )


def test_sync_status_and_roles(lo: Loaded) -> None:
    body = lo.get("admin", "/v1/platform/sync-status")
    assert body["batches"] >= 4
    assert body["tables"][0]["table"] == "platform.platform_events"
    assert body["tables"][0]["last_load_at"] is not None
    r = lo.client.get(
        "/v1/platform/sync-status", headers={"Authorization": f"Bearer {lo.keys['analyst']}"}
    )
    assert r.status_code == 403
    bad = lo.client.get(
        "/v1/platform/aggregations",
        params={"aggregation_type": "yearly"},
        headers={"Authorization": f"Bearer {lo.keys['analyst']}"},
    )
    assert bad.status_code == 422
