"""The collector service: body -> frame -> durable log append -> HTTP answer.

:class:`Parser` is the stateless half (bytes in, frame and answer out); :class:`Collector`
binds it to a log. HTTP ingest and quarantine replay take the same path.

Parsing runs in the serving process. A pool of parser processes was measured and rejected
on the 2-core target: pickling bodies and replies across processes cost more CPU than the
parsing it moved (31k vs 37k events/s end to end, see BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gristmill.collect.body import Undecodable, decode_body
from gristmill.collect.items import BodyNotJSON, split_items
from gristmill.collect.native import normalize_native, render_native
from gristmill.collect.pipeline import (
    Normalizer,
    Outcome,
    RequestContext,
    build_frame,
    event_plans,
    whole_body_reject,
)
from gristmill.config import LimitSettings
from gristmill.core.clock import now_us
from gristmill.core.envelope import Frame, encode_frame
from gristmill.core.errors import Problem, bad_request, payload_too_large, unavailable
from gristmill.log.base import EventLog, LogFull, LogRecord
from gristmill.pack.models import Pack
from gristmill.schema.registry import SchemaRegistry

DIALECTS: dict[str, Normalizer] = {"native": normalize_native}


@dataclass(slots=True)
class Prepared:
    """A frame ready to append, plus what to tell the client once it is durable."""

    frame: Frame
    outcome: Outcome | None
    problem: Problem | None = None
    """A whole-request error to answer after the (quarantine-only) frame is durable."""

    def record(self) -> LogRecord:
        f = self.frame
        return LogRecord(f.pack, f.source, f.count, f.received_at, encode_frame(f))


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
    def of_problem(cls, p: Problem, record: LogRecord | None = None) -> Reply:
        from gristmill.core.errors import PROBLEM_JSON, problem_bytes

        return cls(
            record, p.status, problem_bytes(p), PROBLEM_JSON, tuple(p.headers.items()), p.slug
        )


class Parser:
    """Stateless body -> frame conversion for a set of packs (safe to run in any process)."""

    def __init__(self, packs: Mapping[str, Pack], limits: LimitSettings) -> None:
        self.packs = dict(packs)
        self.registries = {name: SchemaRegistry(p) for name, p in packs.items()}
        self.plans = {name: event_plans(p) for name, p in packs.items()}
        self.limits = limits

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
    ) -> Prepared:
        """Parse, normalize and validate a body. Raises :class:`Problem` for requests that
        leave nothing to keep (too large, empty); returns a quarantine frame for bodies that
        arrived but cannot be read, so their bytes are kept."""
        rec_at = now_us() if received_at is None else received_at
        lim = self.limits
        try:
            body = decode_body(raw, content_encoding, lim.max_request_bytes)
            items = split_items(body, content_type)
        except (Undecodable, BodyNotJSON) as exc:
            frame = whole_body_reject(pack, source, dialect, rec_at, raw, str(exc))
            return Prepared(frame, None, bad_request("undecodable-body", str(exc)))
        if not items:
            raise bad_request("empty-body", "the body holds no events")
        if len(items) > lim.max_events_per_request:
            problem = payload_too_large(lim.max_events_per_request, "event count")
            problem.detail = (
                f"the request holds {len(items)} events, over the limit of "
                f"{lim.max_events_per_request} per request"
            )
            problem.extra = {"limit_events": lim.max_events_per_request}
            raise problem
        ctx = RequestContext(
            pack=self.packs[pack],
            registry=self.registries[pack],
            source=source,
            dialect=dialect,
            received_at=rec_at,
            max_event_bytes=lim.max_event_bytes,
            plans=self.plans[pack],
        )
        outcome = build_frame(items, ctx, DIALECTS[dialect])
        return Prepared(outcome.frame, outcome)

    def reply(
        self,
        pack: str,
        source: str,
        dialect: str,
        raw: bytes,
        content_type: str,
        content_encoding: str | None,
        received_at: int,
    ) -> Reply:
        try:
            prepared = self.prepare(
                pack=pack,
                source=source,
                dialect=dialect,
                raw=raw,
                content_type=content_type,
                content_encoding=content_encoding,
                received_at=received_at,
            )
        except Problem as p:
            return Reply.of_problem(p)
        if prepared.problem is not None:
            return Reply.of_problem(prepared.problem, prepared.record())
        assert prepared.outcome is not None
        status, body, problem = render_native(prepared.outcome)
        media = "application/problem+json" if problem else "application/json"
        return Reply(prepared.record(), status, body, media, (), problem)


class Collector(Parser):
    """A :class:`Parser` bound to a log."""

    def __init__(self, packs: Mapping[str, Pack], log: EventLog, limits: LimitSettings) -> None:
        super().__init__(packs, limits)
        self.log = log

    async def handle(
        self,
        *,
        pack: str,
        source: str,
        dialect: str,
        raw: bytes,
        content_type: str,
        content_encoding: str | None,
    ) -> Reply:
        """Answer one ingest request; the answer is given only once its frame is durable."""
        reply = self.reply(pack, source, dialect, raw, content_type, content_encoding, now_us())
        if reply.record is not None:
            try:
                await self.log.append_async([reply.record])
            except LogFull as exc:
                return Reply.of_problem(unavailable(str(exc), exc.retry_after_s))
        return reply

    async def submit(self, prepared: Prepared) -> None:
        """Append durably; raises :class:`~gristmill.log.base.LogFull` when over the cap."""
        await self.log.append_async([prepared.record()])

    def submit_sync(self, prepared: Prepared) -> None:
        self.log.append([prepared.record()])
