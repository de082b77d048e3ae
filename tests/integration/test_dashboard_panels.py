"""Dashboard panels without a browser: the links between the dashboard and the feeds
workbench (both ways), the per-source quarantine panel (shown only when the pipeline stats
carry rates), a bad zone or date, and the replay endpoint's guards."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from gristmill.api.app import create_app
from gristmill.api.routers.ui import env
from gristmill.api.routers.ui_ops import source_rates
from gristmill.runtime import Runtime
from tests.conftest import make_settings


def test_dashboard_and_workbench_link_each_other(tmp_path: Path) -> None:
    rt = Runtime(make_settings(tmp_path / "data", packs=["sales_feeds"]))
    try:
        owner = rt.meta.create_key(
            "secret", "o", pack="sales_feeds", role="owner", claims={"business_id": "1"}
        )[1]
        with TestClient(create_app(rt, start=False)) as client:
            client.post("/ui/login", data={"key": owner})
            page = client.get("/ui")
            assert page.status_code == 200, page.text
            assert 'id="feeds-link" href="/ui/data-feeds"' in page.text
            assert "Sales feeds · 1" in page.text  # the owner's business, not "Your store"
            bench = client.get("/ui/data-feeds")
            assert bench.status_code == 200
            assert 'href="/ui"' in bench.text
    finally:
        rt.stop()


def test_no_workbench_link_without_feeds(client: TestClient, runtime: Runtime) -> None:
    admin = runtime.meta.create_key("secret", "a", pack="marketplace", role="admin")[1]
    client.post("/ui/login", data={"key": admin})
    page = client.get("/ui")
    assert page.status_code == 200
    assert "feeds-link" not in page.text


def test_bad_zone_or_range_shows_the_page_with_the_reason(
    client: TestClient, runtime: Runtime
) -> None:
    admin = runtime.meta.create_key("secret", "a", pack="marketplace", role="admin")[1]
    client.post("/ui/login", data={"key": admin})
    r = client.get("/ui", params={"tz": "Mars/Olympus"})
    assert r.status_code == 400
    assert "not an IANA time zone" in r.text
    assert 'id="views"' in r.text
    r = client.get("/ui", params={"start": "2026-11-10", "end": "2026-11-01"})
    assert r.status_code == 400
    assert "start date on or before the end date" in r.text
    r = client.get("/ui", params={"start": "2026-11-01", "end": "2026-11-10", "tz": "Asia/Tokyo"})
    assert r.status_code == 200
    assert "2026-11-01 00:00 \u2013 2026-11-11 00:00 (Asia/Tokyo)" in r.text


def test_replay_endpoint_guards(client: TestClient, runtime: Runtime) -> None:
    op = runtime.meta.create_key("secret", "o", role="operator")[1]
    assert client.post("/ui/quarantine/x/replay").status_code == 401
    client.post("/ui/login", data={"key": op})
    assert client.post("/ui/quarantine/x/replay").status_code == 403  # no UI header
    r = client.post("/ui/quarantine/x/replay", headers={"X-Gristmill-UI": "1"})
    assert r.status_code == 200
    assert r.json()["replayed"] == 0
    refused = runtime.governance.store.audit_entries(action="quarantine.post")
    assert [e.detail["result"] for e in refused] == [403, 401]  # refusals are audited


def test_source_rates_panel_only_when_stats_carry_rates() -> None:
    old = {"sources": [{"pack": "m", "source": "web", "received": 3, "loaded": 3}]}
    assert source_rates(old) is None
    assert source_rates({}) is None
    new = {
        "sources": [
            {
                "source": "web",
                "accepted": 90,
                "quarantined": 10,
                "quarantine_rate": 0.1,
                "last_reasons": [
                    {"reason": "schema_violation", "at": "2026-12-01T10:00:00Z", "count": 7}
                ],
            },
            {
                "source": "app",
                "accepted": 5,
                "quarantined": 5,
                "quarantine_rate": 0.5,
                "last_reasons": [],
            },
        ]
    }
    rates = source_rates(new)
    assert rates is not None
    assert [r["source"] for r in rates] == ["app", "web"]
    html = env.get_template("dashboard.html").render(
        heading="h",
        views=[],
        charts_json="[]",
        presets=[],
        preset=None,
        start="",
        end="",
        problem=None,
        zones=["UTC"],
        query={},
        link=lambda **_: "",
        refresh_ms=60000,
        tz="UTC",
        freshness={"as_of": "", "lag_seconds": 0.0},
        feeds_link=None,
        who="operator",
        conservation=None,
        retention=None,
        rates=rates,
        quarantine=None,
    )
    assert 'id="source-rates"' in html
    assert '<td class="rate">50.0%</td>' in html
    assert '<td class="rate">10.0%</td>' in html
    assert "schema_violation \u00d7 7" in html
