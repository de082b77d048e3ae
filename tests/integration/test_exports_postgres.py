"""Exports with PostgreSQL as the warehouse and as the metadata store: a metrics export's
totals equal the metric layer's and a plain SQL query's, to the unit."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gristmill.auth.permissions import OPERATOR, Principal
from gristmill.demo.marketplace import DemoConfig, generate
from gristmill.exports import ExportJob
from gristmill.runtime import Runtime
from tests.conftest import make_settings
from tests.integration.analytics_fixtures import send
from tests.pg import scratch_database

pytestmark = pytest.mark.postgres
LOCAL = Principal(kind="local", role=OPERATOR)


@pytest.fixture
def pg_rt(tmp_path: Path) -> Iterator[Runtime]:
    with scratch_database() as dsn:
        name = dict(p.split("=") for p in dsn.split())["dbname"]
        rt = Runtime(
            make_settings(
                tmp_path / "d",
                warehouse={"type": "postgres", "dsn": dsn},
                meta_url=f"postgresql+psycopg://postgres@127.0.0.1/{name}",
            )
        )
        try:
            end = datetime.now(UTC)
            traffic = generate(
                DemoConfig(events=4000, days=45, vendors=4, buyers=15, seed=9, end=end)
            )
            send(rt, traffic.events)
            yield rt
        finally:
            rt.stop()


def _csv(rt: Runtime, job: ExportJob) -> list[dict[str, str]]:
    assert job.csv_path is not None
    data = rt.exports.dest.read(job.csv_path)
    return list(csv.DictReader(io.StringIO(data.decode(), newline="")))


def test_metrics_export_reconciles_exactly_on_postgres(pg_rt: Runtime) -> None:
    rt = pg_rt
    month_start = (datetime.now(UTC).replace(day=1) - timedelta(days=1)).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    month = month_start.strftime("%Y-%m")
    month_end = (month_start + timedelta(days=32)).replace(day=1)
    for scope, vendor in (("all", None), ({"vendor_store_id": "vnd_001"}, "vnd_001")):
        job = rt.exports.create_metrics_job(
            LOCAL, "marketplace", "vendor_daily", period=month, scope=scope
        )
        rt.exports.run_pending()
        done = rt.exports.store.get(job.id)
        assert done is not None
        assert done.status == "succeeded", done.error
        rows = _csv(rt, done)
        got = {c: sum(int(r[c]) for r in rows) for c in ("orders", "gmv_cents", "revenue_cents")}
        sql = (
            "SELECT count(*) FILTER (WHERE event_type = 'order_created') AS orders, "
            "coalesce(sum(amount_cents) FILTER (WHERE event_type = 'order_created'), 0) AS gmv, "
            "coalesce(sum(amount_cents) FILTER (WHERE event_type = 'order_paid'), 0) AS rev "
            "FROM marketplace.marketplace_events WHERE occurred_at >= %(s)s AND occurred_at < %(e)s"
        )
        params: dict[str, Any] = {"s": month_start, "e": month_end}
        if vendor:
            sql += " AND vendor_store_id = %(v)s"
            params["v"] = vendor
        want = rt.warehouse.query_sql(sql, params).to_pylist()[0]
        assert got == {
            "orders": int(want["orders"]),
            "gmv_cents": int(want["gmv"]),
            "revenue_cents": int(want["rev"]),
        }
        assert got["orders"] > 0
        assert done.totals == got
        assert done.reconciled is True
        again = rt.exports.reconcile(done.id)
        assert again["reconciled"] is True
        assert all(v["difference"] == 0 for v in again["columns"].values())
        if vendor:
            assert {r["vendor_store_id"] for r in rows} == {vendor}


def test_rows_job_on_postgres_is_the_window(pg_rt: Runtime) -> None:
    rt = pg_rt
    end = datetime.now(UTC)
    start = end - timedelta(days=20)
    job = rt.exports.create_rows_export(
        LOCAL, "marketplace", "marketplace_rows", start=start, end=end, as_job=True
    )
    assert isinstance(job, ExportJob)
    again = rt.exports.create_rows_export(
        LOCAL, "marketplace", "marketplace_rows", start=start, end=end, as_job=True
    )
    assert isinstance(again, ExportJob)
    assert again.id == job.id
    rt.exports.run_pending()
    done = rt.exports.store.get(job.id)
    assert done is not None
    assert done.status == "succeeded", done.error
    got = [r["event_id"] for r in _csv(rt, done)]
    want = rt.warehouse.query_sql(
        "SELECT event_id FROM marketplace.marketplace_events "
        "WHERE occurred_at >= %(s)s AND occurred_at < %(e)s "
        "ORDER BY occurred_at, event_id, source, event_type, loaded_at",
        {"s": start, "e": end},
    ).to_pylist()
    assert got == [w["event_id"] for w in want]
    assert done.reconciled is True
