"""Google Cloud Pub/Sub as the log (``google-cloud-pubsub``, extra ``gristmill[pubsub]``).

* append: each call's records are published with one ordering key (``p0`` … ``p<n-1>``,
  round robin), their pack, source, count and receive time as message attributes; the call
  returns once Pub/Sub accepted every message (a failure fails the append: the collector
  answers 5xx and the client retries). A failed ordering key is resumed before the next use.
* read: the consumer group ``g`` pulls subscription ``<topic>.<g>`` (created with message
  ordering and ``ack_deadline_s`` if missing). Pub/Sub has **no offsets**: each pulled message
  gets the next number past the warehouse's offset, kept with its ack id until the load
  commits. A loader that re-reads after a failed load is served the same messages with the
  same numbers (so the same batch id and ledger row).
* commit: acknowledges every held message up to the offset, after the warehouse commit. A
  crash in between leaves them unacknowledged: Pub/Sub redelivers them after the ack deadline,
  under new numbers, and the warehouse's dedupe keys make them duplicates (counted, not
  loaded twice). Exactly-once *in effect* rests on the dedupe window, not on offsets.

What it cannot do, compared with the stream logs: re-read what was acknowledged, position a
reader, or count what other processes appended. ``snapshot`` counts what *this process*
appended and holds; conservation across processes is the warehouse ledger's alone
(docs/event-bus.md). The pure pieces — attributes, ordering keys, batching, error
classification — need no service and are tested without one.
"""

from __future__ import annotations

import contextlib
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gristmill.config import PubSubLogSettings
from gristmill.log.base import LogBatch, LogEntry, LogFull, LogRecord, LogSnapshot
from gristmill.log.broker import record_from, record_headers

MAX_MESSAGE_BYTES = 10_000_000
"""Pub/Sub's limit on one message (data plus attributes)."""
MAX_REQUEST_MESSAGES = 1000
MAX_REQUEST_BYTES = 10_000_000

RETRYABLE = frozenset(
    {
        "ServiceUnavailable",
        "DeadlineExceeded",
        "InternalServerError",
        "Aborted",
        "ResourceExhausted",
        "Unknown",
        "TooManyRequests",
        "GatewayTimeout",
        "TimeoutError",
        "ConnectionError",
    }
)
FATAL = frozenset(
    {"NotFound", "PermissionDenied", "Unauthenticated", "InvalidArgument", "FailedPrecondition"}
)


def classify(exc: BaseException) -> str:
    """``retry`` (the service or network is busy: try again), ``fatal`` (missing topic or
    subscription, no permission, a bad request: retrying changes nothing) or ``unknown``, by
    the names of the exception's classes (``google.api_core.exceptions`` names them after
    gRPC codes), so this runs without the library."""
    names = {c.__name__ for c in type(exc).__mro__}
    if names & FATAL:
        return "fatal"
    if names & RETRYABLE:
        return "retry"
    return "unknown"


def ordering_key(partition: int) -> str:
    return f"p{partition}"


def attributes(record: LogRecord) -> dict[str, str]:
    """A record's header fields as message attributes (strings, as Pub/Sub requires)."""
    out = record_headers(record)
    if record.suppressed:
        out["gm-suppressed"] = str(record.suppressed)
    return out


class PoisonMessage(ValueError):
    """A message on the log's topic that no Gristmill collector published."""


def record_of(attrs: Mapping[str, str], data: bytes) -> LogRecord:
    try:
        r = record_from(dict(attrs), data)
    except (KeyError, ValueError) as exc:
        raise PoisonMessage(f"message without Gristmill attributes: {exc}") from exc
    suppressed = int(attrs.get("gm-suppressed", "0"))
    return LogRecord(r.pack, r.source, r.count, r.received_at, r.body, suppressed)


def message_size(record: LogRecord) -> int:
    return len(record.body) + sum(len(k) + len(v) for k, v in attributes(record).items())


def publish_batches(records: Sequence[LogRecord]) -> list[list[LogRecord]]:
    """Records split into publish requests within Pub/Sub's limits (messages and bytes per
    request); a single record over the message limit is refused before anything is sent."""
    out: list[list[LogRecord]] = []
    size = 0
    for r in records:
        n = message_size(r)
        if n > MAX_MESSAGE_BYTES:
            raise ValueError(f"a record of {n} bytes is over Pub/Sub's {MAX_MESSAGE_BYTES}")
        if not out or len(out[-1]) >= MAX_REQUEST_MESSAGES or size + n > MAX_REQUEST_BYTES:
            out.append([])
            size = 0
        out[-1].append(r)
        size += n
    return out


@dataclass(slots=True)
class _Held:
    offset: int
    ack_id: str
    record: LogRecord


