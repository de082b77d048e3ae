"""NATS JetStream (nats-py): a durable pull consumer on an existing stream.

Each fetch asks for at most ``prefetch`` messages and the consumer's ``max_ack_pending`` is the
same bound; messages are acknowledged after their frames are durable in the log.
"""

from __future__ import annotations

import asyncio

from gristmill.config import ConsumeSettings
from gristmill.consume.base import Sink


async def run(url: str, cfg: ConsumeSettings, sink: Sink) -> None:
    import nats
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import ConsumerConfig

    if not cfg.subject:
        raise ValueError("nats: set consume.subject (and consume.stream)")
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            cfg.subject,
            durable=cfg.durable,
            stream=cfg.stream,
            config=ConsumerConfig(max_ack_pending=cfg.prefetch),
        )
        while not sink.done():
            try:
                msgs = await sub.fetch(batch=cfg.prefetch, timeout=max(cfg.batch_wait_s, 0.25))
            except (TimeoutError, NatsTimeout):
                continue
            if not msgs:
                continue
            if await asyncio.to_thread(sink.durable, [m.data for m in msgs]):
                for m in msgs:
                    await m.ack()
                await nc.flush()
                sink.acked(len(msgs))
            else:
                for m in msgs:
                    await m.nak()
    finally:
        await nc.drain()
