"""Delta rollups equal a full rebuild from rows after any interleaving of in-order, late and
duplicate batches (Hypothesis), on every engine that runs here.

DuckDB and PostgreSQL append each batch's aggregates and fold them every ``fold_every`` loads
(run with 2; DuckDB also with folds so rare that none runs: reads merge the parts);
ClickHouse appends them as a part per batch, and compacts the parts at random points between
batches.
The oracle is ``rollup.spec.full_rebuild`` over the stored rows.
Each engine keeps one warehouse across examples (events of an example get their own ids), so
later examples also run against rollups that earlier ones filled.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from gristmill.config import (
    ClickHouseSettings,
    DuckDBSettings,
    LoaderSettings,
    PostgresSettings,
    Settings,
)
from gristmill.rollup.delta import lock_key, merged
from gristmill.rollup.repair import rebuild
from gristmill.rollup.spec import full_rebuild, rollup_table
from gristmill.runtime import Runtime
from gristmill.warehouse import folds
from gristmill.warehouse.clickhouse.client import ClickHouseWarehouse
from tests.conftest import make_settings
from tests.factories import ad, order
from tests.integration.analytics_fixtures import send
from tests.pg import scratch_database

BASE = datetime(2026, 10, 1, tzinfo=UTC)
ORDER_TYPES = ["order_created", "order_paid", "payout_completed", "cash_collected"]
AD_TYPES = ["ad_impression", "ad_click"]
_example = itertools.count()


def _settings(tmp: Path, engine: str, dsn: str = "") -> Settings:
    loader = LoaderSettings(rollup_mode="auto", max_wait_s=0)
    if engine == "postgres":
        pg = PostgresSettings(dsn=dsn, fold_every=2)  # type: ignore[arg-type]
        return make_settings(tmp, warehouse=pg, loader=loader)
    if engine == "clickhouse":
        return make_settings(tmp, warehouse=ClickHouseSettings(), loader=loader)  # type: ignore[arg-type]
    every = 2 if engine == "duckdb" else 10**9
    return make_settings(tmp, warehouse=DuckDBSettings(fold_every=every), loader=loader)  # type: ignore[arg-type]


@pytest.fixture(
    scope="module",
    params=[
        "duckdb",
        "duckdb-unfolded",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("clickhouse", marks=pytest.mark.clickhouse),
    ],
)
def runtime(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runtime]:
    engine: str = request.param
    tmp = Path(tmp_path_factory.mktemp(engine))
    if engine == "postgres":
        with scratch_database() as dsn:
            rt = Runtime(_settings(tmp, engine, dsn))
            try:
                yield rt
            finally:
                rt.stop()
        return
    rt = Runtime(_settings(tmp, engine))
    try:
        yield rt
    finally:
        rt.stop()


def snapshot(rt: Runtime, name: str) -> list[tuple[Any, ...]]:
    """The rollup's rows, order-free: sets sorted, an empty set read as NULL (both count 0)."""
    pack = rt.packs["marketplace"]
    rows = rt.warehouse.query(merged(pack, name, rt.warehouse.dialect)).to_pylist()
    out = []
    for r in rows:
        out.append(
            tuple((tuple(sorted(v)) or None) if isinstance(v, list) else v for v in r.values())
        )
    return sorted(out, key=repr)


event = st.tuples(
    st.sampled_from(["new", "new", "dup", "dup-changed"]),
    st.sampled_from(ORDER_TYPES + AD_TYPES),
    st.integers(0, 3),  # vendor
    st.integers(0, 5),  # buyer
    st.integers(0, 250_000),  # amount / cost
    st.integers(0, 72 * 60 - 1),  # minute in a three-day span: late and in order alike
)
# Each batch, and whether ClickHouse compacts its rollup parts after it.
traffic = st.lists(
    st.tuples(st.lists(event, min_size=1, max_size=8), st.booleans()), min_size=1, max_size=5
)


