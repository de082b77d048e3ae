"""The partitioned embedded log: offsets across files, counters summed, the cap over the sum,
leases that hold across processes, and the layout it refuses to change."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gristmill.log.base import LogFull, LogRecord
from gristmill.log.registry import open_log
from gristmill.log.sqlite import SQLiteLog
from gristmill.log.sqlite_parts import PartitionedSQLiteLog
from tests.conftest import make_settings


def rec(n: int = 1, body: bytes = b"x" * 10, source: str = "web") -> LogRecord:
    return LogRecord("marketplace", source, n, 1, body)


def open_parts(d: Path, **kw: object) -> PartitionedSQLiteLog:
    return PartitionedSQLiteLog(d, partitions=2, max_bytes=10_000, **kw)  # type: ignore[arg-type]


def test_workers_append_to_their_partition_with_offsets_unique_across_files(
    tmp_path: Path,
) -> None:
    w0 = open_parts(tmp_path, append_partition=0)
    w1 = open_parts(tmp_path, append_partition=1)
    loader = open_parts(tmp_path)
    try:
        w0.append([rec(1), rec(2, source="app")])
        w1.append([rec(3)])
        b0 = loader.view(0).read("loader.p0", 100, 0, after=0)
        b1 = loader.view(1).read("loader.p1", 100, 0, after=0)
        assert [e.record.count for e in b0.entries] == [1, 2]
        assert [e.record.count for e in b1.entries] == [3]
        offsets = [e.offset for e in b0.entries + b1.entries]
        assert offsets == [2, 4, 3]  # record k of partition p is k * 2 + p
        assert w0.log_id == w1.log_id == loader.log_id
        snap = loader.snapshot_partitions({0: 0, 1: 0})
        assert snap.received == {("marketplace", "web"): 4, ("marketplace", "app"): 2}
        assert snap.by_partition == {0: (2, 3, 20), 1: (1, 3, 10)}
        # Committing partition 0 up to its first record frees it there only.
        loader.view(0).commit("loader.p0", b0.entries[0].offset)
        assert loader.view(0).committed("loader.p0") == 2
        after = loader.view(0).read("loader.p0", 100, 0)
        assert [e.offset for e in after.entries] == [4]
        snap = loader.snapshot_partitions({0: 2, 1: 0})
        assert snap.pending == {("marketplace", "web"): 3, ("marketplace", "app"): 2}
        assert snap.received[("marketplace", "web")] == 4  # counters never shrink
        assert [d.as_dict()["depth_events"] for d in loader.depth()] == [2, 3]
    finally:
        for lg in (w0, w1, loader):
            lg.close()


def test_suppressed_counts_add_up_across_partitions(tmp_path: Path) -> None:
    w0 = open_parts(tmp_path, append_partition=0)
    w1 = open_parts(tmp_path, append_partition=1)
    try:
        w0.append([LogRecord("marketplace", "web", 1, 1, b"x", suppressed=2)])
        w1.append([LogRecord("marketplace", "web", 0, 1, b"", suppressed=3)])  # all dropped
        snap = w0.snapshot_partitions({})
        assert snap.suppressed == {("marketplace", "web"): 5}
        assert snap.received == {("marketplace", "web"): 1}
        assert snap.by_partition == {0: (1, 1, 1), 1: (0, 0, 0)}
    finally:
        w0.close()
        w1.close()


def test_round_robin_without_a_partition_of_its_own(tmp_path: Path) -> None:
    lg = open_parts(tmp_path)
    try:
        for _ in range(4):
            lg.append([rec()])
        assert lg.snapshot_partitions({}).by_partition == {0: (2, 2, 20), 1: (2, 2, 20)}
    finally:
        lg.close()


def test_the_cap_is_on_the_sum_of_the_partitions(tmp_path: Path) -> None:
    a = PartitionedSQLiteLog(tmp_path, partitions=2, max_bytes=100, append_partition=0)
    try:
        a.append([rec(body=b"a" * 80)])
        b = PartitionedSQLiteLog(tmp_path, partitions=2, max_bytes=100, append_partition=1)
        try:
            with pytest.raises(LogFull) as info:
                b.append([rec(body=b"b" * 30)])
            assert info.value.pending_bytes == 80
            a.view(0).commit("loader.p0", a.view(0).read("loader.p0", 10, 0).last_offset)
            b.append([rec(body=b"b" * 30)])  # partition 0's bytes were loaded: room again
            assert b.pending_bytes == 30
        finally:
            b.close()
    finally:
        a.close()


_HOLD = """
import sys
from pathlib import Path
from gristmill.log.sqlite_parts import PartitionedSQLiteLog
lg = PartitionedSQLiteLog(Path(sys.argv[1]), partitions=2, max_bytes=10_000, lease_ttl_s=3600)
took = (lg.lease("loader", 0), lg.lease("loader", 1))
lg.release("loader", 1)
print(*took, flush=True)
sys.stdin.read()  # hold until told to go; killed without releasing partition 0
"""


def test_a_lease_held_by_another_process_is_not_taken(tmp_path: Path) -> None:
    lg = open_parts(tmp_path, lease_ttl_s=3600)
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_HOLD), str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().split() == ["True", "True"]
            assert not lg.lease("loader", 0)
            assert lg.lease("loader", 1)  # released by the child
            assert lg.lease_held("loader", 1)
            assert not lg.lease_held("loader", 0)
            child.kill()
            child.wait()
            assert not lg.lease("loader", 0)  # a dead holder's lease lapses only at expiry
        finally:
            child.kill()
            lg.close()


def test_a_lapsed_lease_is_taken(tmp_path: Path) -> None:
    a = open_parts(tmp_path, lease_ttl_s=-1.0)  # every lease it takes has lapsed already
    b = open_parts(tmp_path)
    try:
        assert a.lease("loader", 0)
        assert b.lease("loader", 0)
        assert not a.lease_held("loader", 0)
    finally:
        a.close()
        b.close()


def test_the_partition_count_is_fixed_once_the_files_exist(tmp_path: Path) -> None:
    open_parts(tmp_path).close()
    with pytest.raises(ValueError, match="has 2 partitions, not 3"):
        PartitionedSQLiteLog(tmp_path, partitions=3, max_bytes=10_000)
    assert not (tmp_path / "p2.sqlite").exists()  # refused before making anything


def test_settings_choose_the_file_layout(tmp_path: Path) -> None:
    """``log.partitions`` 1 keeps the one file of existing data directories; more opens the
    files under ``log/`` and refuses while the one file still holds unloaded records."""
    one = open_log(make_settings(tmp_path))
    assert isinstance(one, SQLiteLog)
    assert one.path == tmp_path / "log.sqlite"
    one.append([rec()])
    one.close()
    parts_cfg = {"type": "sqlite", "partitions": 2}
    with pytest.raises(ValueError, match="still holds 1 unloaded records"):
        open_log(make_settings(tmp_path, log=parts_cfg))
    one = SQLiteLog(tmp_path / "log.sqlite", max_bytes=10_000)
    one.commit("loader", one.read("loader", 10, 0).last_offset)
    one.close()
    parts = open_log(make_settings(tmp_path, log=parts_cfg))
    try:
        assert isinstance(parts, PartitionedSQLiteLog)
        assert parts.path(1) == tmp_path / "log" / "p1.sqlite"
    finally:
        parts.close()
