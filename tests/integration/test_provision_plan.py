"""``gristmill provision`` as plan/diff/apply on the engines that run here (DuckDB, chdb,
PostgreSQL): an empty warehouse plans every table, apply makes the next plan empty and
byte-identical; a pack version adding a promoted column plans exactly one ADD COLUMN and
events of both versions load afterwards; a narrowing is refused; a plan hash made before
someone altered a table is refused."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import yaml
from sqlglot import exp
from typer.testing import CliRunner

from gristmill.cli.main import app
from gristmill.config import Settings
from gristmill.runtime import Runtime
from gristmill.sql.ddl import table_ref
from gristmill.warehouse.registry import open_warehouse
from tests.conftest import PACKS
from tests.pg import scratch_database

runner = CliRunner()
PACK = "sales_feeds"


def sale(n: int, version: int = 1, **extra: object) -> dict[str, object]:
    props: dict[str, object] = {
        "business_id": "b1",
        "product_name": f"p{n}",
        "quantity": 1,
        "unit_price_cents": 100,
        "gross_revenue_cents": 100,
        **extra,
    }
    return {
        "event_id": f"s-{version}-{n}",
        "event_type": "sale",
        "schema_version": version,
        "occurred_at": "2026-11-01T10:00:00Z",
        "properties": props,
    }


def add_v2(packs: Path) -> None:
    """sales_feeds gains schema v2 of ``sale`` with a promoted ``coupon_code`` column. A pack
    promotes a property only if every version declares it, so v1 declares it as optional
    (v1 senders never send it: their rows read NULL)."""
    root = packs / PACK
    spec = yaml.safe_load((root / "pack.yaml").read_text())
    spec["tables"]["fact_sales"]["columns"]["coupon_code"] = {"type": "string"}
    spec["event_types"]["sale"]["versions"] = [1, 2]
    spec["event_types"]["sale"]["promote"].append("coupon_code")
    (root / "pack.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    v1 = json.loads((root / "schemas" / "sale" / "1.json").read_text())
    v1["properties"]["coupon_code"] = {"type": "string"}
    (root / "schemas" / "sale" / "1.json").write_text(json.dumps(v1))
    v2 = {**v1, "title": "sale v2", "required": [*v1["required"], "coupon_code"]}
    (root / "schemas" / "sale" / "2.json").write_text(json.dumps(v2))


def narrow(packs: Path) -> None:
    """``gross_margin_percent`` goes from float64 to int64: a narrowing."""
    root = packs / PACK
    spec = yaml.safe_load((root / "pack.yaml").read_text())
    spec["tables"]["fact_sales"]["columns"]["gross_margin_percent"]["type"] = "int64"
    (root / "pack.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    v1 = json.loads((root / "schemas" / "sale" / "1.json").read_text())
    v1["properties"]["gross_margin_percent"] = {"type": "integer"}
    (root / "schemas" / "sale" / "1.json").write_text(json.dumps(v1))


class Engine:
    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.packs = tmp / "packs"
        shutil.copytree(PACKS / PACK, self.packs / PACK)
        self.env = {
            "GRISTMILL_PACKS_DIR": str(self.packs),
            "GRISTMILL_PACKS": f'["{PACK}"]',
            "GRISTMILL_DATA_DIR": str(tmp / "data"),
            "COLUMNS": "200",
            **env,
        }

    def run(self, *args: str, code: int = 0) -> str:
        result = runner.invoke(app, ["provision", *args], env=self.env)
        assert result.exit_code == code, result.output
        return result.output

    def plan(self, *args: str) -> dict[str, object]:
        doc: dict[str, object] = json.loads(self.run("--format", "json", *args))
        return doc

    def settings(self) -> Settings:
        kwargs: dict[str, object] = {
            "packs_dir": self.packs,
            "packs": [PACK],
            "data_dir": self.tmp / "data",
        }
        wh = {k.removeprefix("GRISTMILL_WAREHOUSE__").lower(): v for k, v in self.env.items()}
        wh = {k: v for k, v in wh.items() if not k.startswith(("gristmill_", "columns"))}
        if wh:
            kwargs["warehouse"] = wh
        return Settings(**kwargs)  # type: ignore[arg-type]

    def load(self, events: list[dict[str, object]], column: str = "product_name") -> list[object]:
        """Load ``events``, then every row's ``column``."""
        rt = Runtime(self.settings())
        try:
            p = rt.collector.prepare(
                pack=PACK, source="web", dialect="native", raw=orjson.dumps(events)
            )
            rt.collector.submit_sync(p)
            rt.loader.drain()
            q = exp.select(exp.column(column)).from_(table_ref(PACK, "fact_sales"))
            values = [r[column] for r in rt.warehouse.query(q).to_pylist()]
        finally:
            rt.stop()
        return sorted(values, key=str)

    def alter(self, sql: str) -> None:
        """Someone else's DDL (a Runtime would provision the packs' columns at start)."""
        wh = open_warehouse(self.settings())
        try:
            wh.execute(exp.maybe_parse(sql, dialect=wh.dialect))
        finally:
            wh.close()


