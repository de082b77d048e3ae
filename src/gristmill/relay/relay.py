"""The relay loop: outbox rows in commit order -> collector pipeline -> log -> progress.

Order of effects for one batch of rows:

1. read the next settled rows after the stored position (:mod:`gristmill.relay.outbox`);
2. drop rows whose event already carries this consumer's processed marker;
3. frame the rest through the collector pipeline and append the frame to the log (durable);
4. in one transaction of the progress store: move the position past the batch and write the
   markers (fenced by the lease).

A crash before 3 re-reads the rows; between 3 and 4 re-appends them, and the warehouse's
dedupe drops the second copy (counted as ``duplicates``, so conservation stays exact). Nothing
is skipped: the position only passes rows that were appended.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gristmill.relay.feed import Feed
from gristmill.relay.outbox import Outbox, Position
from gristmill.relay.progress import LeaseLost, Progress

log = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 600.0


@dataclass(slots=True)
class RelayStats:
    rows: int = 0
    """Rows read from the outbox."""
    sent: int = 0
    """Rows handed to the pipeline (appended to the log)."""
    already_processed: int = 0
    """Rows skipped because their processed marker existed."""
    batches: int = 0
    position: Position = field(default_factory=Position)
    started_at: float = field(default_factory=time.monotonic)
    waited_for_lease: bool = False
    horizon: int | None = None
    """PostgreSQL: the oldest running transaction id, which rows must be below to be read."""

    def rate(self) -> float:
        return self.sent / max(time.monotonic() - self.started_at, 1e-9)


class Relay:
    def __init__(
        self,
        outbox: Outbox,
        progress: Progress,
        feed: Feed,
        *,
        batch_size: int = 1000,
        poll_interval_s: float = 0.2,
        lease_ttl_s: float = 15.0,
        stop: threading.Event | None = None,
        on_progress: Callable[[RelayStats], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.progress = progress
        self.feed = feed
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.lease_ttl_s = lease_ttl_s
        self.stop = stop or feed.stop
        self.on_progress = on_progress
        self.stats = RelayStats()
        self._renewed = 0.0
        self._pruned = time.monotonic()

    def wait_for_lease(self) -> bool:
        """Block until this relay holds the consumer's lease; False if stopped first."""
        while not self.stop.is_set():
            holder = self.progress.acquire()
            if holder is None:
                self._renewed = time.monotonic()
                return True
            if not self.stats.waited_for_lease:
                log.info("another relay (%s) holds the lease; waiting for it", holder)
                self.stats.waited_for_lease = True
            self.stop.wait(min(1.0, self.lease_ttl_s / 4))
        return False

    def _renew(self) -> None:
        if time.monotonic() - self._renewed > self.lease_ttl_s / 3:
            holder = self.progress.acquire()
            if holder is not None:
                raise LeaseLost(f"another relay ({holder}) took the lease")
            self._renewed = time.monotonic()

    def step(self, position: Position) -> Position | None:
        """One batch; returns the new position, or None when nothing settled was waiting."""
        self.stats.horizon = self.outbox.horizon()  # before the read: the read sees past it
        rows = self.outbox.read(position, self.batch_size)
        if not rows:
            return None
        done = self.progress.processed([r.event_id for r in rows])
        fresh = [r for r in rows if r.event_id not in done]
        if fresh and not self.feed.append([self.feed.rows([r.payload for r in fresh])]):
            return position  # stopped while the log was full: nothing appended, nothing moved
        end = rows[-1].position
        self.progress.commit(end, [r.event_id for r in fresh])
        self._renewed = time.monotonic()
        st = self.stats
        st.rows += len(rows)
        st.sent += len(fresh)
        st.already_processed += len(rows) - len(fresh)
        st.batches += 1
        st.position = end
        return end

    def run(self, *, until_idle: bool = False) -> RelayStats:
        """Relay until stopped, or with ``until_idle`` until every row committed before this
        call has been relayed (on PostgreSQL: until the horizon passes the transaction ids
        handed out before the call, so a transaction still open delays the exit)."""
        if not self.wait_for_lease():
            return self.stats
        target = self.outbox.frontier() if until_idle else None
        try:
            position = self.progress.position()
            self.stats.position = position
            while not self.stop.is_set():
                moved = self.step(position)
                if moved is None:
                    h = self.stats.horizon
                    if until_idle and (target is None or (h is not None and h >= target)):
                        break
                    self._renew()
                    self.stop.wait(self.poll_interval_s)
                else:
                    position = moved
                if self.on_progress is not None:
                    self.on_progress(self.stats)
                if time.monotonic() - self._pruned > PRUNE_INTERVAL_S:
                    self._pruned = time.monotonic()
                    self.progress.prune()
        finally:
            self.progress.release()  # only if still ours: a lost lease stays with its holder
        return self.stats
