"""What a pack publishes to Prometheus (``observe:`` in pack.yaml), and its freshness budget.

A pack names metrics of its own metric layer, a trailing window and the dimensions to group
by; ``/metrics`` then exposes ``gristmill_pack_metric{pack,metric,<dims>}``, the value of each
metric over the window, answered by the rollup-aware planner like any API query. This is how a
team alerts on its own KPIs (an error-rate spike, spend running away) with the Prometheus and
Alertmanager it already runs, without a second pipeline reading the warehouse.

``metrics`` is a list (published under their own names) or a mapping ``published: metric``.
The mapping lets any pack feed the shared alert rules in ``deploy/prometheus``, which read the
published names ``errors`` and ``requests`` (``metrics: {requests: api_calls, errors:
api_errors}``).

Prometheus keeps one time series per label set, so ``max_series`` bounds what one pack may
publish: the largest groups are kept and the rest are folded into one group whose dimension
values are ``__other__`` (count, sum, min and max fold exactly; other types are not published
for the folded groups). Sums across groups therefore stay exact for counts and sums.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from gristmill.core.durations import format_duration, parse_duration
from gristmill.pack.names import IDENT

if TYPE_CHECKING:
    from gristmill.pack.models import Pack

Ident = Annotated[str, Field(pattern=IDENT)]
OTHER = "__other__"
"""Dimension value of the group that folds every group past ``max_series``."""
RESERVED_LABELS = frozenset({"pack", "metric", "job", "instance"})
"""Labels of ``gristmill_pack_metric`` itself, and the two Prometheus adds to every target."""
MAX_WINDOW = timedelta(days=31)


def _duration(v: Any) -> Any:
    return parse_duration(v) if isinstance(v, str) else v


Duration = Annotated[
    timedelta, BeforeValidator(_duration), PlainSerializer(format_duration, return_type=str)
]


def _published(v: Any) -> Any:
    """A list of metric names means each is published under its own name."""
    return {name: name for name in v} if isinstance(v, list) else v


class ObserveSpec(BaseModel):
    """``observe: {window: 5m, group_by: [event_type], metrics: [orders, gmv_cents]}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: Duration = timedelta(minutes=5)
    """Trailing window each value covers (``[now - window, now)``)."""
    group_by: list[Ident] = []
    """Dimensions that become labels; each must be a dimension of every observed table."""
    metrics: Annotated[dict[Ident, Ident], BeforeValidator(_published)] = Field(min_length=1)
    """published name -> pack metric."""
    max_series: int = Field(500, ge=1, le=10_000)
    """Most ``gristmill_pack_metric`` series this pack publishes (groups x metrics)."""
    cache_s: float = Field(5.0, ge=0.5, le=300)
    """A scrape within this many seconds of the last computation gets the same values, so
    several Prometheus replicas or a fast scrape interval never hammer the warehouse."""


def check_observe(pack: Pack) -> list[tuple[tuple[str, ...], str]]:
    """(path, message) for every fault of the pack's ``observe`` and ``freshness_budget``."""
    spec = pack.spec
    out: list[tuple[tuple[str, ...], str]] = []
    budget = spec.freshness_budget
    if budget is not None and budget <= timedelta(0):
        out.append((("freshness_budget",), "must be positive"))
    obs = spec.observe
    if obs is None:
        return out
    base = ("observe",)
    if not timedelta(seconds=1) <= obs.window <= MAX_WINDOW:
        out.append(((*base, "window"), "must lie between 1s and 31d"))
    tables: set[str] = set()
    for published, name in obs.metrics.items():
        m = spec.metrics.get(name)
        if m is None:
            known = ", ".join(spec.metrics) or "none"
            out.append(((*base, "metrics", published), f"unknown metric {name!r}; known: {known}"))
            continue
        parts = [m.numerator, m.denominator] if m.type == "ratio" else [name]
        for part in parts:
            pm = spec.metrics.get(str(part))
            if pm is not None and pm.table is not None:
                tables.add(pm.table)
    for i, dim in enumerate(obs.group_by):
        path = (*base, "group_by", str(i))
        if dim in RESERVED_LABELS:
            out.append((path, f"{dim!r} is a label of every pack metric series already"))
        for t in sorted(tables):
            if t in spec.tables and dim not in spec.tables[t].dimensions:
                out.append((path, f"{dim!r} is not a dimension of table {t!r}"))
    if len(obs.metrics) > obs.max_series:
        out.append(((*base, "max_series"), f"{len(obs.metrics)} metrics need max_series >= that"))
    return out
