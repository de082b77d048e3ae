"""Hand events from a source (outbox rows, queue messages) to the collector pipeline.

Sources take the same path as HTTP ingest: the pack's dialect decodes, schemas validate, and
one frame (accepted envelopes plus rejected items with their original bytes) is appended to
whatever log is configured. So a source works with any log and any collector dialect, and
conservation counts its events like any others.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

from gristmill.collect.enrich import Traits, build_enrichers
from gristmill.collect.items import Item
from gristmill.collect.pins import Pins
from gristmill.collect.pipeline import Batch, whole_body_reject
from gristmill.collect.service import DIALECTS, Opened, Parser, Prepared
from gristmill.config import Settings
from gristmill.core.clock import now_us
from gristmill.core.errors import Problem
from gristmill.log.base import EventLog, LogFull, LogRecord
from gristmill.meta.governance import watch_suppression
from gristmill.pack.models import Pack


def source_parser(
    settings: Settings, packs: Mapping[str, Pack], stack: ExitStack, stop: threading.Event
) -> Parser:
    """The collector's parser for a process that collects without the API (the relay, the
    queue consumers): the packs' enrichment exactly as HTTP ingest fills it (a usage event's
    spend and latency bin, receive time, category, device, geo, traits), and erased subjects
    dropped here too, not only behind the API (kept current until ``stop``)."""
    from gristmill.meta.store import MetaStore

    suppressed = watch_suppression(settings.meta_database_url, stop)
    # The metadata store holds the schema version pins every collector process shares.
    meta = MetaStore(settings.meta_database_url)
    stack.callback(meta.close)
    traits: Traits | None = None
    if any(p.spec.enrichment.traits is not None for p in packs.values()):
        traits = meta.traits
    enrichers = build_enrichers(packs, traits, settings.enrichment.mmdb_path)
    return Parser(packs, settings.limits, suppressed, enrichers, Pins(meta.pins))


@dataclass(slots=True)
class FeedStats:
    events: int = 0
    accepted: int = 0
    rejected: int = 0
    log_full_waits: int = 0


class Feed:
    """One pack and source, one dialect, one log."""

    def __init__(
        self,
        parser: Parser,
        log: EventLog,
        *,
        pack: str | None,
        source: str,
        dialect: str,
        stop: threading.Event | None = None,
        on_wait: Callable[[LogFull], None] | None = None,
    ) -> None:
        if pack is None:
            if len(parser.packs) != 1:
                raise ValueError(f"name the pack: several are served ({', '.join(parser.packs)})")
            pack = next(iter(parser.packs))
        if pack not in parser.packs:
            raise ValueError(f"pack {pack!r} is not served (packs: {', '.join(parser.packs)})")
        if dialect not in DIALECTS:
            raise ValueError(f"dialect {dialect!r} is not one of {', '.join(DIALECTS)}")
        self.parser = parser
        self.log = log
        self.pack = pack
        self.source = source
        self.dialect = DIALECTS[dialect]
        self.stop = stop or threading.Event()
        self.on_wait = on_wait
        """Called before each wait on a full log (a consumer reports that it is paused)."""
        self.stats = FeedStats()

    def rows(self, raws: Sequence[bytes]) -> LogRecord:
        """One frame for rows that each hold one event (an outbox)."""
        items = [Item(i, raw) for i, raw in enumerate(raws)]
        opened = Opened(b"", Batch(items), None, now_us())
        return self._count(self.parser.frame(self.dialect, self.pack, self.source, opened))

    def message(self, body: bytes, content_type: str = "application/json") -> LogRecord:
        """One frame for a message that is a request body in the dialect (one event or a
        batch). A body that cannot be read at all is quarantined whole, with its bytes."""
        try:
            opened = self.parser.open(self.dialect, body, content_type)
        except Problem as exc:  # empty, or over a limit: nothing to frame, keep the bytes
            frame = whole_body_reject(
                self.pack, self.source, self.dialect.name, now_us(), body, exc.detail or exc.title
            )
            return self._count(Prepared(frame, None))
        return self._count(self.parser.frame(self.dialect, self.pack, self.source, opened))

    def messages(
        self, bodies: Sequence[bytes], content_type: str = "application/json"
    ) -> list[LogRecord]:
        """Frames for a batch of messages, each a request body in the dialect: the events of
        consecutive messages that say the same about their batch (write key, send time,
        historical) share one frame, up to ``max_events_per_request`` events.

        One frame per message would make the loader pay its per-frame cost for every event
        (a queue carries one event per message); shared frames load like an HTTP batch. A
        message that cannot be read at all still gets a frame of its own with its bytes.
        """
        out: list[LogRecord] = []
        items: list[Item] = []
        shape: tuple[str | None, int | None, bool, str | None] | None = None
        received_at = 0
        cap = self.parser.limits.max_events_per_request

        def flush() -> None:
            nonlocal items, shape
            if items:
                assert shape is not None
                key, sent_at, historical, call = shape
                batch = Batch(items, key, sent_at, historical, call)
                opened = Opened(b"", batch, None, received_at)
                out.append(
                    self._count(self.parser.frame(self.dialect, self.pack, self.source, opened))
                )
            items, shape = [], None

        for body in bodies:
            try:
                opened = self.parser.open(self.dialect, body, content_type)
            except Problem:
                opened = None
            if opened is None or opened.batch is None:
                flush()  # frames stay in message order
                out.append(self.message(body, content_type))  # quarantined whole
                continue
            b = opened.batch
            this = (b.key, b.sent_at, b.historical, b.call)
            if this != shape or len(items) + len(b.items) > cap:
                flush()
                shape, received_at = this, opened.received_at
            items += [Item(len(items) + j, it.raw) for j, it in enumerate(b.items)]
        flush()
        return out

    def _count(self, prepared: Prepared) -> LogRecord:
        st, f = self.stats, prepared.frame
        st.events += f.count
        st.accepted += len(f.events)
        st.rejected += len(f.rejects)
        return prepared.record()

    def append(self, records: Sequence[LogRecord]) -> bool:
        """Append durably, waiting out a full log (the warehouse is behind); False if asked
        to stop while waiting, in which case nothing was appended.

        Waiting here, rather than handing the messages back to the broker, is the
        backpressure: the caller's messages stay unacknowledged, so the broker holds the rest
        at its prefetch bound and nothing is redelivered in a loop while the loader is away.
        """
        st = self.stats
        while True:
            try:
                self.log.append(records)
                return True
            except LogFull as exc:
                st.log_full_waits += 1
                if self.on_wait is not None:
                    self.on_wait(exc)
                if self.stop.wait(exc.retry_after_s):
                    return False
