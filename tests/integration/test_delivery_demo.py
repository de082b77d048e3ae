"""``gristmill demo --pack delivery`` runs through the real HTTP path and what it loaded is the
traffic's distinct events, once each (re-sent copies dropped, re-emissions kept)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from gristmill.cli.main import app
from gristmill.demo.process import free_port
from gristmill.runtime import Runtime
from tests.conftest import make_settings


def test_delivery_demo_loads_and_reports(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        app,
        [
            "demo",
            "--pack",
            "delivery",
            "--data-dir",
            str(tmp_path / "demo"),
            "--events",
            "8000",
            "--days",
            "1",
            "--port",
            str(free_port()),
            "--no-serve",
        ],
    )
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())  # rich wraps to the terminal's width
    assert "Orders per branch" in out
    assert "stale (no ping for 10 min): drv_00_3" in out  # stopped 40 minutes ago
    assert "outreach conversion: " in out
    assert "0 rejected" in out
    rt = Runtime(make_settings(tmp_path / "demo", packs=["delivery"]))
    try:
        n = 0
        for table in ("order_lifecycle", "driver_telemetry", "campaign_interaction"):
            q = (
                'SELECT count(*) AS n, count(DISTINCT "event_id") AS d '
                f'FROM "delivery"."analytics_{table}_events"'
            )
            row = rt.warehouse.query_sql(q).to_pylist()[0]
            assert row["n"] == row["d"] > 0
            n += row["n"]
        assert n > 5000
    finally:
        rt.stop()
