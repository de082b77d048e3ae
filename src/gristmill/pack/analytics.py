"""Pack format v1, analytics part: metrics, rollups and views.

Kept beside ``models.py`` (the ingest part) so each stays small. Every model forbids unknown
keys; identifiers match ``IDENT``; filters are data, compiled to SQL by ``gristmill.metrics``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gristmill.pack.names import IDENT

Ident = Annotated[str, Field(pattern=IDENT)]
Grain = Literal["hour", "day", "week", "month"]
PRESET = r"^[1-9][0-9]{0,3}d$"

FILTER_OPS = frozenset({"eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "is_null"})
"""Operators of a filter: ``{column: value}`` means ``eq``; ``{column: [a, b]}`` means ``in``;
``{column: {gte: 10}}`` names the operator."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


MetricType = Literal["count", "count_distinct", "sum", "avg", "min", "max", "percentile", "ratio"]


class MetricSpec(_Model):
    """A named measure over one table, or a ratio of two other metrics."""

    type: MetricType
    description: str = ""
    table: Ident | None = None
    column: Ident | None = None
    filter: dict[Ident, Any] = {}
    p: float | None = Field(None, gt=0, lt=1)
    """The percentile of a ``percentile`` metric, e.g. 0.95."""
    numerator: Ident | None = None
    denominator: Ident | None = None
    unit: str = ""
    precision: int = Field(2, ge=0, le=12)
    """Decimal places of a ratio or average (money in cents stays exact to the cent)."""

    @model_validator(mode="after")
    def _shape(self) -> MetricSpec:
        if self.type == "ratio":
            if not (self.numerator and self.denominator):
                raise ValueError("a ratio needs numerator and denominator")
            if self.table or self.column or self.filter:
                raise ValueError("a ratio takes no table, column or filter; its parts do")
            return self
        if not self.table:
            raise ValueError(f"a {self.type} metric needs a table")
        if self.type != "count" and not self.column:
            raise ValueError(f"a {self.type} metric needs a column")
        if self.type == "percentile" and self.p is None:
            raise ValueError("a percentile metric needs p (between 0 and 1)")
        if self.type != "percentile" and self.p is not None:
            raise ValueError("p belongs to percentile metrics only")
        return self


class RollupSpec(_Model):
    """A materialized aggregate kept exact by recomputing the buckets each load touches."""

    table: Ident
    grain: Literal["hour", "day"] = "hour"
    dimensions: list[Ident] = []
    metrics: list[Ident] = Field(min_length=1)


class SeriesSpec(_Model):
    grain: Grain = "day"
    metrics: list[Ident] = Field(min_length=1)


class AggregateSpec(_Model):
    """``kind: aggregations``: named metrics per time bucket (the seed's
    ``queryAggregations``), exact because they are the metric layer's answers."""

    metrics: dict[Ident, Ident] = Field(min_length=1)
    """answer field -> metric (``total_events: events``)."""
    filters: list[Ident] = []
    """Dimensions a caller may filter on by name (``event_category=transaction``)."""
    week_start: Literal[
        "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"
    ] = "monday"
    """Default first day of weekly buckets (a caller may pass ``week_start``)."""


class RealtimeValue(_Model):
    metric: Ident
    window: Annotated[str, Field(pattern=r"^(today|\d+[mhd])$")]
    """``today`` (since local midnight) or a trailing window (``15m``, ``1h``, ``7d``)."""


class RealtimeSpec(_Model):
    """``kind: realtime``: a few live values served from a cache (the seed's
    ``platform_metrics_realtime``), recomputed after ``ttl_s`` or after the next load."""

    values: dict[Ident, RealtimeValue] = Field(min_length=1)
    ttl_s: float = Field(30.0, gt=0, le=3600)


ViewKind = Literal["kpis", "events", "aggregations", "realtime", "sync_status"]


class ViewSpec(_Model):
    """An HTTP endpoint for the roles it names. ``kind`` picks what it answers: KPIs and a
    series (default), raw events, bucketed aggregations, cached live values, or the load
    status per table (docs/packs.md, *Views*)."""

    kind: ViewKind = "kpis"
    aggregate: AggregateSpec | None = None
    realtime: RealtimeSpec | None = None

    route: Annotated[str, Field(pattern=r"^/[a-z0-9_\-/]+$")]
    title: str = ""
    description: str = ""
    roles: list[Ident] = Field(min_length=1)
    scope: dict[Ident, Ident] = {}
    """column -> claim: rows are limited to the caller's claim value (on top of role scope)."""
    presets: list[Annotated[str, Field(pattern=PRESET)]] = ["7d", "30d", "90d"]
    default_preset: Annotated[str, Field(pattern=PRESET)] = "30d"
    allow_range: bool = False
    """Whether explicit ``start``/``end`` are accepted besides the presets."""
    kpis: list[Ident] = []
    series: SeriesSpec | None = None
    filters: dict[Ident, Any] = {}

    @model_validator(mode="after")
    def _preset(self) -> ViewSpec:
        if self.default_preset not in self.presets:
            raise ValueError(f"default_preset {self.default_preset!r} is not in presets")
        if self.kind == "kpis" and not self.kpis:
            raise ValueError("a kpis view names at least one kpi")
        if self.kind == "aggregations" and self.aggregate is None:
            raise ValueError("an aggregations view needs aggregate: {metrics: {...}}")
        if self.kind == "realtime" and self.realtime is None:
            raise ValueError("a realtime view needs realtime: {values: {...}}")
        return self

    def metric_names(self) -> list[str]:
        """Every metric the view answers, for the pack checks."""
        out = [*self.kpis, *(self.series.metrics if self.series else [])]
        out += list(self.aggregate.metrics.values()) if self.aggregate else []
        out += [v.metric for v in self.realtime.values.values()] if self.realtime else []
        return out
