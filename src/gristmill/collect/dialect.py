"""What every collector dialect shares: the dialect contract, event-name mapping from the
pack, and device-time handling.

A dialect turns its wire format into items (``split``), each item into an :class:`Accept` or
a :class:`Reject` (``normalize``), and outcomes and problems into the answer its clients
expect (``answer`` / ``problem``): Segment wants exactly 200 and ``{code, message}`` errors,
PostHog v1 a ``results`` map keyed by event uuid, and so on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from gristmill.collect.items import Item
from gristmill.collect.pipeline import Accept, Batch, Normalized, Outcome, RequestContext, reject
from gristmill.core.clock import check_time, clamp_future, correct_skew, from_datetime
from gristmill.core.envelope import Reason, Reject
from gristmill.core.errors import Problem
from gristmill.pack.mapping import EventMapping


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    media_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)


class Dialect(Protocol):
    name: str
    mapping: str
    """Which ``mappings.<dialect>`` table of the pack names its events."""
    body_limit: int | None
    """The wire format's own request-size limit (Segment: 500 KB), if smaller than ours."""
    body_key: bool
    """Whether clients may carry the write key inside the body instead of a header."""

    def split(self, body: bytes, content_type: str, query: Mapping[str, str]) -> Batch: ...

    def query_key(self, query: Mapping[str, str]) -> str | None:
        """A write key carried in the query string (PostHog ``api_key``), if the format has one;
        used when the body itself cannot be read."""

    def normalize(self, item: Item, ctx: RequestContext) -> Normalized: ...

    def answer(self, outcome: Outcome) -> Answer: ...

    def problem(self, p: Problem) -> Answer: ...


def parse_time(value: Any) -> int | None:
    """Device times arrive as RFC 3339 strings or epoch milliseconds; unknown or absurd
    shapes (not finite, out of the representable range) give None."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value * 1000)
        if isinstance(value, str):
            if value.isdigit():
                return int(value) * 1000
            dt = datetime.fromisoformat(value)
            if dt.tzinfo is None:
                return None
            return from_datetime(dt)
    except (ValueError, OverflowError):
        return None
    return None


def occurred(
    ctx: RequestContext,
    device: int | None,
    sent: int | None,
    context: dict[str, Any] | None,
    *,
    raw: dict[str, Any],
    exact: bool = False,
) -> tuple[int, dict[str, Any]]:
    """When the event happened, and the context with the raw device times kept.

    ``occurred_at = received_at - (sent_at - device_timestamp)`` unless the batch is a
    historical import; a time more than 23 h ahead of the receive time is clamped and
    flagged. Without any device time the receive time is used. ``exact`` takes the device
    time as it is (a "true timestamp" the client vouches for). The receive time is the row's
    ``received_at`` column, so it is not repeated here.
    """
    batch = ctx.batch
    if device is None:
        when = ctx.received_at
    elif batch.historical or exact:
        when = device
    else:
        when = (
            correct_skew(ctx.received_at, sent if sent is not None else batch.sent_at, device)
            or ctx.received_at
        )
    when, clamped = clamp_future(when, ctx.received_at)
    check_time(when)
    note: dict[str, Any] = {"device_times": {k: v for k, v in raw.items() if v is not None}}
    if clamped:
        note["clamped_future"] = True
    if batch.historical:
        note["historical"] = True
    return when, {**(context or {}), "gristmill": note}


def _dig(props: dict[str, Any], path: str) -> tuple[bool, Any]:
    cur: Any = props
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def apply_mapping(m: EventMapping, props: dict[str, Any]) -> dict[str, Any]:
    """Drop, then rename: a top-level key moves; a dotted path is copied out of its object.
    Values are read from the client's properties as sent, so renames may swap names."""
    out = {k: v for k, v in props.items() if k not in m.drop} if m.drop else dict(props)
    moved: list[tuple[str, Any]] = []
    for src, dst in m.properties.items():
        if "." not in src:
            if src in props:
                moved.append((dst, props[src]))
                out.pop(src, None)
            continue
        found, value = _dig(props, src)
        if found:
            moved.append((dst, value))
    out.update(moved)
    return out


@dataclass(frozen=True, slots=True)
class Resolved:
    event_type: str
    properties: dict[str, Any]
    version: int | None = None


def resolve(
    ctx: RequestContext,
    item: Item,
    name: str | None,
    props: dict[str, Any],
) -> Resolved | Reject:
    """Map a client's event name to a pack event type (and rename its properties), or follow
    the pack's ``unmapped`` policy: quarantine, or the catch-all event type."""
    maps = ctx.pack.spec.mappings
    table = maps.for_dialect(ctx.mapping)
    m = table.get(name or "")
    if m is None and name:
        m = _prefix_match(table, name)
    if m is not None:
        return Resolved(m.event_type, apply_mapping(m, props), m.schema_version)
    if maps.unmapped == "quarantine":
        return reject(
            item,
            Reason.UNMAPPED,
            f"{ctx.mapping} event {str(name)[:128]!r} is not mapped in pack "
            f"{ctx.pack.name!r} (mappings.{ctx.mapping})",
        )
    return Resolved(maps.unmapped.event_type, {**props, "$source_event": name})


def _prefix_match(table: Mapping[str, EventMapping], name: str) -> EventMapping | None:
    """Snowplow schema URIs: a key without the version matches every version."""
    for key, m in table.items():
        if name.startswith(key + "/"):
            return m
    return None


def accept(
    event_id: str,
    event_type: str,
    when: int,
    props: dict[str, Any],
    *,
    version: int | None = None,
    user_id: Any = None,
    anonymous_id: Any = None,
    session_id: Any = None,
    context: dict[str, Any] | None = None,
) -> Accept:
    def s(v: Any) -> str | None:
        return None if v is None or v == "" else str(v)[:200]

    return Accept(
        event_id=event_id,
        event_type=event_type,
        version=version,
        occurred_at=when,
        properties=props,
        user_id=s(user_id),
        anonymous_id=s(anonymous_id),
        session_id=s(session_id),
        context=context,
    )
