"""BigQuery, Snowflake and Redshift cannot run here: their provisioning plans are pinned as
golden files (an offline plan of every object, and the plan against a catalogue that lacks one
promoted column), every statement parsed back with sqlglot's own dialect, and the pure halves
of their catalogue readers (type and layout normalising) checked against the DDL they must
match.
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
from gristmill.warehouse.redshift import catalog as rs
from gristmill.warehouse.snowflake import catalog as sf
from tests.conftest import PACKS

GOLDEN = Path(__file__).parent.parent / "golden" / "provision"
UPDATE = os.environ.get("GRISTMILL_UPDATE_GOLDEN") == "1"
TARGETS = ("bigquery", "snowflake", "redshift")
HINTS = {"bigquery": "kafka_to_bigquery", "snowflake": "snowflake", "redshift": "copy_from_s3"}
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
    assert HINTS[target] in hints


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


def test_redshift_catalogue_normalising_matches_the_ddl() -> None:
    """svv_columns' spellings (and its separate length and precision columns), svv_table_info's
    diststyles and pg_table_def's sort positions read as the rendered DDL says them."""
    assert rs.column_type("character varying", 65535, None, None) == "VARCHAR(65535)"
    assert rs.column_type("character", 32, None, None) == rs.normalize_type("CHAR(32)")
    assert rs.column_type("numeric", None, 38, 0) == rs.normalize_type("DECIMAL(38, 0)")
    assert rs.column_type("binary varying", 1024000, None, None) == "VARBYTE(1024000)"
    assert rs.column_type("timestamp with time zone", None, None, None) == rs.normalize_type(
        "TIMESTAMPTZ"
    )
    assert rs.column_type("character varying", 256, None, None) != "VARCHAR(65535)"
    assert rs.normalize_type("super") == "SUPER"
    assert rs.distribution("KEY(vendor_store_id)") == "distkey(vendor_store_id)"
    assert rs.distribution("AUTO(KEY(store_id))") == rs.distribution("AUTO(ALL)") == rs.AUTO
    assert rs.distribution("EVEN") == "diststyle(even)"
    assert rs.distribution(None, "k") == "distkey(k)"  # empty table: not in svv_table_info
    assert rs.distribution(None, None) == rs.AUTO
    assert rs.sort_key([("store_id", 3), ("amount_cents", 0), ("occurred_at", 1), ("v", 2)]) == (
        "occurred_at",
        "v",
        "store_id",
    )
    assert rs.sort_key([("a", -1), ("b", -2)]) == ("a (interleaved)", "b (interleaved)")
    want = pv.desired("redshift", list(load_packs(PACKS, ["marketplace"]).values()), Settings())
    by_key = {t.key: t for t in want.tables}
    events = by_key["marketplace.marketplace_events"]
    assert events.partitioning == rs.distribution("KEY(vendor_store_id)")
    assert events.clustering == rs.sort_key(
        [("occurred_at", 1), ("vendor_store_id", 2), ("store_id", 3), ("event_type", 4)]
    )
    assert by_key["_gristmill.loads"].partitioning == rs.AUTO


def test_redshift_connector_hints_parse_back() -> None:
    """COPY from S3 per table with its JSONPaths (one path per listed column), and the
    streaming-ingestion view over MSK when the log is Kafka, over Kinesis otherwise."""
    packs = list(load_packs(PACKS, ["marketplace"]).values())
    settings = Settings(
        packs=["marketplace"],
        warehouse={"type": "redshift", "staging": {"bucket": "landing", "iam_role": "arn:r"}},
    )
    kafka = rs.connector_hints(packs, {"log": "kafka", "topic": "events"}, settings)
    (events,) = [c for c in kafka["copy_from_s3"] if c["table"] == "marketplace.marketplace_events"]
    copy = sqlglot.parse_one(events["copy"], read="redshift", error_level=sqlglot.ErrorLevel.RAISE)
    assert isinstance(copy, sqlglot.exp.Copy)
    assert len(copy.this.expressions) == len(events["jsonpaths"]["jsonpaths"])
    assert "$.properties.amount_cents" in events["jsonpaths"]["jsonpaths"]
    assert "s3://landing/marketplace/marketplace_events/" in events["copy"]
    assert "IAM_ROLE 'arn:r'" in events["copy"]
    stream = kafka["streaming_ingestion"]
    assert stream["source"] == "msk"
    assert "FROM MSK IAM_ROLE 'arn:r'" in stream["external_schema"]
    view = sqlglot.parse_one(
        stream["materialized_view"], read="redshift", error_level=sqlglot.ErrorLevel.RAISE
    )
    assert view.find(sqlglot.exp.MaterializedProperty) is not None
    assert '"gristmill_msk"."events"' in stream["materialized_view"]
    other = rs.connector_hints(packs, {"log": "sqlite"}, Settings())
    assert other["streaming_ingestion"]["source"] == "kinesis"
    assert "kinesis_data" in other["streaming_ingestion"]["materialized_view"]


def test_the_hash_covers_the_plan_not_the_version_or_itself() -> None:
    import hashlib

    doc = _plan("bigquery", pv.EMPTY).document
    assert doc["plan_hash"] == hashlib.sha256(pv.canonical(doc)).hexdigest()
    other = {**doc, "gristmill_version": "9.9.9", "plan_hash": "x"}
    assert pv.canonical(other) == pv.canonical(doc)
    changed = {**doc, "statements": [*doc["statements"], "SELECT 1"]}
    assert pv.canonical(changed) != pv.canonical(doc)
    assert b" " not in pv.canonical({"a": [1, 2], "b": {"c": 1}})  # no spaces, sorted keys