@pytest.fixture(
    params=["duckdb", "clickhouse", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    name = request.param
    if name == "clickhouse":
        pytest.importorskip("chdb")
    if name == "postgres":
        with scratch_database() as dsn:
            yield Engine(
                tmp_path, {"GRISTMILL_WAREHOUSE__TYPE": "postgres", "GRISTMILL_WAREHOUSE__DSN": dsn}
            )
        return
    yield Engine(tmp_path, {"GRISTMILL_WAREHOUSE__TYPE": name})


def test_empty_warehouse_plans_everything_then_nothing_byte_identical(engine: Engine) -> None:
    first = engine.plan()
    actions = {c["action"] for c in first["changes"]}  # type: ignore[attr-defined]
    assert actions == {"create_schema", "create_table"}
    assert "sales_feeds.fact_sales" in {c["object"] for c in first["changes"]}  # type: ignore[attr-defined]
    out = engine.run("--apply")
    assert "applied to" in out
    p1, p2 = engine.tmp / "p1.json", engine.tmp / "p2.json"
    engine.run("--plan", str(p1))
    engine.run("--plan", str(p2))
    assert p1.read_bytes() == p2.read_bytes()
    doc = json.loads(p1.read_text())
    assert doc["changes"] == []
    assert doc["statements"] == []
    assert doc["format_version"] == "1.0"
    assert "No changes" in engine.run()
    assert "nothing to do" in engine.run("--apply")  # idempotent


def test_new_version_with_a_promoted_column_is_one_add_column(engine: Engine) -> None:
    engine.run("--apply")
    assert engine.load([sale(1)]) == ["p1"]
    add_v2(engine.packs)
    doc = engine.plan()
    changes = doc["changes"]
    assert [c["action"] for c in changes] == ["add_column"]  # type: ignore[union-attr]
    change = changes[0]  # type: ignore[index]
    assert change["object"] == "sales_feeds.fact_sales.coupon_code"
    assert change["label"] == "additive"
    assert not change["blocking"]
    (stmt,) = change["statements"]
    assert stmt.startswith("ALTER TABLE")
    assert "ADD COLUMN" in stmt
    assert "coupon_code" in stmt
    engine.run("--apply", "--plan-hash", str(doc["plan_hash"]))
    assert engine.plan()["changes"] == []
    loaded = engine.load([sale(2), sale(3, version=2, coupon_code="SPRING")], "coupon_code")
    assert loaded == [None, None, "SPRING"]  # v1 (before and after the change), and v2
    contract = doc["contract"]["packs"][0]  # type: ignore[index]
    cols = {c["name"]: c for c in contract["tables"][0]["columns"]}
    assert cols["coupon_code"]["json_path"] == "$.properties.coupon_code"
    assert cols["coupon_code"]["from"] == ["sale@1", "sale@2"]


def test_narrowing_is_blocking_and_refused(engine: Engine) -> None:
    engine.run("--apply")
    narrow(engine.packs)
    doc = engine.plan()
    (change,) = doc["changes"]  # type: ignore[misc]
    assert change["action"] == "change_type"
    assert change["blocking"]
    assert change["label"] == "breaking"
    out = " ".join(engine.run("--apply", code=1).split())  # rich wraps at the console width
    assert "refused: 1 blocking change" in out
    assert "gross_margin_percent" in out


def test_plan_hash_refused_after_the_table_changed(engine: Engine) -> None:
    engine.run("--apply")
    add_v2(engine.packs)
    reviewed = str(engine.plan()["plan_hash"])
    engine.alter('ALTER TABLE "sales_feeds"."fact_sales" ADD COLUMN "note" TEXT')
    doc = engine.plan()
    assert doc["plan_hash"] != reviewed
    assert {c["action"] for c in doc["changes"]} == {"add_column", "unmanaged_column"}  # type: ignore[attr-defined]
    out = " ".join(engine.run("--apply", "--plan-hash", reviewed, code=1).split())
    assert "catalogue or the packs changed" in out


def test_reset_shows_confirms_refuses_rows_and_is_audited(tmp_path: Path) -> None:
    e = Engine(tmp_path, {})
    e.run("--apply")
    shown = e.run("reset", "--pack", PACK)
    assert "sales_feeds.fact_sales" in shown
    assert "Nothing dropped" in shown
    assert "refused" in e.run("reset", "--pack", PACK, "--yes", "--confirm", "other", code=1)
    e.load([sale(1)])
    out = " ".join(e.run("reset", "--pack", PACK, "--yes", "--confirm", PACK, code=1).split())
    assert "sales_feeds.fact_sales hold rows; pass --force" in out
    assert e.plan()["changes"] == []  # nothing was dropped
    result = runner.invoke(
        app,
        ["provision", "reset", "--pack", PACK, "--yes", "--force"],
        env=e.env,
        input=f"{PACK}\n",
    )
    assert result.exit_code == 0, result.output
    assert "Dropped" in result.output
    assert "sales_feeds.fact_sales" in {c["object"] for c in e.plan()["changes"]}  # type: ignore[attr-defined]
    audit = runner.invoke(app, ["audit", "--json", "--action", "provision.*"], env=e.env)
    assert "provision.reset" in audit.output
    assert "provision.apply" in audit.output


def test_seed_environment_names_are_aliases_and_gristmill_names_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WAREHOUSE_DATABASE_URL", "postgresql://w@127.0.0.1/seed")
    s = Settings()
    assert s.warehouse.type == "postgres"
    assert s.warehouse.dsn.get_secret_value() == "postgresql://w@127.0.0.1/seed"  # type: ignore[union-attr]
    monkeypatch.setenv("GRISTMILL_WAREHOUSE__DSN", "host=127.0.0.1 dbname=mine")
    monkeypatch.setenv("GRISTMILL_WAREHOUSE__TYPE", "postgres")
    assert Settings().warehouse.dsn.get_secret_value() == "host=127.0.0.1 dbname=mine"  # type: ignore[union-attr]
    monkeypatch.delenv("WAREHOUSE_DATABASE_URL")
    monkeypatch.setenv("GRISTMILL_WAREHOUSE__TYPE", "snowflake")
    monkeypatch.setenv("SNOWFLAKE_STAGE", "kafka_stage")
    monkeypatch.setenv("SNOWFLAKE_SCHEMA", "ANALYTICS")
    wh = Settings().warehouse
    assert (wh.stage, wh.landing_schema) == ("kafka_stage", "ANALYTICS")  # type: ignore[union-attr]
    monkeypatch.setenv("GRISTMILL_WAREHOUSE__STAGE", "mine")
    assert Settings().warehouse.stage == "mine"  # type: ignore[union-attr]


def test_provider_is_the_target_option_and_bigquery_dataset_lands_in_the_hints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    e = Engine(tmp_path, {"BIGQUERY_DATASET": "laundry_analytics"})
    doc = e.plan("--provider", "bigquery")
    assert doc["target"] == "bigquery"
    assert doc["catalogue"].startswith("offline")
    sinks = doc["contract"]["connectors"]["kafka_to_bigquery"]  # type: ignore[index]
    assert {s["config"]["defaultDataset"] for s in sinks} == {"laundry_analytics"}
