"""Hand events from a source (outbox rows, queue messages) to the collector pipeline.

Sources take the same path as HTTP ingest: the pack's dialect decodes, schemas validate, and
one frame (accepted envelopes plus rejected items with their original bytes) is appended to
whatever log is configured. So a source works with any log and any collector dialect, and
conservation counts its events like any others.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from gristmill.collect.items import Item
from gristmill.collect.pipeline import Batch, whole_body_reject
from gristmill.collect.service import DIALECTS, Opened, Parser, Prepared
from gristmill.core.clock import now_us
from gristmill.core.errors import Problem
from gristmill.log.base import EventLog, LogFull, LogRecord


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
        self.stats = FeedStats()
        self.paused = False
        """True while an append waits for the log to drop under its cap (nothing is
        acknowledged meanwhile); exposed as ``gristmill_consumer_paused``."""

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

    def _count(self, prepared: Prepared) -> LogRecord:
        st, f = self.stats, prepared.frame
        st.events += f.count
        st.accepted += len(f.events)
        st.rejected += len(f.rejects)
        return prepared.record()

    def append(self, records: Sequence[LogRecord]) -> bool:
        """Append durably, waiting out a full log (the warehouse is behind); False if asked
        to stop while waiting, in which case nothing was appended."""
        while True:
            try:
                self.log.append(records)
                self.paused = False
                return True
            except LogFull as exc:
                self.stats.log_full_waits += 1
                self.paused = True
                if self.stop.wait(exc.retry_after_s):
                    return False
