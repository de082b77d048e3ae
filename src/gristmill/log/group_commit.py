"""Group commit: one writer thread appends what every caller queued since its last commit.

Concurrent appends put a waiter on a queue; the writer takes everything queued (up to
``max_items``), turns it into records (frames handed over unencoded are merged and encoded
here, ``log.frames``), writes them in one transaction with one fsync, then wakes every
waiter. Under load dozens of requests share an fsync; idle, a request pays one.

Kept apart from the embedded log's file handling (``log.sqlite``) so the waiting, the
merging and who hears about which failure read in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gristmill.log import frames
from gristmill.log.base import LogRecord

_STOP = object()


@dataclass(slots=True)
class Waiter:
    """One append waiting for its group commit: a thread (event) or a coroutine (future)."""

    size: int
    """Bytes reserved against the log's cap (an estimate for a frame not yet encoded)."""
    records: Sequence[LogRecord]
    frame: frames.Pending | None = None
    """A frame to encode at the commit, merged with its neighbours."""
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[None] | None = None
    event: threading.Event | None = None
    error: BaseException | None = None


def _settle_all(futures: list[asyncio.Future[None]], exc: BaseException | None) -> None:
    for fut in futures:
        if fut.done():
            continue
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)


class GroupCommit:
    """The writer thread. ``write`` stores records in one transaction and returns the bytes
    it stored; ``settled(size, written=)`` releases one append's reservation against the cap;
    ``corrected(delta)`` adds what a commit stored beyond what its appends reserved (frames
    reserve an estimate); ``written`` runs after each successful commit."""

    def __init__(
        self,
        write: Callable[[list[LogRecord]], int],
        settled: Callable[..., None],
        corrected: Callable[[int], None],
        written: Callable[[], None],
        *,
        max_items: int,
    ) -> None:
        self._write = write
        self._settled = settled
        self._corrected = corrected
        self._written = written
        self.max_items = max_items
        self._q: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="log-writer", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def append(self, size: int, records: Sequence[LogRecord]) -> None:
        waiter = Waiter(size, records, event=threading.Event())
        self._q.put(waiter)
        assert waiter.event is not None
        waiter.event.wait()
        if waiter.error is not None:
            raise waiter.error

    async def append_async(
        self, size: int, records: Sequence[LogRecord], frame: frames.Pending | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        waiter = Waiter(size, records, frame, loop=loop, future=loop.create_future())
        self._q.put(waiter)
        assert waiter.future is not None
        await waiter.future

    def close(self, timeout_s: float = 10) -> None:
        self._q.put(_STOP)
        self._thread.join(timeout=timeout_s)

    def _loop(self) -> None:
        while True:
            first = self._q.get()
            if first is _STOP:
                return
            assert isinstance(first, Waiter)
            items: list[Waiter] = [first]
            stop = False
            while len(items) < self.max_items:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                assert isinstance(nxt, Waiter)
                items.append(nxt)
            exc: BaseException | None = None
            failed: dict[int, BaseException] = {}
            stored = 0
            try:
                records, failed = _records(items)
                stored = self._write(records)
            except BaseException as e:  # every waiter must hear about the failure
                exc = e
            self._settle(items, exc, failed, stored)
            if exc is None:
                self._written()
            if stop:
                return

    def _settle(
        self,
        items: list[Waiter],
        exc: BaseException | None,
        failed: dict[int, BaseException],
        stored: int,
    ) -> None:
        """Wake every waiter of one group commit. Async waiters of the same event loop are
        woken by one callback (one write to its self-pipe), not one per request."""
        by_loop: dict[tuple[asyncio.AbstractEventLoop, BaseException | None], list[Any]] = {}
        reserved = 0
        for i, w in enumerate(items):
            error = failed.get(i, exc)
            # Settled by the writer: a cancelled waiter (client gone, shutdown) must not
            # release bytes of a write that still commits.
            self._settled(w.size, written=error is None)
            if error is None:
                reserved += w.size
            if w.loop is not None and w.future is not None:
                by_loop.setdefault((w.loop, error), []).append(w.future)
            elif w.event is not None:
                w.error = error
                w.event.set()
        if exc is None and stored != reserved:  # frames reserved an estimate of their size
            self._corrected(stored - reserved)
        for (loop, error), futures in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the event loop is already closed
                loop.call_soon_threadsafe(_settle_all, futures, error)


def _records(items: list[Waiter]) -> tuple[list[LogRecord], dict[int, BaseException]]:
    """The records of one group commit, in queue order, and the waiters (by index) whose
    frame could not be encoded."""
    if all(w.frame is None for w in items):
        return [r for w in items for r in w.records], {}
    return frames.records([(w.frame, w.records, w.size) for w in items])
