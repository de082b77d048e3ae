"""RabbitMQ (aio-pika): consume an existing queue, or bind one to an existing exchange.

``basic.qos(prefetch_count)`` bounds the unacknowledged messages; a batch is acknowledged
with one ``multiple`` ack after its frames are durable in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from gristmill.config import ConsumeSettings
from gristmill.consume.base import Sink

log = logging.getLogger(__name__)


async def _queue(channel: Any, cfg: ConsumeSettings) -> Any:
    if cfg.exchange:
        exchange = await channel.get_exchange(cfg.exchange, ensure=True)  # must exist
        if cfg.queue:
            queue = await channel.declare_queue(cfg.queue, durable=True)
        else:
            queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key=cfg.routing_key)
        return queue
    if not cfg.queue:
        raise ValueError("rabbitmq: set consume.queue (and optionally consume.exchange)")
    return await channel.get_queue(cfg.queue, ensure=True)  # passive: must exist


async def watch_backlog(connection: Any, name: str, cfg: ConsumeSettings, sink: Sink) -> None:
    """Poll the queue's ready messages with a passive declare on a channel of its own (a
    failed passive declare closes its channel; the consuming one must not go with it).

    The declare goes through the underlying AMQP channel: aio-pika's ``declare_queue`` on a
    robust channel answers a repeated declaration from its cache, with the first count.
    """
    channel = None
    while not sink.done():
        try:
            if channel is None or channel.is_closed:
                channel = await connection.channel()
            amqp = await channel.get_underlay_channel()
            ok = await amqp.queue_declare(name, passive=True)
            sink.backlog[name] = int(ok.message_count or 0)
        except Exception as exc:  # a broker hiccup costs one reading, not the consumer
            log.debug("rabbitmq backlog of %s: %s", name, exc)
            channel = None
        await asyncio.sleep(cfg.backlog_interval_s)


async def run(url: str, cfg: ConsumeSettings, sink: Sink) -> None:
    import aio_pika

    connection = await aio_pika.connect_robust(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=cfg.prefetch)
        queue = await _queue(channel, cfg)
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        tag = await queue.consume(inbox.put, no_ack=False)
        watcher = None
        if cfg.metrics_port is not None:
            watcher = asyncio.create_task(watch_backlog(connection, queue.name, cfg, sink))
        try:
            while not sink.done():
                try:
                    first = await asyncio.wait_for(inbox.get(), timeout=0.25)
                except TimeoutError:
                    continue
                batch = [first]
                deadline = asyncio.get_running_loop().time() + cfg.batch_wait_s
                while len(batch) < cfg.prefetch:
                    # Take what has arrived without a timer per message; wait only when the
                    # inbox is empty (a wait_for per message cost more than the framing).
                    with contextlib.suppress(asyncio.QueueEmpty):
                        while len(batch) < cfg.prefetch:
                            batch.append(inbox.get_nowait())
                        break
                    left = deadline - asyncio.get_running_loop().time()
                    if left <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(inbox.get(), timeout=left))
                    except TimeoutError:
                        break
                if await asyncio.to_thread(sink.durable, [m.body for m in batch]):
                    await batch[-1].ack(multiple=True)
                    sink.acked(len(batch))
                else:
                    await batch[-1].nack(multiple=True, requeue=True)
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
