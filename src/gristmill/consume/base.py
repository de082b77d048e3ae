"""What every queue consumer shares: messages in, durable frames out, then the ack.

A consumer receives up to ``prefetch`` unacknowledged messages (the broker stops delivering
past that: backpressure), frames each message through the collector pipeline as a request
body of the configured dialect, appends the frames to the log, and only then acknowledges.
A message that cannot be read (not JSON, empty, over a limit) becomes a quarantine frame with
its original bytes and is acknowledged like any other: a poison message never stalls the
queue or partition, and nothing is dropped.

When the log is over its cap (the loader is stopped or behind), the batch in hand waits for
room and stays unacknowledged: the broker stops at ``prefetch`` and the rest stays queued.
The consumer says so (``paused``) each time it waits, and goes on by itself once the loader
has made room.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gristmill.log.base import LogFull
from gristmill.relay.feed import Feed


@dataclass(slots=True)
class ConsumeStats:
    messages: int = 0
    acked: int = 0
    quarantined: int = 0
    """Items of acknowledged messages that went to quarantine (a whole unreadable message
    counts one)."""
    batches: int = 0
    max_batch: int = 0
    """Most messages framed and acknowledged together (never above ``prefetch``)."""
    started_at: float = field(default_factory=time.monotonic)
    last_message_at: float = field(default_factory=time.monotonic)
    log_full_waits: int = 0
    """Waits for room in a full log (each ``retry_after_s`` long at most)."""
    paused_since: float | None = None
    """Monotonic time the batch in hand began waiting for room; None while not paused."""
    held: int = 0
    """Messages of the paused batch (unacknowledged while it waits)."""
    log_full: str = ""
    """The log's last "full" message (bytes not yet loaded and its cap)."""

    @property
    def paused(self) -> bool:
        return self.paused_since is not None

    def rate(self) -> float:
        return self.acked / max(time.monotonic() - self.started_at, 1e-9)


class Sink:
    """Frames a batch of message bodies and appends them durably (thread-safe to call from
    an event loop through ``asyncio.to_thread``)."""

    def __init__(
        self,
        feed: Feed,
        stop: threading.Event,
        max_idle_s: float | None,
        on_progress: Callable[[ConsumeStats], None] | None = None,
    ) -> None:
        self.feed = feed
        feed.on_wait = self._waiting
        self.on_progress = on_progress
        self.stop = stop
        self.max_idle_s = max_idle_s
        self.stats = ConsumeStats()
        self.backlog: dict[str, int] = {}
        """queue -> messages waiting in the broker, as last polled (only while metrics are
        served, see ``ConsumeSettings.metrics_port``)."""
        self._framed_rejects = 0
        self.ready = True
        """False while a Kafka consumer waits to be assigned partitions (a group join can
        take many seconds); idleness counts from the assignment."""

    def assigned(self) -> None:
        self.ready = True
        self.stats.last_message_at = time.monotonic()

    def durable(self, bodies: Sequence[bytes]) -> bool:
        """True once every body's frame is in the log; False if stopped while the log was
        full (nothing appended: the caller leaves the messages unacknowledged)."""
        before = self.feed.stats.rejected
        records = self.feed.messages(bodies)
        rejected = self.feed.stats.rejected - before
        st = self.stats
        st.held = len(bodies)
        ok = self.feed.append(records)
        st.paused_since, st.held = None, 0
        if ok:
            self._framed_rejects += rejected
            st.messages += len(bodies)
            st.batches += 1
            st.max_batch = max(st.max_batch, len(bodies))
            st.last_message_at = time.monotonic()
        return ok

    @property
    def paused(self) -> bool:
        """The log is at its cap: the batch in hand waits and nothing is acknowledged."""
        return self.stats.paused

    def _waiting(self, exc: LogFull) -> None:
        st = self.stats
        st.log_full_waits += 1
        st.log_full = str(exc)
        if st.paused_since is None:
            st.paused_since = time.monotonic()
        if self.on_progress is not None:
            self.on_progress(st)

    def acked(self, n: int) -> None:
        self.stats.acked += n
        self.stats.quarantined += self._framed_rejects
        self._framed_rejects = 0
        if self.on_progress is not None:
            self.on_progress(self.stats)

    def done(self) -> bool:
        """Stopped, or idle for longer than ``max_idle_s``."""
        if self.stop.is_set():
            return True
        if not self.ready:
            return False
        idle = time.monotonic() - self.stats.last_message_at
        return self.max_idle_s is not None and idle > self.max_idle_s