def _build(spec: tuple[str, str, int, int, int, int], tag: str, i: int) -> dict[str, Any]:
    _, etype, vendor, buyer, amount, minute = spec
    at = (BASE + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z")
    eid = f"{tag}-{i}"
    if etype in AD_TYPES:
        ev = ad(etype, vendor=f"v{vendor}", cost=amount % 500, event_id=eid, occurred_at=at)
        ev["properties"]["campaign_id"] = f"c{buyer % 2}"
        ev["properties"]["placement"] = ["search", "home"][minute % 2]
        return ev
    return order(
        etype, vendor=f"v{vendor}", buyer=f"s{buyer}", amount=amount, occurred_at=at, event_id=eid
    )


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=traffic)
def test_delta_rollups_equal_a_full_rebuild(
    runtime: Runtime, batches: list[tuple[list[tuple[str, str, int, int, int, int]], bool]]
) -> None:
    tag = f"x{next(_example)}"
    sent: list[dict[str, Any]] = []
    n = 0
    for batch, fold in batches:
        events = []
        for spec in batch:
            kind = spec[0]
            if kind.startswith("dup") and sent:
                again = dict(sent[spec[2] * 7 % len(sent)])
                if kind == "dup-changed":  # same id, another body: the first one stays
                    again["properties"] = {**again["properties"]}
                    key = "cost_cents" if "cost_cents" in again["properties"] else "amount_cents"
                    again["properties"][key] = spec[4] % 500
                events.append(again)
                continue
            ev = _build(spec, tag, n)
            n += 1
            sent.append(ev)
            events.append(ev)
        send(runtime, events)
        if fold and isinstance(runtime.warehouse, ClickHouseWarehouse):
            runtime.warehouse.compact_rollups()
    pack = runtime.packs["marketplace"]
    for name, r in pack.spec.rollups.items():
        kept = snapshot(runtime, name)
        for stmt in full_rebuild(pack, name, r, runtime.warehouse.dialect):
            runtime.warehouse.execute(stmt)
        assert snapshot(runtime, name) == kept, name


def test_delta_is_what_runs(tmp_path: Path) -> None:
    """The default picks delta on DuckDB, and asking for delta where the engine has none fails
    loudly instead of silently recomputing."""
    from gristmill.rollup.maintain import after_insert

    rt = Runtime(make_settings(tmp_path))
    try:
        steps = after_insert(rt.packs, "duckdb")[("marketplace", "marketplace_events")]
        assert any(a.fold is not None for a in steps)  # DuckDB: appended, folded later
        steps = after_insert(rt.packs, "duckdb", mode="recompute")[
            ("marketplace", "marketplace_events")
        ]
        assert not any(a.fold is not None for a in steps)
        assert any(a.bounds is not None for a in steps)  # touched buckets from rows
        steps = after_insert(rt.packs, "postgres")[("marketplace", "marketplace_events")]
        assert any(a.fold is not None for a in steps)  # PostgreSQL too, under its lock
        locks = [s.sql("postgres").upper() for a in steps for s in a.prepare]
        assert any("ADVISORY_XACT_LOCK" in text for text in locks)
        steps = after_insert(rt.packs, "postgres", mode="recompute")[
            ("marketplace", "marketplace_events")
        ]
        assert not any(a.fold is not None for a in steps)
        steps = after_insert(rt.packs, "clickhouse")[("marketplace", "marketplace_events")]
        assert any(a.parts is not None for a in steps)  # ClickHouse: a part per batch
        with pytest.raises(ValueError, match="recompute only"):
            after_insert(rt.packs, "sqlite", mode="delta")
    finally:
        rt.stop()


def _events_for_repair() -> list[dict[str, Any]]:
    return [
        order(
            vendor=f"v{i % 3}",
            buyer=f"s{i % 4}",
            amount=100 * i,
            occurred_at=f"2026-10-0{1 + i % 3}T1{i % 10}:00:00Z",
        )
        for i in range(30)
    ]


