"""Broker logs made by tests, removed when the test session ends.

A RabbitMQ stream or a JetStream stream outlives the process that declared it, and a crash
test leaves hundreds of thousands of messages in one. Left behind run after run, they fill the
broker's disk on the machine the suite runs on (CI runs on the same services), so every test
that names a broker log takes its name from :func:`scratch_stream`, and the session's last
fixture deletes them. Durable queues that consumer tests fill (and exchanges of the same
name) come from :func:`scratch_queue` and are deleted the same way, even when a test failed
before its own cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
NATS_URL = "nats://127.0.0.1:4222"
MAX_PARTITIONS = 8
"""Partition queues to try per RabbitMQ stream (tests use at most 4)."""

_made: dict[str, set[str]] = {"rabbitmq": set(), "nats": set(), "rabbitmq_queues": set()}


def scratch_stream(kind: str, prefix: str = "gmtest") -> str:
    """A fresh log name for ``kind`` (``rabbitmq`` or ``nats``), deleted at session end."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    _made[kind].add(name)
    return name


def scratch_queue(prefix: str = "gmtest-q") -> str:
    """A fresh RabbitMQ queue name (the test declares it), deleted at session end together
    with an exchange of the same name if the test made one."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    _made["rabbitmq_queues"].add(name)
    return name


async def _drop_rabbitmq_queues(names: set[str]) -> None:
    import aio_pika

    conn = await aio_pika.connect(RABBITMQ_URL, timeout=5)
    async with conn:
        for name in names:
            for drop in ("queue_delete", "exchange_delete"):
                ch = await conn.channel()
                with contextlib.suppress(Exception):  # already deleted by the test
                    await getattr(ch, drop)(name)
                with contextlib.suppress(Exception):
                    await ch.close()


async def _drop_rabbitmq(names: set[str]) -> None:
    import aio_pika

    conn = await aio_pika.connect(RABBITMQ_URL, timeout=5)
    async with conn:
        for name in names:
            queues = [f"{name}.p{p}" for p in range(MAX_PARTITIONS)] + [f"{name}.offsets"]
            for q in queues:
                ch = await conn.channel()
                with contextlib.suppress(Exception):  # never declared (fewer partitions)
                    await ch.queue_delete(q)
                with contextlib.suppress(Exception):
                    await ch.close()


async def _drop_nats(names: set[str]) -> None:
    import nats

    nc = await nats.connect(NATS_URL, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream(timeout=10)
        for name in names:
            with contextlib.suppress(Exception):
                await js.delete_stream(name)
            with contextlib.suppress(Exception):
                await js.delete_key_value(f"{name}_leases")
    finally:
        await nc.close()


def drop_all() -> None:
    """Delete every stream this session named (a broker that is down keeps them)."""
    for kind, drop in (
        ("rabbitmq", _drop_rabbitmq),
        ("nats", _drop_nats),
        ("rabbitmq_queues", _drop_rabbitmq_queues),
    ):
        names, _made[kind] = _made[kind], set()
        if names:
            with contextlib.suppress(Exception):
                asyncio.run(drop(names))


def close_rabbitmq_connections(connection_name: str) -> int:
    """Have the broker close every connection named ``connection_name`` (``rabbitmqctl
    close_connection``, as an operator or a restart would), and return how many it closed.
    The broker's side of the close is what a test of reconnecting needs: the client learns of
    it from the socket, as it would in production."""
    import shutil
    import subprocess

    ctl = shutil.which("rabbitmqctl")
    assert ctl is not None, "rabbitmqctl is not on PATH (it comes with the rabbitmq-server package)"
    # The table form: the JSON form prints pids that close_connection does not accept.
    listed = subprocess.run(
        [ctl, "list_connections", "pid", "client_properties", "-q", "--no-table-headers"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    closed = 0
    for line in listed.splitlines():
        pid, _, props = line.partition("\t")
        if f'{{"connection_name","{connection_name}"}}' in props:
            subprocess.run(
                [ctl, "close_connection", pid.strip(), "closed by a Gristmill test"],
                capture_output=True,
                check=True,
                timeout=60,
            )
            closed += 1
    return closed
