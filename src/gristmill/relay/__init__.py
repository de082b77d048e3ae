"""The transactional outbox relay: an application's outbox table, read in commit order, into
the collector pipeline (``gristmill relay``). See docs/sources.md."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import ExitStack

from gristmill.config import Settings
from gristmill.log.registry import open_log
from gristmill.meta.store import MetaStore
from gristmill.pack.loader import load_packs
from gristmill.relay.feed import Feed, source_parser
from gristmill.relay.outbox import Outbox, Position, Row, open_outbox
from gristmill.relay.progress import LeaseLost, MetaProgress, Progress, RedisProgress, marker_key
from gristmill.relay.relay import Relay, RelayStats

__all__ = [
    "Feed",
    "LeaseLost",
    "Outbox",
    "Position",
    "Progress",
    "Relay",
    "RelayStats",
    "Row",
    "marker_key",
    "open_progress",
    "open_relay",
]


def open_progress(settings: Settings, stack: ExitStack) -> Progress:
    """The relay's progress store: Redis when ``relay.redis_url`` is set, else metadata."""
    cfg = settings.relay
    if cfg.redis_url is not None:
        progress: Progress = RedisProgress(
            cfg.redis_url.get_secret_value(),
            cfg.consumer,
            cfg.key_prefix,
            cfg.lease_ttl_s,
            cfg.marker_ttl_s,
        )
    else:
        meta = MetaStore(settings.meta_database_url)
        stack.callback(meta.close)
        progress = MetaProgress(
            meta.engine, cfg.consumer, cfg.key_prefix, cfg.lease_ttl_s, cfg.marker_ttl_s
        )
    stack.callback(progress.close)
    return progress


def open_relay(
    settings: Settings,
    stack: ExitStack,
    *,
    stop: threading.Event | None = None,
    on_progress: Callable[[RelayStats], None] | None = None,
) -> Relay:
    """Wire a relay from settings; ``stack`` closes what it opened (log, stores, outbox).

    Only the parts a relay needs: packs, the log and the progress store. The warehouse is
    not opened; a loader (``gristmill serve`` or ``gristmill load``) moves the log on."""
    cfg = settings.relay
    stop = stop or threading.Event()
    # The metadata store (progress, lease, markers) lives here even when the log is a broker.
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    packs = load_packs(settings.resolved_packs_dir, settings.packs)
    outbox = open_outbox(cfg.outbox)
    stack.callback(outbox.close)
    event_log = open_log(settings)
    stack.callback(event_log.close)
    progress = open_progress(settings, stack)
    feed = Feed(
        source_parser(settings, packs, stack, stop),
        event_log,
        pack=cfg.pack,
        source=cfg.source,
        dialect=cfg.dialect,
        stop=stop,
    )
    return Relay(
        outbox,
        progress,
        feed,
        batch_size=cfg.batch_size,
        poll_interval_s=cfg.poll_interval_s,
        lease_ttl_s=cfg.lease_ttl_s,
        stop=stop,
        on_progress=on_progress,
    )
