"""NATS JetStream (nats-py): a durable pull consumer on an existing stream.

Each fetch asks for at most ``prefetch`` messages and the consumer's ``max_ack_pending`` is the
same bound; messages are acknowledged after their frames are durable in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from gristmill.config import ConsumeSettings
from gristmill.consume.base import Sink

log = logging.getLogger(__name__)


async def watch_backlog(sub: Any, name: str, cfg: ConsumeSettings, sink: Sink) -> None:
    """Poll the durable consumer's ``num_pending`` (stream messages not yet delivered)."""
    while not sink.done():
        try:
            info = await sub.consumer_info()
            sink.backlog[name] = int(info.num_pending or 0)
        except Exception as exc:  # one missed reading, not a stopped consumer
            log.debug("nats backlog of %s: %s", name, exc)
        await asyncio.sleep(cfg.backlog_interval_s)


async def run(url: str, cfg: ConsumeSettings, sink: Sink) -> None:
    import nats
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
        watcher = None
        if cfg.metrics_port is not None:
            name = f"{cfg.stream or cfg.subject}/{cfg.durable}"
            watcher = asyncio.create_task(watch_backlog(sub, name, cfg, sink))
        try:
            await _consume(nc, sub, cfg, sink)
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
    finally:
        # Acks and naks are flushed batch by batch. drain() would wait for the pull
        # subscription's open fetch until its 30 s timeout (DrainTimeoutError), so every stop
        # took 30 s — past a container's usual grace period.
        with contextlib.suppress(Exception):
            await nc.flush(timeout=5)
        await nc.close()


async def _consume(nc: Any, sub: Any, cfg: ConsumeSettings, sink: Sink) -> None:
    from nats.errors import TimeoutError as NatsTimeout

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
