"""What every dialect shares after it has parsed its wire format.

A dialect's ``normalize`` maps one item to an :class:`Accept` (envelope fields, not yet
schema-checked) or a :class:`~gristmill.core.envelope.Reject`. :func:`build_frame` then applies
the per-event size limit, the pack's schemas and entity mapping, and produces the frame for the
log together with the per-item results the client sees.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import msgspec

from gristmill.collect.enrich import Enricher
from gristmill.collect.items import Item, parse_object
from gristmill.collect.pins import Pins
from gristmill.core.clock import BadTime, check_time, parse_rfc3339_us
from gristmill.core.envelope import Envelope, Frame, Layout, Reason, Reject
from gristmill.core.subjects import Mode, SuppressionSet, raw_subjects, strip_keys
from gristmill.pack.models import ColumnType, Pack
from gristmill.schema.registry import SchemaRegistry


@dataclass(frozen=True, slots=True)
class Batch:
    """A request body split into items, with what the request says about all of them."""

    items: list[Item]
    key: str | None = None
    """A write key carried in the body (Segment ``writeKey``, PostHog ``api_key``)."""
    sent_at: int | None = None
    """The device's clock when it sent the batch (µs), for clock-skew correction."""
    historical: bool = False
    """Keep device times as they are (an import of old events), no skew correction."""
    call: str | None = None
    """The call a single-message endpoint implies (Segment ``/v1/track`` -> ``track``)."""


NO_BATCH = Batch([])


@dataclass(frozen=True, slots=True)
class RequestContext:
    pack: Pack
    registry: SchemaRegistry
    source: str
    dialect: str
    received_at: int
    max_event_bytes: int
    plans: dict[str, EventPlan]
    batch: Batch = NO_BATCH
    mapping: str = "native"
    suppress: SuppressionSet | None = None
    """Erased subjects; ``None`` (or empty) costs nothing per event."""
    enrich: Enricher | None = None
    """The pack's enrichment, if it declares any."""
    pins: Pins | None = None
    """Schema version pins per source: the version an unversioned event means."""


class Accept(msgspec.Struct, gc=False):
    """What a dialect made of one item: envelope fields, not yet checked against the schema.

    A msgspec struct: created once per event, and cheaper to create than a dataclass."""

    event_id: str
    event_type: str
    version: int | None
    occurred_at: int
    properties: dict[str, Any]
    user_id: str | None = None
    anonymous_id: str | None = None
    session_id: str | None = None
    context: dict[str, Any] | None = None


Normalized = Accept | Reject
Normalizer = Callable[[Item, RequestContext], Normalized]


def reject(
    item: Item,
    reason: Reason,
    detail: str,
    errors: Sequence[dict[str, Any]] | None = None,
    *,
    event_id: Any = None,
    event_type: Any = None,
) -> Reject:
    return Reject(
        index=item.index,
        reason=reason.value,
        detail=detail,
        raw=item.raw,
        event_id=event_id if isinstance(event_id, str) else None,
        event_type=event_type if isinstance(event_type, str) else None,
        errors=list(errors) if errors else None,
    )


@dataclass(slots=True)
class Outcome:
    frame: Frame
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return len(self.frame.events)

    @property
    def rejected(self) -> int:
        return len(self.frame.rejects)


def _result(r: Reject) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": r.index,
        "event_id": r.event_id,
        "status": "rejected",
        "reason": r.reason,
        "detail": r.detail,
    }
    if r.errors:
        out["errors"] = r.errors
    return out


@dataclass(frozen=True, slots=True)
class EventPlan:
    """What the collector does for one event type after validation, computed once."""

    promoted: tuple[tuple[str, ColumnType], ...]
    """Every promoted column of the event type's table, in table order."""
    entity_type: str | None
    entity_property: str | None
    own: frozenset[str] = frozenset()
    """The columns this event type promotes. The table's other columns stay NULL for it: its
    schema says nothing about those property names, so their values are unchecked."""
    names: tuple[str, ...] = ()
    checks: tuple[tuple[int, str, ColumnType], ...] = ()
    """Own columns whose values may need coercion or a check. String and bool columns need
    none: the pack check proved the event type's schemas only admit those JSON types."""

    def __post_init__(self) -> None:
        # A property name no JSON object can hold stands in for columns this type does not own.
        object.__setattr__(
            self, "names", tuple(n if n in self.own else _NOT_OWN for n, _ in self.promoted)
        )
        object.__setattr__(
            self,
            "checks",
            tuple(
                (i, n, t)
                for i, (n, t) in enumerate(self.promoted)
                if n in self.own and t not in (ColumnType.STRING, ColumnType.BOOL)
            ),
        )


