"""``gristmill provision``: DDL printed without connecting, applied idempotently, and the plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlglot
from typer.testing import CliRunner

from gristmill.cli.main import app
from tests.conftest import PACKS
from tests.pg import scratch_database

runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None) -> str:
    result = runner.invoke(
        app, ["provision", *args], env={"GRISTMILL_PACKS_DIR": str(PACKS), **(env or {})}
    )
    assert result.exit_code == 0, result.output
    return result.output


def statements(out: str) -> list[str]:
    return [s.strip() for s in out.split(";\n") if s.strip() and not s.startswith("--")]


@pytest.mark.parametrize("target", ["duckdb", "postgres", "clickhouse"])
def test_ddl_is_printed_without_connecting_and_parses_back(target: str, tmp_path: Path) -> None:
    out = run("--target", target, "--data-dir", str(tmp_path / "nowhere"))
    stmts = statements(out)
    assert any('"marketplace"."marketplace_events"' in s for s in stmts)
    assert any("_gm_rollup_marketplace_hourly" in s for s in stmts)
    assert not (tmp_path / "nowhere" / "warehouse.duckdb").exists()
    for s in stmts:
        if "AGGREGATE" in s or "FUNCTION" in s:
            continue  # PostgreSQL function DDL is fixed text sqlglot does not model
        sqlglot.parse_one(s, read=target)


@pytest.mark.postgres
def test_postgres_apply_is_idempotent_and_writes_the_plan(tmp_path: Path) -> None:
    with scratch_database() as dsn:
        env = {"GRISTMILL_WAREHOUSE__TYPE": "postgres", "GRISTMILL_WAREHOUSE__DSN": dsn}
        plan = tmp_path / "plan.json"
        first = run("--apply", "--plan", str(plan), "--data-dir", str(tmp_path), env=env)
        assert "created or changed" in first
        assert "marketplace.marketplace_events" in first
        second = run("--apply", "--data-dir", str(tmp_path), env=env)
        assert "already up to date, nothing changed" in second
    doc = json.loads(plan.read_text())
    assert doc["target"] == "postgres"
    tables = {t["name"]: t for t in doc["packs"][0]["tables"]}
    events = tables["marketplace_events"]
    assert events["partitioning"] == {"column": "occurred_at", "granularity": "day", "native": True}
    assert events["clustering"]["columns"] == ["vendor_store_id", "store_id", "event_type"]
    assert events["event_types"] == [
        "cash_collected",
        "order_created",
        "order_paid",
        "payout_completed",
    ]
    assert events["retention_days"] > 0
    assert {"name": "amount_cents", "type": "BIGINT", "promoted": True} in events["columns"]
    assert events["fed_from"]["log"] == "sqlite"
    assert doc["statements"]


def test_duckdb_apply_twice(tmp_path: Path) -> None:
    assert "created or changed" in run("--apply", "--data-dir", str(tmp_path))
    assert "nothing changed" in run("--apply", "--data-dir", str(tmp_path))
    assert (tmp_path / "warehouse.duckdb").exists()


def test_unknown_target_is_refused() -> None:
    result = runner.invoke(app, ["provision", "--target", "oracle"])
    assert result.exit_code == 1
    assert "unknown target" in result.output


@pytest.mark.clickhouse
def test_clickhouse_apply_is_idempotent_and_writes_the_plan(tmp_path: Path) -> None:
    env = {"GRISTMILL_WAREHOUSE__TYPE": "clickhouse"}
    plan = tmp_path / "plan.json"
    first = run("--apply", "--plan", str(plan), "--data-dir", str(tmp_path), env=env)
    assert "created or changed" in first
    assert "marketplace.marketplace_events" in first
    assert 'ENGINE=MergeTree PARTITION BY toDate("occurred_at")' in first
    assert "ENGINE=ReplacingMergeTree" in first  # the rollup
    second = run("--apply", "--data-dir", str(tmp_path), env=env)
    assert "already up to date, nothing changed" in second
    doc = json.loads(plan.read_text())
    assert doc["target"] == "clickhouse"
    events = {t["name"]: t for t in doc["packs"][0]["tables"]}["marketplace_events"]
    assert events["partitioning"]["native"] is True
    assert events["clustering"]["columns"] == ["vendor_store_id", "store_id", "event_type"]
