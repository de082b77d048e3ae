"""A stopped server leaves its warehouse current: on SIGTERM the loader loads what the log
holds before the process exits (``loader.stop_drain_s``), in one process and under
``serve --workers 2`` (collectors stopped first, then the loader). With the drain off, what is
left waits in the log and loads at the next start: nothing is lost either way.

The loader is made slow on purpose (one request's event per warehouse transaction), so a backlog is
certain when the stop arrives; the drain's own time is not asserted."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from gristmill.demo.process import ServerProcess, free_port
from gristmill.runtime import Runtime
from tests.conftest import PACKS, make_settings
from tests.factories import order
from tests.integration.test_serve_workers import start_workers
from tests.procs import Children

EVENTS = 40
SLOW = {"GRISTMILL_LOADER__MAX_EVENTS": "1", "GRISTMILL_LOADER__TARGET_EVENTS": "1"}
PARTS = {"type": "sqlite", "partitions": 2}


def _key(data: Path, **log: object) -> str:
    rt = Runtime(make_settings(data, **({"log": log} if log else {})))
    try:
        return rt.meta.create_key("write", "web", pack="marketplace", source="web")[1]
    finally:
        rt.stop()


def _send(url: str, key: str) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
        for n in range(EVENTS):  # a request per event: a log entry, so a commit, each
            assert c.post("/v1/events", json=[order(event_id=f"e-{n}")]).status_code == 200


def _totals(data: Path, **log: object) -> dict[str, int]:
    """Conservation read offline, with no loader running (this process loads nothing)."""
    rt = Runtime(make_settings(data, **({"log": log} if log else {})))
    try:
        return rt.conservation().as_dict()["totals"]  # type: ignore[no-any-return]
    finally:
        rt.stop()


@pytest.mark.parametrize("drain", [True, False], ids=["drain", "no-drain"])
def test_serve_stop_loads_the_backlog(tmp_path: Path, drain: bool) -> None:
    data = tmp_path / "data"
    key = _key(data)
    env = SLOW | {"GRISTMILL_LOADER__STOP_DRAIN_S": "120" if drain else "0"}
    server = ServerProcess(data, free_port(), packs_dir=PACKS, env=env)
    server.start()
    try:
        _send(server.url, key)
    finally:
        server.stop()
    totals = _totals(data)
    assert totals["received"] == EVENTS
    if drain:
        assert (totals["loaded"], totals["in_flight"]) == (EVENTS, 0), totals
        return
    assert totals["in_flight"] > 0, totals  # one event per commit: 40 commits cannot be done
    server = ServerProcess(data, free_port(), packs_dir=PACKS, env={})  # the next start
    server.start()
    server.stop()  # draining by default
    totals = _totals(data)
    assert (totals["loaded"], totals["in_flight"]) == (EVENTS, 0), totals


def test_workers_stop_collectors_then_drain_the_loader(tmp_path: Path, children: Children) -> None:
    data = tmp_path / "data"
    key = _key(data, **PARTS)
    drain = SLOW | {"GRISTMILL_LOADER__STOP_DRAIN_S": "120"}
    sup, port, out = start_workers(tmp_path, children, drain, "--api-port", str(free_port()))
    _send(f"http://127.0.0.1:{port}", key)
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(150) == 0, out.read_text()[-3000:]
    totals = _totals(data, **PARTS)
    assert totals["received"] == EVENTS
    assert (totals["loaded"], totals["in_flight"]) == (EVENTS, 0), totals
