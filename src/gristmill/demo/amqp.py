"""Publish events to a RabbitMQ queue the way the usage seed's producers do: one JSON message
per event, persistent, to a durable queue, each confirmed by the broker (publisher confirms).
For the usage demo and the usage benchmark; needs the ``rabbitmq`` extra (aio-pika)."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from typing import Any

import orjson

CONFIRM_WINDOW = 1000
"""Messages published before waiting for their confirms (bounds memory and the broker's
unconfirmed set; large enough that confirms do not serialise the publisher)."""


def amqp_answers(url: str, timeout_s: float = 3.0) -> str | None:
    """None when an AMQP connection to ``url`` opens (and closes); else why not, in words."""
    try:
        import aio_pika
    except ImportError:
        return "aio-pika is not installed (pip install 'gristmill[rabbitmq]')"

    async def probe() -> None:
        conn = await aio_pika.connect(url, timeout=timeout_s)
        await conn.close()

    try:
        asyncio.run(asyncio.wait_for(probe(), timeout_s + 1))
    except Exception as exc:  # refused, auth, timeout: all mean "use HTTP"
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None


async def _declare(url: str, queue: str, *, purge: bool) -> None:
    import aio_pika

    conn = await aio_pika.connect(url)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(queue, durable=True)
        if purge:
            await q.purge()


def declare_queue(url: str, queue: str, *, purge: bool = False) -> None:
    """Declare ``queue`` durable (and empty it with ``purge``)."""
    asyncio.run(_declare(url, queue, purge=purge))


async def _delete(url: str, queue: str) -> int:
    import aio_pika

    conn = await aio_pika.connect(url)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(queue, passive=True)
        left = int(q.declaration_result.message_count or 0)
        await q.delete(if_unused=False, if_empty=False)
        return left


def delete_queue(url: str, queue: str) -> int | None:
    """Delete ``queue``; the messages it still held, or None if it was already gone."""
    with contextlib.suppress(Exception):
        return asyncio.run(_delete(url, queue))
    return None


async def _depth(url: str, queue: str) -> int:
    import aio_pika

    conn = await aio_pika.connect(url)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(queue, passive=True)
        return int(q.declaration_result.message_count or 0)


def queue_depth(url: str, queue: str) -> int:
    """Messages ready in ``queue`` (a passive declare; unacknowledged ones not counted)."""
    return asyncio.run(_depth(url, queue))


async def publish_async(
    url: str,
    queue: str,
    events: Sequence[dict[str, Any]] | Sequence[bytes],
    *,
    on_progress: Callable[[int], None] | None = None,
    rate: float | None = None,
    on_sent: Callable[[int, float], None] | None = None,
) -> int:
    """Publish each event as one persistent message; returns how many the broker confirmed.

    ``rate`` paces the publisher (messages per second, in windows of 1/20 s); ``on_sent`` gets
    each message's index and the loop time it was confirmed at."""
    import aio_pika

    conn = await aio_pika.connect(url)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        exchange = ch.default_exchange
        loop = asyncio.get_running_loop()
        started = loop.time()
        window = CONFIRM_WINDOW if rate is None else max(1, int(rate / 20))
        done = 0
        for i in range(0, len(events), window):
            chunk = events[i : i + window]
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            e if isinstance(e, bytes) else orjson.dumps(e),
                            content_type="application/json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=queue,
                    )
                    for e in chunk
                )
            )
            done += len(chunk)
            if on_sent is not None:
                at = loop.time()
                for j in range(i, i + len(chunk)):
                    on_sent(j, at)
            if on_progress is not None:
                on_progress(len(chunk))
            if rate is not None:
                ahead = started + done / rate - loop.time()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        return done


def publish(
    url: str,
    queue: str,
    events: Sequence[dict[str, Any]] | Sequence[bytes],
    *,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """:func:`publish_async` from synchronous code (its own event loop)."""
    return asyncio.run(publish_async(url, queue, events, on_progress=on_progress))


def _publish_child(url: str, queue: str, bodies: list[bytes], counter: Any) -> None:
    def progress(n: int) -> None:
        with counter.get_lock():
            counter.value += n

    publish(url, queue, bodies, on_progress=progress)


def publish_elsewhere(url: str, queue: str, bodies: list[bytes]) -> tuple[BaseProcess, Any]:
    """Publish from a child process, as the producers are other processes than the consumer
    (and so the publisher does not share this process's interpreter lock). Returns the
    process and a shared counter of the messages the broker confirmed so far."""
    ctx = mp.get_context("spawn")  # never fork a process that runs threads
    counter = ctx.Value("q", 0)
    proc = ctx.Process(
        target=_publish_child, args=(url, queue, bodies, counter), name="publisher", daemon=True
    )
    proc.start()
    return proc, counter
