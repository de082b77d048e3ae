"""Partition leases of the loader pool over the partitioned embedded log: on an engine whose
loads are transactions (DuckDB) a pool takes free partitions one by one; on one whose loads
are not (ClickHouse, through chdb) it is exclusive: all of a log's partitions, or none loaded.
Two pools stand for two ``gristmill load`` processes: each log object is its own lease holder.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gristmill.cli.main import app
from gristmill.config import ClickHouseSettings, LoaderSettings, Settings
from gristmill.load.pool import LeasesHeld, LoaderPool, SplitLoads
from gristmill.log.sqlite_parts import PartitionedSQLiteLog
from gristmill.pack.loader import load_packs
from gristmill.rollup.maintain import provision_analytics
from gristmill.runtime import Runtime
from gristmill.warehouse.base import Warehouse
from gristmill.warehouse.registry import open_warehouse
from tests.conftest import PACKS, make_settings
from tests.integration.governance_fixtures import BASE, send, users_events

GROUP = "loader"


def parts(d: Path, ttl: float = 3600.0) -> PartitionedSQLiteLog:
    return PartitionedSQLiteLog(d / "log", partitions=3, max_bytes=1_000_000, lease_ttl_s=ttl)


def pool(lg: PartitionedSQLiteLog, wh: Warehouse, max_partitions: int | None = None) -> LoaderPool:
    packs = load_packs(PACKS, ["marketplace"])
    return LoaderPool(lg, wh, packs, LoaderSettings(), group=GROUP, max_partitions=max_partitions)


@contextmanager
def beside_another(
    tmp_path: Path, wh: Warehouse, max_partitions: int | None = None
) -> Iterator[tuple[LoaderPool, PartitionedSQLiteLog]]:
    """A pool, and another process's handle on the same log (its own lease holder)."""
    other, lg = parts(tmp_path), parts(tmp_path)
    p = pool(lg, wh, max_partitions)
    try:
        yield p, other
    finally:
        p.stop(5)
        lg.close()
        other.close()


def provisioned(settings: Settings) -> Iterator[Warehouse]:
    wh = open_warehouse(settings)
    try:
        provision_analytics(wh, list(load_packs(PACKS, ["marketplace"]).values()))
        yield wh
    finally:
        wh.close()


@pytest.fixture
def chdb(tmp_path: Path) -> Iterator[Warehouse]:
    yield from provisioned(make_settings(tmp_path, warehouse=ClickHouseSettings()))


@pytest.fixture
def duckdb(tmp_path: Path) -> Iterator[Warehouse]:
    yield from provisioned(make_settings(tmp_path))


def test_a_transactional_engine_takes_free_partitions_one_by_one(
    tmp_path: Path, duckdb: Warehouse
) -> None:
    with beside_another(tmp_path, duckdb, max_partitions=1) as (p, other):
        assert not p.exclusive
        assert other.lease(GROUP, 0)
        p.balance()
        assert set(p.loaders) == {1}  # partition 0 is taken: the next free one, up to one
        assert all(x.alive for x in p.loaders.values())


@pytest.mark.clickhouse
def test_an_exclusive_pool_loads_only_once_it_holds_every_partition(
    tmp_path: Path, chdb: Warehouse
) -> None:
    with beside_another(tmp_path, chdb) as (p, other):
        assert p.exclusive
        assert other.lease(GROUP, 2)  # another process still holds the last partition
        p.balance()
        assert p.loaders == {}  # holding 0 and 1, loading nothing
        assert not other.lease(GROUP, 0)
        p.balance()
        assert p.loaders == {}
        other.release(GROUP, 2)
        p.balance()
        assert set(p.loaders) == {0, 1, 2}
        assert all(x.alive for x in p.loaders.values())


@pytest.mark.clickhouse
def test_a_second_exclusive_pool_waits_as_a_standby_and_then_takes_over(
    tmp_path: Path, chdb: Warehouse
) -> None:
    la, lb = parts(tmp_path), parts(tmp_path)
    a, b = pool(la, chdb), pool(lb, chdb)
    try:
        a.balance()
        b.balance()
        assert set(a.loaders) == {0, 1, 2}
        assert b.loaders == {}
        assert not any(lb.lease_held(GROUP, n) for n in range(3))  # b holds no lease at all
        a.stop(5)  # releases every lease
        b.balance()
        assert set(b.loaders) == {0, 1, 2}
    finally:
        a.stop(5)
        b.stop(5)
        la.close()
        lb.close()


def lapse(d: Path, partition: int) -> None:
    """Make the lease on a partition lapse now, as a stalled holder's would."""
    with sqlite3.connect(d / "log" / f"p{partition}.sqlite") as conn:
        conn.execute("UPDATE leases SET expires_at = 0 WHERE grp = ?", (GROUP,))


