"""Pack format v1, entity views: answers that pair the events of one entity instead of
counting rows (docs/packs.md, *Lifecycle and track views*).

* ``lifecycle`` — milestones of an entity (an order created, accepted, delivered) as the
  **first** occurrence of each step by ``occurred_at``, whatever order the events arrived in
  and however often; durations between steps, their percentiles, the share within an SLA,
  entities per current step.
* ``track`` — consecutive position pings of an entity (a driver) ordered by ``occurred_at``:
  pings and great-circle distance per shift (a gap longer than ``shift_gap`` starts a new
  one), and the entities whose last ping is older than a threshold (stale).

Both are configuration over the engine's SQL builders (``metrics/lifecycle.py``,
``metrics/track.py``): nothing in them is specific to one pack.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator

from gristmill.core.durations import format_duration, parse_duration
from gristmill.pack.names import IDENT

Ident = Annotated[str, Field(pattern=IDENT)]


def _duration(v: Any) -> Any:
    return parse_duration(v) if isinstance(v, str) else v


Duration = Annotated[
    timedelta, BeforeValidator(_duration), PlainSerializer(format_duration, return_type=str)
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LifecycleSpec(_Model):
    """``kind: lifecycle``: steps of one entity paired by its id column."""

    table: Ident
    entity: Ident
    """Column naming the entity whose events are paired (``order_id``)."""
    steps: dict[Ident, dict[Ident, Any]] = Field(min_length=2)
    """step -> the filter marking it (``{event_type: created}``), in lifecycle order. The
    first step starts an entity: an entity counts in the range its first step falls in."""
    durations: dict[Ident, Annotated[list[Ident], Field(min_length=2, max_length=2)]] = {}
    """name -> ``[from_step, to_step]``: seconds between the two steps' first occurrences."""
    sla: dict[Ident, Duration] = {}
    """duration name -> target: ``on_time`` is the share of entities that reached the step
    within it, among those that reached it."""
    by: list[Ident] = []
    """Dimensions each row is broken down by (``[branch_id]``); each entity takes the value
    of its first step's event."""
    filters: list[Ident] = []
    percentiles: list[Annotated[float, Field(gt=0, lt=100)]] = [50, 95]
    grains: list[Annotated[str, Field(pattern=r"^(day|week|month)$")]] = ["day"]
    default_grain: str = "day"
    max_span: Duration = timedelta(days=2)
    """How long after its first step later steps are looked for (bounds the rows read)."""
    tz: str = "UTC"
    """Default zone of the buckets (the pack's branches' zone); a caller may pass ``tz``."""

    @model_validator(mode="after")
    def _shape(self) -> LifecycleSpec:
        for name, (a, b) in self.durations.items():
            for s in (a, b):
                if s not in self.steps:
                    raise ValueError(f"duration {name!r}: unknown step {s!r}")
        for name in self.sla:
            if name not in self.durations:
                raise ValueError(f"sla {name!r} is not a declared duration")
        if self.default_grain not in self.grains:
            raise ValueError(f"default_grain {self.default_grain!r} is not in grains")
        if self.max_span <= timedelta(0):
            raise ValueError("max_span must be positive")
        return self


class TrackSpec(_Model):
    """``kind: track``: pings of one entity with a position."""

    table: Ident
    entity: Ident
    """Column naming who pings (``driver_id``)."""
    lat: Ident
    lon: Ident
    filter: dict[Ident, Any] = {}
    """Rows that are pings (``{event_type: location_updated}``)."""
    by: list[Ident] = []
    """Dimensions reported with each entity (``[branch_id]``; the latest ping's value)."""
    filters: list[Ident] = []
    shift_gap: Duration = timedelta(hours=1)
    """A gap between two pings longer than this ends a shift (no distance across it)."""
    stale_after: Duration = timedelta(minutes=10)
    """Default of ``stale_minutes``: an entity is stale when its last ping is older."""
    max_speed_kmh: float | None = Field(None, gt=0)
    """Steps implying a higher speed are GPS jumps, counted but not travelled."""

    @model_validator(mode="after")
    def _shape(self) -> TrackSpec:
        if self.shift_gap <= timedelta(0) or self.stale_after <= timedelta(0):
            raise ValueError("shift_gap and stale_after must be positive")
        return self
