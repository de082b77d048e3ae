"""The collector service: body -> frame -> durable log append, shared by HTTP and replay.

The HTTP layer only authenticates and maps outcomes to status codes; everything a dialect
needs to turn bytes into a frame lives here, so a quarantine replay takes exactly the path
the original request took.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gristmill.collect.body import Undecodable, decode_body
from gristmill.collect.items import BodyNotJSON, split_items
from gristmill.collect.native import normalize_native
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
from gristmill.core.errors import Problem, bad_request, payload_too_large
from gristmill.log.base import EventLog, LogRecord
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


class Collector:
    def __init__(
        self,
        packs: Mapping[str, Pack],
        log: EventLog,
        limits: LimitSettings,
    ) -> None:
        self.packs = dict(packs)
        self.registries = {name: SchemaRegistry(p) for name, p in packs.items()}
        self.plans = {name: event_plans(p) for name, p in packs.items()}
        self.log = log
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

    async def submit(self, prepared: Prepared) -> None:
        """Append durably; raises :class:`~gristmill.log.base.LogFull` when over the cap."""
        await self.log.append_async([prepared.record()])

    def submit_sync(self, prepared: Prepared) -> None:
        self.log.append([prepared.record()])
