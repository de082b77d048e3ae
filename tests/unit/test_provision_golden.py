"""BigQuery and Snowflake cannot run here: their provisioning plans are pinned as golden files
(an offline plan of every object, and the plan against a catalogue that lacks one promoted
column), every statement parsed back with sqlglot's own dialect, and the pure halves of their
catalogue readers (type and layout normalising) checked against the DDL they must match.
Regenerate after an intended change with ``GRISTMILL_UPDATE_GOLDEN=1``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlglot

from gristmill.config import Settings
from gristmill.pack.loader import load_packs
from gristmill.warehouse import provision as pv
from gristmill.warehouse.bigquery import catalog as bq
from gristmill.warehouse.provision.plan import catalog_module
from gristmill.warehouse.snowflake import catalog as sf
from tests.conftest import PACKS

GOLDEN = Path(__file__).parent.parent / "golden" / "provision"
UPDATE = os.environ.get("GRISTMILL_UPDATE_GOLDEN") == "1"
TARGETS = ("bigquery", "snowflake")
PACK_NAMES = ["marketplace", "sales_feeds"]


def _plan(target: str, catalogue: pv.Catalogue) -> pv.Plan:
    packs = list(load_packs(PACKS, PACK_NAMES).values())
    settings = Settings(packs=PACK_NAMES)
    want = pv.desired(target, packs, settings)
    return pv.make_plan(target, packs, settings, catalogue, want, live=False)


def _as_built_but(target: str, missing: str) -> pv.Catalogue:
    """The catalogue the engine reports after the DDL ran, minus one column: what the live
    reader returns once a pack gains that column (built with the reader's own normalising)."""
    packs = list(load_packs(PACKS, PACK_NAMES).values())
    want = pv.desired(target, packs, Settings(packs=PACK_NAMES))
    cat = catalog_module(target)
    tables = {}
    for t in want.tables:
        cols = {
            c.name: cat.normalize_type(c.args["kind"].sql(dialect=target))
            for c in t.columns
            if f"{t.key}.{c.name}" != missing
        }
        tables[t.key] = pv.TableState(cols, t.partitioning, t.clustering)
    return pv.Catalogue(frozenset(s.name for s in want.schemas), tables)


def _check(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert path.read_text() == text, f"{name} changed: GRISTMILL_UPDATE_GOLDEN=1"


@pytest.mark.parametrize("target", TARGETS)
def test_offline_plan_is_golden_and_parses_back(target: str) -> None:
    plan = _plan(target, pv.EMPTY)
    doc = {k: v for k, v in plan.document.items() if k != "gristmill_version"}
    _check(f"{target}.plan.json", pv.render_json(doc))
    assert plan.document == _plan(target, pv.EMPTY).document  # deterministic
    assert {c.action for c in plan.changes} == {"create_schema", "create_table"}
    for stmt in plan.statements:
        sqlglot.parse_one(stmt, read=target, error_level=sqlglot.ErrorLevel.RAISE)
    hints = plan.document["contract"]["connectors"]
    assert "kafka_to_bigquery" in hints if target == "bigquery" else "snowflake" in hints


@pytest.mark.parametrize("target", TARGETS)
def test_a_new_promoted_column_is_one_add_column(target: str) -> None:
    missing = "marketplace.marketplace_events.amount_cents"
    assert _plan(target, _as_built_but(target, "")).changes == ()
    plan = _plan(target, _as_built_but(target, missing))
    (change,) = plan.changes
    assert (change.action, change.target, change.label) == ("add_column", missing, "additive")
    (stmt,) = change.statements
    _check(f"{target}.add_column.sql", stmt + ";\n")
    parsed = sqlglot.parse_one(stmt, read=target, error_level=sqlglot.ErrorLevel.RAISE)
    assert isinstance(parsed, sqlglot.exp.Alter)


def test_bigquery_catalogue_normalising_matches_the_ddl() -> None:
    assert bq.field_type("INTEGER", "NULLABLE") == bq.normalize_type("INT64")
    assert bq.field_type("STRING", "REPEATED") == "ARRAY<STRING>"
    assert bq.field_type("FLOAT", None) == bq.normalize_type("FLOAT64")
    want = pv.desired("bigquery", list(load_packs(PACKS, ["marketplace"]).values()), Settings())
    events = {t.key: t for t in want.tables}["marketplace.marketplace_events"]
    assert events.partitioning == bq.partition_of("DAY", "occurred_at")
    assert events.clustering == ("vendor_store_id", "store_id", "event_type")


def test_snowflake_catalogue_normalising_matches_the_ddl() -> None:
    assert sf.normalize_type("NUMBER") == sf.normalize_type("BIGINT") == "NUMBER"
    assert sf.normalize_type("TEXT") == sf.normalize_type("VARCHAR")
    assert sf.normalize_type("TIMESTAMP_TZ") == sf.normalize_type("TIMESTAMPTZ")
    assert sf.normalize_type("FLOAT") != sf.normalize_type("NUMBER")
    assert sf.clustering_key('LINEAR("vendor_store_id", "store_id")') == (
        "vendor_store_id",
        "store_id",
    )
    want = pv.desired("snowflake", list(load_packs(PACKS, ["marketplace"]).values()), Settings())
    events = {t.key: t for t in want.tables}["marketplace.marketplace_events"]
    assert events.clustering == ("vendor_store_id", "store_id", "event_type")
    copy = sf.copy_into("marketplace", "marketplace_events", "kafka_stage")
    assert copy.startswith('COPY INTO "marketplace"."marketplace_events" FROM')
    sqlglot.parse_one(copy, read="snowflake", error_level=sqlglot.ErrorLevel.RAISE)


def test_the_hash_covers_the_plan_not_the_version_or_itself() -> None:
    import hashlib

    doc = _plan("bigquery", pv.EMPTY).document
    assert doc["plan_hash"] == hashlib.sha256(pv.canonical(doc)).hexdigest()
    other = {**doc, "gristmill_version": "9.9.9", "plan_hash": "x"}
    assert pv.canonical(other) == pv.canonical(doc)
    changed = {**doc, "statements": [*doc["statements"], "SELECT 1"]}
    assert pv.canonical(changed) != pv.canonical(doc)
    assert b" " not in pv.canonical({"a": [1, 2], "b": {"c": 1}})  # no spaces, sorted keys
