"""Gristmill's Python SDK: send events from application code.

::

    from gristmill.client import Client

    gm = Client("gmw_…", host="http://127.0.0.1:8765")
    gm.track("order_created", {"order_id": "o-1", "store_id": "s-1",
                               "vendor_store_id": "v-1", "amount_cents": 125000})
    gm.flush()        # optional: wait until everything queued is delivered (or given up)

Events are queued in memory and sent in batches by a background thread (``flush_at`` events
or every ``flush_interval`` seconds). Delivery retries with exponential backoff and honours
``Retry-After`` on 429/503; a 413 splits the batch. The queue is bounded (``max_queue``):
when it is full, new events are counted in ``stats.dropped`` instead of growing memory.

**Fork safety.** A client created before ``os.fork()`` (a gunicorn or uWSGI master) works in
the child: the child gets a fresh lock, queue and sender thread, and does not re-send what the
parent had queued. The Segment and PostHog clients lose events here, because their thread does
not survive the fork while their queue does.

Retries may deliver an event twice; the server's dedupe on ``event_id`` (generated here once
per ``track``) makes the effect exactly once.
"""

from __future__ import annotations

import atexit
import gzip
import http.client
import logging
import os
import random
import threading
import time
import urllib.parse
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

log = logging.getLogger(__name__)

__all__ = ["Client", "Stats"]

RETRY = frozenset({408, 429, 500, 502, 503, 504})
ErrorHook = Callable[[Exception, list[dict[str, Any]]], None]


@dataclass
class Stats:
    queued: int = 0
    sent: int = 0
    """Events the server accepted (2xx)."""
    rejected: int = 0
    """Events the server refused and put in quarantine (bad schema etc.); never retried."""
    failed: int = 0
    """Events given up after retries or refused as a whole (401, 403 …)."""
    dropped: int = 0
    """Events not queued because the queue was full."""
    retries: int = 0


class SendError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:300]!r}")
        self.status = status
        self.body = body


