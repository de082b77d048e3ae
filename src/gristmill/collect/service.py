"""The collector service: body -> frame -> durable log append -> HTTP answer.

:class:`Parser` is the stateless half (bytes in, frame and answer out); :class:`Collector`
binds it to a log. HTTP ingest and quarantine replay take the same path.

Parsing runs in the serving process. A pool of parser processes was measured and rejected
on the 2-core target: pickling bodies and replies across processes cost more CPU than the
parsing it moved (31k vs 37k events/s end to end, see BENCHMARKS.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from gristmill.collect.body import Undecodable, decode_body
from gristmill.collect.cloudevents import CloudEvents
from gristmill.collect.counters import CollectCounters
from gristmill.collect.dialect import Dialect
from gristmill.collect.enrich import Enricher
from gristmill.collect.items import BodyNotJSON, Item, explain
from gristmill.collect.native import Native
from gristmill.collect.pins import Pins
from gristmill.collect.pipeline import (
    Batch,
    Outcome,
    RequestContext,
    build_frame,
    event_plans,
    frame_layout,
    whole_body_reject,
)
from gristmill.collect.posthog import PostHog, PostHogV1
from gristmill.collect.segment import Segment
from gristmill.collect.snowplow import Snowplow, SnowplowPixel
from gristmill.config import LimitSettings
from gristmill.core.clock import now_us
from gristmill.core.envelope import Frame, Layout, encode_frame
from gristmill.core.errors import Problem, bad_request, payload_too_large, unavailable
from gristmill.core.subjects import Suppression
from gristmill.log.base import EventLog, FrameLog, LogFull, LogRecord
from gristmill.log.frames import SMALL as SMALL_FRAME
from gristmill.pack.models import Pack
from gristmill.schema.registry import SchemaRegistry

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Prepared:
    """A frame ready to append, plus what to tell the client once it is durable."""

    frame: Frame
    outcome: Outcome | None
    problem: Problem | None = None
    """A whole-request error to answer after the (quarantine-only) frame is durable."""
    layout: Layout = field(default_factory=dict)
    """Where the pack routes each event type (empty for a frame without events)."""

    def record(self) -> LogRecord:
        f = self.frame
        body = encode_frame(f, self.layout)
        return LogRecord(f.pack, f.source, f.count, f.received_at, body, f.suppressed)


@dataclass(frozen=True, slots=True)
class Reply:
    """One request's result in a form that crosses a process boundary: the record to append
    (if any) and the HTTP answer to give once it is durable."""

    record: LogRecord | None
    status: int
    body: bytes
    media_type: str = "application/json"
    headers: Sequence[tuple[str, str]] = field(default_factory=tuple)
    problem: str | None = None
    """The problem type slug of an error answer, for counters."""

    @classmethod
    def of(cls, dialect: Dialect, p: Problem, record: LogRecord | None = None) -> Reply:
        """A whole-request error, in the dialect's own error format."""
        a = dialect.problem(p)
        return cls(record, a.status, a.body, a.media_type, a.headers, p.slug)


@dataclass(frozen=True, slots=True)
class Opened:
    """A request body read as far as it can be before knowing who sent it."""

    raw: bytes
    batch: Batch | None
    failure: str | None = None
    """Why the body could not be split (kept in quarantine once the sender is known)."""
    received_at: int = 0


_ALL: tuple[Dialect, ...] = (
    Native(),
    Segment(),
    PostHog(),
    PostHogV1(),
    Snowplow(),
    SnowplowPixel(),
    CloudEvents(),
)
DIALECTS: dict[str, Dialect] = {d.name: d for d in _ALL}
"""Every wire format the collector speaks, by name (the ``dialect`` of a frame)."""


