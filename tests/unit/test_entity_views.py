"""Lifecycle and track views as configuration: the delivery pack loads, a bad spec fails at
load naming the path, and the SQL renders for every dialect (executed on DuckDB, PostgreSQL
and ClickHouse in tests/integration/test_delivery*.py)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gristmill.core.errors import ConfigError
from gristmill.metrics import lifecycle, track
from gristmill.metrics.model import Condition
from gristmill.metrics.timerange import TimeRange
from gristmill.pack import load_pack
from gristmill.pack.models import ColumnType
from tests.conftest import PACKS

RNG = TimeRange(
    datetime(2026, 10, 20, tzinfo=UTC),
    datetime(2026, 10, 27, tzinfo=UTC),
    ZoneInfo("Europe/London"),
)


def test_delivery_pack_loads_with_the_seed_columns() -> None:
    pack = load_pack(PACKS / "delivery")
    assert set(pack.spec.tables) == {
        "analytics_order_lifecycle_events",
        "analytics_driver_telemetry_events",
        "analytics_campaign_interaction_events",
    }
    for t in pack.spec.tables:
        cols = {c.name: c.type for c in pack.columns(t)}
        for c in ("event_id", "occurred_at", "source", "schema_version", "actor_id", "actor_type"):
            assert c in cols, (t, c)
        assert cols["context"] is ColumnType.JSON
        assert cols["payload"] is ColumnType.JSON
    assert pack.spec.enrichment.payload_column == "payload"
    assert {v.kind for v in pack.spec.views.values()} == {"lifecycle", "track", "breakdown"}


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    dst = tmp_path / "delivery"
    shutil.copytree(PACKS / "delivery", dst)
    y = dst / "pack.yaml"
    text = y.read_text()
    assert old in text
    y.write_text(text.replace(old, new, 1))
    return dst


@pytest.mark.parametrize(
    ("old", "new", "fault"),
    [
        ("entity: order_id", "entity: order_ref", "'order_ref' is not a declared column"),
        (
            "to_accept: [created, accepted]",
            "to_accept: [created, acepted]",
            "unknown step 'acepted'",
        ),
        ("lat: lat\n", "lat: driver_id\n", "'driver_id' is not a numeric column"),
        ("tz: Europe/London", "tz: Europe/Londn", "unknown time zone"),
        (
            "      by: [branch_id]\n      filters: [branch_id]\n      percentiles",
            "      by: [customer]\n      filters: [branch_id]\n      percentiles",
            "'customer' is not a dimension",
        ),
        (
            "payload_column: payload",
            "payload_column: ingested_at",
            "enrichment fills a json column",
        ),
    ],
)
def test_bad_entity_view_fails_at_load(tmp_path: Path, old: str, new: str, fault: str) -> None:
    with pytest.raises(ConfigError, match=fault) as exc:
        load_pack(_broken(tmp_path, old, new))
    assert "pack.yaml:" in str(exc.value)


@pytest.mark.parametrize("dialect", ["duckdb", "postgres", "clickhouse", "bigquery", "snowflake"])
def test_sql_renders_per_dialect(dialect: str) -> None:
    pack = load_pack(PACKS / "delivery")
    conds = [Condition("branch_id", "eq", "br_1")]
    life_spec = pack.spec.views["lifecycle"].lifecycle
    track_spec = pack.spec.views["drivers"].track
    assert life_spec is not None
    assert track_spec is not None
    life = lifecycle.build(
        life_spec,
        pack.dataset,
        dialect,
        RNG,
        conds,
        grain="day",
        group_by=["branch_id"],
    )
    assert "GROUPING SETS" in life.sql
    assert "br_1" not in life.sql  # request values are bound, never inlined
    assert "br_1" in life.params.values()
    trk = track.build(track_spec, pack.dataset, dialect, RNG, conds)
    assert "ASIN" in trk.sql.upper()
    assert "br_1" not in trk.sql


def test_sql_is_built_once_per_shape() -> None:
    pack = load_pack(PACKS / "delivery")
    spec = pack.spec.views["lifecycle"].lifecycle
    assert spec is not None
    a = lifecycle.build(
        spec,
        pack.dataset,
        "duckdb",
        RNG,
        [Condition("branch_id", "eq", "a")],
        grain="day",
        group_by=[],
    )
    b = lifecycle.build(
        spec,
        pack.dataset,
        "duckdb",
        RNG,
        [Condition("branch_id", "eq", "b")],
        grain="day",
        group_by=[],
    )
    assert a.sql == b.sql
    assert a.params != b.params
    c = lifecycle.build(
        spec,
        pack.dataset,
        "duckdb",
        RNG,
        [Condition("branch_id", "in", ("a", "b"))],
        grain="day",
        group_by=[],
    )
    assert list(c.params.values()).count("a") == 1
    assert c.sql != a.sql


@pytest.mark.parametrize(
    ("engine", "spelling"),
    [
        ("duckdb", '"payload" JSON'),
        ("postgres", '"payload" JSONB'),
        ("clickhouse", '"payload" Nullable(String)'),
        ("bigquery", "`payload` JSON"),
        ("snowflake", '"payload" VARIANT'),
    ],
)
def test_payload_is_a_json_column_on_every_engine(
    engine: str, spelling: str, tmp_path: Path
) -> None:
    from gristmill.config import Settings
    from gristmill.warehouse import registry

    pack = load_pack(PACKS / "delivery")
    settings = Settings(data_dir=tmp_path, packs_dir=PACKS, packs=["delivery"])
    text = "\n".join(registry.render_ddl(engine, [pack], settings))
    assert text.count(spelling) == 3  # one per table
