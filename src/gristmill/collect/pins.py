"""Which schema version an event without ``schema_version`` is checked against.

The answer is the source's pin (:mod:`gristmill.meta.schema_pins`): the newest version when
the source first sent the event type. Pins are read once per (pack, source, event type) and
process, then re-read after ``ttl_s`` so an operator's move reaches every collector process;
the hot path is one dict lookup. Without a metadata store (tests, in-process senders) the pins
live in memory, with the same first-send rule.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class PinBackend(Protocol):
    def pin_first(self, pack: str, source: str, event_type: str, version: int) -> int: ...


class MemoryPins:
    """Pins of one process (no metadata store)."""

    def __init__(self) -> None:
        self._pins: dict[tuple[str, str, str], int] = {}

    def pin_first(self, pack: str, source: str, event_type: str, version: int) -> int:
        return self._pins.setdefault((pack, source, event_type), version)


class Pins:
    def __init__(self, backend: PinBackend | None = None, ttl_s: float = 30.0) -> None:
        self.backend: PinBackend = backend or MemoryPins()
        self.ttl_s = ttl_s
        self._cache: dict[tuple[str, str, str], tuple[int, float]] = {}
        self._lock = threading.Lock()

    def version(self, pack: str, source: str, event_type: str, newest: int) -> int:
        """The pinned version, pinning ``newest`` on the first send."""
        key = (pack, source, event_type)
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[1] < self.ttl_s:
            return hit[0]
        with self._lock:
            v = self.backend.pin_first(pack, source, event_type, newest)
            self._cache[key] = (v, now)
        return v

    def forget(self) -> None:
        """Drop the cache (an operator moved a pin in this process)."""
        with self._lock:
            self._cache.clear()