def test_check_finds_a_drifted_bucket_and_rebuild_repairs_it(tmp_path: Path) -> None:
    """The repair path through the CLI (no server running): check passes after loads, reports
    a bucket someone changed (exit 1, the key shown), rebuild puts back what the rows say."""
    from typer.testing import CliRunner

    from gristmill.cli.main import app

    data = tmp_path / "d"
    rt = Runtime(make_settings(data))
    try:
        send(rt, _events_for_repair())
    finally:
        rt.stop()
    cli = CliRunner()
    args = ["--data-dir", str(data), "--pack", "marketplace"]
    ok = cli.invoke(app, ["rollups", "check", "marketplace", *args, "--json"])
    assert ok.exit_code == 0, ok.output
    items = {i["rollup"]: i for i in json.loads(ok.output)["items"]}
    assert items["marketplace_hourly"]["ok"]
    assert items["marketplace_hourly"]["stored_rows"] > 0

    rt = Runtime(make_settings(data))
    try:
        table = rollup_table(rt.packs["marketplace"], "marketplace_hourly")
        rt.warehouse.execute(
            exp.update(table, {"orders__n": exp.column("orders__n") + 1}).where(
                exp.column("vendor_store_id").eq(exp.Literal.string("v1"))
            )
        )
        drifted = sum(1 for r in snapshot(rt, "marketplace_hourly") if r[1] == "v1")
    finally:
        rt.stop()
    bad = cli.invoke(
        app, ["rollups", "check", "marketplace", *args, "--rollup", "marketplace_hourly"]
    )
    assert bad.exit_code == 1, bad.output
    assert "NO" in bad.output
    assert "v1" in bad.output
    report = json.loads(
        cli.invoke(app, ["rollups", "check", "marketplace", *args, "--json"]).output
    )
    hourly = next(i for i in report["items"] if i["rollup"] == "marketplace_hourly")
    assert (hourly["different"], hourly["missing"], hourly["extra"]) == (drifted, 0, 0)

    fixed = cli.invoke(app, ["rollups", "rebuild", "marketplace", *args])
    assert fixed.exit_code == 0, fixed.output
    assert "rebuilt marketplace.marketplace_hourly" in fixed.output
    again = cli.invoke(app, ["rollups", "check", "marketplace", *args])
    assert again.exit_code == 0, again.output


def test_rollup_repair_api_is_for_operators(
    runtime: Runtime, client: Any, operator_key: str
) -> None:
    send(runtime, _events_for_repair())
    ops = {"Authorization": f"Bearer {operator_key}"}
    r = client.get("/v1/rollups/marketplace/check", headers=ops)
    assert r.status_code == 200, r.text
    assert all(i["ok"] for i in r.json()["items"])
    assert client.get("/v1/rollups/marketplace/check?rollup=nope", headers=ops).status_code == 404
    r = client.post("/v1/rollups/marketplace/rebuild?rollup=ads_hourly", headers=ops)
    assert r.status_code == 200
    assert r.json()["items"][0]["rollup"] == "ads_hourly"
    admin = runtime.meta.create_key("secret", "adm", pack="marketplace", role="admin")[1]
    denied = client.get(
        "/v1/rollups/marketplace/check", headers={"Authorization": f"Bearer {admin}"}
    )
    assert denied.status_code == 403


