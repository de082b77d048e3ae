"""Every metric and view of the marketplace pack, over the same events, answers identically on
every warehouse that runs here (DuckDB, PostgreSQL, ClickHouse in process through chdb): all
metric types, grains, time zones, group-bys and filters, through rollups and rows, after late
events and duplicates.

DuckDB's answers are checked against an independent computation in test_kpis.py; agreement
here carries that to the other engines."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gristmill.config import ClickHouseSettings, PostgresSettings
from gristmill.runtime import Runtime
from tests.conftest import make_settings
from tests.integration.analytics_fixtures import Loaded, load_known_events
from tests.pg import scratch_database

pytestmark = [pytest.mark.postgres, pytest.mark.clickhouse]

IGNORED = {"range", "freshness", "debug"}
"""Fields that carry the time of the answer, not the data."""


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Loaded]]:
    end = datetime.now(UTC) - timedelta(hours=1)
    duck = Runtime(make_settings(Path(tmp_path_factory.mktemp("duck"))))
    with scratch_database() as dsn:
        pg = Runtime(
            make_settings(
                Path(tmp_path_factory.mktemp("pg")),
                warehouse=PostgresSettings(dsn=dsn),  # type: ignore[arg-type]
            )
        )
        ch = Runtime(
            make_settings(
                Path(tmp_path_factory.mktemp("ch")),
                warehouse=ClickHouseSettings(),  # type: ignore[arg-type]
            )
        )
        with (
            load_known_events(duck, end) as d,
            load_known_events(pg, end) as p,
            load_known_events(ch, end) as c,
        ):
            yield {"duckdb": d, "postgres": p, "clickhouse": c}


def _answer(lo: Loaded, who: str, url: str) -> Any:
    r = lo.get(who, url)
    assert r.status_code == 200, (url, r.text)
    body = r.json()
    return {k: v for k, v in body.items() if k not in IGNORED}


def _same(engines: dict[str, Loaded], who: str, url: str) -> None:
    answers = {name: _answer(lo, who, url) for name, lo in engines.items()}
    first = answers["duckdb"]
    for name, a in answers.items():
        assert a == first, f"{name} differs from duckdb on {url}"
    assert first != {}


def test_the_data_is_the_same(engines: dict[str, Loaded]) -> None:
    assert {name: lo.rt.warehouse.name for name, lo in engines.items()} == {
        "duckdb": "duckdb",
        "postgres": "postgres",
        "clickhouse": "clickhouse",
    }
    stats = {name: lo.rt.conservation().as_dict()["totals"] for name, lo in engines.items()}
    assert stats["postgres"] == stats["duckdb"]
    assert stats["clickhouse"] == stats["duckdb"]
    assert stats["duckdb"]["loaded"] > 20_000


@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Asia/Kolkata"])
@pytest.mark.parametrize("preset", ["7d", "30d", "90d"])
def test_views_agree(engines: dict[str, Loaded], preset: str, tz: str) -> None:
    for who in ("vendor_a", "vendor_b", "vendor_none"):
        _same(engines, who, f"/api/v1/vendor/analytics?preset={preset}&tz={tz}")
    _same(engines, "admin", f"/api/v1/admin/analytics?preset={preset}&tz={tz}")


MARKET = [
    "orders",
    "gmv_cents",
    "revenue_cents",
    "aov_cents",
    "cash_collected_cents",
    "payouts_completed",
    "payouts_completed_cents",
    "buyers",
    "largest_order_cents",
    "median_order_cents",
]
ADS = ["ad_impressions", "ad_clicks", "ad_spend_cents", "ctr"]


@pytest.mark.parametrize("tz", ["UTC", "America/New_York"])
@pytest.mark.parametrize("grain", ["", "day", "week", "month"])
@pytest.mark.parametrize(
    ("metrics", "group_by"),
    [
        (MARKET, ""),
        (MARKET, "vendor_store_id"),
        (MARKET, "event_type"),
        (ADS, ""),
        (ADS, "placement"),
        (ADS, "campaign_id,vendor_store_id"),
    ],
)
def test_metrics_agree(
    engines: dict[str, Loaded], metrics: list[str], group_by: str, grain: str, tz: str
) -> None:
    url = f"/v1/metrics?metrics={','.join(metrics)}&preset=90d&tz={tz}"
    url += f"&grain={grain}" if grain else ""
    url += f"&group_by={group_by}" if group_by else ""
    _same(engines, "operator", url)


def test_hours_filters_and_scopes_agree(engines: dict[str, Loaded]) -> None:
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    start = end - timedelta(days=2, minutes=17)
    span = f"start={start.isoformat()}&end={end.isoformat()}".replace("+", "%2B")
    for tz in ("UTC", "Asia/Kolkata", "America/New_York"):
        url = f"/v1/metrics?metrics={','.join(MARKET)}&{span}&grain=hour&tz={tz}&debug=true"
        _same(engines, "operator", url)
    _same(
        engines,
        "operator",
        f"/v1/metrics?metrics={','.join(ADS)}&preset=30d&filter=placement:in:search,home"
        "&group_by=placement",
    )
    _same(
        engines,
        "vendor_a",
        f"/v1/metrics?metrics={','.join(MARKET)}&preset=30d&grain=day&group_by=event_type",
    )


def test_event_listing_agrees(engines: dict[str, Loaded]) -> None:
    def ids(lo: Loaded) -> list[str]:
        body = lo.get("vendor_a", "/v1/events?limit=200").json()
        return [e["event_id"] for e in body["events"]]

    assert len(ids(engines["duckdb"])) == 200
    assert ids(engines["postgres"]) == ids(engines["duckdb"])
    assert ids(engines["clickhouse"]) == ids(engines["duckdb"])


def test_answers_are_not_trivial(engines: dict[str, Loaded]) -> None:
    """Agreement on empty answers would prove nothing: the views hold real numbers, and the
    PostgreSQL answer came through its rollup."""
    body = engines["postgres"].get("admin", "/api/v1/admin/analytics?preset=90d&debug=true").json()
    assert body["kpis"]["orders"] > 1000
    assert body["kpis"]["gmv_cents"] > 0
    assert {d["path"] for d in body["debug"]} == {"rollup+raw"}
    buyers = (
        engines["postgres"]
        .get("operator", "/v1/metrics?metrics=buyers&preset=90d&debug=true")
        .json()
    )
    assert buyers["debug"][0]["path"] == "rollup+raw"
    assert "_gristmill.set_union" in buyers["debug"][0]["sql"]


def test_clickhouse_answers_come_through_its_rollup(engines: dict[str, Loaded]) -> None:
    ch = engines["clickhouse"]
    body = ch.get("admin", "/api/v1/admin/analytics?preset=90d&debug=true").json()
    assert body["kpis"]["orders"] > 1000
    assert {d["path"] for d in body["debug"]} == {"rollup+raw"}
    buyers = ch.get("operator", "/v1/metrics?metrics=buyers&preset=90d&debug=true").json()
    assert buyers["debug"][0]["path"] == "rollup+raw"
    assert "groupUniqArrayArray" in buyers["debug"][0]["sql"]
