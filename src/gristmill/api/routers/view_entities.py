"""Answers of ``kind: lifecycle`` and ``kind: track`` views: SQL that pairs the events of one
entity (``metrics/lifecycle.py``, ``metrics/track.py``) under the same tenant rules as every
other view. Route parameters (``{branchId}``), the view's and the caller's filters and the
role's scope become row conditions; a path value other than the caller's own answers 404.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from gristmill.api.query import tenant_filters
from gristmill.api.routers.view_breakdown import (
    Ask,
    freshness_block,
    path_filters,
    request_filters,
)
from gristmill.api.routers.view_kinds import view_range
from gristmill.auth.permissions import Principal
from gristmill.core.errors import Problem, bad_request
from gristmill.metrics import lifecycle, track
from gristmill.metrics.model import Condition, build_conditions
from gristmill.metrics.timerange import label, utc_now
from gristmill.pack.analytics import ViewSpec
from gristmill.pack.models import Pack
from gristmill.runtime import Runtime

MAX_STALE_MINUTES = 7 * 24 * 60


def row_conditions(
    rt: Runtime,
    principal: Principal,
    pack: Pack,
    view: ViewSpec,
    table: str,
    filters: Sequence[str],
    ask: Ask,
) -> list[Condition]:
    """The view's fixed filters, the path's, the caller's by name, then the scope; a filter
    on a scoped column naming another value is a 404 (no oracle of which tenants exist)."""
    raw = [f"{c}:eq:{v}" for c, v in view.filters.items()]
    raw += path_filters(view, ask.path) + request_filters(filters, ask.query)
    conds = build_conditions(pack, [table], raw)
    scope = rt.roles.scope(principal, pack, view.scope)
    cols = {c.name for c in pack.columns(table)}
    for c in scope:
        if c.column not in cols:
            raise Problem(
                403, "forbidden", "Forbidden", f"{table!r} cannot be limited to your {c.column}"
            )
    tenant_filters(conds, scope)
    return [*conds, *scope]


def _figures(spec: Any, row: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the lifecycle query as the answer's nested fields."""
    durations: dict[str, Any] = {}
    for name in spec.durations:
        n = int(row.get(f"n__{name}") or 0)
        d: dict[str, Any] = {"n": n}
        for p in spec.percentiles:
            key = lifecycle.pname(p)
            d[f"{key}_s"] = lifecycle.seconds(row.get(f"{key}__{name}"))
        if name in spec.sla:
            on_time = int(row.get(f"on_time__{name}") or 0)
            d["sla_s"] = spec.sla[name].total_seconds()
            d["on_time"] = on_time
            d["on_time_share"] = round(on_time / n, 4) if n else None
        durations[name] = d
    return {
        "entities": int(row.get(lifecycle.ENTITIES) or 0),
        "reached": {s: int(row.get(f"reached__{s}") or 0) for s in spec.steps},
        "by_status": {s: int(row.get(f"status__{s}") or 0) for s in spec.steps},
        "durations": durations,
    }


def _grain(ask: Ask, grains: Sequence[str], default: str) -> str:
    g = ask.grain or default
    if g not in grains:
        raise bad_request("invalid-grain", f"grain must be one of {', '.join(grains)}")
    return g


def answer_lifecycle(
    rt: Runtime, principal: Principal, pack: Pack, view: ViewSpec, ask: Ask
) -> dict[str, Any]:
    spec = view.lifecycle
    assert spec is not None
    g = _grain(ask, spec.grains, spec.default_grain)
    rng = view_range(view, ask.preset, ask.start, ask.end, ask.tz)
    conds = row_conditions(rt, principal, pack, view, spec.table, spec.filters, ask)
    wh = rt.warehouse

    q = lifecycle.build(spec, pack.dataset, wh.dialect, rng, conds, grain=g, group_by=spec.by)
    total: dict[str, Any] = {}
    per_value, buckets = [], []
    for r in wh.query_sql(q.sql, q.params).to_pylist():
        if r["_no_bucket"] and r["_no_by"]:
            total = r
        elif r["_no_bucket"]:
            per_value.append(r)
        else:
            b = r[lifecycle.BUCKET]
            buckets.append(
                {
                    "bucket": label(b, g, rng.tz) if isinstance(b, datetime) else b,
                    **{d: r[d] for d in spec.by},
                    **_figures(spec, r),
                }
            )
    per_value.sort(key=lambda r: tuple((r[d] is None, r[d]) for d in spec.by))
    buckets.sort(key=lambda r: (r["bucket"], *((r[d] is None, r[d]) for d in spec.by)))
    return {
        **{param: ask.path[param] for param in view.path},
        "range": rng.as_dict(),
        "grain": g,
        "filters": {k: ask.query[k] for k in spec.filters if ask.query.get(k)},
        "entity": spec.entity,
        "steps": list(spec.steps),
        "totals": _figures(spec, total),
        f"by_{'_'.join(spec.by)}" if spec.by else "by": [
            {**{d: r[d] for d in spec.by}, **_figures(spec, r)} for r in per_value
        ],
        "buckets": buckets,
        "freshness": freshness_block(rt, pack, view, ask.path, {spec.table}),
    }