def _rows_per_key(rt: Runtime) -> dict[tuple[Any, ...], int]:
    table = rollup_table(rt.packs["marketplace"], "marketplace_hourly")
    q = (
        exp.select("bucket", "vendor_store_id", exp.func("count", exp.Star()).as_("n"))
        .from_(table)
        .group_by("bucket", "vendor_store_id")
    )
    return {
        (r["bucket"].hour, r["vendor_store_id"]): r["n"] for r in rt.warehouse.query(q).to_pylist()
    }


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def fold_every_3(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings for a warehouse that folds every third load: DuckDB, and PostgreSQL."""
    loader = LoaderSettings(max_wait_s=0)
    if request.param == "duckdb":
        yield make_settings(tmp_path, warehouse=DuckDBSettings(fold_every=3), loader=loader)  # type: ignore[arg-type]
        return
    with scratch_database() as dsn:
        pg = PostgresSettings(dsn=dsn, fold_every=3)  # type: ignore[arg-type]
        yield make_settings(tmp_path, warehouse=pg, loader=loader)


def test_folds_appended_rollup_rows_every_n_loads_and_after_a_restart(
    fold_every_3: Settings,
) -> None:
    """A load appends its aggregates; every ``fold_every``-th load folds the keys appended
    since into one row each. A restarted process's first fold also folds what the last one
    left unfolded (the warehouse keeps the mark). The numbers equal a rebuild throughout."""
    settings = fold_every_3

    def ev(i: int, hour: int) -> dict[str, Any]:
        at = f"2026-10-01T{hour:02d}:10:00Z"
        return order(vendor="v1", buyer=f"s{i}", amount=100 + i, occurred_at=at, event_id=f"f{i}")

    def equals_rebuild(rt: Runtime) -> None:
        pack = rt.packs["marketplace"]
        kept = snapshot(rt, "marketplace_hourly")
        assert kept
        r = pack.spec.rollups["marketplace_hourly"]
        for stmt in full_rebuild(pack, "marketplace_hourly", r, rt.warehouse.dialect):
            rt.warehouse.execute(stmt)
        assert snapshot(rt, "marketplace_hourly") == kept

    rt = Runtime(settings)
    try:
        send(rt, [ev(0, 1)])
        send(rt, [ev(1, 1)])
        assert _rows_per_key(rt) == {(1, "v1"): 2}  # appended, not merged
        send(rt, [ev(2, 5)])  # the third load folds from 01:00 on
        assert _rows_per_key(rt) == {(1, "v1"): 1, (5, "v1"): 1}
        send(rt, [ev(3, 1)])  # left unfolded by this process
        assert _rows_per_key(rt) == {(1, "v1"): 2, (5, "v1"): 1}
    finally:
        rt.stop()
    rt = Runtime(settings)
    try:
        send(rt, [ev(4, 9)])
        send(rt, [ev(5, 9)])
        assert _rows_per_key(rt) == {(1, "v1"): 2, (5, "v1"): 1, (9, "v1"): 2}
        # This process's first fold starts at the warehouse's mark, not at 04:00 (the
        # earliest it appended to): the row 01:00 kept from the last process folds too.
        send(rt, [ev(6, 5)])
        assert _rows_per_key(rt) == {(1, "v1"): 1, (5, "v1"): 1, (9, "v1"): 1}
        send(rt, [ev(7, 9)])
        assert _rows_per_key(rt) == {(1, "v1"): 1, (5, "v1"): 1, (9, "v1"): 2}
        equals_rebuild(rt)  # merged parts read as the rows say
    finally:
        rt.stop()


def _mark(rt: Runtime) -> int | None:
    table = rollup_table(rt.packs["marketplace"], "marketplace_hourly")
    q = (
        exp.select("unfolded_from_us")
        .from_(folds.MARKS)
        .where(exp.column("rollup").eq(exp.Literal.string(f"{table.db}.{table.name}")))
    )
    rows = rt.warehouse.query(q).to_pylist()
    assert len(rows) == 1, rows
    return rows[0]["unfolded_from_us"]  # type: ignore[no-any-return]


def _rows_at(rt: Runtime, at: str) -> int:
    """Rows of the hourly rollup in the bucket starting at ``at`` (UTC)."""
    table = rollup_table(rt.packs["marketplace"], "marketplace_hourly")
    bucket = exp.cast(exp.Literal.string(f"{at}+00"), "TIMESTAMPTZ")
    q = exp.select(exp.func("count", exp.Star()).as_("n")).from_(table)
    return int(rt.warehouse.query(q.where(exp.column("bucket").eq(bucket))).to_pylist()[0]["n"])


def test_a_fold_starts_at_the_warehouses_mark_not_at_the_first_bucket(
    fold_every_3: Settings,
) -> None:
    """Loads lower the rollup's fold mark in their transaction and a fold clears it, so the
    first fold after a restart reads from the earliest unfolded bucket, not the whole rollup.
    Seen through a key planted with two rows below the mark: left alone by that fold; folded
    by a fold that has no mark to go by (a rollup made before the marks); a rebuild leaves
    the rollup folded and its mark clear."""
    settings = fold_every_3
    early = "2026-09-30 20:00:00"

    def ev(i: int, at: str) -> dict[str, Any]:
        return order(vendor="v1", buyer=f"s{i}", amount=100 + i, occurred_at=at, event_id=f"m{i}")

    def plant(rt: Runtime) -> None:
        """A second row for the key (09-30 20:00, v1), as if a fold had left it."""
        table = rollup_table(rt.packs["marketplace"], "marketplace_hourly")
        bucket = exp.cast(exp.Literal.string(f"{early}+00"), "TIMESTAMPTZ")
        rt.warehouse.execute(
            exp.insert(exp.select("*").from_(table).where(exp.column("bucket").eq(bucket)), table)
        )

    rt = Runtime(settings)
    try:
        for i, at in enumerate(["2026-09-30T20:10:00Z", "2026-10-02T01:10:00Z"]):
            send(rt, [ev(i, at)])
        send(rt, [ev(2, "2026-10-02T02:10:00Z")])  # the third load folds
        assert _mark(rt) is None  # nothing left unfolded
        send(rt, [ev(3, "2026-10-02T03:10:00Z")])
        # Its bucket starts at most one hour before the event: the mark says 02:10.
        assert _mark(rt) == int(datetime(2026, 10, 2, 2, 10, tzinfo=UTC).timestamp() * 1e6)
        send(rt, [ev(10, "2026-10-02T03:20:00Z")])  # at or past the mark: it stays
        assert _mark(rt) == int(datetime(2026, 10, 2, 2, 10, tzinfo=UTC).timestamp() * 1e6)
        assert _rows_at(rt, "2026-10-02 03:00:00") == 2  # left unfolded by this process
        plant(rt)
        assert _rows_at(rt, early) == 2
    finally:
        rt.stop()
    rt = Runtime(settings)
    try:
        for i in (4, 5, 6):  # the third load of this process folds, from the mark on
            send(rt, [ev(i, "2026-10-02T04:10:00Z")])
        assert _mark(rt) is None
        assert _rows_at(rt, "2026-10-02 03:00:00") == 1  # the last process's row, folded
        assert _rows_at(rt, "2026-10-02 04:00:00") == 1
        assert _rows_at(rt, early) == 2  # below the mark: not read, not folded
        rt.warehouse.execute(exp.delete(folds.MARKS))  # as before the marks existed
        for i in (7, 8, 9):
            send(rt, [ev(i, "2026-10-02T05:10:00Z")])
        assert _rows_at(rt, early) == 1  # no mark: this fold covered every bucket
        plant(rt)
        assert rebuild(rt.warehouse, rt.packs["marketplace"], "marketplace_hourly") > 0
        assert _rows_at(rt, early) == 1
        assert _mark(rt) is None
    finally:
        rt.stop()


@pytest.mark.postgres
def test_a_postgres_rebuild_waits_for_a_load_holding_the_rollups_lock(tmp_path: Path) -> None:
    """A rebuild deletes the rollup and inserts it again from rows. A load committing between
    the two would be counted twice (its appended rows kept, its rows read again), so on
    PostgreSQL the rebuild first takes the rollup's advisory lock, as appends and folds do.
    Seen from the server: the rebuild's session waits on that lock while a load holds it."""
    with scratch_database() as dsn, ThreadPoolExecutor(1) as pool:
        rt = Runtime(make_settings(tmp_path, warehouse=PostgresSettings(dsn=dsn)))  # type: ignore[arg-type]
        try:
            send(rt, [order(vendor="v1", buyer="s1", amount=100, event_id="w1")])
            kept = snapshot(rt, "marketplace_hourly")
            pack = rt.packs["marketplace"]
            with psycopg.connect(dsn) as load:  # what a load holds from its append on
                load.execute(
                    "SELECT pg_advisory_xact_lock(%s)", (lock_key(pack, "marketplace_hourly"),)
                )
                rebuilt = pool.submit(rebuild, rt.warehouse, pack, "marketplace_hourly")
                waiting = (
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
                )
                deadline = time.monotonic() + 60
                while load.execute(waiting).fetchone() != (1,):
                    assert not rebuilt.done(), "the rebuild did not wait for the rollup's lock"
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                assert not rebuilt.done()
                load.commit()  # the load commits: the rebuild goes on
            assert rebuilt.result(timeout=60) > 0
            assert snapshot(rt, "marketplace_hourly") == kept
        finally:
            rt.stop()
