"""Retention keeps exactly each category's window, on DuckDB, PostgreSQL and chdb; partitions
are dropped where the engine has them (checked in the catalogue, not only by counting rows);
a dry run changes nothing. The expected counts are computed in Python from the events sent."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from gristmill.config import ClickHouseSettings, PostgresSettings
from gristmill.governance.retention import categories_of
from gristmill.runtime import Runtime
from tests.conftest import make_settings
from tests.integration.governance_fixtures import platform_event
from tests.pg import scratch_database

NOW = datetime(2026, 12, 1, tzinfo=UTC)
ONE_PER_CATEGORY: dict[str, tuple[str, dict[str, Any]]] = {
    "transaction": ("payment.completed", {"payment_id": "pay", "amount": 12.5}),
    "interaction": ("search.performed", {"query": "django"}),
    "user_activity": ("user.login", {"login_method": "github"}),
    "content": (
        "review.posted",
        {"review_id": "rev", "reviewee_user_id": "u9", "rating_overall": 5},
    ),
}
MONTHS = 8 * 12 + 2  # a little over 8 years, one event per category per month


def eight_years() -> list[dict[str, Any]]:
    out = []
    for m in range(MONTHS):
        when = NOW - timedelta(days=30 * m + 3, hours=5)
        for cat, (et, props) in ONE_PER_CATEGORY.items():
            out.append(platform_event(et, f"u{m % 5}", when, m, props={**props}) | {"_cat": cat})
    return out


def expected_kept(rt: Runtime, events: list[dict[str, Any]]) -> Counter[str]:
    spec = rt.packs["platform"].spec
    kept: Counter[str] = Counter()
    for e in events:
        t = datetime.fromisoformat(e["occurred_at"])
        if t >= NOW - spec.categories[e["_cat"]].retention:
            kept[e["_cat"]] += 1
    return kept


def counts(rt: Runtime) -> Counter[str]:
    pack = rt.packs["platform"]
    by_type = {
        r["event_type"]: int(r["n"])
        for r in rt.warehouse.query_sql(
            "SELECT event_type, count(*) AS n FROM platform.platform_events GROUP BY event_type"
        ).to_pylist()
    }
    out: Counter[str] = Counter()
    for cat, types in categories_of(pack, "platform_events").items():
        out[cat] = sum(by_type.get(t, 0) for t in types)
    return out


@pytest.fixture(
    params=[
        "duckdb",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("clickhouse", marks=pytest.mark.clickhouse),
    ]
)
def rt(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    with ExitStack() as stack:
        overrides: dict[str, Any] = {}
        if request.param == "postgres":
            dsn = stack.enter_context(scratch_database())
            overrides["warehouse"] = PostgresSettings(dsn=dsn)
        elif request.param == "clickhouse":
            overrides["warehouse"] = ClickHouseSettings()
        runtime = Runtime(make_settings(tmp_path / "d", packs=["platform"], **overrides))
        stack.callback(runtime.stop)
        yield runtime


def _send(rt: Runtime, events: list[dict[str, Any]]) -> None:
    clean = [{k: v for k, v in e.items() if k != "_cat"} for e in events]
    for i in range(0, len(clean), 500):
        p = rt.collector.prepare(
            pack="platform", source="web", dialect="native", raw=orjson.dumps(clean[i : i + 500])
        )
        assert p.outcome is not None
        assert p.outcome.rejected == 0
        rt.collector.submit_sync(p)
    rt.loader.drain()


def partition_starts(rt: Runtime) -> list[datetime]:
    """From the engine's catalogue, with plain SQL (not the code under test)."""
    if rt.warehouse.name == "postgres":
        rows = rt.warehouse.query_sql(
            "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n "
            "ON n.oid = p.relnamespace WHERE n.nspname = 'platform' "
            "AND p.relname = 'platform_events'"
        ).to_pylist()
        return sorted(
            datetime.strptime(r["name"].rsplit("_p", 1)[1], "%Y%m%d").replace(tzinfo=UTC)
            for r in rows
        )
    rows = rt.warehouse.query_sql(
        "SELECT DISTINCT partition FROM system.parts WHERE database = 'platform' "
        "AND table = 'platform_events' AND active"
    ).to_pylist()
    return sorted(datetime.fromisoformat(r["partition"]).replace(tzinfo=UTC) for r in rows)


