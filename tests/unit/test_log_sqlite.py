"""The embedded log: durability contract, group commit, cap, offsets, consumer positions."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gristmill.log.base import LogFull, LogRecord
from gristmill.log.sqlite import SQLiteLog


def rec(n: int = 1, body: bytes = b"x" * 10, source: str = "web") -> LogRecord:
    return LogRecord("marketplace", source, n, 1, body)


@pytest.fixture
def log(tmp_path: Path) -> SQLiteLog:
    lg = SQLiteLog(tmp_path / "log.sqlite", max_bytes=10_000)
    yield lg  # type: ignore[misc]
    lg.close()


def test_append_read_commit_and_counters(log: SQLiteLog) -> None:
    log.append([rec(3), rec(2, source="app")])
    batch = log.read("g", 100, 0)
    assert [e.record.count for e in batch.entries] == [3, 2]
    assert batch.events == 5
    snap = log.snapshot("g")
    assert snap.received == {("marketplace", "web"): 3, ("marketplace", "app"): 2}
    assert snap.depth_events == 5
    log.commit("g", batch.last_offset)
    assert log.read("g", 100, 0).entries == []
    snap = log.snapshot("g")
    assert snap.depth_events == 0
    assert snap.received[("marketplace", "web")] == 3


def test_read_respects_max_events_but_returns_at_least_one(log: SQLiteLog) -> None:
    log.append([rec(40), rec(40), rec(40)])
    assert len(log.read("g", 50, 0).entries) == 1
    assert len(log.read("g", 80, 0).entries) == 2
    assert len(log.read("g", 10, 0).entries) == 1


def test_offsets_never_repeat_after_the_log_is_emptied(tmp_path: Path) -> None:
    lg = SQLiteLog(tmp_path / "l.sqlite", max_bytes=10_000)
    lg.append([rec()])
    first = lg.read("g", 10, 0).last_offset
    lg.commit("g", first)
    lg.close()
    lg = SQLiteLog(tmp_path / "l.sqlite", max_bytes=10_000)
    lg.append([rec()])
    assert lg.read("g", 10, 0, after=first).last_offset > first
    lg.close()


def test_identity_survives_reopen_and_differs_per_file(tmp_path: Path) -> None:
    a = SQLiteLog(tmp_path / "a.sqlite", max_bytes=100)
    a_id = a.log_id
    a.close()
    b = SQLiteLog(tmp_path / "b.sqlite", max_bytes=100)
    assert b.log_id != a_id
    b.close()
    a = SQLiteLog(tmp_path / "a.sqlite", max_bytes=100)
    assert a.log_id == a_id
    a.close()


def test_cap_refuses_appends_and_frees_on_commit(log: SQLiteLog) -> None:
    log.append([rec(body=b"x" * 6000)])
    with pytest.raises(LogFull) as exc:
        log.append([rec(body=b"x" * 6000)])
    assert exc.value.retry_after_s == 5
    batch = log.read("g", 10, 0)
    log.commit("g", batch.last_offset)
    log.append([rec(body=b"x" * 6000)])  # room again


def test_a_single_record_over_the_cap_is_accepted_when_the_log_is_empty(log: SQLiteLog) -> None:
    # Otherwise one large request could never get in, even with nothing pending.
    log.append([rec(body=b"x" * 20_000)])


def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    lg = SQLiteLog(tmp_path / "g.sqlite", max_bytes=1 << 30)
    n_threads, per_thread = 16, 25
    barrier = threading.Barrier(n_threads)

    def work() -> None:
        barrier.wait()
        for _ in range(per_thread):
            lg.append([rec()])

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    appends = n_threads * per_thread
    assert lg.snapshot("g").received[("marketplace", "web")] == appends
    assert lg.fsyncs < appends  # several appends rode on one commit
    lg.close()


def test_data_is_durable_across_reopen(tmp_path: Path) -> None:
    lg = SQLiteLog(tmp_path / "d.sqlite", max_bytes=1 << 20)
    lg.append([rec(7, body=b"payload")])
    lg.close()
    lg = SQLiteLog(tmp_path / "d.sqlite", max_bytes=1 << 20)
    batch = lg.read("g", 10, 0)
    assert batch.entries[0].record.body == b"payload"
    assert lg.pending_bytes == len(b"payload")
    lg.close()


def test_the_cap_follows_commits_made_by_another_process(tmp_path: Path) -> None:
    """``gristmill consume`` appends to the file a ``gristmill serve`` loads: the writer never
    commits itself, so its own byte count only grows. Once the other side has loaded and
    deleted the backlog, a writer at the cap must find room again instead of waiting forever
    (and, the other way round, must see bytes other processes appended)."""
    path = tmp_path / "shared.sqlite"
    writer = SQLiteLog(path, max_bytes=10_000, sync_interval_s=0)
    loader = SQLiteLog(path, max_bytes=10_000)
    try:
        writer.append([rec(body=b"x" * 6000)])
        with pytest.raises(LogFull):
            writer.append([rec(body=b"x" * 6000)])
        loader.commit("g", loader.read("g", 10, 0).last_offset)  # loaded elsewhere
        writer.append([rec(body=b"x" * 6000)])  # room again
        assert writer.pending_bytes == 6000
        # The loader's process never appended: it learns of the writer's bytes at the cap.
        loader.sync_interval_s = 0
        with pytest.raises(LogFull):
            loader.append([rec(body=b"y" * 6000)])
        assert loader.pending_bytes == 6000
    finally:
        writer.close()
        loader.close()
