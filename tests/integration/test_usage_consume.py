"""The usage pack's primary path: model calls on a durable RabbitMQ queue, ``gristmill
consume`` into ``usage_metering``.

- Duplicates (a request published two or three times, and a real broker redelivery of
  messages that were appended to the log but never acknowledged) leave one row per request
  id; each org's requests and spend equal plain Python; poison messages are in quarantine
  with their exact bytes; conservation balances. On DuckDB and PostgreSQL.
- Backpressure: with the log at its cap and the loader stopped, the consumer stops
  acknowledging (the queue's depth stays put) and says it is paused; once the loader runs,
  it resumes by itself and every message lands exactly once.
- While a consumer and the loader run, ``/usage`` reports ``stale: false`` within the pack's
  five-minute budget.

Segment- or CloudEvents-shaped messages are not tested here: the usage pack maps no foreign
dialect (no ``mappings:``), so they could only be quarantined as ``unmapped``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from gristmill.api.app import create_app
from gristmill.config import ConsumeSettings, Settings
from gristmill.consume import Consumer, open_consumer
from gristmill.runtime import Runtime
from tests.brokers import RABBITMQ_URL, scratch_queue
from tests.conftest import make_settings
from tests.integration.test_readme import needs_curl
from tests.integration.usage_queue import (
    POISON,
    UsageMessages,
    check_exactly_once,
    check_quarantine,
    delete,
    depth,
    publish,
    usage_messages,
)
from tests.pg import scratch_database

pytestmark = pytest.mark.rabbitmq


def usage_settings(tmp: Path, queue: str, **extra: Any) -> Settings:
    consume = ConsumeSettings(
        broker="rabbitmq",
        url=SecretStr(RABBITMQ_URL),
        queue=queue,
        source="rabbitmq",
        prefetch=extra.pop("prefetch", 200),
        batch_wait_s=0.05,
    )
    return make_settings(tmp / "data", packs=["usage_metering"], consume=consume, **extra)


@contextmanager
def consumer_thread(settings: Settings) -> Iterator[Consumer]:
    """A consumer running in a thread until the block ends (then stopped and joined)."""
    stop = threading.Event()
    with ExitStack() as stack:
        consumer = open_consumer(settings, stack, stop=stop)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                consumer.run()
            except BaseException as exc:  # reported by the test, not lost in the thread
                errors.append(exc)

        thread = threading.Thread(target=run, name="consumer", daemon=True)
        thread.start()
        try:
            yield consumer
        finally:
            stop.set()
            thread.join(60)
        assert not thread.is_alive(), "the consumer did not stop"
        assert not errors, errors


def wait_for(what: str, cond: Any, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.05)


async def _append_without_ack(settings: Settings, queue: str, n: int) -> int:
    """What a consumer killed between the log append and the ack leaves behind, made with the
    real parts: take ``n`` messages unacknowledged, append their frames, then close the
    channel without acknowledging. RabbitMQ requeues them marked redelivered."""
    import aio_pika

    conn = await aio_pika.connect(RABBITMQ_URL)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(queue, passive=True)
        msgs = []
        for _ in range(n):
            m = await q.get(no_ack=False, fail=False)
            if m is None:
                break
            msgs.append(m)
        with ExitStack() as stack:
            sink = open_consumer(settings, stack).sink
            assert await asyncio.to_thread(sink.durable, [m.body for m in msgs])
        await ch.close()  # unacknowledged: back in the queue
    return len(msgs)


@pytest.mark.parametrize("engine", ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_queue_into_usage_events_once_per_request(tmp_path: Path, engine: str) -> None:
    msgs = usage_messages(6000)
    queue = scratch_queue()
    publish(queue, msgs.bodies)
    with ExitStack() as stack:
        extra: dict[str, Any] = {}
        if engine == "postgres":
            extra["warehouse"] = {
                "type": "postgres",
                "dsn": stack.enter_context(scratch_database()),
            }
        settings = usage_settings(tmp_path, queue, **extra)
        redelivered = asyncio.run(_append_without_ack(settings, queue, 150))
        assert redelivered == 150
        assert depth(queue) == len(msgs.bodies)  # all back, the 150 marked redelivered
        with ExitStack() as consumers:
            st = open_consumer(settings, consumers, max_idle_s=3).run()
        assert st.acked == len(msgs.bodies)
        assert 0 < st.max_batch <= 200
        assert delete(queue) == 0
        _check(settings, msgs, appended_twice=redelivered)


def _check(settings: Settings, msgs: UsageMessages, appended_twice: int) -> None:
    rt = Runtime(settings)
    try:
        rt.loader.drain(timeout_s=120)
        check_exactly_once(rt.warehouse, msgs)
        check_quarantine(rt.warehouse)
        c = rt.conservation()
        assert c.balanced, c.as_dict()
        assert c.total("in_flight") == 0
        assert c.total("received") == len(msgs.bodies) + appended_twice
        assert c.total("loaded") == len(msgs.distinct)
        # the copies published, plus every redelivered message that was a valid call
        assert c.total("duplicates") >= msgs.copies
        assert c.total("loaded") + c.total("duplicates") + c.total("quarantined") == c.total(
            "received"
        )
        assert len(POISON) <= c.total("quarantined") <= 2 * len(POISON)
    finally:
        rt.stop()


def test_backpressure_at_the_log_cap_then_resume(tmp_path: Path) -> None:
    msgs = usage_messages(2500, seed=5)
    queue = scratch_queue()
    publish(queue, msgs.bodies)
    prefetch = 100
    # A cap of 32 KiB holds ~100 messages' frames; the loader is not started.
    settings = usage_settings(
        tmp_path,
        queue,
        prefetch=prefetch,
        log={"type": "sqlite", "max_bytes": 32 * 1024, "retry_after_s": 1},
    )
    rt = Runtime(settings)
    try:
        with consumer_thread(settings) as consumer:
            st = consumer.stats
            wait_for("the consumer to pause at the cap", lambda: st.paused)
            acked, ready = st.acked, depth(queue)
            assert 0 < acked < len(msgs.bodies)
            for _ in range(3):  # three retry periods: nothing moves while the log is full
                time.sleep(1.0)
                assert st.paused
                assert (st.acked, depth(queue)) == (acked, ready)
            # Held by the consumer, unacknowledged: at most one prefetch window.
            assert 0 < len(msgs.bodies) - acked - ready <= prefetch
            assert st.held > 0
            assert "over its cap" in st.log_full
            waits = st.log_full_waits
            assert waits >= 3
            rt.loader.start()  # the loader is back: room is made, the consumer goes on
            wait_for("every message acknowledged", lambda: st.acked == len(msgs.bodies))
            assert not st.paused
            assert st.log_full_waits > waits  # it met the cap again while catching up
        assert delete(queue) == 0
    finally:
        rt.stop()
    _check(settings, msgs, appended_twice=0)


def test_usage_freshness_while_consuming(tmp_path: Path) -> None:
    msgs = usage_messages(3000, seed=9, days=1)
    queue = scratch_queue()
    publish(queue, [])  # declare it; the producer publishes while the consumer runs
    settings = usage_settings(tmp_path, queue)
    rt = Runtime(settings)
    try:
        key = rt.meta.create_key("secret", "ops", pack="usage_metering", role="platform_admin")[1]
        rt.loader.start()
        with (
            TestClient(create_app(rt, start=False)) as client,
            consumer_thread(settings) as consumer,
        ):

            def usage() -> dict[str, Any]:
                r = client.get(
                    "/analytics/v1/orgs/org_000/usage",
                    params={"preset": "7d"},
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert r.status_code == 200, r.text
                body: dict[str, Any] = r.json()
                f = body["freshness"]
                assert f["budget_seconds"] == 300
                assert f["stale"] is False, f
                assert 0 <= f["lag_seconds"] <= 300, f
                return body

            waves = 6
            for i in range(waves):
                part = msgs.bodies[
                    i * len(msgs.bodies) // waves : (i + 1) * len(msgs.bodies) // waves
                ]
                publish(queue, part)
                usage()
            wait_for("every message acknowledged", lambda: consumer.stats.acked == len(msgs.bodies))
            wait_for("the loader to catch up", lambda: rt.conservation().total("in_flight") == 0)
            body = usage()
        want = [e for e in msgs.distinct if e["properties"]["org_id"] == "org_000"]
        assert body["totals"]["requests"] == len(want)
        newest = max(e["occurred_at"] for e in want)
        assert body["freshness"]["newest_event_at"][:19] == newest[:19]
        assert delete(queue) == 0
    finally:
        rt.stop()


@needs_curl
def test_docs_usage_walkthrough_runs() -> None:
    from tests.conftest import ROOT
    from tests.integration.test_readme import run_block

    out = run_block(ROOT / "docs" / "usage.md", "usage-rabbitmq")
    assert "requests 2 spend_micros 215000 unpriced 0" in out
    assert "stale False budget 300.0" in out
    assert "'received': 4, 'loaded': 2, 'quarantined': 1, 'duplicates': 1, 'in_flight': 0" in out
    assert "0 left in the queue" in out