def test_each_category_keeps_exactly_its_window(rt: Runtime) -> None:
    events = eight_years()
    _send(rt, events)
    assert counts(rt) == Counter(e["_cat"] for e in events)

    dry = rt.governance.run_retention(dry_run=True, now=NOW)
    assert counts(rt) == Counter(e["_cat"] for e in events), "a dry run changed data"
    parts_before = partition_starts(rt) if rt.warehouse.caps.native_partitioning else []

    report = rt.governance.run_retention(now=NOW)
    want = expected_kept(rt, events)
    assert counts(rt) == want
    removed = len(events) - sum(want.values())
    table_rows = sum(a["rows"] for a in report.actions if a["table"] == "platform.platform_events")
    assert table_rows == removed
    assert dry.as_dict()["actions"] == report.as_dict()["actions"]

    earliest = NOW - max(c.retention for c in rt.packs["platform"].spec.categories.values())
    if rt.warehouse.caps.native_partitioning:
        dropped = [p for p in parts_before if p + timedelta(days=1) <= earliest]
        assert dropped, "the 8-year spread must leave whole partitions past every retention"
        assert len(report.partitions_dropped) == len(dropped)
        after = partition_starts(rt)
        assert not [p for p in after if p + timedelta(days=1) <= earliest]
        assert set(after) == set(parts_before) - set(dropped)
    else:
        assert report.partitions_dropped == []

    again = rt.governance.run_retention(now=NOW)
    assert again.rows == 0
    assert counts(rt) == want

    # A late event for a day whose partition was dropped still loads (recreated on demand).
    late_day = NOW - timedelta(days=300)
    _send(rt, [platform_event("user.login", "late", late_day, 1, props={"login_method": "x"})])
    assert counts(rt)["user_activity"] == want["user_activity"] + 1

    audit = rt.governance.store.audit_entries(action="retention.*")
    assert [a.action for a in audit][:2] == ["retention.run", "retention.run"]
    assert audit[1].detail["rows"] == removed


def test_status_shows_each_category_and_the_dashboard_too(tmp_path: Path) -> None:
    """What the next run removes, per category, before it runs — and on the dashboard of
    the platform pack (whose API-only views are not dashboard panels)."""
    from fastapi.testclient import TestClient

    from gristmill.api.app import create_app

    rt = Runtime(make_settings(tmp_path / "d", packs=["platform"]))
    try:
        events = eight_years()
        _send(rt, events)
        spec = rt.packs["platform"].spec
        now = datetime.now(UTC)
        past = Counter(
            e["_cat"]
            for e in events
            if datetime.fromisoformat(e["occurred_at"]) < now - spec.categories[e["_cat"]].retention
        )
        body = rt.governance.retention_status()
        got = {c["category"]: c for c in body["categories"]}
        assert {k: v["rows_past_cutoff"] for k, v in got.items()} == {
            c: past.get(c, 0) for c in ONE_PER_CATEGORY
        }
        assert {k: v["rows"] for k, v in got.items()} == Counter(e["_cat"] for e in events)
        assert got["interaction"]["retention_days"] == 365
        admin = rt.meta.create_key("secret", "a", pack="platform", role="admin")[1]
        with TestClient(create_app(rt, start=False)) as client:
            h = {"Authorization": f"Bearer {admin}"}
            api = client.get("/v1/retention", headers=h)
            assert api.status_code == 200
            assert len(api.json()["categories"]) == 4
            page = client.get("/ui", headers=h)
            assert page.status_code == 200, page.text
            assert 'id="retention"' in page.text
            for cat in ONE_PER_CATEGORY:
                assert f"<td>{cat}</td>" in page.text
        rt.governance.run_retention()
        after = {c["category"]: c for c in rt.governance.retention_status()["categories"]}
        assert all(c["rows_past_cutoff"] == 0 for c in after.values())
        assert after["interaction"]["oldest_kept"] >= after["interaction"]["cutoff"]
    finally:
        rt.stop()


def test_retention_expires_exports_past_their_horizon(tmp_path: Path) -> None:
    """Export jobs and files older than ``exports.retention`` go with the retention run (a dry
    run only counts them); the audit entry says how many."""
    import time

    rt = Runtime(make_settings(tmp_path / "d", packs=["platform"], exports={"retention": "1s"}))
    try:
        send = [platform_event("user.login", "u1", datetime.now(UTC) - timedelta(hours=1), 1)]
        rt.collector.submit_sync(
            rt.collector.prepare(
                pack="platform", source="web", dialect="native", raw=orjson.dumps(send)
            )
        )
        rt.loader.drain()
        admin = rt.keys.resolve(rt.meta.create_key("secret", "a", pack="platform", role="admin")[1])
        assert admin is not None
        now = datetime.now(UTC)
        job = rt.exports.create_rows_export(
            admin, "platform", "events_window", start=now - timedelta(days=1), end=now, as_job=True
        )
        rt.exports.run_pending()
        path = rt.exports.job(admin, job.id).csv_path  # type: ignore[union-attr]
        assert path is not None
        time.sleep(1.2)
        dry = rt.governance.run_retention(dry_run=True)
        assert dry.exports_expired == 1
        assert rt.exports.job(admin, job.id).status == "succeeded"  # type: ignore[union-attr]
        done = rt.governance.run_retention()
        assert done.exports_expired == 1
        assert rt.exports.store.get(job.id) is None
        assert not Path(path).exists()
        entry = rt.governance.store.audit_entries(action="retention.run", limit=1)[0]
        assert entry.detail["exports_expired"] == 1
    finally:
        rt.stop()
