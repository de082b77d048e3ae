"""Collect-time enrichment of the platform pack: user agent -> device info, IP -> country
(geoip2fast's data, or a MaxMind database built here with mmdb-writer), user traits as of the
event's time, category and receive time. Expected values are written out by hand."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gristmill.collect.enrich import GeoLookup, device_info
from gristmill.runtime import Runtime
from tests.conftest import make_settings
from tests.integration.governance_fixtures import BASE, platform_event, send

UAS = {
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36": ("desktop", "Chrome", "Windows"),
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.0 Mobile/15E148 Safari/604.1": ("mobile", "Mobile Safari", "iOS"),
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/16.6 Mobile/15E148 Safari/604.1": ("tablet", "Mobile Safari", "iOS"),
    "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/116.0.0.0 Mobile Safari/537.36": ("mobile", "Chrome Mobile", "Android"),
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Safari/605.1.15": ("desktop", "Safari", "Mac OS X"),
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)": (
        "bot",
        "Googlebot",
        None,
    ),
}


@pytest.mark.parametrize("ua", list(UAS))
def test_user_agents(ua: str) -> None:
    got = json.loads(device_info(ua))
    assert (got["device_type"], got["browser"], got["os"]) == UAS[ua]


def test_countries_from_the_bundled_data() -> None:
    geo = GeoLookup()
    assert json.loads(geo.lookup("8.8.8.8") or b"null") == {"country": "US"}
    assert json.loads(geo.lookup("81.2.69.142") or b"null") == {"country": "GB"}
    assert geo.lookup("10.1.2.3") is None  # private
    assert geo.lookup("not an ip") is None


def test_a_maxmind_database_when_configured(tmp_path: Path) -> None:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City")
    w.insert_network(
        IPSet(["81.2.69.0/24"]),
        {"country": {"iso_code": "NZ"}, "city": {"names": {"en": "Wellington"}}},
    )
    path = tmp_path / "city.mmdb"
    w.to_db_file(str(path))
    geo = GeoLookup(path)
    assert json.loads(geo.lookup("81.2.69.142") or b"null") == {
        "country": "NZ",
        "city": "Wellington",
    }
    assert geo.lookup("8.8.8.8") is None  # not in this database


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path / "d", packs=["platform"]))
    yield runtime
    runtime.stop()


def _row(rt: Runtime, event_id: str) -> dict[str, Any]:
    rows = rt.warehouse.query_sql(
        "SELECT event_category, user_role, user_tenure_days, geo_location, device_info, "
        "ingested_at, received_at FROM platform.platform_events WHERE event_id = $e",
        {"e": event_id},
    ).to_pylist()
    assert len(rows) == 1
    return rows[0]


def test_traits_are_taken_as_of_the_events_time(rt: Runtime) -> None:
    t0 = BASE - timedelta(days=100)
    reg = platform_event("user.registered", "u1", t0, 0, props={"account_type": "client"})
    change = platform_event(
        "profile.updated",
        "u1",
        t0 + timedelta(days=60),
        0,
        props={"profile_user_id": "u1", "account_type": "developer"},
    )
    ua = next(iter(UAS))
    ctx = {"user_agent": ua, "ip": "8.8.8.8"}
    send(rt, [reg, change])
    # Arrives after the change, but happened before it: the user was a client then.
    early = platform_event(
        "project.created", "u1", t0 + timedelta(days=30), 1, props={"project_id": "p1"}, context=ctx
    )
    late = platform_event(
        "project.created", "u1", t0 + timedelta(days=90), 2, props={"project_id": "p2"}, context=ctx
    )
    before_signup = platform_event(
        "search.performed", "u1", t0 - timedelta(days=1), 3, props={"query": "x"}
    )
    stranger = platform_event("search.performed", "nobody", t0, 4, props={"query": "y"})
    send(rt, [late, early, before_signup, stranger])

    r = _row(rt, early["event_id"])
    assert (r["user_role"], r["user_tenure_days"]) == ("client", 30)
    assert r["event_category"] == "transaction"
    assert json.loads(r["geo_location"]) == {"country": "US"}
    device = json.loads(r["device_info"])
    assert (device["device_type"], device["browser"], device["os"]) == UAS[ua]
    assert r["ingested_at"] == r["received_at"]
    r = _row(rt, late["event_id"])
    assert (r["user_role"], r["user_tenure_days"]) == ("developer", 90)
    r = _row(rt, before_signup["event_id"])
    assert (r["user_role"], r["user_tenure_days"]) == (None, None)
    assert r["event_category"] == "interaction"
    assert r["geo_location"] is None
    assert r["device_info"] is None
    assert _row(rt, stranger["event_id"])["user_role"] is None
    assert _row(rt, reg["event_id"])["user_tenure_days"] == 0

    # A restart reads the history back from the metadata store.
    rt.stop()
    second = Runtime(rt.settings)
    try:
        ev = platform_event(
            "project.created", "u1", t0 + timedelta(days=45), 5, props={"project_id": "p3"}
        )
        send(second, [ev])
        r = _row(second, ev["event_id"])
        assert (r["user_role"], r["user_tenure_days"]) == ("client", 45)
    finally:
        second.stop()


def test_erasure_forgets_the_users_traits(rt: Runtime) -> None:
    from gristmill.core.subjects import Mode
    from gristmill.governance.erasure import Subject

    reg = platform_event("user.registered", "u9", BASE, 0, props={"account_type": "client"})
    send(rt, [reg])
    rid = rt.governance.request_erasure(Subject(("u9",)), Mode.DELETE, "t")
    rt.governance.run_pending()
    record = rt.governance.status(rid)
    assert record is not None
    assert record.report["metadata"] == {"user_traits": 1}
    assert rt.meta.traits.as_of("platform", "u9", BASE.timestamp() * 1e6 + 1) == ({}, None)
