"""The usage seed's exports at its own routes: the incident CSV holds exactly the calls of the
window, org and filters (checked against the events sent); the finance export of a month is a
job whose CSV totals equal the rollups' (the /usage answers) and plain Python to the
micro-dollar, reconciled, under the org's prefix, downloadable through its signed URL."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from gristmill.api.app import create_app
from gristmill.runtime import Runtime
from tests.integration.usage_fixtures import expected_usage, loaded_runtime, send

START = datetime(2026, 11, 27, 12, tzinfo=UTC)
STOP = datetime(2026, 11, 28, 12, tzinfo=UTC)


class World:
    def __init__(self, rt: Runtime, client: TestClient, events: list[dict[str, Any]]) -> None:
        self.rt, self.client, self.events = rt, client, events
        mk = rt.meta.create_key
        self.keys = {
            "eng0": mk(
                "secret", "e", pack="usage_metering", role="engineer", claims={"org_id": "org_000"}
            )[1],
            "finance": mk("secret", "f", pack="usage_metering", role="finance")[1],
        }

    def call(self, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.client.request(
            method, path, headers={"Authorization": f"Bearer {self.keys[who]}"}, **kw
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with (
        loaded_runtime(Path(tmp_path_factory.mktemp("usage-exports"))) as (rt, t),
        TestClient(create_app(rt, start=False)) as client,
    ):
        yield World(rt, client, t.distinct)


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_incident_csv_is_exactly_the_window(world: World) -> None:
    body = {
        "start": START.isoformat(),
        "end": STOP.isoformat(),
        "filters": {"model": "gpt-4o-mini"},
    }
    r = world.call("eng0", "POST", "/analytics/v1/orgs/org_000/exports/incident", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    rows = _csv(r.text)
    want = {
        e["event_id"]: e["properties"]
        for e in world.events
        if e["properties"]["org_id"] == "org_000"
        and e["properties"]["model"] == "gpt-4o-mini"
        and START <= datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00")) < STOP
    }
    assert {r["event_id"] for r in rows} == set(want)
    assert len(rows) == len(want) == int(r.headers["X-Export-Rows"])
    for row in rows:
        p = want[row["event_id"]]
        assert (row["org_id"], row["status"], int(row["latency_ms"])) == (
            "org_000",
            p["status"],
            p["latency_ms"],
        )
    errors = {
        "start": START.isoformat(),
        "end": STOP.isoformat(),
        "filters": {"status": ["error", "timeout"]},
    }
    r = world.call("eng0", "POST", "/analytics/v1/orgs/org_000/exports/incident", json=errors)
    assert {row["status"] for row in _csv(r.text)} == {"error", "timeout"}
    assert (
        world.call(
            "eng0", "POST", "/analytics/v1/orgs/org_001/exports/incident", json=body
        ).status_code
        == 404
    )
    spoof = body | {"filters": {"org_id": "org_001"}}
    assert world.call(
        "eng0", "POST", "/analytics/v1/orgs/org_000/exports/incident", json=spoof
    ).status_code in (400, 404)
    assert (
        world.call(
            "finance", "POST", "/analytics/v1/orgs/org_000/exports/incident", json=body
        ).status_code
        == 403
    )


def test_finance_month_reconciles_to_the_micro_dollar(world: World) -> None:
    r = world.call("finance", "POST", "/analytics/v1/exports", json={"period": "2026-11"})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    again = world.call("finance", "POST", "/analytics/v1/exports", json={"period": "2026-11"})
    assert again.json()["id"] == job_id  # same period, scope and watermark: the same job
    world.rt.exports.run_pending()
    job = world.call("finance", "GET", f"/analytics/v1/exports/{job_id}").json()
    assert job["status"] == "succeeded", job
    assert job["reconciled"] is True
    got = world.client.get(job["url"].replace("http://testserver", ""))
    assert got.status_code == 200
    rows = _csv(got.text)
    month = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    total_spend = 0
    for org in sorted({e["properties"]["org_id"] for e in world.events}):
        want = expected_usage(world.events, org, *month, "day")
        mine = [x for x in rows if x["org_id"] == org]
        assert sum(int(x["spend_micros"]) for x in mine) == sum(
            w["spend_micros"] for w in want.values()
        )
        assert sum(int(x["requests"]) for x in mine) == sum(w["requests"] for w in want.values())
        per_day = {(x["day"][:10], x["model"]): int(x["spend_micros"]) for x in mine}
        assert per_day == {k: w["spend_micros"] for k, w in want.items()}
        total_spend += sum(w["spend_micros"] for w in want.values())
    assert job["totals"]["spend_micros"] == total_spend
    usage = world.call(
        "finance",
        "GET",
        "/analytics/v1/usage",
        params={"start": month[0].isoformat(), "end": month[1].isoformat()},
    ).json()
    assert usage["totals"]["spend_micros"] == total_spend  # the dashboards' figure
    listed = world.call("finance", "GET", "/analytics/v1/exports").json()["items"]
    assert job_id in {j["id"] for j in listed}


def test_finance_export_of_one_org_under_its_prefix(world: World) -> None:
    r = world.call(
        "finance",
        "POST",
        "/analytics/v1/exports",
        json={"period": "mtd", "scope": {"org_id": "org_002"}},
    )
    assert r.status_code == 202, r.text
    world.rt.exports.run_pending()
    job = world.call("finance", "GET", f"/analytics/v1/exports/{r.json()['id']}").json()
    assert job["status"] == "succeeded"
    assert "/org_002/" in job["object"]
    eng = world.call("eng0", "POST", "/analytics/v1/exports", json={"period": "mtd"})
    assert eng.status_code == 403


def test_a_late_event_restates_an_exported_month(world: World) -> None:
    """The exported file stays as it was at its watermark; the late call is listed as a
    restatement of exactly its bucket, and a new export of the month is a new version."""
    first = world.call(
        "finance", "POST", "/analytics/v1/exports", json={"period": "2026-11"}
    ).json()
    world.rt.exports.run_pending()
    old = world.call("finance", "GET", f"/analytics/v1/exports/{first['id']}").json()
    late = {
        "event_id": "req_late_after_export",
        "event_type": "usage_recorded",
        "occurred_at": "2026-11-25T10:30:00Z",
        "properties": {
            "org_id": "org_003",
            "model": "gpt-4o",
            "provider": "openai",
            "tokens_in": 1000,
            "tokens_out": 500,
            "cached_tokens": 200,
            "latency_ms": 900,
            "status": "ok",
        },
    }
    send(world.rt, [late], source="late")
    check = world.call("finance", "GET", f"/v1/exports/jobs/{first['id']}/reconcile").json()
    assert check["reconciled"] is False
    assert check["restated_buckets"] == 1
    (row,) = check["restated"]
    assert (row["day"], row["org_id"], row["model"]) == ("2026-11-25", "org_003", "gpt-4o")
    assert row["changes"]["requests"]["now"] == row["changes"]["requests"]["exported"] + 1
    assert (
        row["changes"]["spend_micros"]["now"] - row["changes"]["spend_micros"]["exported"] == 7250
    )
    again = world.call("finance", "GET", f"/analytics/v1/exports/{first['id']}").json()
    assert again["checksum"] == old["checksum"]  # the old version is untouched
    second = world.call(
        "finance", "POST", "/analytics/v1/exports", json={"period": "2026-11"}
    ).json()
    assert second["id"] != first["id"]  # a new watermark: a new version
    world.rt.exports.run_pending()
    new = world.call("finance", "GET", f"/analytics/v1/exports/{second['id']}").json()
    assert new["reconciled"] is True
    assert new["totals"]["requests"] == old["totals"]["requests"] + 1
