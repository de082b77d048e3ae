"""Send events over HTTP the way a careful client does: batches, concurrency, retries that
honour ``Retry-After`` on 429/503 and back off on 5xx or lost connections."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from queue import Empty, Queue
from typing import Any

import httpx
import orjson


@dataclass
class SendStats:
    requests: int = 0
    retries: int = 0
    accepted: int = 0
    rejected: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, status: int, accepted: int = 0, rejected: int = 0) -> None:
        with self.lock:
            self.requests += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.accepted += accepted
            self.rejected += rejected


def post_batch(
    client: httpx.Client,
    url: str,
    key: str,
    body: bytes,
    stats: SendStats,
    *,
    max_attempts: int = 1000,
    path: str = "/v1/events",
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    delay = 0.05
    for _attempt in range(max_attempts):
        try:
            r = client.post(url + path, content=body, headers=headers)
        except httpx.TransportError:
            with stats.lock:
                stats.retries += 1
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            continue
        if r.status_code in (429, 503) or r.status_code >= 500:
            with stats.lock:
                stats.retries += 1
                stats.statuses[r.status_code] = stats.statuses.get(r.status_code, 0) + 1
            ra = r.headers.get("retry-after")
            time.sleep(float(ra) if ra and ra.isdigit() else delay)
            delay = min(delay * 2, 1.0)
            continue
        data: dict[str, Any] = r.json() if r.content else {}
        if r.status_code in (200, 207):
            stats.add(r.status_code, data.get("accepted", 0), data.get("rejected", 0))
        elif r.status_code == 422:
            stats.add(r.status_code, 0, len(data.get("errors", [])))
        else:
            stats.add(r.status_code)
        return r
    raise RuntimeError(f"gave up after {max_attempts} attempts")


def send_events(
    url: str,
    keys: dict[str, str],
    events: Sequence[dict[str, Any]],
    sources: Sequence[str],
    *,
    batch_size: int = 500,
    concurrency: int = 4,
    on_progress: Callable[[int], None] | None = None,
) -> SendStats:
    """Send events in batches per source, with ``concurrency`` threads; blocks until done."""
    stats = SendStats()
    work: Queue[tuple[str, bytes, int]] = Queue()
    pending: dict[str, list[dict[str, Any]]] = {}
    for ev, src in zip(events, sources, strict=True):
        buf = pending.setdefault(src, [])
        buf.append(ev)
        if len(buf) >= batch_size:
            work.put((src, orjson.dumps(buf), len(buf)))
            pending[src] = []
    for src, buf in pending.items():
        if buf:
            work.put((src, orjson.dumps(buf), len(buf)))

    def worker() -> None:
        with httpx.Client(timeout=60) as client:
            while True:
                try:
                    src, body, n = work.get_nowait()
                except Empty:
                    return
                post_batch(client, url, keys[src], body, stats)
                if on_progress is not None:
                    on_progress(n)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return stats
