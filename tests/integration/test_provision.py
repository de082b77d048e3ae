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


@pytest.mark.parametrize(
    "target", ["duckdb", "postgres", "clickhouse", "bigquery", "snowflake", "redshift"]
)
def test_ddl_is_printed_without_connecting_and_parses_back(target: str, tmp_path: Path) -> None:
    out = run(
        "--target", target, "--offline", "--format", "sql", "--data-dir", str(tmp_path / "nowhere")
    )
    stmts = statements(out)
    quoted = "`marketplace`.`marketplace_events`" if target == "bigquery" else None
    assert any((quoted or '"marketplace"."marketplace_events"') in s for s in stmts)
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
        assert "applied to postgres" in first
        assert "marketplace.marketplace_events" in first
        second = run("--apply", "--data-dir", str(tmp_path), env=env)
        assert "nothing to do" in second
    doc = json.loads(plan.read_text())
    assert doc["target"] == "postgres"
    tables = {t["name"]: t for t in doc["contract"]["packs"][0]["tables"]}
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
    amount = {c["name"]: c for c in events["columns"]}["amount_cents"]
    assert (amount["type"], amount["promoted"]) == ("BIGINT", True)
    assert amount["json_path"] == "$.properties.amount_cents"
    assert events["fed_from"]["log"] == "sqlite"
    assert doc["statements"]


def test_duckdb_apply_twice(tmp_path: Path) -> None:
    assert "applied to duckdb" in run("--apply", "--data-dir", str(tmp_path))
    assert "nothing to do" in run("--apply", "--data-dir", str(tmp_path))
    assert (tmp_path / "warehouse.duckdb").exists()


def test_every_registered_engine_is_a_target() -> None:
    """``--target`` takes its engines' default sections from the settings union, so an engine
    added to the registry and to config is a target with no edit to the command."""
    from gristmill.cli.provision import DEFAULTS
    from gristmill.warehouse.registry import ENGINES

    assert set(DEFAULTS) == set(ENGINES)
    assert all(DEFAULTS[name]().type == name for name in ENGINES)  # type: ignore[attr-defined]


