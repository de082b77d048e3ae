"""The log contract, written once and run for every log that runs here: the embedded SQLite
log, RabbitMQ streams and NATS JetStream (Kafka: see test_log_kafka.py).

Broker logs are read through a partition view (the loader's way); the suite runs them with one
partition so order is total, and a broker-only class covers partitions and leases.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gristmill.api.app import create_app
from gristmill.config import (
    KafkaLogSettings,
    NATSLogSettings,
    RabbitMQLogSettings,
    SQLiteLogSettings,
)
from gristmill.log.base import EventLog, LogRecord, PartitionedLog
from gristmill.log.broker import partition_group
from gristmill.log.rabbitmq import RabbitMQLog
from gristmill.log.sqlite import SQLiteLog
from gristmill.runtime import Runtime
from tests.brokers import close_rabbitmq_connections, scratch_stream
from tests.conftest import make_settings
from tests.factories import order
from tests.live import wait_loaded


def read_all(c: EventLog, group: str, n: int) -> list[LogRecord]:
    """Read until ``n`` records came (a broker delivers what has arrived so far)."""
    out: list[LogRecord] = []
    after = 0
    for _ in range(50):
        batch = c.read(group, 10_000, 1.0, after=after)
        if batch.entries:
            out += [e.record for e in batch.entries]
            after = batch.last_offset
        if len(out) >= n:
            break
    return out


def rec(i: int, pack: str = "marketplace", source: str = "web", n: int = 2) -> LogRecord:
    return LogRecord(pack, source, n, 1_000 + i, f"frame-{i}".encode())


class LogContract:
    """Subclasses provide ``make`` (a fresh, empty log) and ``consumer`` (what a loader reads:
    the log, or partition 0 of it) and ``group``."""

    group = "loader"

    @pytest.fixture
    def log(self, tmp_path: Path) -> Iterator[EventLog]:
        lg = self.make(tmp_path, partitions=1)
        try:
            yield lg
        finally:
            lg.close()

    def make(self, tmp_path: Path, partitions: int) -> EventLog:
        raise NotImplementedError

    def consumer(self, lg: EventLog) -> EventLog:
        return lg

    def test_read_returns_appended_records_in_order(self, log: EventLog) -> None:
        log.append([rec(1), rec(2)])
        log.append([rec(3, source="app", n=5)])
        got = read_all(self.consumer(log), self.group, 3)
        assert got == [rec(1), rec(2), rec(3, source="app", n=5)]
        batch = self.consumer(log).read(self.group, 1000, 5.0, after=0)
        offsets = [e.offset for e in batch.entries]
        assert offsets == sorted(set(offsets))
        assert offsets[0] > 0

    def test_read_after_offset_skips_what_was_loaded(self, log: EventLog) -> None:
        log.append([rec(i) for i in range(5)])
        c = self.consumer(log)
        read_all(c, self.group, 5)
        first = c.read(self.group, 1000, 5.0, after=0)
        mid = first.entries[1].offset
        rest = c.read(self.group, 1000, 5.0, after=mid)
        assert [e.record for e in rest.entries] == [rec(i) for i in range(2, 5)][
            : len(rest.entries)
        ]
        assert rest.entries
        # and back again: a failed batch is re-read from the warehouse's offset
        assert read_all(c, self.group, 5) == [rec(i) for i in range(5)]

    def test_read_honours_max_events_but_returns_at_least_one(self, log: EventLog) -> None:
        log.append([rec(1, n=10), rec(2, n=10), rec(3, n=10)])
        c = self.consumer(log)
        assert len(c.read(self.group, 25, 5.0, after=0).entries) == 2
        big = c.read(self.group, 3, 5.0, after=0)
        assert [e.record for e in big.entries] == [rec(1, n=10)]

    def test_empty_read_waits_then_returns_nothing(self, log: EventLog) -> None:
        assert self.consumer(log).read(self.group, 100, 0.2, after=0).entries == []

    def test_commit_is_remembered(self, log: EventLog) -> None:
        log.append([rec(1), rec(2)])
        c = self.consumer(log)
        batch = c.read(self.group, 100, 5.0, after=0)
        c.commit(self.group, batch.entries[0].offset)
        assert c.committed(self.group) == batch.entries[0].offset

    def test_snapshot_counts_received_and_pending_per_source(self, log: EventLog) -> None:
        log.append([rec(1, n=3), rec(2, source="app", n=4), rec(3, n=5)])
        c = self.consumer(log)
        batch = c.read(self.group, 100, 5.0, after=0)
        snap = c.snapshot(self.group, after_offset=batch.entries[0].offset)
        assert snap.received == {("marketplace", "web"): 8, ("marketplace", "app"): 4}
        assert snap.pending == {("marketplace", "web"): 5, ("marketplace", "app"): 4}
        assert snap.depth_records == 2
        assert snap.depth_events == 9
        assert snap.oldest_pending == {"marketplace": 1_002}

    def test_append_async(self, log: EventLog) -> None:
        async def go() -> None:
            await asyncio.gather(*(log.append_async([rec(i)]) for i in range(20)))

        asyncio.run(go())
        got = read_all(self.consumer(log), self.group, 20)
        assert sorted(r.body for r in got) == sorted(rec(i).body for i in range(20))

    def test_check_ready(self, log: EventLog) -> None:
        assert log.check_ready() == []


class TestSQLiteLog(LogContract):
    def make(self, tmp_path: Path, partitions: int) -> EventLog:
        return SQLiteLog(tmp_path / f"log-{uuid.uuid4().hex[:6]}.sqlite", max_bytes=1 << 30)


class BrokerContract(LogContract):
    """Broker logs: the contract on partition 0, plus partitions, leases and the pipeline."""

    group = partition_group("loader", 0)

    def settings(
        self, partitions: int
    ) -> RabbitMQLogSettings | NATSLogSettings | KafkaLogSettings | SQLiteLogSettings:
        raise NotImplementedError

    def make(self, tmp_path: Path, partitions: int) -> EventLog:
        from gristmill.log.registry import open_log

        return open_log(make_settings(tmp_path, log=self.settings(partitions)))

    def consumer(self, lg: EventLog) -> EventLog:
        assert isinstance(lg, PartitionedLog)
        return lg.view(0)

    def test_partitions_spread_appends_and_offsets_never_collide(self, tmp_path: Path) -> None:
        lg = self.make(tmp_path, partitions=3)
        assert isinstance(lg, PartitionedLog)
        try:
            for i in range(9):
                lg.append([rec(i)])
            seen = []
            for p in range(3):
                got = lg.view(p).read(partition_group("loader", p), 100, 5.0, after=0)
                assert len(got.entries) == 3
                seen += [e.offset for e in got.entries]
            assert len(set(seen)) == 9
            snap = lg.snapshot_partitions({0: 0, 1: 0, 2: 0})
            assert snap.received == {("marketplace", "web"): 18}
            assert snap.depth_records == 9
        finally:
            lg.close()

    def test_a_partition_lease_has_one_holder(self, tmp_path: Path) -> None:
        a = self.make(tmp_path, partitions=2)
        b = self.make(tmp_path, partitions=2)
        assert isinstance(a, PartitionedLog)
        assert isinstance(b, PartitionedLog)
        try:
            assert a.lease("loader", 0)
            assert not b.lease("loader", 0)
            assert b.lease("loader", 1)
            assert a.lease_held("loader", 0)
            a.release("loader", 0)
            assert b.lease("loader", 0)
        finally:
            a.close()
            b.close()

    def test_pipeline_over_the_broker_balances(self, tmp_path: Path) -> None:
        """HTTP in, loaders per partition, DuckDB out: conservation exact, no duplicates."""
        settings = make_settings(tmp_path / "data", log=self.settings(2))
        rt = Runtime(settings)
        try:
            key = rt.meta.create_key("write", "t", pack="marketplace", source="web")[1]
            with TestClient(create_app(rt, start=False)) as client:
                h = {"Authorization": f"Bearer {key}"}
                events = [order() for _ in range(30)]
                for i in range(0, 30, 5):
                    r = client.post("/v1/events", json=events[i : i + 5], headers=h)
                    assert r.status_code == 200, r.text
                r = client.post("/v1/events", json=events[:5], headers=h)  # re-sent
                assert r.status_code == 200
                bad = client.post("/v1/events", json=[{"event_id": "x"}], headers=h)
                assert bad.status_code == 422
                c = rt.conservation()
                assert c.balanced
                assert c.total("in_flight") == 36
                rt.loader.drain()
                ready = client.get("/readyz").json()
                assert ready["log"] == self.settings(2).type
            c = rt.conservation()
            assert c.balanced, c.as_dict()
            assert (c.total("received"), c.total("loaded")) == (36, 30)
            assert (c.total("duplicates"), c.total("quarantined"), c.total("in_flight")) == (
                5,
                1,
                0,
            )
        finally:
            rt.stop()


class TestPartitionedSQLiteLog(BrokerContract):
    """The embedded log split into files (``serve --workers``). The one-partition contract
    runs on two files with every append sent to partition 0, so order is total."""

    def settings(self, partitions: int) -> SQLiteLogSettings:
        if partitions == 1:
            return SQLiteLogSettings(partitions=2, append_partition=0)
        return SQLiteLogSettings(partitions=partitions)


@pytest.mark.rabbitmq
class TestRabbitMQLog(BrokerContract):
    @pytest.fixture(autouse=True)
    def _stream(self) -> None:
        self.stream = scratch_stream("rabbitmq")

    def settings(self, partitions: int) -> RabbitMQLogSettings:
        return RabbitMQLogSettings(type="rabbitmq", stream=self.stream, partitions=partitions)

    def test_a_connection_the_broker_closes_is_reopened(self, tmp_path: Path) -> None:
        """The broker closes the log's connection: its lease is reported lost (the broker
        dropped the exclusive queue), and appends, leases, reads and commits work again on a
        new connection, with the committed offsets read back from the offsets stream."""
        lg = self.make(tmp_path, partitions=1)
        assert isinstance(lg, RabbitMQLog)
        group = partition_group("loader", 0)
        view = lg.view(0)
        try:
            assert lg.lease("loader", 0)
            lg.append([rec(0)])
            lg.append([rec(1)])
            first = read_all(view, group, 2)
            assert [r.body for r in first] == [b"frame-0", b"frame-1"]
            done = view.read(group, 10_000, 1.0, after=0).last_offset
            view.commit(group, done)

            assert close_rabbitmq_connections(f"gristmill {lg.log_id}") == 1
            deadline = time.monotonic() + 30
            while lg.lease_held("loader", 0) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not lg.lease_held("loader", 0)

            lg.append([rec(2)])  # reconnects
            assert lg.lease("loader", 0)
            assert lg.lease_held("loader", 0)
            assert view.committed(group) == done
            later = view.read(group, 10_000, 5.0)
            assert [e.record.body for e in later.entries] == [b"frame-2"]
            view.commit(group, later.last_offset)
            assert view.committed(group) == later.last_offset
            # The offsets stream was read on from where the old connection left it: two
            # commits, two messages read (it used to read the stream from its start again,
            # and the first commit's message arrived again before the second's).
            deadline = time.monotonic() + 30
            while lg.offsets_last < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert (lg.offsets_last, lg.offsets_read) == (1, 2)
            snap = lg.snapshot_partitions({0: later.last_offset})
            assert snap.received == {("marketplace", "web"): 6}
            assert snap.depth_records == 0
        finally:
            view.close()
            lg.close()

    def test_the_running_loader_goes_on_after_the_broker_closes_its_connection(
        self, tmp_path: Path
    ) -> None:
        """A running pipeline (collector and loader pool in one process, one connection):
        the broker closes the connection between two posts; the second post is accepted on a
        new connection, the pool re-leases its partitions, and every event is loaded once."""
        settings = make_settings(tmp_path / "data", log=self.settings(2))
        rt = Runtime(settings)
        try:
            key = rt.meta.create_key("write", "t", pack="marketplace", source="web")[1]
            h = {"Authorization": f"Bearer {key}"}
            with TestClient(create_app(rt)) as client:
                events = [order() for _ in range(20)]
                assert client.post("/v1/events", json=events[:10], headers=h).status_code == 200
                wait_loaded(rt, 10, timeout_s=60)

                assert close_rabbitmq_connections(f"gristmill {rt.log.log_id}") >= 1
                # A post racing the close may get 503 (nothing stored); a client retries it.
                for _ in range(10):
                    r = client.post("/v1/events", json=events[10:], headers=h)
                    assert r.status_code in (200, 503), r.text
                    if r.status_code == 200:
                        break
                    time.sleep(0.5)
                assert r.status_code == 200, r.text
                wait_loaded(rt, 20, timeout_s=60)
                c = rt.conservation()
                assert c.balanced, c.as_dict()
                assert (c.total("received"), c.total("duplicates"), c.total("in_flight")) == (
                    20,
                    0,
                    0,
                )
        finally:
            rt.stop()


@pytest.mark.nats
class TestNATSLog(BrokerContract):
    @pytest.fixture(autouse=True)
    def _stream(self) -> None:
        self.stream = scratch_stream("nats")

    def settings(self, partitions: int) -> NATSLogSettings:
        return NATSLogSettings(type="nats", stream=self.stream, partitions=partitions)
