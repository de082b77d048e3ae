"""Pack format v1, dialect part: how events from existing analytics clients become pack events.

::

    mappings:
      unmapped: quarantine               # or {event_type: other_event}: a catch-all type
      segment:                           # Segment / RudderStack: track event names;
        Order Created: order_created     #   "$identify", "$page", "$screen", "$group", "$alias"
        Order Paid:                      #   for the other calls
          event_type: order_paid
          properties: {orderId: order_id, total: amount_cents}
      posthog:                           # PostHog event names
        order paid: order_paid
      snowplow:                          # self-describing schema URIs (a prefix without the
        iglu:com.acme/order_paid/jsonschema: order_paid   # version matches every version),
        se:orders:pay: order_paid        #   structured events as se:<category>:<action>, "pv"
      cloudevents:                       # CloudEvents ``type``
        com.acme.order.paid: order_paid

An event whose name is not mapped follows ``unmapped``: quarantine (reason ``unmapped``, with
its bytes) by default, or the named catch-all event type, never a silent drop.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from gristmill.pack.names import EVENT_NAME, IDENT


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


EventName = Annotated[str, Field(pattern=EVENT_NAME)]


class EventMapping(_Model):
    event_type: EventName
    schema_version: Annotated[int, Field(ge=1)] | None = None
    """Validate against this version (default: the newest)."""
    properties: dict[str, str] = {}
    """Renames: client property name (dotted path for nested) -> pack property name. Other
    properties pass through unchanged."""
    drop: list[str] = []
    """Client properties to leave out (e.g. a library's own bookkeeping)."""


def _expand(v: object) -> object:
    return {"event_type": v} if isinstance(v, str) else v


Mapped = Annotated[EventMapping, BeforeValidator(_expand)]


class CatchAll(_Model):
    event_type: EventName


class TraitsTable(_Model):
    """Where Segment identify/page/screen/group/alias calls land (pack/segment_calls.py)."""

    table: Annotated[str, Field(pattern=IDENT)] = "segment_calls"
    category: Annotated[str, Field(pattern=IDENT)] | None = None
    """A declared category; default ``traits``: the pack's own, or the engine's (retention
    400 days) when the pack declares none of that name."""


class MappingsSpec(_Model):
    unmapped: Literal["quarantine"] | CatchAll = "quarantine"
    traits_table: TraitsTable | Literal[False] | None = None
    """``None``: a table ``segment_calls`` when the pack maps Segment events; ``false``: the
    calls follow ``unmapped``."""
    segment: dict[str, Mapped] = {}
    posthog: dict[str, Mapped] = {}
    snowplow: dict[str, Mapped] = {}
    cloudevents: dict[str, Mapped] = {}

    def for_dialect(self, dialect: str) -> dict[str, EventMapping]:
        table: dict[str, EventMapping] = getattr(self, dialect, {})
        return table
