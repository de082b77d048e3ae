"""What the collector framed, per source: events collected and quarantined by reason.

A Segment client gets 200 whether its events were accepted or quarantined, so these counters
(``gristmill_collected_total``, ``gristmill_quarantined_by_reason_total`` on ``/metrics``)
are what an alert on a rising quarantine rate reads. They count in the process that framed
the events (the API or a collector), once per frame, so the hot path stays per request.
"""

from __future__ import annotations

import threading
from collections import Counter

from gristmill.core.envelope import Frame


class CollectCounters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.collected: Counter[tuple[str, str]] = Counter()
        """(pack, source) -> events framed (accepted or quarantined; not suppressed)."""
        self.quarantined: Counter[tuple[str, str, str]] = Counter()
        """(pack, source, reason) -> events quarantined at collect time."""

    def add(self, frame: Frame) -> None:
        key = (frame.pack, frame.source)
        n = len(frame.events) + len(frame.rejects)
        with self._lock:
            self.collected[key] += n
            for r in frame.rejects:
                self.quarantined[(frame.pack, frame.source, r.reason)] += 1

    def snapshot(self) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str, str], int]]:
        with self._lock:
            return dict(self.collected), dict(self.quarantined)
