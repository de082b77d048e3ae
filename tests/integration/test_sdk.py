"""The Python SDK against a real server process: delivery, fork safety, outage buffering,
the queue bound, and 413 splitting."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gristmill.client import Client
from gristmill.demo.process import ServerProcess, free_port
from gristmill.meta.store import MetaStore
from tests.conftest import PACKS
from tests.factories import order


class Server:
    def __init__(self, tmp: Path, env: dict[str, str] | None = None) -> None:
        data = tmp / "data"
        data.mkdir(parents=True)
        meta = MetaStore(f"sqlite:///{data / 'meta.sqlite'}")
        self.key = meta.create_key("write", "sdk", pack="marketplace", source="sdk")[1]
        self.ops = meta.create_key("secret", "ops", role="operator")[1]
        meta.close()
        self.proc = ServerProcess(data, free_port(), packs_dir=PACKS, env=env)

    def loaded_ids(self, expected: int, timeout: float = 20) -> list[str]:
        deadline = time.monotonic() + timeout
        h = {"Authorization": f"Bearer {self.ops}"}
        while True:
            st = httpx.get(self.proc.url + "/v1/pipeline/stats", headers=h).json()
            if st["totals"]["received"] >= expected and st["totals"]["in_flight"] == 0:
                break
            assert time.monotonic() < deadline, st
            time.sleep(0.05)
        body = httpx.get(self.proc.url + "/v1/events?limit=1000&preset=90d", headers=h).json()
        return sorted(e["event_id"] for e in body["events"])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    s.proc.start()
    yield s
    s.proc.stop()


def props(i: int) -> dict[str, object]:
    return dict(order(amount=100 + i)["properties"])


def test_events_arrive_once(server: Server) -> None:
    gm = Client(server.key, host=server.proc.url, flush_at=7)
    ids = [gm.track("order_created", props(i), schema_version=1) for i in range(30)]
    assert gm.flush(10)
    assert gm.stats.sent == 30
    assert server.loaded_ids(30) == sorted(ids)
    gm.shutdown()


def test_works_in_a_forked_child(server: Server) -> None:
    gm = Client(server.key, host=server.proc.url, flush_interval=0.05)
    parent_id = gm.track("order_created", props(0), schema_version=1)  # thread started
    assert gm.flush(10)
    pid = os.fork()
    if pid == 0:  # the child: the parent's thread does not exist here
        try:
            ids = [
                gm.track("order_created", props(i), schema_version=1, event_id=f"child-{i}")
                for i in range(20)
            ]
            ok = gm.flush(10) and gm.stats.sent >= len(ids)
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert server.loaded_ids(21) == sorted([parent_id] + [f"child-{i}" for i in range(20)])
    gm.shutdown()


def test_buffers_through_an_outage_and_bounds_its_queue(tmp_path: Path) -> None:
    s = Server(tmp_path)  # not started yet: connection refused
    gm = Client(s.key, host=s.proc.url, max_queue=10, flush_at=5, max_backoff=0.5, max_retries=50)
    ids = [gm.track("order_created", props(i), schema_version=1) for i in range(25)]
    time.sleep(0.3)
    assert gm.stats.dropped >= 10  # at most 10 waiting, a batch of 5 may be in flight
    s.proc.start()
    try:
        assert gm.flush(30)
        got = s.loaded_ids(gm.stats.sent)
        assert got == sorted(ids[: len(got)]) or set(got) <= set(ids)
        assert len(got) == gm.stats.sent == 25 - gm.stats.dropped
        assert gm.stats.retries > 0
        assert gm.stats.failed == 0
    finally:
        gm.shutdown()
        s.proc.stop()


def test_splits_a_batch_the_server_finds_too_large(tmp_path: Path) -> None:
    s = Server(tmp_path, env={"GRISTMILL_LIMITS__MAX_REQUEST_BYTES": "4096"})
    s.proc.start()
    try:
        gm = Client(s.key, host=s.proc.url, flush_at=100, compress=False)
        ids = [gm.track("order_created", props(i), schema_version=1) for i in range(60)]
        assert gm.flush(20)
        assert gm.stats.sent == 60
        assert s.loaded_ids(60) == sorted(ids)
        gm.shutdown()
    finally:
        s.proc.stop()


def test_schema_rejects_are_reported_not_retried(server: Server) -> None:
    seen: list[Exception] = []
    gm = Client(server.key, host=server.proc.url, on_error=lambda e, b: seen.append(e))
    gm.track("order_created", {"order_id": 1}, schema_version=1)
    gm.track("order_created", props(1), schema_version=1)
    assert gm.flush(10)
    assert (gm.stats.sent, gm.stats.rejected, gm.stats.retries) == (1, 1, 0)
    assert seen
    gm.shutdown()