class PubSubLog:
    name = "pubsub"
    background_commit = False
    idle_when_empty = False

    def __init__(self, cfg: PubSubLogSettings) -> None:
        if not cfg.project:
            raise ValueError("set GRISTMILL_LOG__PROJECT (or PUBSUB_PROJECT_ID)")
        try:
            from google.api_core import exceptions as gexc
            from google.cloud import pubsub_v1
        except ImportError as exc:
            raise ValueError(f"{exc.name} is missing: pip install 'gristmill[pubsub]'") from exc
        self.cfg = cfg
        self.log_id = f"pubsub:{cfg.project}/{cfg.topic}"
        self._gexc = gexc
        self._publisher: Any = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(
                max_messages=cfg.publish_max_messages, max_latency=cfg.publish_max_latency_s
            ),
            publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True),
        )
        self._subscriber: Any = pubsub_v1.SubscriberClient()
        self.topic_path = self._publisher.topic_path(cfg.project, cfg.topic)
        self._lock = threading.Lock()
        self._next = 0
        self._held: dict[str, list[_Held]] = defaultdict(list)
        self._last: dict[str, int] = defaultdict(int)
        self._committed: dict[str, int] = defaultdict(int)
        self._received: dict[tuple[str, str], int] = defaultdict(int)
        self._subs: set[str] = set()
        with contextlib.suppress(gexc.AlreadyExists):
            self._publisher.create_topic(name=self.topic_path)

    def subscription_path(self, group: str) -> str:
        name = f"{self.cfg.subscription_prefix or self.cfg.topic}.{group}"
        path: str = self._subscriber.subscription_path(self.cfg.project, name)
        if path not in self._subs:
            with contextlib.suppress(self._gexc.AlreadyExists):
                self._subscriber.create_subscription(
                    request={
                        "name": path,
                        "topic": self.topic_path,
                        "enable_message_ordering": True,
                        "ack_deadline_seconds": self.cfg.ack_deadline_s,
                    }
                )
            self._subs.add(path)
        return path

    # -- append -----------------------------------------------------------------------------
    def _pending_bytes(self) -> int:
        return sum(len(h.record.body) for held in self._held.values() for h in held)

    def append(self, records: Sequence[LogRecord]) -> None:
        if not records:
            return
        pending = self._pending_bytes()
        if pending > self.cfg.max_bytes:
            raise LogFull(pending, self.cfg.max_bytes, self.cfg.retry_after_s)
        with self._lock:
            key = ordering_key(self._next)
            self._next = (self._next + 1) % self.cfg.partitions
        futures = []
        for batch in publish_batches(records):
            for r in batch:
                futures.append(
                    self._publisher.publish(
                        self.topic_path, r.body, ordering_key=key, **attributes(r)
                    )
                )
        try:
            for f in futures:
                f.result(timeout=60)
        except Exception:
            # A failed key refuses further publishes until resumed (its order is broken).
            self._publisher.resume_publish(self.topic_path, key)
            raise
        with self._lock:
            for r in records:
                self._received[(r.pack, r.source)] += r.count

    async def append_async(self, records: Sequence[LogRecord]) -> None:
        import asyncio

        await asyncio.to_thread(self.append, records)

    # -- consume ----------------------------------------------------------------------------
    def read(
        self, group: str, max_events: int, timeout_s: float, after: int | None = None
    ) -> LogBatch:
        start = self.committed(group) if after is None else after
        with self._lock:
            held = self._held[group]
            replay = [h for h in held if h.offset > start]
        if replay:
            return LogBatch(group, _take(replay, max_events))
        path = self.subscription_path(group)
        try:
            response = self._subscriber.pull(
                request={"subscription": path, "max_messages": 500},
                timeout=max(timeout_s, 1.0),
            )
        except self._gexc.DeadlineExceeded:
            return LogBatch(group)
        out: list[_Held] = []
        with self._lock:
            last = max(self._last[group], start)
            for m in response.received_messages:
                try:
                    record = record_of(m.message.attributes, bytes(m.message.data))
                except PoisonMessage:
                    # Not ours: acknowledged and skipped (``gristmill consume pubsub`` is
                    # the way in for foreign messages, with quarantine).
                    self._subscriber.acknowledge(
                        request={"subscription": path, "ack_ids": [m.ack_id]}
                    )
                    continue
                last += 1
                out.append(_Held(last, m.ack_id, record))
            self._last[group] = last
            held.extend(out)
        return LogBatch(group, _take(out, max_events))

    def commit(self, group: str, offset: int) -> None:
        with self._lock:
            held = self._held[group]
            done = [h for h in held if h.offset <= offset]
            self._held[group] = [h for h in held if h.offset > offset]
            self._committed[group] = max(self._committed[group], offset)
        if done:
            path = self.subscription_path(group)
            ids = [h.ack_id for h in done]
            for i in range(0, len(ids), 1000):
                self._subscriber.acknowledge(
                    request={"subscription": path, "ack_ids": ids[i : i + 1000]}
                )

    def committed(self, group: str) -> int:
        return self._committed[group]

    def snapshot(self, group: str, after_offset: int | None = None) -> LogSnapshot:
        """What this process appended, and holds for ``group`` past ``after_offset``."""
        after = self.committed(group) if after_offset is None else after_offset
        with self._lock:
            held = [h for h in self._held[group] if h.offset > after]
            received = dict(self._received)
        pending: dict[tuple[str, str], int] = defaultdict(int)
        oldest: dict[str, int] = {}
        for h in held:
            pending[(h.record.pack, h.record.source)] += h.record.count
            oldest[h.record.pack] = min(
                oldest.get(h.record.pack, h.record.received_at), h.record.received_at
            )
        return LogSnapshot(
            received=received,
            pending=dict(pending),
            committed_offset=min(after, self.committed(group)),
            depth_records=len(held),
            depth_events=sum(h.record.count for h in held),
            depth_bytes=sum(len(h.record.body) for h in held),
            oldest_pending_received_at=min(oldest.values()) if oldest else None,
            oldest_pending=oldest,
        )

    def check_ready(self) -> list[str]:
        try:
            self._publisher.get_topic(request={"topic": self.topic_path}, timeout=5)
        except Exception as exc:
            return [f"pubsub log is not reachable ({classify(exc)}): {type(exc).__name__}: {exc}"]
        return []

    def close(self) -> None:
        try:
            self._publisher.stop()
        finally:
            self._subscriber.close()


def _take(held: Sequence[_Held], max_events: int) -> list[LogEntry]:
    out: list[LogEntry] = []
    events = 0
    for h in held:
        if out and events + h.record.count > max_events:
            break
        out.append(LogEntry(h.offset, h.record))
        events += h.record.count
    return out