def stale_minutes(text: str | None, default: timedelta) -> float:
    if not text:
        return default.total_seconds() / 60
    try:
        v = float(text)
    except ValueError:
        raise bad_request("invalid-stale-minutes", "stale_minutes must be a number") from None
    if not 0 < v <= MAX_STALE_MINUTES:
        raise bad_request(
            "invalid-stale-minutes", f"stale_minutes lies in (0, {MAX_STALE_MINUTES}]"
        )
    return v


def answer_track(
    rt: Runtime, principal: Principal, pack: Pack, view: ViewSpec, ask: Ask, stale: str | None
) -> dict[str, Any]:
    spec = view.track
    assert spec is not None
    minutes = stale_minutes(stale, spec.stale_after)
    rng = view_range(view, ask.preset, ask.start, ask.end, ask.tz)
    conds = row_conditions(rt, principal, pack, view, spec.table, spec.filters, ask)
    wh = rt.warehouse
    q = track.build(spec, pack.dataset, wh.dialect, rng, conds)
    per: dict[Any, dict[str, Any]] = {}
    for r in wh.query_sql(q.sql, q.params).to_pylist():
        key = r[spec.entity]
        e = per.setdefault(
            key,
            {spec.entity: key, "pings": 0, "km": 0.0, "jumps": 0, "shifts": [], "last_at": None},
        )
        km = float(r["km"] or 0.0)
        e["shifts"].append(
            {
                "first_at": r["first_at"],
                "last_at": r["last_at"],
                "pings": int(r["pings"]),
                "km": round(km, 3),
            }
        )
        e["pings"] += int(r["pings"])
        e["km"] += km
        e["jumps"] += int(r["jumps"] or 0)
        e["last_at"] = r["last_at"] if e["last_at"] is None else max(e["last_at"], r["last_at"])
        for d in spec.by:
            e[d] = r[d]
    as_of = min(utc_now(), rng.end)
    cutoff = as_of - timedelta(minutes=minutes)
    entities = []
    for e in per.values():
        last = e["last_at"]
        e["km"] = round(e["km"], 3)
        e["stale"] = _aware(last) < cutoff
        e["minutes_since_last"] = round((as_of - _aware(last)).total_seconds() / 60, 1)
        entities.append(e)
    return {
        **{param: ask.path[param] for param in view.path},
        "range": rng.as_dict(),
        "filters": {k: ask.query[k] for k in spec.filters if ask.query.get(k)},
        "entity": spec.entity,
        "as_of": as_of,
        "stale_minutes": minutes,
        "totals": {
            "entities": len(entities),
            "pings": sum(e["pings"] for e in entities),
            "km": round(sum(e["km"] for e in entities), 3),
            "stale": sum(1 for e in entities if e["stale"]),
        },
        "entities": entities,
        "stale": [
            {
                spec.entity: e[spec.entity],
                **{d: e[d] for d in spec.by},
                "last_at": e["last_at"],
                "minutes_since_last": e["minutes_since_last"],
            }
            for e in sorted(entities, key=lambda e: _aware(e["last_at"]))
            if e["stale"]
        ],
        "freshness": freshness_block(rt, pack, view, ask.path, {spec.table}),
    }


def _aware(t: datetime) -> datetime:
    """Engines return naive UTC or aware instants; compare aware."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t
