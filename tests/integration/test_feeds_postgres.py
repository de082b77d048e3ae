"""The same feed on PostgreSQL: staging through bound multi-row inserts (no Arrow fast path
in that engine yet), the transform's INSERT … SELECT rendered for PostgreSQL, KPIs through
the metric layer; every figure equal to the DuckDB run of the same file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gristmill.api.app import create_app
from gristmill.config import Settings
from gristmill.runtime import Runtime
from tests.conftest import make_settings
from tests.pg import scratch_database

pytestmark = pytest.mark.postgres

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "feeds"


def run(settings: Settings) -> dict[str, Any]:
    rt = Runtime(settings)
    try:
        key = rt.meta.create_key(
            "secret", "b1", pack="sales_feeds", role="owner", claims={"business_id": "1"}
        )[1]
        h = {"Authorization": f"Bearer {key}"}
        with TestClient(create_app(rt, start=False)) as c:
            c.post(
                "/dashboard/data-feeds/auto-create-products",
                headers=h,
                json={"products": [{"name": "Latte", "cost_price": "1.20"}]},
            )
            content = (FIXTURES / "21_discount_channel_order.csv").read_bytes()
            token = c.post(
                "/dashboard/data-feeds/preview",
                headers=h,
                files={"file": ("s.csv", content, "text/csv")},
            ).json()["upload_token"]
            r = c.post(
                "/dashboard/data-feeds/commit",
                headers=h,
                json={"upload_token": token, "auto_create_products": True},
            )
            assert r.status_code == 202, r.text
            fid = r.json()["feed_id"]
            # The worker already has it queued: a second run now must not double anything.
            rt.feeds.transformer.run(fid)
            deadline = time.monotonic() + 60
            while True:
                status = c.get(f"/dashboard/data-feeds/{fid}/transform-status", headers=h).json()
                if status["status"] in ("transformed", "failed") or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert status["status"] == "transformed", status
            kpi = c.get(
                "/dashboard/metrics/kpi?range=custom&start=2025-01-01&end=2025-01-31", headers=h
            ).json()["kpis"]
            trend = c.get(
                "/dashboard/metrics/trend?range=custom&start=2025-01-01&end=2025-01-03",
                headers=h,
            ).json()["points"]
        return {"metrics": status["summary"]["metrics"], "kpi": kpi, "trend": trend}
    finally:
        rt.stop()


def test_postgres_equals_duckdb(tmp_path: Path) -> None:
    duck = run(make_settings(tmp_path / "duck", packs=["sales_feeds"]))
    with scratch_database() as dsn:
        pg = run(
            make_settings(
                tmp_path / "pg",
                packs=["sales_feeds"],
                warehouse={"type": "postgres", "dsn": dsn},
            )
        )
    # Latte 2 x 3.50 + 1 x 3.50 = 10.50, Tea 2.00: 12.50; COGS 3 x 1.20; discount 0.50
    assert duck["metrics"]["gross_revenue_cents"] == 1250
    assert duck["metrics"]["gross_margin_amount_cents"] == 1250 - 360 - 50
    assert pg == duck
