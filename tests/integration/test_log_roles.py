"""The collect role over a broker log: 2xx only after the broker confirmed, 5xx when it
cannot, 503 + Retry-After over the cap; no warehouse behind a collector."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from fastapi.testclient import TestClient

from gristmill.api.app import create_app
from gristmill.config import NATSLogSettings
from gristmill.log.broker import BrokerLog
from gristmill.runtime import Runtime
from tests.brokers import scratch_stream
from tests.conftest import make_settings
from tests.factories import order

pytestmark = pytest.mark.nats


@pytest.fixture
def stream() -> str:
    return scratch_stream("nats", "gmroles")


def collector(tmp_path: Path, stream: str, **log: object) -> Runtime:
    cfg = NATSLogSettings(type="nats", stream=stream, **log)  # type: ignore[arg-type]
    settings = make_settings(tmp_path / "data", log=cfg, server={"metrics_allow": ["*"]})
    return Runtime(settings, "collect")


@pytest.fixture
def rt(tmp_path: Path, stream: str) -> Iterator[Runtime]:
    r = collector(tmp_path, stream)
    try:
        yield r
    finally:
        r.stop()


def test_collect_role_serves_ingest_and_readiness_only(rt: Runtime) -> None:
    key = rt.meta.create_key("write", "t", pack="marketplace", source="web")[1]
    with TestClient(create_app(rt, start=False)) as client:
        r = client.post("/v1/events", json=[order()], headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        ready = client.get("/readyz")
        assert ready.status_code == 200
        body = ready.json()
        assert (body["role"], body["log"], body["warehouse"]) == ("collect", "nats", None)
        assert body["log_depth"]["partitions"] == 2
        assert client.get("/v1/metrics").status_code == 404
        prom = client.get("/metrics")
        assert prom.status_code == 200
        assert "gristmill_log_depth_bytes" in prom.text
        assert "gristmill_events_received" not in prom.text
    with pytest.raises(RuntimeError, match="collect-role"):
        _ = rt.warehouse
    assert isinstance(rt.log, BrokerLog)
    snap = rt.log.snapshot_partitions({0: 0, 1: 0})
    assert snap.received == {("marketplace", "web"): 1}


def test_no_2xx_when_the_broker_cannot_store(rt: Runtime, stream: str) -> None:
    async def drop() -> None:
        nc = await nats.connect("nats://127.0.0.1:4222")
        try:
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()

    key = rt.meta.create_key("write", "t", pack="marketplace", source="web")[1]
    asyncio.run(drop())
    with TestClient(create_app(rt, start=False), raise_server_exceptions=False) as client:
        r = client.post("/v1/events", json=[order()], headers={"Authorization": f"Bearer {key}"})
    # Unavailable, not a server bug: the client is told to send it again, and when.
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["Retry-After"]) >= 1
    assert "could not store" in r.json()["detail"]


def test_over_the_cap_collectors_answer_503(tmp_path: Path, stream: str) -> None:
    rt = collector(tmp_path, stream, max_bytes=2048, retry_after_s=7)
    try:
        key = rt.meta.create_key("write", "t", pack="marketplace", source="web")[1]
        h = {"Authorization": f"Bearer {key}"}
        with TestClient(create_app(rt, start=False)) as client:
            for _ in range(5):
                r = client.post("/v1/events", json=[order() for _ in range(5)], headers=h)
                assert r.status_code == 200
            deadline = time.monotonic() + 10
            while True:  # the depth estimate refreshes once a second
                r = client.post("/v1/events", json=[order()], headers=h)
                if r.status_code == 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        assert r.status_code == 503
        assert r.headers["retry-after"] == "7"
    finally:
        rt.stop()
