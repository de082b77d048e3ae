"""Consumers of foreign queues (``gristmill consume``): an existing RabbitMQ queue or
exchange, NATS JetStream stream, Kafka topic or Pub/Sub subscription carrying JSON events in
any collector dialect, into the pipeline. See docs/sources.md and docs/event-bus.md."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from contextlib import ExitStack

from gristmill.config import ConsumeSettings, Settings
from gristmill.consume.base import ConsumeStats, Sink
from gristmill.log.registry import open_log
from gristmill.pack.loader import load_packs
from gristmill.relay.feed import Feed, source_parser

__all__ = ["ConsumeStats", "Consumer", "open_consumer"]


class Consumer:
    def __init__(self, cfg: ConsumeSettings, sink: Sink) -> None:
        self.cfg = cfg
        self.sink = sink

    @property
    def stats(self) -> ConsumeStats:
        return self.sink.stats

    def run(self) -> ConsumeStats:
        """Consume until stopped (or idle past ``max_idle_s``)."""
        cfg = self.cfg
        if cfg.broker == "pubsub":  # no URL: the client finds the service (or the emulator)
            from gristmill.consume import pubsub

            pubsub.run(cfg, self.sink)
            return self.sink.stats
        if cfg.url is None:
            raise ValueError("set GRISTMILL_CONSUME__URL or --url")
        url = cfg.url.get_secret_value()
        if cfg.broker == "rabbitmq":
            from gristmill.consume import rabbitmq

            asyncio.run(rabbitmq.run(url, cfg, self.sink))
        elif cfg.broker == "nats":
            from gristmill.consume import jetstream

            asyncio.run(jetstream.run(url, cfg, self.sink))
        else:
            from gristmill.consume import kafka

            kafka.run(url, cfg, self.sink)
        return self.sink.stats


def open_consumer(
    settings: Settings,
    stack: ExitStack,
    *,
    stop: threading.Event | None = None,
    max_idle_s: float | None = None,
    on_progress: Callable[[ConsumeStats], None] | None = None,
) -> Consumer:
    """Wire a consumer from settings: packs, the log, the collector's parser. The warehouse
    is not opened; a loader moves the log on."""
    cfg = settings.consume
    stop = stop or threading.Event()
    stack.callback(stop.set)  # ends the suppression watcher with the consumer's resources
    packs = load_packs(settings.resolved_packs_dir, settings.packs)
    event_log = open_log(settings)
    stack.callback(event_log.close)
    feed = Feed(
        source_parser(settings, packs, stack, stop),
        event_log,
        pack=cfg.pack,
        source=cfg.source,
        dialect=cfg.dialect,
        stop=stop,
    )
    return Consumer(cfg, Sink(feed, stop, max_idle_s, on_progress))