class Parser:
    """Stateless body -> frame conversion for a set of packs."""

    def __init__(
        self,
        packs: Mapping[str, Pack],
        limits: LimitSettings,
        suppression: Suppression | None = None,
        enrichers: Mapping[str, Enricher] | None = None,
        pins: Pins | None = None,
    ) -> None:
        self.packs = dict(packs)
        self.counters = CollectCounters()
        self.pins = pins or Pins()
        """Which version an unversioned event means, per source (in memory without a store)."""
        self.enrichers = dict(enrichers or {})
        self.suppression = suppression or Suppression()
        """Erased subjects (``gristmill.governance`` swaps in new snapshots)."""
        self.registries = {name: SchemaRegistry(p) for name, p in packs.items()}
        self.plans = {name: event_plans(p) for name, p in packs.items()}
        self.layouts = {name: frame_layout(p) for name, p in packs.items()}
        self.limits = limits

    def body_limit(self, dialect: Dialect) -> int:
        ours = self.limits.max_request_bytes
        return min(ours, dialect.body_limit or ours)

    def open(
        self,
        dialect: Dialect,
        raw: bytes,
        content_type: str = "",
        content_encoding: str | None = None,
        query: Mapping[str, str] | None = None,
        received_at: int | None = None,
        historical: bool = False,
    ) -> Opened:
        """Decompress and split. Raises :class:`Problem` for requests that leave nothing to
        keep (too large, empty, unsupported encoding). ``historical`` marks an import of old
        events whatever the wire format says: device times are kept as they are."""
        rec_at = now_us() if received_at is None else received_at
        lim = self.limits
        try:
            body = decode_body(raw, content_encoding, self.body_limit(dialect))
            batch = dialect.split(body, content_type, query or {})
        except (Undecodable, BodyNotJSON) as exc:
            if not raw.strip() and not any(not k.startswith("_") for k in query or {}):
                raise bad_request("empty-body", "the body is empty") from exc
            return Opened(raw, None, explain(str(exc)), rec_at)
        except RecursionError:
            return Opened(raw, None, "body is JSON nested too deeply", rec_at)
        if not batch.items:
            raise bad_request("empty-body", "the body holds no events")
        if len(batch.items) > lim.max_events_per_request:
            problem = payload_too_large(lim.max_events_per_request, "event count")
            problem.detail = (
                f"the request holds {len(batch.items)} events, over the limit of "
                f"{lim.max_events_per_request} per request"
            )
            problem.extra = {"limit_events": lim.max_events_per_request}
            raise problem
        if historical and not batch.historical:
            batch = replace(batch, historical=True)
        return Opened(raw, batch, None, rec_at)

    def frame(
        self, dialect: Dialect, pack: str, source: str, opened: Opened, *, count: bool = True
    ) -> Prepared:
        """``count=False`` keeps the frame out of the collector counters (a replay of stored
        events is not new traffic, and would skew the source's quarantine rate)."""
        if opened.batch is None:
            assert opened.failure is not None
            frame = whole_body_reject(
                pack, source, dialect.name, opened.received_at, opened.raw, opened.failure
            )
            if count:
                self.counters.add(frame)
            return Prepared(frame, None, bad_request("undecodable-body", opened.failure))
        ctx = RequestContext(
            pack=self.packs[pack],
            registry=self.registries[pack],
            source=source,
            dialect=dialect.name,
            received_at=opened.received_at,
            max_event_bytes=self.limits.max_event_bytes,
            plans=self.plans[pack],
            batch=opened.batch,
            mapping=dialect.mapping,
            suppress=self.suppression.current or None,
            enrich=self.enrichers.get(pack),
            pins=self.pins,
        )
        outcome = build_frame(opened.batch.items, ctx, dialect.normalize)
        if count:
            self.counters.add(outcome.frame)
        return Prepared(outcome.frame, outcome, layout=self.layouts[pack])

    def prepare(
        self,
        *,
        pack: str,
        source: str,
        dialect: str,
        raw: bytes,
        content_type: str = "",
        content_encoding: str | None = None,
        received_at: int | None = None,
        query: Mapping[str, str] | None = None,
    ) -> Prepared:
        """Open and frame in one step (replay, tests, in-process senders)."""
        d = DIALECTS[dialect]
        return self.frame(
            d, pack, source, self.open(d, raw, content_type, content_encoding, query, received_at)
        )

    def prepare_replay(self, *, pack: str, source: str, dialect: str, raw: bytes) -> Prepared:
        """Frame a quarantined item (or whole body) again with the pack as it is now.

        What was quarantined is either a whole body or one item of a batch; the dialect's
        split decides, and an item that is not a batch of its own is taken as one item. The
        batch's ``sent_at`` is not kept with the item, so device times are taken as they are.
        """
        d = DIALECTS.get(dialect, DIALECTS["native"])
        try:
            batch = d.split(raw, "application/json", {})
        except (BodyNotJSON, RecursionError):
            batch = Batch([])
        items = batch.items or [Item(0, raw)]
        opened = Opened(raw, Batch(items, historical=True, call=batch.call), None, now_us())
        return self.frame(d, pack, source, opened, count=False)

    def reply(self, dialect: Dialect, pack: str, source: str, opened: Opened) -> Reply:
        prepared = self.frame(dialect, pack, source, opened)
        return self.answer(dialect, prepared, prepared.record())

    @staticmethod
    def answer(dialect: Dialect, prepared: Prepared, record: LogRecord | None) -> Reply:
        """What to tell the client once ``prepared`` is durable."""
        if prepared.problem is not None:
            return Reply.of(dialect, prepared.problem, record)
        assert prepared.outcome is not None
        a = dialect.answer(prepared.outcome)
        problem = None if a.status < 300 else "events-rejected"
        return Reply(record, a.status, a.body, a.media_type, a.headers, problem)


