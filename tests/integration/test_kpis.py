"""Every KPI and series against an independent computation, to the cent: each preset, three
time zones (rollup and raw paths), with late events after the rollup and duplicates."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.integration.analytics_fixtures import Loaded
from tests.reference import daily, marketplace_kpis, preset_start, select

VENDOR_KPIS = ("orders", "gmv_cents", "revenue_cents", "aov_cents", "cash_collected_cents")
ADMIN_KPIS = (
    "gmv_cents",
    "orders",
    "cash_collected_cents",
    "payouts_completed",
    "payouts_completed_cents",
)


def expected(lo: Loaded, preset: str, tz: str, vendor: str | None, start_iso: str):
    now = datetime.now(UTC)
    start = preset_start(int(preset[:-1]), tz, now)
    assert start.isoformat() == datetime.fromisoformat(start_iso).astimezone(UTC).isoformat()
    evs = select(lo.events, start=start, end=now, vendor=vendor)
    return marketplace_kpis(evs), daily(evs, tz)


@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Asia/Kolkata"])
@pytest.mark.parametrize("preset", ["7d", "30d", "90d"])
def test_vendor_view_matches_reference(loaded: Loaded, preset: str, tz: str) -> None:
    r = loaded.get("vendor_a", f"/api/v1/vendor/analytics?preset={preset}&tz={tz}")
    assert r.status_code == 200, r.text
    body = r.json()
    kpis, days = expected(loaded, preset, tz, "vnd_000", body["range"]["start"])
    assert body["kpis"] == {k: kpis[k] for k in VENDOR_KPIS}
    points = body["series"]["points"]
    assert len(points) == int(preset[:-1])  # every day present, empty ones zero-filled
    for p in points:
        ref = days.get(p["bucket"], marketplace_kpis([]))
        assert {k: p[k] for k in VENDOR_KPIS} == {k: ref[k] for k in VENDOR_KPIS}, p["bucket"]
    assert set(body["freshness"]) == {"as_of", "lag_seconds"}


@pytest.mark.parametrize("tz", ["UTC", "America/New_York"])
@pytest.mark.parametrize("preset", ["7d", "30d", "90d"])
def test_admin_view_matches_reference(loaded: Loaded, preset: str, tz: str) -> None:
    r = loaded.get("admin", f"/api/v1/admin/analytics?preset={preset}&tz={tz}&debug=true")
    assert r.status_code == 200, r.text
    body = r.json()
    kpis, days = expected(loaded, preset, tz, None, body["range"]["start"])
    assert body["kpis"] == {k: kpis[k] for k in ADMIN_KPIS}
    for p in body["series"]["points"]:
        ref = days.get(p["bucket"], marketplace_kpis([]))
        assert {k: p[k] for k in ADMIN_KPIS} == {k: ref[k] for k in ADMIN_KPIS}
    assert {d["path"] for d in body["debug"]} == {"rollup+raw"}


def test_distinct_counts_and_group_by(loaded: Loaded) -> None:
    r = loaded.get(
        "admin",
        "/v1/metrics?metrics=buyers,orders,aov_cents&preset=30d"
        "&group_by=vendor_store_id&tz=America/New_York&debug=true",
    )
    assert r.status_code == 200, r.text
    body = r.json()
    now = datetime.now(UTC)
    start = preset_start(30, "America/New_York", now)
    assert body["debug"][0]["path"] in ("rollup", "rollup+raw")
    for row in body["rows"]:
        ref = marketplace_kpis(
            select(loaded.events, start=start, end=now, vendor=row["vendor_store_id"])
        )
        assert (row["buyers"], row["orders"], row["aov_cents"]) == (
            ref["buyers"],
            ref["orders"],
            ref["aov_cents"],
        )


def test_percentile_is_answered_from_rows(loaded: Loaded) -> None:
    r = loaded.get("admin", "/v1/metrics?metrics=median_order_cents,orders&preset=90d&debug=true")
    body = r.json()
    assert body["debug"][0]["path"] == "raw"
    now = datetime.now(UTC)
    amounts = sorted(
        e["properties"]["amount_cents"]
        for e in select(loaded.events, start=preset_start(90, "UTC", now), end=now)
        if e["event_type"] == "order_created"
    )
    n = len(amounts)
    mid = (amounts[(n - 1) // 2] + amounts[n // 2]) / 2
    assert body["rows"][0]["median_order_cents"] == round(mid, 2)


def test_ratio_is_null_without_denominator(loaded: Loaded) -> None:
    body = loaded.get("vendor_none", "/api/v1/vendor/analytics?preset=7d").json()
    assert body["kpis"] == {
        "orders": 0,
        "gmv_cents": 0,
        "revenue_cents": 0,
        "aov_cents": None,
        "cash_collected_cents": 0,
    }
    assert all(p["aov_cents"] is None for p in body["series"]["points"])


def test_explicit_range_and_hour_grain(loaded: Loaded) -> None:
    start, end = "2026-10-01T00:00:00-04:00", "2026-10-03T12:30:00-04:00"
    r = loaded.get(
        "admin",
        f"/v1/metrics?metrics=orders,gmv_cents&start={start}&end={end}"
        "&grain=hour&tz=America/New_York&debug=true",
    )
    body = r.json()
    assert body["debug"][0]["path"] == "rollup+raw"  # the 30 minutes after 12:00 from rows
    lo = datetime.fromisoformat(start).astimezone(UTC)
    hi = datetime.fromisoformat(end).astimezone(UTC)
    ref = marketplace_kpis(select(loaded.events, start=lo, end=hi))
    assert sum(p["orders"] for p in body["rows"]) == ref["orders"]
    assert sum(p["gmv_cents"] for p in body["rows"]) == ref["gmv_cents"]
    assert len(body["rows"]) == 61  # 60.5 hours of buckets
