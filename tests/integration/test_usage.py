"""The usage seed's /usage and /reliability on DuckDB and PostgreSQL, checked against plain
Python over the events sent: requests, tokens and spend to the micro-dollar per org, model and
bucket (late and duplicate deliveries included), unpriced calls counted, error bursts flagged
in exactly their buckets, percentiles exact for short ranges and within the histogram's
relative error for long ones; foreign org 404, wrong role 403."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gristmill.api.app import create_app
from gristmill.core import sketch
from gristmill.runtime import Runtime
from tests.integration.usage_fixtures import BURSTS, END, expected_usage, loaded_runtime
from tests.pg import scratch_database

START = datetime(2026, 11, 23, tzinfo=UTC)


class Api:
    def __init__(self, rt: Runtime, client: TestClient, events: list[dict[str, Any]]) -> None:
        self.rt, self.client, self.events = rt, client, events
        mk = rt.meta.create_key
        self.keys = {
            "admin0": mk(
                "secret", "a", pack="usage_metering", role="org_admin", claims={"org_id": "org_000"}
            )[1],
            "eng0": mk(
                "secret", "e", pack="usage_metering", role="engineer", claims={"org_id": "org_000"}
            )[1],
            "finance": mk("secret", "f", pack="usage_metering", role="finance")[1],
            "platform": mk("secret", "p", pack="usage_metering", role="platform_admin")[1],
        }

    def get(self, who: str, path: str, status: int = 200, **params: Any) -> Any:
        r = self.client.get(
            path, params=params, headers={"Authorization": f"Bearer {self.keys[who]}"}
        )
        assert r.status_code == status, (path, params, r.text)
        return r.json()


@pytest.fixture(
    scope="module",
    params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp = Path(tmp_path_factory.mktemp(f"usage-{request.param}"))
    if request.param == "postgres":
        with (
            scratch_database() as dsn,
            loaded_runtime(tmp, {"type": "postgres", "dsn": dsn}) as (rt, t),
            TestClient(create_app(rt, start=False)) as client,
        ):
            yield Api(rt, client, t.distinct)
    else:
        with loaded_runtime(tmp) as (rt, t), TestClient(create_app(rt, start=False)) as client:
            yield Api(rt, client, t.distinct)


@pytest.mark.parametrize("grain", ["day", "hour"])
@pytest.mark.parametrize("org", ["org_000", "org_003"])
def test_usage_equals_python_to_the_micro_dollar(api: Api, grain: str, org: str) -> None:
    body = api.get(
        "platform",
        f"/analytics/v1/orgs/{org}/usage",
        grain=grain,
        start=START.isoformat(),
        end=END.isoformat(),
    )
    want = expected_usage(api.events, org, START, END, grain)
    got = {
        (b["bucket"][:10] if grain == "day" else b["bucket"], b["model"]): b
        for b in body["buckets"]
    }
    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        assert (g["requests"], g["tokens_in"], g["tokens_out"]) == (
            w["requests"],
            w["tokens_in"],
            w["tokens_out"],
        ), key
        assert g["spend_micros"] == w["spend_micros"], key
        assert g["unpriced_requests"] == w["unpriced"], key
    totals = body["totals"]
    assert totals["requests"] == sum(w["requests"] for w in want.values())
    assert totals["spend_micros"] == sum(w["spend_micros"] for w in want.values())
    assert totals["unpriced_requests"] == sum(w["unpriced"] for w in want.values()) > 0
    by_model: dict[str, int] = defaultdict(int)
    for (_, model), w in want.items():
        by_model[model] += w["spend_micros"]
    assert {r["model"]: r["spend_micros"] for r in body["by_model"]} == dict(by_model)
    assert body["currency"] == "USD"


def test_usage_model_filter_and_freshness(api: Api) -> None:
    body = api.get(
        "admin0",
        "/analytics/v1/orgs/org_000/usage",
        model="gpt-4o",
        start=START.isoformat(),
        end=END.isoformat(),
    )
    assert {r["model"] for r in body["by_model"]} == {"gpt-4o"}
    want = expected_usage(api.events, "org_000", START, END, "day")
    assert body["totals"]["spend_micros"] == sum(
        w["spend_micros"] for (_, m), w in want.items() if m == "gpt-4o"
    )
    f = body["freshness"]
    assert f["budget_seconds"] == 300
    assert f["stale"] is False
    assert f["lag_seconds"] <= 300
    newest = max(e["occurred_at"] for e in api.events if e["properties"]["org_id"] == "org_000")
    assert f["newest_event_at"][:19] == newest[:19]


def test_tenant_and_role_rules(api: Api) -> None:
    api.get("admin0", "/analytics/v1/orgs/org_001/usage", status=404)  # another org: no oracle
    api.get("admin0", "/analytics/v1/orgs/no_such_org/usage", status=404)
    api.get("eng0", "/analytics/v1/orgs/org_000/usage", status=403)  # engineers: reliability
    api.get("eng0", "/analytics/v1/orgs/org_001/reliability", status=404)
    api.get(
        "eng0",
        "/analytics/v1/orgs/org_000/reliability",
        start=START.isoformat(),
        end=END.isoformat(),
    )
    api.get("finance", "/analytics/v1/orgs/org_004/usage")  # finance sees every org
    api.get("finance", "/analytics/v1/orgs/org_000/reliability", status=403)
    everyone = api.get(
        "finance", "/analytics/v1/usage", start=START.isoformat(), end=END.isoformat()
    )
    assert {r["org_id"] for r in everyone["by_org_id"]} == {f"org_{i:03d}" for i in range(6)}
    api.get("admin0", "/analytics/v1/usage", status=403)


@pytest.mark.parametrize("org", ["org_000", "org_001", "org_002"])
def test_reliability_flags_exactly_the_bursts(api: Api, org: str) -> None:
    body = api.get(
        "platform",
        f"/analytics/v1/orgs/{org}/reliability",
        grain="hour",
        start=START.isoformat(),
        end=END.isoformat(),
    )
    flagged = {(s["bucket"], s["model"]) for s in body["spikes"] if s["kind"] == "error_rate"}
    want = {(b.start.isoformat(), b.model) for b in BURSTS if b.org == org}
    assert flagged == want
    slow = {(s["bucket"], s["model"]) for s in body["spikes"] if s["kind"] == "p95_latency"}
    assert slow == want
    for s in body["spikes"]:
        assert s["value"] > 2 * s["baseline"]


def _exact(
    events: list[dict[str, Any]], org: str, start: datetime, end: datetime
) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for e in events:
        p = e["properties"]
        t = datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00"))
        if p["org_id"] == org and start <= t < end:
            out[p["model"]].append(p["latency_ms"])
    return out


def test_percentiles_exact_for_short_ranges(api: Api) -> None:
    start, end = datetime(2026, 11, 27, tzinfo=UTC), datetime(2026, 11, 28, tzinfo=UTC)
    body = api.get(
        "platform",
        "/analytics/v1/orgs/org_000/reliability",
        percentiles="50,95,99.9",
        start=start.isoformat(),
        end=end.isoformat(),
    )
    assert body["latency"]["method"] == "exact"
    exact = _exact(api.events, "org_000", start, end)
    for row in body["by_model"]:
        xs = exact[row["model"]]
        assert row["requests"] == len(xs)
        for p, key in ((50, "p50_ms"), (95, "p95_ms"), (99.9, "p99_9_ms")):
            want = sketch.exact_quantile(xs, p / 100)
            assert want is not None
            assert row[key] == pytest.approx(want, abs=1e-3), (row["model"], p)


def test_percentiles_from_histogram_within_the_bound(api: Api) -> None:
    body = api.get(
        "platform",
        "/analytics/v1/orgs/org_000/reliability",
        grain="day",
        start=START.isoformat(),
        end=END.isoformat(),
    )
    assert body["latency"] == {
        "column": "latency_ms",
        "method": "histogram",
        "relative_error": 0.01,
        "exact_max_hours": 48,
    }
    exact = _exact(api.events, "org_000", START, END)
    checked = 0
    for row in body["by_model"]:
        for p in (50, 95, 99):
            want = sketch.exact_quantile(exact[row["model"]], p / 100)
            assert want is not None
            assert abs(row[f"p{p}_ms"] - want) <= 0.01 * want + 1e-9, (row["model"], p)
            checked += 1
    assert checked >= 15
