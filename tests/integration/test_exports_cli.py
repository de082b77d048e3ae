"""``gristmill exports create|list|show|reconcile`` offline (no server: the job runs in the
command's process) and against a running server."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner, Result

from gristmill.cli.main import app
from gristmill.demo.marketplace import DemoConfig, generate
from gristmill.runtime import Runtime
from tests.conftest import PACKS, make_settings
from tests.integration.analytics_fixtures import send

END = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    d = tmp_path / "data"
    monkeypatch.setenv("GRISTMILL_PACKS_DIR", str(PACKS))
    monkeypatch.setenv("GRISTMILL_DATA_DIR", str(d))
    monkeypatch.setenv("GRISTMILL_PACKS", '["marketplace"]')
    monkeypatch.setenv("COLUMNS", "200")
    rt = Runtime(make_settings(d))
    try:
        send(
            rt,
            generate(DemoConfig(events=2000, days=8, vendors=3, buyers=8, seed=2, end=END)).events,
        )
    finally:
        rt.stop()
    return d


def _json(r: Result) -> Any:
    assert r.exit_code == 0, r.output
    return orjson.loads(r.stdout)


def test_offline_create_list_show_reconcile(data: Path, tmp_path: Path) -> None:
    cli = CliRunner()
    start = (END - timedelta(days=6)).isoformat()
    out = tmp_path / "slice.csv"
    # A small window streams straight into the file.
    r = cli.invoke(
        app,
        ["exports", "create", "marketplace", "marketplace_rows", "--start", start,
         "--end", (END - timedelta(days=5)).isoformat(), "--filter", "event_type=order_paid",
         "--out", str(out)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(out.read_text(), newline="")))
    assert rows
    assert {row["event_type"] for row in rows} == {"order_paid"}
    # A job runs in this process and prints the finished job.
    job = _json(
        cli.invoke(
            app,
            [
                "exports",
                "create",
                "marketplace",
                "marketplace_rows",
                "--start",
                start,
                "--end",
                END.isoformat(),
                "--as-job",
                "--json",
            ],
        )
    )
    assert job["status"] == "succeeded"
    assert job["reconciled"] is True
    metrics = _json(
        cli.invoke(
            app,
            [
                "exports",
                "create",
                "marketplace",
                "vendor_daily",
                "--period",
                "mtd",
                "--scope",
                "vendor_store_id=vnd_000",
                "--json",
            ],
        )
    )
    assert metrics["scope"] == {"vendor_store_id": "vnd_000"}
    listed = _json(cli.invoke(app, ["exports", "list", "--json"]))["items"]
    assert {j["id"] for j in listed} == {job["id"], metrics["id"]}
    shown = _json(cli.invoke(app, ["exports", "show", job["id"], "--json"]))
    assert shown["checksum"] == job["checksum"]
    rec = _json(cli.invoke(app, ["exports", "reconcile", metrics["id"], "--json"]))
    assert rec["reconciled"] is True
    table = cli.invoke(app, ["exports", "reconcile", job["id"]])
    assert table.exit_code == 0, table.output
    assert "reconciled" in table.output
    missing = cli.invoke(app, ["exports", "show", "exp_nope"])
    assert missing.exit_code == 1
    assert "no export job" in missing.output
    bad = cli.invoke(app, ["exports", "create", "marketplace", "vendor_daily"])
    assert bad.exit_code == 1
