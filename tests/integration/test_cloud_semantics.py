"""What can be checked of the BigQuery, Snowflake and Redshift SQL without those engines: the same
logical plans executed on DuckDB.

* Metric queries: the text planned for BigQuery (resp. Snowflake) is translated back to DuckDB
  by sqlglot and run over the same tables — rows and rollups — as DuckDB's own plan; the
  answers must be equal. This checks the rewrites of FILTER into conditional aggregates, the
  set merges and the exact percentile built from ``ARRAY_AGG`` + ``UNNEST``. (Time buckets are
  not covered: sqlglot's translation drops their zone; the golden files pin them.)
* Maintenance without temp tables or ``ON CONFLICT`` (:mod:`gristmill.rollup.scripted`, what
  the three engines run in each load): built for DuckDB and run there, after late and duplicate
  events it equals a rebuild from all rows — the delta MERGE (the default) and the recompute,
  both through DuckDB's own load and in the cloud clients' order (the shared anti-join load,
  ``before_keys`` steps between the insert and remembering the keys) — and freshness is kept
  by MERGE.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from gristmill.core.clock import from_datetime
from gristmill.core.envelope import Envelope
from gristmill.metrics.model import MetricQuery
from gristmill.metrics.planner import plan
from gristmill.metrics.service import ZERO_WHEN_EMPTY
from gristmill.metrics.timerange import preset_range
from gristmill.pack.models import Pack
from gristmill.rollup.freshness import FRESHNESS
from gristmill.rollup.maintain import _after_insert_by_merge, analytics_ddl, provision_analytics
from gristmill.rollup.spec import full_rebuild, rollup_table
from gristmill.warehouse.base import AfterInsert, LoadBatch
from gristmill.warehouse.common import (
    AntiJoinLoad,
    ledger_snapshot,
    run_after_insert,
    split_snapshot,
)
from gristmill.warehouse.duckdb import sql as duck
from gristmill.warehouse.duckdb.client import DuckDBWarehouse
from gristmill.warehouse.registry import capabilities
from tests.golden.queries import NOW
from tests.integration.warehouse_conformance import (
    batch_of,
    build_batch_with_after,
    envelope,
    frame,
    rollup_rows,
)

TYPES = ("order_created", "order_paid", "cash_collected", "payout_completed")


def _events(seed: int, n: int) -> list[Envelope]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        vendor = rnd.choice(["v1", "v2", "v3", None])
        e = envelope(f"e{seed}-{i}", rnd.randint(1, 90_000), rnd.choice(TYPES), vendor or "v1")
        when = NOW - timedelta(days=rnd.uniform(0, 100))
        e.occurred_at = from_datetime(when)
        buyer = rnd.choice(["s1", "s2", "s3", "s4", None])
        e.promoted = [f"o{i}", buyer, vendor, rnd.choice([e.promoted[3], None])]
        out.append(e)
    return out


def _ad_events(seed: int, n: int) -> list[Envelope]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        e = envelope(f"ad{seed}-{i}", 0, rnd.choice(["ad_impression", "ad_click"]))
        e.occurred_at = from_datetime(NOW - timedelta(days=rnd.uniform(0, 100)))
        e.entity_type = e.entity_id = None
        e.promoted = [
            f"ad{i % 7}",
            rnd.choice(["c1", "c2", None]),
            rnd.choice(["v1", "v2", None]),
            rnd.choice(["s1", "s2"]),
            rnd.choice(["search", "home"]),
            rnd.randint(0, 40),
        ]
        out.append(e)
    return out


def _chunks() -> list[list[Envelope]]:
    """Three loads: in order, then late events with 30 repeats of the first load."""
    first = _events(1, 400) + _ad_events(3, 300)
    return [first[:350], first[350:], _events(2, 120) + first[10:40]]


def _marketplace() -> Pack:
    from gristmill.pack.loader import load_pack
    from tests.conftest import PACKS

    return load_pack(PACKS / "marketplace")


def _warehouse(tmp_path_factory: pytest.TempPathFactory, mode: str) -> tuple[DuckDBWarehouse, Pack]:
    pack = _marketplace()
    wh = DuckDBWarehouse(Path(tmp_path_factory.mktemp("sem")) / "wh.duckdb")
    wh.provision([pack], apply=True)
    provision_analytics(wh, [pack])
    # What BigQuery, Snowflake and Redshift run in each load, built for DuckDB.
    after = _after_insert_by_merge({pack.name: pack}, "duckdb", mode)
    for chunk in _chunks():
        wh.commit_load(build_batch_with_after(batch_of(pack, frame("web", *chunk)), pack, after))
    return wh, pack


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DuckDBWarehouse, Pack]]:
    wh, pack = _warehouse(tmp_path_factory, "auto")
    yield wh, pack
    wh.close()


@pytest.fixture(scope="module")
def recomputed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DuckDBWarehouse, Pack]]:
    wh, pack = _warehouse(tmp_path_factory, "recompute")
    yield wh, pack
    wh.close()


def test_delta_merge_is_the_default() -> None:
    pack = _marketplace()
    for mode, kind in (("auto", "delta"), ("delta", "delta"), ("recompute", "refresh")):
        steps = _after_insert_by_merge({pack.name: pack}, "duckdb", mode)
        rollup = steps[(pack.name, "marketplace_events")][0]
        if kind == "delta":
            assert rollup.before_keys
            assert [type(s) for s in rollup.statements] == [exp.Merge]
        else:
            assert not rollup.before_keys
            assert [type(s) for s in rollup.statements] == [exp.Delete, exp.Insert]


@pytest.mark.parametrize("which", ["loaded", "recomputed"])
def test_scripted_maintenance_equals_a_rebuild(which: str, request: pytest.FixtureRequest) -> None:
    wh, pack = request.getfixturevalue(which)
    for name, r in pack.spec.rollups.items():
        incremental = rollup_rows(wh, pack, name)
        assert len(incremental) > 50
        for stmt in full_rebuild(pack, name, r, "duckdb"):
            wh.execute(stmt)
        assert rollup_rows(wh, pack, name) == incremental, name


def _run_after(con: duckdb.DuckDBPyConnection, after: AfterInsert) -> None:
    """One after-insert step as the Snowflake and Redshift clients run it (the same function;
    bounds, then the statements), on a DuckDB cursor."""
    run_after_insert(
        after,
        con,
        lambda cur, text, params: cur.execute(text, params),
        lambda e: [e.sql("duckdb")],
    )


def _anti_join_load(
    con: duckdb.DuckDBPyConnection,
    pack: Pack,
    batch: LoadBatch,
    after: dict[tuple[str, str], tuple[AfterInsert, ...]],
) -> int:
    """A batch loaded the way BigQuery, Snowflake and Redshift load it (``AntiJoinLoad`` with
    DuckDB's key), in their order; returns the fresh rows."""
    fresh = 0
    for rows in batch.tables:
        st = AntiJoinLoad.anti_join(pack, rows.table, "duckdb", duck.dedupe_key)
        con.register(duck.BATCH, rows.rows)
        fresh += sum(n for _, n in con.execute(st.count_fresh.sql("duckdb")).fetchall())
        con.execute(st.insert_fresh.sql("duckdb"))
        early, late = st.split(after[(pack.name, rows.table)])
        for step in early:
            _run_after(con, step)
        con.execute(st.remember.sql("duckdb"))
        for step in late:
            _run_after(con, step)
        con.unregister(duck.BATCH)
    return fresh


@pytest.mark.parametrize("mode", ["auto", "recompute"])
def test_the_cloud_load_order_keeps_rollups_equal_to_a_rebuild(mode: str) -> None:
    """The delta MERGE sees the key table as it was before the batch (it runs before the keys
    are remembered): repeats add nothing, late events merge into stored buckets."""
    pack = _marketplace()
    con = duckdb.connect()
    for stmt in [*duck.pack_ddl([pack]), *analytics_ddl([pack], "duckdb", capabilities("duckdb"))]:
        con.execute(stmt.sql("duckdb"))
    after = _after_insert_by_merge({pack.name: pack}, "duckdb", mode)
    fresh = [_anti_join_load(con, pack, batch_of(pack, frame("web", *c)), after) for c in _chunks()]
    assert fresh == [350, 350, 120]

    def rows(name: str) -> list[tuple[Any, ...]]:
        got = con.sql(exp.select("*").from_(rollup_table(pack, name)).sql("duckdb")).fetchall()
        return sorted(
            (tuple(sorted(v) if isinstance(v, list) else v for v in r) for r in got), key=repr
        )

    for name, r in pack.spec.rollups.items():
        incremental = rows(name)
        assert len(incremental) > 50
        for stmt in full_rebuild(pack, name, r, "duckdb"):
            con.execute(stmt.sql("duckdb"))
        assert rows(name) == incremental, (mode, name)
    con.close()


def test_freshness_is_kept_by_merge(loaded: tuple[DuckDBWarehouse, Pack]) -> None:
    wh, _ = loaded
    rows = wh.query(sqlglot.exp.select("*").from_(FRESHNESS)).to_pylist()
    whole = [r for r in rows if r["tbl"] == "marketplace_events" and r["scope_column"] == "*"]
    assert len(whole) == 1  # one row per key after three loads: updated, not appended
    newest = wh.query_sql(
        'SELECT max(occurred_at) AS m FROM "marketplace"."marketplace_events"'
    ).to_pylist()[0]["m"]
    assert whole[0]["newest_occurred_at"] == newest
    vendors = {r["scope_value"] for r in rows if r["scope_column"] == "vendor_store_id"}
    assert vendors == {"v1", "v2", "v3"}


def _answer(
    wh: DuckDBWarehouse, text: str, params: dict[str, Any], zero: bool
) -> list[dict[str, Any]]:
    """Rows as the metric service reads them: numbers compared as floats, and (for counts and
    sums, which the service reports as 0 when empty) NULL as 0."""

    def norm(v: Any) -> Any:
        if v is None and zero:
            return 0.0
        return float(v) if isinstance(v, int | float | Decimal) else v

    rows = wh.query_sql(text, params).to_pylist()
    return sorted(({k: norm(v) for k, v in r.items()} for r in rows), key=repr)


SETS_UNTRANSLATED = {"snowflake": {"buyers"}}
"""sqlglot has no DuckDB spelling of Snowflake's ARRAY_UNION_AGG."""


@pytest.mark.parametrize("dialect", ["bigquery", "snowflake", "redshift"])
@pytest.mark.parametrize("group_by", [(), ("vendor_store_id",)])
def test_metric_plans_agree_with_duckdb(
    loaded: tuple[DuckDBWarehouse, Pack], dialect: str, group_by: tuple[str, ...]
) -> None:
    wh, pack = loaded
    compared = 0
    for preset in ("7d", "90d"):
        rng = preset_range(preset, ZoneInfo("UTC"), NOW + timedelta(minutes=17))
        for name in pack.spec.metrics:
            m = pack.spec.metrics[name]
            if name in SETS_UNTRANSLATED.get(dialect, set()) or m.type == "ratio":
                continue
            dims = tuple(
                d for d in group_by if m.table and d in pack.spec.tables[m.table].dimensions
            )
            q = MetricQuery(pack, (name,), rng, None, dims)
            ours = plan(q, "duckdb")
            theirs = plan(q, dialect)
            if dialect == "redshift" and m.type == "count_distinct":
                # Redshift's rollups keep no sets: distinct counts always come from rows.
                assert [p.path for p in theirs] == ["raw"]
            else:
                assert [p.path for p in ours] == [p.path for p in theirs]
            for a, b in zip(ours, theirs, strict=True):
                text = sqlglot.transpile(b.sql, read=dialect, write="duckdb")[0]
                zero = m.type in ZERO_WHEN_EMPTY
                expected = _answer(wh, a.sql, a.params, zero)
                assert _answer(wh, text, b.params, zero) == expected, (dialect, name, b.path)
                assert expected, name
                compared += 1
    assert compared > 20


def test_answers_went_through_rollups(loaded: tuple[DuckDBWarehouse, Pack]) -> None:
    _, pack = loaded
    rng = preset_range("90d", ZoneInfo("UTC"), datetime(2026, 3, 14, 15, 17, tzinfo=UTC))
    paths = {p.path for p in plan(MetricQuery(pack, ("orders", "buyers"), rng), "bigquery")}
    assert paths == {"rollup+raw"}


def test_ledger_snapshot_is_the_ledger(loaded: tuple[DuckDBWarehouse, Pack]) -> None:
    """The one-statement ledger read of BigQuery and Snowflake, run on DuckDB, gives what
    DuckDB's own two reads give."""
    wh, _ = loaded
    rows = wh.query_sql(ledger_snapshot("duckdb"), {"log": "log-test", "grp": "loader"})
    got = split_snapshot([tuple(r.values()) for r in rows.to_pylist()])
    assert got == wh.ledger("log-test", "loader")
    assert got.offset > 0
    assert sum(got.loaded.values()) == 820  # 400 + 300 + 120; the 30 repeats are duplicates
    assert sum(got.duplicates.values()) == 30
