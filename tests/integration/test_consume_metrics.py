"""``gristmill consume --metrics-port``: the consumer's own Prometheus endpoint against the real
brokers. The log is filled to its cap first, so the consumer holds one batch unacknowledged
and pauses: the backlog the broker reports is then exactly the messages minus that batch,
and ``gristmill_consumer_paused`` is 1. A consumer started after the loader drained the log
acknowledges everything, counts the poison message as quarantined, and sees the backlog at 0.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from gristmill.config import ConsumeSettings, Settings
from gristmill.consume import Consumer, open_consumer
from gristmill.consume import metrics as consumer_metrics
from gristmill.runtime import Runtime
from tests.conftest import PACKS, make_settings
from tests.factories import order
from tests.integration.test_consume import (  # noqa: F401 - tansu: the Kafka broker fixture
    _nats_pending_and_delete,
    _nats_publish,
    _rabbit_cleanup,
    _rabbit_publish,
    tansu,
)
from tests.procs import stop_group

N = 200
PREFETCH = 10
WAIT_S = 60.0


def scrape(url: str) -> dict[str, float]:
    """``name{label="v",...}`` -> value, for every sample of the endpoint."""
    out: dict[str, float] = {}
    text = httpx.get(url, timeout=5).text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def wait_for(
    what: str, cond: Callable[[], bool], url: str | None = None, timeout_s: float = WAIT_S
) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            seen = scrape(url) if url else None
            raise AssertionError(f"gave up waiting for {what}; last scrape {seen}")
        time.sleep(0.1)


def bodies() -> list[bytes]:
    run = uuid.uuid4().hex[:6]
    out = [orjson.dumps(order(event_id=f"{run}-{i}")) for i in range(N - 1)]
    out.insert(N // 2, orjson.dumps(order(event_id=f"{run}-bad", amount="12.50")))
    return out


def settings_for(tmp: Path, *, capped: bool, **cfg: Any) -> Settings:
    log = {"type": "sqlite", "max_bytes": 1024, "retry_after_s": 1} if capped else {}
    consume = ConsumeSettings(
        prefetch=PREFETCH, metrics_port=0, backlog_interval_s=0.2, batch_wait_s=0.05, **cfg
    )
    return make_settings(tmp / "data", log=log, consume=consume)


def fill_log(settings: Settings) -> None:
    """Append frames until the log refuses one (the cap is per log instance's own count)."""
    stop = threading.Event()
    stop.set()  # a full log makes durable() return False at once instead of waiting
    with ExitStack() as stack:
        sink = open_consumer(settings, stack, stop=stop).sink
        body = orjson.dumps(order(event_id=f"fill-{uuid.uuid4().hex[:6]}"))
        for _ in range(100):
            if not sink.durable([body]):
                return
    raise AssertionError("the log never reached its cap")


@contextmanager
def running(consumer: Consumer, stop: threading.Event) -> Iterator[str]:
    """The consumer in a thread with its metrics served; yields the metrics URL."""
    server = consumer_metrics.serve(consumer.sink, "127.0.0.1", 0)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            consumer.run()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        stop.set()
        t.join(30)
        consumer_metrics.stop(server)
    assert not t.is_alive(), "the consumer did not stop"
    assert not errors, errors


def paused_then_resumed(tmp_path: Path, label: str, **cfg: Any) -> None:
    capped = settings_for(tmp_path, capped=True, **cfg)
    fill_log(capped)
    stop = threading.Event()
    with ExitStack() as stack:
        consumer = open_consumer(capped, stack, stop=stop)
        with running(consumer, stop) as url:
            backlog = f'gristmill_consumer_backlog_messages{{queue="{label}"}}'
            wait_for(
                "a paused consumer holding one batch",
                lambda: (
                    (m := scrape(url)).get("gristmill_consumer_paused") == 1.0
                    and m.get(backlog) == N - PREFETCH
                ),
                url,
            )
            m = scrape(url)
            assert m["gristmill_consumer_acked_total"] == 0.0
    rt = Runtime(capped)
    try:
        rt.loader.drain()  # the warehouse catches up; the log is empty again
    finally:
        rt.stop()
    free = settings_for(tmp_path, capped=False, **cfg)
    stop = threading.Event()
    with ExitStack() as stack:
        consumer = open_consumer(free, stack, stop=stop)
        with running(consumer, stop) as url:
            wait_for(
                "every message acknowledged and the backlog at 0",
                lambda: (
                    (m := scrape(url)).get("gristmill_consumer_acked_total") == N
                    and m.get(backlog) == 0.0
                ),
                url,
            )
            m = scrape(url)
            assert m["gristmill_consumer_quarantined_total"] == 1.0
            assert m["gristmill_consumer_paused"] == 0.0


@pytest.mark.rabbitmq
def test_rabbitmq_consumer_metrics(tmp_path: Path) -> None:
    exchange, queue = f"gm-ex-{uuid.uuid4().hex[:8]}", f"gm-q-{uuid.uuid4().hex[:8]}"
    asyncio.run(_rabbit_publish(exchange, queue, bodies()))
    try:
        paused_then_resumed(
            tmp_path,
            queue,
            broker="rabbitmq",
            url=SecretStr("amqp://guest:guest@127.0.0.1/"),
            queue=queue,
        )
    finally:
        left = asyncio.run(_rabbit_cleanup(exchange, queue))
    assert left == 0


@pytest.mark.nats
def test_nats_consumer_metrics(tmp_path: Path) -> None:
    stream, subject = f"GM_{uuid.uuid4().hex[:8]}", f"gm.{uuid.uuid4().hex[:8]}"
    asyncio.run(_nats_publish(stream, subject, bodies()))
    try:
        paused_then_resumed(
            tmp_path,
            f"{stream}/gm-metrics",
            broker="nats",
            url=SecretStr("nats://127.0.0.1:4222"),
            stream=stream,
            subject=f"{subject}.>",
            durable="gm-metrics",
        )
    finally:
        pending = asyncio.run(_nats_pending_and_delete(stream, "gm-metrics"))
    assert pending == 0


@pytest.mark.rabbitmq
def test_cli_serves_consumer_metrics_on_loopback(tmp_path: Path) -> None:
    """``gristmill consume rabbitmq --metrics-port 0``: the port it picked is printed, the
    endpoint answers on 127.0.0.1 while the consumer runs."""
    exchange, queue = f"gm-ex-{uuid.uuid4().hex[:8]}", f"gm-q-{uuid.uuid4().hex[:8]}"
    asyncio.run(_rabbit_publish(exchange, queue, [orjson.dumps(order()) for _ in range(5)]))
    env = {**os.environ, "GRISTMILL_PACKS_DIR": str(PACKS)}
    args = [sys.executable, "-m", "gristmill", "consume", "rabbitmq"]
    args += ["--data-dir", str(tmp_path / "data"), "--queue", queue]
    args += ["--url", "amqp://guest:guest@127.0.0.1/", "--metrics-port", "0"]
    proc = subprocess.Popen(
        args, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert proc.stderr is not None
        url = None
        deadline = time.monotonic() + WAIT_S
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line, "the consumer exited before serving metrics"
            if m := re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", line):
                url = m.group(1)
        assert url is not None
        wait_for(
            "5 messages acknowledged", lambda: scrape(url)["gristmill_consumer_acked_total"] == 5
        )
    finally:
        stop_group(proc, 30)
        if proc.stderr is not None:
            proc.stderr.close()
        asyncio.run(_rabbit_cleanup(exchange, queue))


@pytest.mark.kafka
@pytest.mark.slow  # a consumer-group join on the bundled broker takes ~25 s
def test_kafka_consumer_lag(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Kafka's backlog is the lag from the client's cached high watermarks: 0 once
    everything is acknowledged (partitions not fetched yet have no position to count)."""
    broker = str(request.getfixturevalue("tansu"))
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"gm-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker})
    for f in admin.create_topics([NewTopic(topic, num_partitions=2)]).values():
        f.result(30)
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    for i, b in enumerate(bodies()):
        producer.produce(topic, b, key=str(i % 7).encode())
    assert producer.flush(30) == 0
    del producer
    settings = settings_for(
        tmp_path, capped=False, broker="kafka", url=SecretStr(broker), subject=topic
    )
    stop = threading.Event()
    with ExitStack() as stack:
        consumer = open_consumer(settings, stack, stop=stop)
        with running(consumer, stop) as url:
            wait_for(
                "every message acknowledged and the lag at 0",
                lambda: (
                    (m := scrape(url)).get("gristmill_consumer_acked_total") == N
                    and m.get(f'gristmill_consumer_backlog_messages{{queue="{topic}"}}') == 0.0
                ),
                url,
                timeout_s=120,
            )
            assert scrape(url)["gristmill_consumer_quarantined_total"] == 1.0