@pytest.mark.clickhouse
def test_losing_one_lease_stops_every_loader_and_releases_the_others(
    tmp_path: Path, chdb: Warehouse
) -> None:
    with beside_another(tmp_path, chdb) as (p, other):  # leases for an hour
        p.balance()
        loaders = list(p.loaders.values())
        assert len(loaders) == 3
        lapse(tmp_path, 1)
        assert other.lease(GROUP, 1)  # taken over from under the pool
        p.balance()
        assert p.loaders == {}
        assert not any(x.alive for x in loaders)
        assert other.lease(GROUP, 0)  # released: these leases had an hour to go
        assert other.lease(GROUP, 2)
        p.balance()
        assert p.loaders == {}  # a standby now
        for n in range(3):
            other.release(GROUP, n)
        p.balance()
        assert set(p.loaders) == {0, 1, 2}


@pytest.mark.clickhouse
def test_an_exclusive_drain_takes_every_lease_or_refuses(tmp_path: Path, chdb: Warehouse) -> None:
    with beside_another(tmp_path, chdb) as (p, other):
        assert other.lease(GROUP, 1)
        with pytest.raises(LeasesHeld, match=r"partition 1 of .* is leased by another process"):
            p.drain(5)
        assert other.lease(GROUP, 0)  # partition 0, taken for the drain, was given back
        for n in range(2):
            other.release(GROUP, n)
        p.drain(5)
        assert all(other.lease(GROUP, n) for n in range(3))  # all given back after the drain


def test_a_replaced_loader_can_never_commit_again(tmp_path: Path, duckdb: Warehouse) -> None:
    """Each loader's licence is its own: after its partition was released and taken again,
    the old loader's fence stays shut although the partition's lease is fresh, so a loader
    that outlived its stop (a read in flight) cannot commit beside its successor."""
    lg = parts(tmp_path)
    p = pool(lg, duckdb)
    try:
        p.balance()
        old = p.loaders[0]
        assert old.fence is not None
        assert old.fence()
        p._release([0])
        p.balance()
        new = p.loaders[0]
        assert new is not old
        assert new.fence is not None
        assert new.fence()
        assert not old.fence()
    finally:
        p.stop(5)
        lg.close()


def test_a_loader_whose_lease_was_not_renewed_stops_before_it_commits(tmp_path: Path) -> None:
    """The fence: renewals that stalled (here: marked two TTLs old) stop the loaders before
    their next commit, so nothing loads; the next renewal round starts them again."""
    settings = make_settings(tmp_path / "d", packs=["platform"], log={"partitions": 2})
    rt = Runtime(settings)
    try:
        p = rt.loader
        assert isinstance(p, LoaderPool)
        p.balance()
        assert set(p.loaders) == {0, 1}
        stale = time.monotonic() - 2 * rt.log.lease_ttl_s  # type: ignore[attr-defined]
        p._renewed = dict.fromkeys(p.loaders, stale)
        events = users_events(BASE)
        half = len(events) // 2  # two requests: one per partition (round robin)
        sent = sum(send(rt, e, drain=False)["accepted"] for e in (events[:half], events[half:]))
        assert sent == len(events)
        _until(lambda: not any(x.alive for x in p.loaders.values()))
        assert _rows(rt) == 0
        p.balance()
        assert all(x.alive for x in p.loaders.values())
        _until(lambda: _rows(rt) == sent)
    finally:
        rt.stop()


def _rows(rt: Runtime) -> int:
    q = "SELECT count(*) AS n FROM platform.platform_events"
    return int(rt.warehouse.query_sql(q).column("n")[0].as_py())


def _until(ok: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


@pytest.mark.clickhouse
def test_a_split_of_the_log_is_refused(tmp_path: Path, chdb: Warehouse) -> None:
    lg = parts(tmp_path)
    try:
        with pytest.raises(SplitLoads, match="--max-partitions 2 is below the log's 3"):
            pool(lg, chdb, max_partitions=2)
        assert pool(lg, chdb, max_partitions=3).exclusive
    finally:
        lg.close()


@pytest.mark.clickhouse
def test_gristmill_load_refuses_a_split_before_it_provisions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("GRISTMILL_WAREHOUSE__TYPE", "clickhouse")
    monkeypatch.setenv("GRISTMILL_LOG__PARTITIONS", "2")
    provisioned: list[object] = []
    monkeypatch.setattr("gristmill.runtime.provision_analytics", lambda *a: provisioned.append(a))
    res = CliRunner().invoke(app, ["load", "--data-dir", str(data), "--max-partitions", "1"])
    assert res.exit_code == 2, res.output
    assert "--max-partitions 1 is below the log's 2 partitions" in res.output
    assert provisioned == []