class Client:
    def __init__(
        self,
        write_key: str,
        host: str = "http://127.0.0.1:8765",
        *,
        flush_at: int = 100,
        flush_interval: float = 0.5,
        max_queue: int = 10_000,
        max_retries: int = 10,
        max_backoff: float = 30.0,
        timeout: float = 10.0,
        compress: bool = True,
        on_error: ErrorHook | None = None,
    ) -> None:
        url = urllib.parse.urlsplit(host)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"host must be http(s)://host[:port], got {host!r}")
        self.write_key = write_key
        self._url = url
        self.flush_at = flush_at
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.max_retries = max_retries
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.compress = compress
        self.on_error = on_error
        self.stats = Stats()
        self._reset()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))
        atexit.register(_at_exit, ref)

    @classmethod
    def from_env(
        cls,
        write_key: str,
        host: str = "http://127.0.0.1:8765",
        environ: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Client:
        """A client batched as an application's sink is: ``EVENT_SINK_BATCH_SIZE`` events
        (``flush_at``) or every ``EVENT_SINK_FLUSH_INTERVAL_MS`` (``flush_interval``), unless
        given here (docs/event-bus.md)."""
        env = os.environ if environ is None else environ
        batching: dict[str, Any] = {}
        if size := env.get("EVENT_SINK_BATCH_SIZE"):
            batching["flush_at"] = int(size)
        if ms := env.get("EVENT_SINK_FLUSH_INTERVAL_MS"):
            batching["flush_interval"] = int(ms) / 1000
        return cls(write_key, host, **{**batching, **kwargs})

    def _reset(self) -> None:
        """Fresh state: at construction and in a forked child (the parent's thread is not
        there, and its queued events are the parent's to send)."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: deque[dict[str, Any]] = deque()
        self._in_flight = 0
        self._closed = False
        self._flush_now = False
        self._thread: threading.Thread | None = None
        self._conn: http.client.HTTPConnection | None = None

    # -- public ---------------------------------------------------------------------------
    def track(
        self,
        event_type: str,
        properties: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
        occurred_at: datetime | str | None = None,
        schema_version: int | None = None,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        session_id: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> str:
        """Queue one event; returns its event id. Never blocks on the network."""
        if os.getpid() != self._pid:  # forked without the at-fork hook (e.g. os.fork in C)
            self._reset()
        eid = event_id or str(uuid.uuid4())
        when = occurred_at or datetime.now(UTC)
        ev: dict[str, Any] = {
            "event_id": eid,
            "event_type": event_type,
            "occurred_at": when if isinstance(when, str) else when.astimezone(UTC).isoformat(),
            "properties": properties or {},
        }
        for k, v in (
            ("schema_version", schema_version),
            ("user_id", user_id),
            ("anonymous_id", anonymous_id),
            ("session_id", session_id),
            ("context", context),
        ):
            if v is not None:
                ev[k] = v
        with self._lock:
            if self._closed:
                raise RuntimeError("client is shut down")
            if len(self._queue) >= self.max_queue:
                self.stats.dropped += 1
                return eid
            self._queue.append(ev)
            self.stats.queued += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="gristmill-sender", daemon=True
                )
                self._thread.start()
            if len(self._queue) >= self.flush_at:
                self._wake.notify()
        return eid

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued now; wait until it is delivered or given up.
        Returns False if ``timeout`` ran out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._flush_now = True
            self._wake.notify()
            while self._queue or self._in_flight:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._wake.wait(0.05 if left is None else min(0.05, left))
        return True

    def shutdown(self, timeout: float | None = 30.0) -> None:
        self.flush(timeout)
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._drop_connection()

    # -- sending --------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._wake.wait(self.flush_interval)
                    if self._queue:
                        break
                if not self._queue and self._closed:
                    self._drop_connection()
                    return
                if not self._flush_now and len(self._queue) < self.flush_at:
                    self._wake.wait(self.flush_interval)
                batch = [self._queue.popleft() for _ in range(min(self.flush_at, len(self._queue)))]
                if not self._queue:
                    self._flush_now = False
                self._in_flight += len(batch)
            try:
                self._deliver(batch)
            finally:
                with self._lock:
                    self._in_flight -= len(batch)
                    self._wake.notify_all()

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        """One batch, with retries; splits on 413; reports failures to ``on_error``."""
        delay = 0.1
        error: Exception = RuntimeError("not sent")
        for attempt in range(self.max_retries + 1):
            try:
                status, body, retry_after = self._post(batch)
            except OSError as exc:  # connection refused, reset, timeout
                status, body, retry_after, error = 0, b"", None, exc
            else:
                error = SendError(status, body)
            if status in (200, 207, 422):
                data = orjson.loads(body) if body else {}
                rejected = data.get("rejected", 0) if status != 422 else len(data.get("errors", []))
                self.stats.sent += len(batch) - rejected
                self.stats.rejected += rejected
                if rejected and self.on_error:
                    self.on_error(SendError(status, body), batch)
                return
            if status == 413 and len(batch) > 1:
                half = len(batch) // 2
                self._deliver(batch[:half])
                self._deliver(batch[half:])
                return
            if status and status not in RETRY:
                break
            if attempt == self.max_retries:
                break
            self.stats.retries += 1
            wait = retry_after if retry_after is not None else delay * (1 + random.random())  # noqa: S311
            time.sleep(min(self.max_backoff, wait))
            delay = min(self.max_backoff, delay * 2)
        self.stats.failed += len(batch)
        log.warning("gristmill: giving up on %d events: %s", len(batch), error)
        if self.on_error:
            self.on_error(error, batch)

    def _post(self, batch: list[dict[str, Any]]) -> tuple[int, bytes, float | None]:
        body = orjson.dumps(batch)
        headers = {
            "Authorization": f"Bearer {self.write_key}",
            "Content-Type": "application/json",
            "User-Agent": "gristmill-python",
        }
        if self.compress:
            body = gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        for _ in range(2):  # a kept-alive connection the server closed: reconnect once
            conn = self._connection()
            try:
                conn.request("POST", self._url.path.rstrip("/") + "/v1/events", body, headers)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._drop_connection()
                continue
            except OSError:
                self._drop_connection()
                raise
            ra = resp.getheader("Retry-After")
            return resp.status, data, float(ra) if ra and ra.isdigit() else None
        raise ConnectionResetError("server closed the connection twice")

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = (
                http.client.HTTPSConnection
                if self._url.scheme == "https"
                else http.client.HTTPConnection
            )
            self._conn = cls(self._url.hostname or "", self._url.port, timeout=self.timeout)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _after_fork(ref: weakref.ref[Client]) -> None:
    client = ref()
    if client is not None:
        client._reset()


def _at_exit(ref: weakref.ref[Client]) -> None:
    client = ref()
    if client is not None and client._pid == os.getpid() and client._thread is not None:
        client.flush(timeout=5)
