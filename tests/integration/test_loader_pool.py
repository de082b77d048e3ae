"""Partition leases of the loader pool over the partitioned embedded log: on an engine whose
loads are transactions (DuckDB) a pool takes free partitions one by one; on one whose loads
are not (ClickHouse, through chdb) it is exclusive: all of a log's partitions, or none loaded.
Two pools stand for two ``gristmill load`` processes: each log object is its own lease holder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gristmill.cli.main import app
from gristmill.config import ClickHouseSettings, LoaderSettings, Settings
from gristmill.load.pool import LoaderPool, SplitLoads
from gristmill.log.sqlite_parts import PartitionedSQLiteLog
from gristmill.pack.loader import load_packs
from gristmill.rollup.maintain import provision_analytics
from gristmill.warehouse.base import Warehouse
from gristmill.warehouse.registry import open_warehouse
from tests.conftest import PACKS, make_settings

GROUP = "loader"


def parts(d: Path, ttl: float = 3600.0) -> PartitionedSQLiteLog:
    return PartitionedSQLiteLog(d / "log", partitions=3, max_bytes=1_000_000, lease_ttl_s=ttl)


def pool(lg: PartitionedSQLiteLog, wh: Warehouse, max_partitions: int | None = None) -> LoaderPool:
    packs = load_packs(PACKS, ["marketplace"])
    return LoaderPool(lg, wh, packs, LoaderSettings(), group=GROUP, max_partitions=max_partitions)


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
    other = parts(tmp_path)
    lg = parts(tmp_path)
    p = pool(lg, duckdb, max_partitions=1)
    try:
        assert not p.exclusive
        assert other.lease(GROUP, 0)
        p.balance()
        assert set(p.loaders) == {1}  # partition 0 is taken: the next free one, up to one
        assert all(x.alive for x in p.loaders.values())
    finally:
        p.stop(5)
        lg.close()
        other.close()


@pytest.mark.clickhouse
def test_an_exclusive_pool_loads_only_once_it_holds_every_partition(
    tmp_path: Path, chdb: Warehouse
) -> None:
    other = parts(tmp_path)
    lg = parts(tmp_path)
    p = pool(lg, chdb)
    try:
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
    finally:
        p.stop(5)
        lg.close()
        other.close()


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


@pytest.mark.clickhouse
def test_losing_one_lease_stops_every_loader_and_releases_the_others(
    tmp_path: Path, chdb: Warehouse
) -> None:
    lapsing = parts(tmp_path, ttl=-1.0)  # every lease it takes has lapsed already
    other = parts(tmp_path)
    p = pool(lapsing, chdb)
    try:
        p.balance()
        loaders = list(p.loaders.values())
        assert len(loaders) == 3
        assert other.lease(GROUP, 1)  # taken over from under the pool
        p.balance()
        assert p.loaders == {}
        assert not any(x.alive for x in loaders)
        assert other.lease(GROUP, 0)
        assert other.lease(GROUP, 2)
        p.balance()
        assert p.loaders == {}  # a standby now
        for n in range(3):
            other.release(GROUP, n)
        p.balance()
        assert set(p.loaders) == {0, 1, 2}
    finally:
        p.stop(5)
        lapsing.close()
        other.close()


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
    res = CliRunner().invoke(app, ["load", "--data-dir", str(data), "--max-partitions", "1"])
    assert res.exit_code == 2, res.output
    assert "--max-partitions 1 is below the log's 2 partitions" in res.output
