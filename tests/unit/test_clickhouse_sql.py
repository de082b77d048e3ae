"""ClickHouse text, rendered without an engine: table shapes from the shared DDL, typed
parameters, and the rewrites of shared DML."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import sqlglot
from sqlglot import exp

from gristmill.pack.loader import load_pack
from gristmill.rollup.freshness import freshness_ddl, freshness_refresh
from gristmill.rollup.spec import rollup_ddl
from gristmill.warehouse.clickhouse.connection import bind, normalise, text_value
from gristmill.warehouse.clickhouse.sql import for_clickhouse, render, sql, with_engine
from tests.conftest import PACKS


def test_rollup_tables_hold_a_part_per_batch_by_month() -> None:
    pack = load_pack(PACKS / "marketplace")
    r = pack.spec.rollups["marketplace_hourly"]
    text = sql(with_engine(rollup_ddl(pack, "marketplace_hourly", r, "clickhouse")))
    assert (
        'ENGINE=ReplacingMergeTree PARTITION BY toYYYYMM("bucket") '
        'ORDER BY ("bucket", "vendor_store_id", "_gm_batch_id")'
    ) in text
    assert "\"_gm_batch_id\" String DEFAULT ''" in text  # a recompute writes the '' part
    assert '"orders__n" UInt64' in text  # the type of count(), for UNION ALL with raw edges
    assert '"buyers__set" Array(String)' in text  # arrays cannot be Nullable
    sqlglot.parse_one(text, read="clickhouse")


def test_freshness_upsert_is_an_insert_into_max_columns() -> None:
    pack = load_pack(PACKS / "marketplace")
    table = sql(with_engine(freshness_ddl("clickhouse")))
    assert "SimpleAggregateFunction(max, Nullable(DateTime64(6, 'UTC')))" in table
    assert (
        'ENGINE=AggregatingMergeTree ORDER BY ("pack", "tbl", "scope_column", "scope_value")'
        in table
    )
    upsert = freshness_refresh(pack, "marketplace_events").statements[0]
    text = sql(for_clickhouse(upsert))
    assert "ON CONFLICT" not in text
    assert "now64(6)" in text


def test_every_provisioning_statement_parses_back() -> None:
    pack = load_pack(PACKS / "marketplace")
    from gristmill.warehouse.clickhouse.sql import pack_ddl

    for text in render(pack_ddl([pack])):
        sqlglot.parse_one(text, read="clickhouse")


def test_placeholders_are_typed_from_their_values() -> None:
    q = exp.select("1").where(
        exp.and_(
            exp.column("a").eq(exp.Placeholder(this="s")),
            exp.column("b").eq(exp.Placeholder(this="n")),
            exp.column("c").eq(exp.Placeholder(this="t")),
        )
    )
    text = bind(sql(q), {"s": "x", "n": 3, "t": datetime(2026, 1, 1, tzinfo=UTC)})
    assert "{s:String}" in text
    assert "{n:Int64}" in text
    assert "{t:DateTime64(6, 'UTC')}" in text


def test_values_travel_escaped() -> None:
    assert text_value("a\tb\\c\nd") == "a\\tb\\\\c\\nd"
    assert text_value(None) == "\\N"
    assert text_value(datetime(2026, 1, 1, 5, tzinfo=UTC)) == "2026-01-01 05:00:00.000000"


def test_int128_and_local_times_come_back_like_other_engines() -> None:
    raw = pa.table(
        {
            "s": pa.array([(150).to_bytes(16, "little", signed=True)], pa.binary(16)),
            "d": pa.array([0], pa.timestamp("us", tz="Etc/GMT")),
        }
    )
    out = normalise(raw).to_pylist()[0]
    assert out["s"] == 150
    assert out["d"] == datetime(1970, 1, 1)  # naive: a local wall-clock time


def test_the_rollup_refresh_keys_by_a_set_lookup() -> None:
    """The shared refresh's correlated EXISTS becomes a tuple IN with NULL-safe matching."""
    from gristmill.rollup.spec import refresh

    pack = load_pack(PACKS / "marketplace")
    step = refresh(
        pack, "marketplace_hourly", pack.spec.rollups["marketplace_hourly"], "clickhouse"
    )
    text = sql(for_clickhouse(step.statements[1]))
    assert "EXISTS" not in text
    assert '(s.bucket, "s"."vendor_store_id") IN (SELECT t.bucket' in text
    assert text.endswith("SETTINGS transform_null_in = 1")