_NOT_OWN = "\x00not promoted by this event type"


def event_plans(pack: Pack) -> dict[str, EventPlan]:
    plans = {}
    for name, spec in pack.spec.event_types.items():
        promoted = tuple((c.name, c.type) for c in pack.columns(spec.table) if c.promoted)
        plans[name] = EventPlan(
            promoted,
            spec.entity.type if spec.entity else None,
            spec.entity.id_property if spec.entity else None,
            frozenset(spec.promote),
        )
    return plans


def frame_layout(pack: Pack) -> Layout:
    """Per event type, its table and that table's promoted columns (as ``Envelope.promoted``
    holds them): how the frame's column blocks are cut."""
    return {
        name: (spec.table, tuple(c.name for c in pack.columns(spec.table) if c.promoted))
        for name, spec in pack.spec.event_types.items()
    }


_json = msgspec.json.encode
"""Encodes what JSON decoding produced, including integers past 64 bits (orjson refuses)."""

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class Unloadable(ValueError):
    """A value the schema allowed but the column cannot hold (e.g. an integer past 64 bits).

    Caught here, in the collector: a value the loader cannot load would stall its batch."""


def _promote(props: dict[str, Any], plan: EventPlan) -> tuple[Any, ...]:
    values = tuple(map(props.get, plan.names))
    if not plan.checks:
        return values
    out: list[Any] | None = None
    for i, name, ctype in plan.checks:
        v = values[i]
        if v is None:
            continue
        if type(v) is not _NATIVE.get(ctype):
            v = coerce(v, ctype)
        if type(v) is int and not INT64_MIN <= v <= INT64_MAX:
            raise Unloadable(f"/properties/{name}: {v} is outside the 64-bit range of its column")
        if v is not values[i]:
            if out is None:
                out = list(values)
            out[i] = v
    return values if out is None else tuple(out)


_NATIVE: dict[ColumnType, type] = {
    ColumnType.INT64: int,
    ColumnType.FLOAT64: float,
    ColumnType.TIMESTAMP: int,
}


def coerce(value: Any, ctype: ColumnType) -> Any:
    """Bridge JSON's loose values to a promoted column (the schema already checked them)."""
    try:
        if ctype is ColumnType.INT64:
            return int(value)
        if ctype is ColumnType.FLOAT64:
            return float(value)
        if ctype is ColumnType.TIMESTAMP and isinstance(value, str):
            return check_time(parse_rfc3339_us(value))
        if ctype is ColumnType.DATE:
            return date.fromisoformat(value).isoformat()
    except (OverflowError, ValueError, TypeError, BadTime) as exc:
        raise Unloadable(f"{str(value)[:64]!r} cannot fill a {ctype} column: {exc}") from exc
    if ctype is ColumnType.JSON:
        return _json(value).decode()
    return value


ID_FIELDS = ("event_id", "event_type", "user_id", "anonymous_id", "session_id")