class Collector(Parser):
    """A :class:`Parser` bound to a log."""

    def __init__(
        self,
        packs: Mapping[str, Pack],
        log: EventLog,
        limits: LimitSettings,
        suppression: Suppression | None = None,
        enrichers: Mapping[str, Enricher] | None = None,
        pins: Pins | None = None,
    ) -> None:
        super().__init__(packs, limits, suppression, enrichers, pins)
        self.log = log
        self.frames = log if isinstance(log, FrameLog) else None
        """The log takes small frames unencoded and merges a source's requests
        (``log.frames``)."""

    async def finish(self, dialect: Dialect, pack: str, source: str, opened: Opened) -> Reply:
        """Frame the request and answer once its frame is durable: 503 with ``Retry-After``
        when the log is full, and when it could not store the frame (a broker that is down
        or closed the connection, a disk error). The second is no server bug a client should
        give up on: the log reconnects, and a re-sent event is deduplicated by its id."""
        prepared = self.frame(dialect, pack, source, opened)
        merged = self.frames is not None and 0 < prepared.frame.count <= SMALL_FRAME
        reply = self.answer(dialect, prepared, None if merged else prepared.record())
        if merged or reply.record is not None:
            try:
                if merged:
                    assert self.frames is not None
                    await self.frames.append_frame_async(prepared.frame, prepared.layout)
                else:
                    assert reply.record is not None
                    await self.log.append_async([reply.record])
            except LogFull as exc:
                p = unavailable(str(exc), exc.retry_after_s)
                p.extra.update(exc.fields())
                return Reply.of(dialect, p)
            except Exception as exc:
                log.exception("the %s log did not store a request", self.log.name)
                retry_s = int(getattr(self.log, "retry_after_s", 1))
                detail = (
                    f"the event log could not store this request ({type(exc).__name__}: {exc});"
                    " it may not have been kept: send it again (events are deduplicated by"
                    " their id)"
                )
                return Reply.of(dialect, unavailable(detail, retry_s))
        return reply

    async def submit(self, prepared: Prepared) -> None:
        """Append durably; raises :class:`~gristmill.log.base.LogFull` when over the cap."""
        await self.log.append_async([prepared.record()])

    def submit_sync(self, prepared: Prepared) -> None:
        self.log.append([prepared.record()])
