"""Pack format v1, analytics part: metrics, rollups and views.

Kept beside ``models.py`` (the ingest part) so each stays small. Every model forbids unknown
keys; identifiers match ``IDENT``; filters are data, compiled to SQL by ``gristmill.metrics``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gristmill.pack.entities import LifecycleSpec, TrackSpec
from gristmill.pack.names import IDENT

Ident = Annotated[str, Field(pattern=IDENT)]
Grain = Literal["hour", "day", "week", "month"]
PRESET = r"^[1-9][0-9]{0,3}[dh]$"
"""``Nd``: today and the N-1 days before it; ``Nh``: this hour and the N-1 before it."""

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


class BreakdownSpec(_Model):
    """``kind: breakdown``: named metrics per time bucket and per dimension value (the usage
    seed's "usage by model and time range"), their totals, and the data's freshness."""

    metrics: dict[Ident, Ident] = Field(min_length=1)
    """answer field -> metric (``spend_micros: spend_micros``)."""
    by: list[Ident] = []
    """Dimensions each row is broken down by (``[model]``)."""
    grains: list[Literal["hour", "day"]] = ["hour", "day"]
    default_grain: Literal["hour", "day"] = "day"
    filters: list[Ident] = []
    """Dimensions a caller may filter on by name (``model=gpt-4o``; a comma list means any)."""


class ReliabilitySpec(_Model):
    """``kind: reliability``: error rate and latency percentiles per dimension value and
    bucket, and the buckets that spike above their trailing baseline."""

    requests: Ident
    """Count metric of all requests."""
    errors: Ident
    """Count metric of failed requests (its filter says which statuses fail)."""
    latency_bins: Ident
    """An ``enrichment.log_bins`` column: its histogram answers percentiles (rollups)."""
    by: list[Ident] = []
    grains: list[Literal["hour", "day"]] = ["hour", "day"]
    default_grain: Literal["hour", "day"] = "hour"
    filters: list[Ident] = []
    percentiles: list[Annotated[float, Field(gt=0, lt=100)]] = [50, 95, 99]
    """Default ``percentiles=`` (a caller may ask for others, each between 0 and 100)."""
    exact_max_hours: int = Field(24, ge=0, le=24 * 31)
    """Ranges up to this many hours get exact percentiles from rows; longer ones read the
    histogram (within the bins' relative error)."""
    baseline_buckets: int = Field(24, ge=1, le=24 * 31)
    """A bucket's baseline is the same dimension's figure over this many preceding buckets."""
    spike_factor: float = Field(2.0, gt=1)
    """A bucket spikes when its error rate or p95 exceeds the baseline's times this."""
    min_requests: int = Field(20, ge=1)
    """Buckets with fewer requests are never flagged (one error in two calls is noise)."""
    min_error_rate: float = Field(0.02, ge=0, le=1)
    """An error rate below this never spikes, whatever its baseline (0 errors before)."""
    significance: float = Field(0.001, gt=0, lt=1)
    """A spike must be this unlikely by chance (a binomial tail bound, metrics/reliability)."""


ViewKind = Literal[
    "kpis",
    "events",
    "aggregations",
    "realtime",
    "sync_status",
    "breakdown",
    "reliability",
    "lifecycle",
    "track",
]
PATH_KINDS = frozenset({"breakdown", "reliability", "lifecycle", "track"})
"""View kinds whose routes may carry parameters (``{branchId}``) as tenant filters."""
PATH_PARAM = r"\{([A-Za-z][A-Za-z0-9_]{0,62})\}"


class ViewSpec(_Model):
    """An HTTP endpoint for the roles it names. ``kind`` picks what it answers: KPIs and a
    series (default), raw events, bucketed aggregations, cached live values, or the load
    status per table (docs/packs.md, *Views*)."""

    kind: ViewKind = "kpis"
    aggregate: AggregateSpec | None = None
    realtime: RealtimeSpec | None = None
    breakdown: BreakdownSpec | None = None
    reliability: ReliabilitySpec | None = None
    lifecycle: LifecycleSpec | None = None
    track: TrackSpec | None = None

    route: Annotated[str, Field(pattern=r"^/([a-z0-9_\-/]|\{[A-Za-z][A-Za-z0-9_]{0,62}\})+$")]
    path: dict[Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,62}$")], Ident] = {}
    """route parameter -> column (``{orgId: org_id}``): the answer is limited to rows whose
    column equals the path's value; a caller scoped to another value gets 404."""
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
        if self.kind == "breakdown" and self.breakdown is None:
            raise ValueError("a breakdown view needs breakdown: {metrics: {...}}")
        if self.kind == "reliability" and self.reliability is None:
            raise ValueError("a reliability view needs reliability: {requests, errors, ...}")
        if self.kind == "lifecycle" and self.lifecycle is None:
            raise ValueError("a lifecycle view needs lifecycle: {table, entity, steps, ...}")
        if self.kind == "track" and self.track is None:
            raise ValueError("a track view needs track: {table, entity, lat, lon, ...}")
        if self.path and self.kind not in PATH_KINDS:
            raise ValueError(
                "route parameters (path) are for breakdown, reliability, lifecycle and track views"
            )
        params = re.findall(PATH_PARAM, self.route)
        if sorted(params) != sorted(self.path):
            raise ValueError(
                f"route parameters {sorted(params)} must be exactly the keys of path "
                f"{sorted(self.path)}"
            )
        return self

    def metric_names(self) -> list[str]:
        """Every metric the view answers, for the pack checks."""
        out = [*self.kpis, *(self.series.metrics if self.series else [])]
        out += list(self.aggregate.metrics.values()) if self.aggregate else []
        out += [v.metric for v in self.realtime.values.values()] if self.realtime else []
        out += list(self.breakdown.metrics.values()) if self.breakdown else []
        if self.reliability:
            out += [self.reliability.requests, self.reliability.errors]
        return out