def _one(item: Item, ctx: RequestContext, normalize: Normalizer) -> Envelope | Reject | _Suppressed:
    """One item to an envelope, or to a reject with its reason."""
    if len(item.raw) > ctx.max_event_bytes:
        obj = parse_object(item)  # only for the id the client will look for in the answer
        ids = (
            [obj.get(k) for k in ("event_id", "messageId", "uuid", "eid")]
            if isinstance(obj, dict)
            else []
        )
        return reject(
            item,
            Reason.OVERSIZE,
            f"event is {len(item.raw)} bytes, over the limit of {ctx.max_event_bytes}",
            event_id=next((i for i in ids if isinstance(i, str)), None),
        )
    try:
        n = normalize(item, ctx)
    except (BadTime, Unloadable) as exc:
        return reject(item, Reason.INVALID_ENVELOPE, str(exc))
    if isinstance(n, Reject):
        return n
    nul = [k for k in ID_FIELDS if "\x00" in (getattr(n, k) or "")]
    if nul:  # PostgreSQL text cannot hold NUL, and no id needs one: refuse with the reason
        why = "must not contain NUL (\\u0000) characters"
        return reject(
            item,
            Reason.INVALID_ENVELOPE,
            f"{nul[0]}: {why}",
            [{"path": f"/{k}", "message": why} for k in nul],
            event_id=None if "event_id" in nul else n.event_id,
        )
    version = n.version
    if version is None and ctx.pins is not None:
        newest = ctx.registry.latest(n.event_type)
        if newest is not None:
            version = ctx.pins.version(ctx.pack.name, ctx.source, n.event_type, newest)
    verdict = ctx.registry.validate(n.event_type, version, n.properties)
    if not verdict.ok:
        assert verdict.reason is not None
        return reject(
            item,
            verdict.reason,
            verdict.detail,
            verdict.errors,
            event_id=n.event_id,
            event_type=n.event_type,
        )
    plan = ctx.plans[n.event_type]
    props = n.properties
    if ctx.suppress:
        gov = ctx.pack.spec.governance
        mode = ctx.suppress.match(
            (n.user_id, n.anonymous_id, *(props.get(k) for k in gov.subject_properties))
        )
        if mode is Mode.DELETE:
            return SUPPRESSED
        if mode is Mode.ANONYMIZE:
            return _anonymized(n, ctx, plan, verdict.version)
    entity_id = None
    if plan.entity_property is not None:
        ev = props.get(plan.entity_property)
        entity_id = None if ev is None else str(ev)
    try:
        promoted = _promote(props, plan)
    except Unloadable as exc:
        return reject(
            item, Reason.SCHEMA_VIOLATION, str(exc), event_id=n.event_id, event_type=n.event_type
        )
    if ctx.enrich is not None:
        promoted = ctx.enrich.fill(
            n.event_type,
            promoted,
            user_id=n.user_id,
            occurred_at=n.occurred_at,
            received_at=ctx.received_at,
            properties=props,
            context=n.context,
            raw=item.raw,
        )
    return Envelope(
        n.event_id,
        n.event_type,
        verdict.version,
        n.occurred_at,
        _json(props),
        promoted,
        n.user_id,
        n.anonymous_id,
        n.session_id,
        plan.entity_type,
        entity_id,
        None if n.context is None else _json(n.context),
    )


class _Suppressed:
    """What :func:`_one` returns for an event of an erased subject (delete mode)."""


SUPPRESSED = _Suppressed()


def _anonymized(n: Accept, ctx: RequestContext, plan: EventPlan, version: int) -> Envelope:
    """An erased subject's event in anonymize mode: the same event without identity, PII and
    subject property keys and PII context keys stripped (promoted columns follow the
    properties)."""
    gov = ctx.pack.spec.governance
    pii = gov.pii
    stripped = set(gov.stripped_properties)
    props = {k: v for k, v in n.properties.items() if k not in stripped}
    context = None
    if n.context is not None:
        context = strip_keys(_json(n.context), pii.context)
    promoted = _promote(props, plan)  # fewer keys: nothing new can fail a column
    entity_id = None
    if plan.entity_property is not None:
        ev = props.get(plan.entity_property)
        entity_id = None if ev is None else str(ev)
    return Envelope(
        n.event_id,
        n.event_type,
        version,
        n.occurred_at,
        _json(props),
        promoted,
        None,
        None,
        n.session_id,
        plan.entity_type,
        entity_id,
        context,
    )


def _suppressed_reject(r: Reject, ctx: RequestContext) -> bool:
    """A reject naming an erased subject is dropped too: its raw bytes would keep them."""
    assert ctx.suppress is not None
    subject_props = ctx.pack.spec.governance.subject_properties
    return ctx.suppress.match(raw_subjects(r.raw, subject_props)) is not None


def build_frame(items: Sequence[Item], ctx: RequestContext, normalize: Normalizer) -> Outcome:
    frame = Frame(ctx.pack.name, ctx.source, ctx.received_at, [], [], ctx.dialect)
    out = Outcome(frame)
    events = frame.events
    results = out.results
    for item in items:
        try:
            got = _one(item, ctx, normalize)
        except RecursionError:
            got = reject(item, Reason.UNDECODABLE, "JSON nested too deeply")
        if isinstance(got, _Suppressed) or (
            isinstance(got, Reject) and ctx.suppress and _suppressed_reject(got, ctx)
        ):
            frame.suppressed += 1
            results.append({"index": item.index, "status": "suppressed"})
        elif isinstance(got, Envelope):
            events.append(got)
            results.append({"index": item.index, "event_id": got.event_id, "status": "accepted"})
        else:
            frame.rejects.append(got)
            results.append(_result(got))
    return out


def whole_body_reject(
    pack: str, source: str, dialect: str, received_at: int, raw: bytes, detail: str
) -> Frame:
    """A frame quarantining a body that could not be split into items at all."""
    return Frame(
        pack,
        source,
        received_at,
        [],
        [Reject(index=0, reason=Reason.UNDECODABLE.value, detail=detail, raw=raw)],
        dialect,
    )
