"""From request parameters and a principal to a checked :class:`MetricQuery`.

The tenant rule lives here: a filter on a column the caller is scoped by must name the
caller's own value; any other value — another tenant's or one that does not exist — answers
404, so the API is no oracle of which tenants exist.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from gristmill.auth.permissions import Principal
from gristmill.core.errors import Problem, not_found
from gristmill.core.permissions import Permission
from gristmill.metrics.model import (
    Condition,
    MetricQuery,
    build_conditions,
    check_dims,
    check_grain,
    check_metrics,
)
from gristmill.metrics.timerange import (
    TimeRange,
    explicit_range,
    preset_range,
    utc_now,
    zone,
)
from gristmill.pack.models import Pack
from gristmill.runtime import Runtime


def time_range(
    preset: str | None,
    start: datetime | None,
    end: datetime | None,
    tz: str,
    *,
    default_preset: str | None,
    allowed_presets: Sequence[str] | None = None,
    allow_range: bool = True,
) -> TimeRange:
    zinfo = zone(tz)
    if start is not None or end is not None:
        if not allow_range:
            raise Problem(
                400, "invalid-range", "Ranges not allowed", "this endpoint takes presets only"
            )
        if start is None or end is None or preset is not None:
            raise Problem(
                400, "invalid-range", "Invalid range", "give start and end together, or a preset"
            )
        return explicit_range(start, end, zinfo)
    chosen = preset or default_preset
    if chosen is None:
        raise Problem(400, "invalid-range", "Missing range", "give a preset or start and end")
    if allowed_presets is not None and chosen not in allowed_presets:
        raise Problem(
            400,
            "invalid-preset",
            "Unknown preset",
            f"preset must be one of {', '.join(allowed_presets)}",
        )
    return preset_range(chosen, zinfo, utc_now())


def tenant_filters(filters: Sequence[Condition], scope: Sequence[Condition]) -> None:
    scoped = {c.column: c.value for c in scope}
    for f in filters:
        if f.column not in scoped:
            continue
        own = scoped[f.column]
        if not (f.op == "eq" and f.value == own) and not (f.op == "in" and f.value == (own,)):
            raise not_found(f"no {f.column} {str(f.value)[:64]!r} here")


def debug_allowed(rt: Runtime, p: Principal, debug: bool) -> bool:
    if debug and not rt.roles.allows(p, Permission.DEBUG):
        raise Problem(403, "forbidden", "Forbidden", "debug output needs the debug permission")
    return debug


def metric_query(
    rt: Runtime,
    p: Principal,
    pack: Pack,
    *,
    metrics: Sequence[str],
    rng: TimeRange,
    grain: str | None,
    group_by: Sequence[str],
    filters: Sequence[str],
    view_scope: Mapping[str, str] | None = None,
    debug: bool = False,
) -> MetricQuery:
    names = check_metrics(pack, metrics)
    q0 = MetricQuery(pack, names, rng)
    tables = list(q0.tables())
    check_dims(pack, tables, group_by, "group_by")
    conds = build_conditions(pack, tables, filters)
    scope = rt.roles.scope(p, pack, view_scope)
    for c in scope:
        for t in tables:
            if c.column not in {col.name for col in pack.columns(t)}:
                raise Problem(
                    403, "forbidden", "Forbidden", f"{t!r} cannot be limited to your {c.column}"
                )
    tenant_filters(conds, scope)
    return MetricQuery(
        pack, names, rng, check_grain(grain), tuple(dict.fromkeys(group_by)), conds, scope, debug
    )
