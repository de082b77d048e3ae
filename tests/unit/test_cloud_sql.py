"""The pure parts of the BigQuery and Snowflake clients, which run without credentials:
idempotency keys, parameter typing and binding, statement rewriting for a load's stage."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp

from gristmill.sql.ddl import table_ref
from gristmill.warehouse.bigquery import sql as bq
from gristmill.warehouse.common import SystemSQL
from gristmill.warehouse.snowflake import sql as sf


def test_load_job_ids_are_stable_per_batch_and_target() -> None:
    a = bq.load_job_id("batch-1", "marketplace.marketplace_events")
    assert a == bq.load_job_id("batch-1", "marketplace.marketplace_events")
    assert a != bq.load_job_id("batch-2", "marketplace.marketplace_events")
    assert a != bq.load_job_id("batch-1", "marketplace.ad_events")
    # Job ids: letters, digits, dashes and underscores, at most 1024 characters.
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,1024}", a)
    stage = bq.stage_table("pre_", "batch-1", "marketplace.marketplace_events")
    assert stage.db == "pre__gristmill_stage"
    assert stage.name.endswith(a.removeprefix("gristmill_stage_"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "BOOL"),  # before int: a bool is an int in Python
        (7, "INT64"),
        (1.5, "FLOAT64"),
        (Decimal("1.25"), "BIGNUMERIC"),
        ("x", "STRING"),
        (b"\x00", "BYTES"),
        (datetime(2026, 1, 1, tzinfo=UTC), "TIMESTAMP"),
        (datetime(2026, 1, 1), "DATETIME"),
        (date(2026, 1, 1), "DATE"),
        (None, "STRING"),
    ],
)
def test_bigquery_parameter_types(value: object, expected: str) -> None:
    assert bq.param_type(value) == expected


def test_bigquery_binds_only_the_parameters_a_statement_names() -> None:
    params = {"log": "L", "grp": "G", "off": 3}
    text = "DELETE FROM `_gristmill`.`offsets` WHERE log = @log AND grp = @grp"
    assert bq.typed_params(params, text) == [("grp", "STRING", "G"), ("log", "STRING", "L")]
    assert [n for n, _, _ in bq.typed_params({"p1": 1, "p10": 2}, "SELECT @p10")] == ["p10"]


def test_a_failed_stage_job_is_retried_under_a_new_id() -> None:
    ids = {bq.load_job_id("b", "t", attempt) for attempt in range(5)}
    assert len(ids) == 5
    assert bq.load_job_id("b", "t", 0) == bq.load_job_id("b", "t")


def test_bigquery_parameters_refuse_what_they_cannot_type() -> None:
    with pytest.raises(TypeError, match="list"):
        bq.param_type([1])
    assert bq.typed_params({"b": 1, "a": "x"}) == [("a", "STRING", "x"), ("b", "INT64", 1)]


def test_bigquery_ledger_is_one_insert_with_named_parameters() -> None:
    rows = [
        ("b1", "log", "g", "marketplace", "web", 3, 1, 0, 9),
        ("b1", "log", "g", "m", "x", 0, 0, 2, 9),
    ]
    stmt, params = bq.ledger_insert(rows)
    text = stmt.sql("bigquery")
    sqlglot.parse_one(text, read="bigquery")
    assert text.count("CURRENT_TIMESTAMP()") == 2
    assert params["l0_0"] == "b1"
    assert params["l1_4"] == "x"
    assert params["l1_7"] == 2
    assert len(params) == 18
    assert all(f"@{name}" in text for name in params)


def test_bigquery_naming_points_statements_at_the_stage_and_prefixes_datasets() -> None:
    stage = table_ref("pre__gristmill_stage", "_gm_stage_abc")
    naming = bq.Naming("pre_", {bq.BATCH: stage})
    q = (
        exp.select("*")
        .from_(exp.to_table(bq.BATCH).as_("b"))
        .join(table_ref("marketplace", "marketplace_events"), on="true")
    )
    text = naming.sql(q)
    assert "`pre__gristmill_stage`.`_gm_stage_abc` AS b" in text
    assert "`pre_marketplace`.`marketplace_events`" in text
    # Text rendered elsewhere (the shared system statements) gets the prefix too.
    system = SystemSQL.build("bigquery")
    assert "`pre__gristmill`.`loads`" in naming.sql(system.seen_batch)
    assert naming.sql(system.seen_batch).endswith("@b LIMIT 1")
    # Staged JSON travels as text and is parsed, which CAST cannot do in BigQuery.
    assert bq.Naming().sql(exp.delete("t")) == "DELETE FROM t WHERE TRUE"
    cast = exp.Cast(this=exp.column("errors"), to=exp.DataType.build("JSON"))
    assert bq.Naming().sql(exp.select(cast)) == "SELECT PARSE_JSON(errors)"


def test_snowflake_named_parameters_become_qmark_in_order() -> None:
    text, values = sf.qmark(
        "SELECT a FROM _gristmill.offsets WHERE log = :log AND grp = :grp OR log = :log",
        {"log": "L", "grp": "G", "unused": 1},
    )
    assert text == (
        'SELECT "a" FROM "_gristmill"."offsets" WHERE "log" = ? AND "grp" = ? OR "log" = ?'
    )
    assert values == ["L", "G", "L"]
    system = SystemSQL.build("snowflake")
    text, values = sf.qmark(system.insert_ledger, list(range(9)))
    assert text.count("?") == 9
    assert values == list(range(9))
    with pytest.raises(KeyError):
        sf.qmark(system.select_offset, {"log": "L"})


def test_snowflake_stage_table_matches_the_arrow_batch() -> None:
    schema = pa.schema(
        [
            ("event_id", pa.string()),
            ("occurred_at", pa.timestamp("us", tz="UTC")),
            ("amount_cents", pa.int64()),
            ("raw", pa.binary()),
        ]
    )
    text = sf.stage_table(sf.BATCH, schema)
    assert text == (
        'CREATE OR REPLACE TEMPORARY TABLE "_gm_batch" ("event_id" VARCHAR, '
        '"occurred_at" TIMESTAMPTZ, "amount_cents" BIGINT, "raw" BINARY)'
    )
    sqlglot.parse_one(text, read="snowflake")
    copy = sf.copy_into_stage(sf.BATCH)
    assert copy.startswith('COPY INTO "_gm_batch" FROM @%"_gm_batch" ')
    assert "MATCH_BY_COLUMN_NAME = CASE_SENSITIVE" in copy
