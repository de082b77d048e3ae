"""What every dialect shares after it has parsed its wire format.

A dialect's ``normalize`` maps one item to an :class:`Accept` (envelope fields, not yet
schema-checked) or a :class:`~gristmill.core.envelope.Reject`. :func:`build_frame` then applies
the per-event size limit, the pack's schemas and entity mapping, and produces the frame for the
log together with the per-item results the client sees.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gristmill.collect.items import Item
from gristmill.core.envelope import Envelope, Frame, Reason, Reject
from gristmill.pack.models import Pack
from gristmill.schema.registry import SchemaRegistry


@dataclass(frozen=True, slots=True)
class RequestContext:
    pack: Pack
    registry: SchemaRegistry
    source: str
    dialect: str
    received_at: int
    max_event_bytes: int


@dataclass(slots=True)
class Accept:
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


def _result(index: int, event_id: str | None, r: Reject | None) -> dict[str, Any]:
    if r is None:
        return {"index": index, "event_id": event_id, "status": "accepted"}
    out: dict[str, Any] = {
        "index": index,
        "event_id": r.event_id,
        "status": "rejected",
        "reason": r.reason,
        "detail": r.detail,
    }
    if r.errors:
        out["errors"] = r.errors
    return out


def build_frame(items: Sequence[Item], ctx: RequestContext, normalize: Normalizer) -> Outcome:
    frame = Frame(ctx.pack.name, ctx.source, ctx.received_at, [], [], ctx.dialect)
    out = Outcome(frame)
    event_types = ctx.pack.spec.event_types
    for item in items:
        if len(item.raw) > ctx.max_event_bytes:
            rej = reject(
                item,
                Reason.OVERSIZE,
                f"event is {len(item.raw)} bytes, over the limit of {ctx.max_event_bytes}",
            )
        elif item.value is None:
            rej = reject(item, Reason.UNDECODABLE, item.error)
        else:
            n = normalize(item, ctx)
            if isinstance(n, Reject):
                rej = n
            else:
                verdict = ctx.registry.validate(n.event_type, n.version, n.properties)
                if not verdict.ok:
                    assert verdict.reason is not None
                    rej = reject(
                        item,
                        verdict.reason,
                        verdict.detail,
                        verdict.errors,
                        event_id=n.event_id,
                        event_type=n.event_type,
                    )
                else:
                    spec = event_types[n.event_type]
                    entity_type = entity_id = None
                    if spec.entity is not None:
                        entity_type = spec.entity.type
                        ev = n.properties.get(spec.entity.id_property)
                        entity_id = None if ev is None else str(ev)
                    frame.events.append(
                        Envelope(
                            event_id=n.event_id,
                            event_type=n.event_type,
                            schema_version=verdict.version,
                            occurred_at=n.occurred_at,
                            properties=n.properties,
                            user_id=n.user_id,
                            anonymous_id=n.anonymous_id,
                            session_id=n.session_id,
                            entity_type=entity_type,
                            entity_id=entity_id,
                            context=n.context,
                        )
                    )
                    out.results.append(_result(item.index, n.event_id, None))
                    continue
        frame.rejects.append(rej)
        out.results.append(_result(item.index, rej.event_id, rej))
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