def test_redshift_provider_plans_sort_and_dist_keys(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    run("--provider", "redshift", "--plan", str(plan), "--data-dir", str(tmp_path))
    doc = json.loads(plan.read_text())
    assert (doc["target"], doc["dialect"]) == ("redshift", "redshift")
    create = next(s for s in doc["statements"] if '"marketplace"."marketplace_events" (' in s)
    assert create.endswith(
        'DISTKEY("vendor_store_id") '
        'COMPOUND SORTKEY("occurred_at", "vendor_store_id", "store_id", "event_type")'
    )
    assert "copy_from_s3" in doc["contract"]["connectors"]


def test_a_pubsub_log_is_the_contract_bus(tmp_path: Path) -> None:
    out = run(
        "--offline",
        "--format",
        "json",
        "--data-dir",
        str(tmp_path),
        env={"GRISTMILL_LOG__TYPE": "pubsub", "GRISTMILL_LOG__PARTITIONS": "2"},
    )
    bus = json.loads(out)["contract"]["bus"]
    assert (bus["log"], bus["pubsub_topic"], bus["ordering_keys"]) == (
        "pubsub",
        "gristmill",
        ["p0", "p1"],
    )


def test_unknown_target_is_refused() -> None:
    result = runner.invoke(app, ["provision", "--target", "oracle"])
    assert result.exit_code == 1
    assert "unknown target" in result.output


INFRA = Path(__file__).parent.parent.parent / "infra" / "bigquery" / "schemas" / "v1"


def test_bigquery_schema_files_are_written_and_the_committed_ones_are_current(
    tmp_path: Path,
) -> None:
    """Seed 000 keeps the table schemas as JSON in the repository: they are generated from the
    pack (``gristmill provision --target bigquery --schemas infra/bigquery/schemas/v1``) and
    must not drift from it."""
    out = run("--target", "bigquery", "--schemas", str(tmp_path), "--data-dir", str(tmp_path))
    assert "3 table schemas written" in out
    written = {p.name: p.read_text() for p in tmp_path.glob("*.schema.json")}
    assert set(written) == {
        "marketplace_events.schema.json",
        "ad_events.schema.json",
        "segment_calls.schema.json",  # the engine's default traits table (docs/packs.md)
    }
    committed = {p.name: p.read_text() for p in INFRA.glob("*.schema.json")}
    assert committed == written, "regenerate infra/bigquery/schemas/v1 with the command above"
    fields = {f["name"]: f for f in json.loads(written["marketplace_events.schema.json"])}
    assert fields["occurred_at"] == {
        "name": "occurred_at",
        "type": "TIMESTAMP",
        "mode": "REQUIRED",
        "description": "When the event happened (UTC); the partitioning column.",
    }
    assert fields["amount_cents"]["type"] == "INTEGER"
    assert fields["amount_cents"]["mode"] == "NULLABLE"
    assert fields["properties"]["type"] == "JSON"


def test_schemas_are_refused_for_an_engine_without_them(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["provision", "--target", "postgres", "--schemas", str(tmp_path)],
        env={"GRISTMILL_PACKS_DIR": str(PACKS)},
    )
    assert result.exit_code == 1
    assert "--schemas is for bigquery" in result.output


@pytest.mark.parametrize(
    ("target", "names"),
    [
        ("bigquery", ["GRISTMILL_WAREHOUSE__PROJECT", "GOOGLE_APPLICATION_CREDENTIALS"]),
        (
            "snowflake",
            [
                "GRISTMILL_WAREHOUSE__ACCOUNT",
                "GRISTMILL_WAREHOUSE__USER",
                "GRISTMILL_WAREHOUSE__PASSWORD",
            ],
        ),
        (
            "redshift",
            [
                "GRISTMILL_WAREHOUSE__HOST",
                "GRISTMILL_WAREHOUSE__USER",
                "GRISTMILL_WAREHOUSE__PASSWORD",
            ],
        ),
    ],
)
def test_apply_without_credentials_names_what_to_set(
    target: str, names: list[str], tmp_path: Path
) -> None:
    result = runner.invoke(
        app,
        ["provision", "--target", target, "--apply", "--data-dir", str(tmp_path)],
        env={"GRISTMILL_PACKS_DIR": str(PACKS), "COLUMNS": "300"},
    )
    assert result.exit_code == 1
    for name in names:
        assert name in result.output


def test_bigquery_plan_has_native_partitioning_and_clustering(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    run("--target", "bigquery", "--plan", str(plan), "--data-dir", str(tmp_path))
    doc = json.loads(plan.read_text())
    assert doc["dialect"] == "bigquery"
    events = {t["name"]: t for t in doc["contract"]["packs"][0]["tables"]}["marketplace_events"]
    assert events["partitioning"]["native"] is True
    assert events["clustering"] == {
        "columns": ["vendor_store_id", "store_id", "event_type"],
        "native": True,
    }
    amount = {c["name"]: c for c in events["columns"]}["amount_cents"]
    assert (amount["type"], amount["promoted"]) == ("INT64", True)
    assert any("PARTITION BY DATE(`occurred_at`)" in s for s in doc["statements"])


@pytest.mark.clickhouse
def test_clickhouse_apply_is_idempotent_and_writes_the_plan(tmp_path: Path) -> None:
    env = {"GRISTMILL_WAREHOUSE__TYPE": "clickhouse"}
    plan = tmp_path / "plan.json"
    first = run("--apply", "--plan", str(plan), "--data-dir", str(tmp_path), env=env)
    assert "applied to clickhouse" in first
    assert "marketplace.marketplace_events" in first
    assert 'ENGINE=MergeTree PARTITION BY toDate("occurred_at")' in first
    assert "ENGINE=ReplacingMergeTree" in first  # the rollup
    second = run("--apply", "--data-dir", str(tmp_path), env=env)
    assert "nothing to do" in second
    doc = json.loads(plan.read_text())
    assert doc["target"] == "clickhouse"
    events = {t["name"]: t for t in doc["contract"]["packs"][0]["tables"]}["marketplace_events"]
    assert events["partitioning"]["native"] is True
    assert events["clustering"]["columns"] == ["vendor_store_id", "store_id", "event_type"]
