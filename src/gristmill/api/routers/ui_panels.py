"""Dashboard panels of the ``breakdown``, ``reliability``, ``lifecycle`` and ``track`` view
kinds (the usage seed's usage-and-spend and reliability pages, the delivery seed's orders and
drivers): KPI cards from the answer's totals, stacked bars per dimension value, error-rate and
p95 lines, the spikes with their baselines; duration p50 lines, km per entity.

A view with route parameters (``{orgId}``) is shown for the caller's own value when its role
is scoped by that column; an unscoped caller (finance, operators) picks the value in a small
form on the page, or sees a view without parameters (every organisation).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from gristmill.api.routers.view_breakdown import Ask, answer_breakdown, answer_reliability
from gristmill.auth.permissions import Principal
from gristmill.pack.analytics import ViewSpec
from gristmill.pack.models import Pack
from gristmill.runtime import Runtime

MONEY_UNITS = {"cents": 100, "micros": 1_000_000}


def fmt(value: Any, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit in MONEY_UNITS:
        return f"${value / MONEY_UNITS[unit]:,.2f}"
    if isinstance(value, float):
        return f"{value:,.4f}".rstrip("0").rstrip(".")
    return f"{value:,}"


def label(name: str) -> str:
    for suffix in ("_cents", "_micros"):
        name = name.removesuffix(suffix)
    return name.replace("_", " ")


def path_values(
    pack: Pack, view: ViewSpec, principal: Principal, query: Mapping[str, str]
) -> dict[str, str] | None:
    """The route parameters for this caller, or None when one is still to be chosen."""
    role = pack.spec.roles.get(principal.role)
    scope = dict(role.scope) if role else {}
    out: dict[str, str] = {}
    for param, column in view.path.items():
        claim = scope.get(column)
        value = principal.claims.get(claim) if claim else query.get(param)
        if not value:
            return None
        out[param] = str(value)
    return out


def _stacked(
    view: str, metric: str, unit: str, rows: list[dict[str, Any]], by: str
) -> dict[str, Any]:
    series: dict[Any, dict[str, Any]] = defaultdict(dict)
    for r in rows:
        series[r.get(by)][r["bucket"]] = r.get(metric)
    scale = MONEY_UNITS.get(unit, 1)
    return {
        "id": f"chart-{view}-{metric}",
        "title": label(metric) + (f" by {by}" if by else ""),
        "money": unit in MONEY_UNITS,
        "stack": True,
        "traces": [
            {
                "name": str(k),
                "x": list(points),
                "y": [None if v is None else v / scale for v in points.values()],
                "type": "bar",
            }
            for k, points in sorted(series.items(), key=lambda kv: str(kv[0]))
        ],
    }


def breakdown_panel(
    rt: Runtime,
    principal: Principal,
    pack: Pack,
    name: str,
    view: ViewSpec,
    path: dict[str, str],
    preset: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    spec = view.breakdown
    assert spec is not None
    body = answer_breakdown(rt, principal, pack, view, Ask(path, preset=preset))
    units = {f: pack.spec.metrics[m].unit for f, m in spec.metrics.items()}
    kpis = [
        {"name": f, "label": label(f), "raw": v, "text": fmt(v, units[f])}
        for f, v in body["totals"].items()
    ]
    by = spec.by[0] if spec.by else ""
    charts = [
        _stacked(name, f, units[f], body["buckets"], by)
        for f in spec.metrics
        if f in ("requests", "spend_micros", "errors") or units[f] in MONEY_UNITS
    ]
    return _panel(name, view, body, kpis, charts, path, preset), charts


def reliability_panel(
    rt: Runtime,
    principal: Principal,
    pack: Pack,
    name: str,
    view: ViewSpec,
    path: dict[str, str],
    preset: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    spec = view.reliability
    assert spec is not None
    body = answer_reliability(
        rt, principal, pack, view, Ask(path, preset=preset, percentiles="50,95")
    )
    by = spec.by[0] if spec.by else ""
    kpis = [
        {
            "name": f"{r.get(by)}",
            "label": f"{r.get(by)} · error rate / p95",
            "raw": r["error_rate"],
            "text": f"{(r['error_rate'] or 0):.1%} · {fmt(r['p95_ms'], '')} ms",
        }
        for r in body[f"by_{by}" if by else "by"]
    ]
    charts = []
    for metric, title in (("error_rate", "error rate"), ("p95_ms", "p95 latency (ms)")):
        series: dict[Any, dict[str, Any]] = defaultdict(dict)
        for r in body["buckets"]:
            series[r.get(by)][r["bucket"]] = r.get(metric)
        charts.append(
            {
                "id": f"chart-{name}-{metric}",
                "title": f"{title} by {by}" if by else title,
                "money": False,
                "percent": metric == "error_rate",
                "traces": [
                    {"name": str(k), "x": list(p), "y": list(p.values()), "type": "scatter"}
                    for k, p in sorted(series.items(), key=lambda kv: str(kv[0]))
                ],
            }
        )
    panel = _panel(name, view, body, kpis, charts, path, preset)
    panel["spikes"] = body["spikes"]
    panel["latency"] = body["latency"]
    return panel, charts


def _panel(
    name: str,
    view: ViewSpec,
    body: dict[str, Any],
    kpis: list[dict[str, Any]],
    charts: list[dict[str, Any]],
    path: dict[str, str],
    preset: str,
) -> dict[str, Any]:
    title = view.title or name
    if path:
        title += " · " + ", ".join(path.values())
    return {
        "name": name,
        "title": title,
        "range": body["range"],
        "kpis": kpis,
        "charts": [{"metric": c["id"].removeprefix(f"chart-{name}-")} for c in charts],
        "preset": preset,
        "freshness": body["freshness"],
    }


def lifecycle_panel(
    rt: Runtime,
    principal: Principal,
    pack: Pack,
    name: str,
    view: ViewSpec,
    path: dict[str, str],
    preset: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Entities, steps reached, each duration's p50/p95 (minutes) and on-time share; a line
    of each duration's p50 per bucket and ``by`` value."""
    from gristmill.api.routers.view_entities import answer_lifecycle

    spec = view.lifecycle
    assert spec is not None
    body = answer_lifecycle(rt, principal, pack, view, Ask(path, preset=preset, tz=spec.tz))
    t = body["totals"]
    kpis = [
        {
            "name": "entities",
            "label": "started",
            "raw": t["entities"],
            "text": fmt(t["entities"], ""),
        }
    ]
    last = list(spec.steps)[-1]
    for step, n in t["by_status"].items():
        if n and step != last:
            kpis.append(
                {"name": f"now_{step}", "label": f"now {label(step)}", "raw": n, "text": fmt(n, "")}
            )
    for d, v in t["durations"].items():
        p50, p95 = v.get("p50_s"), v.get("p95_s")
        text = "n/a" if p50 is None else f"{p50 / 60:,.1f} / {(p95 or 0) / 60:,.1f} min"
        kpis.append({"name": d, "label": f"{label(d)} p50 / p95", "raw": p50, "text": text})
        if "on_time_share" in v:
            share = v["on_time_share"]
            kpis.append(
                {
                    "name": f"{d}_on_time",
                    "label": f"{label(d)} on time",
                    "raw": share,
                    "text": "n/a" if share is None else f"{share:.1%}",
                }
            )
    by = spec.by[0] if spec.by else ""
    charts = []
    for d in spec.durations:
        series: dict[Any, dict[str, Any]] = defaultdict(dict)
        for r in body["buckets"]:
            p50 = r["durations"][d].get("p50_s")
            series[r.get(by)][r["bucket"]] = None if p50 is None else round(p50 / 60, 2)
        charts.append(
            {
                "id": f"chart-{name}-{d}",
                "title": f"{label(d)} p50 (min)" + (f" by {by}" if by else ""),
                "money": False,
                "traces": [
                    {"name": str(k), "x": list(p), "y": list(p.values()), "type": "scatter"}
                    for k, p in sorted(series.items(), key=lambda kv: str(kv[0]))
                ],
            }
        )
    return _panel(name, view, body, kpis, charts, path, preset), charts


def track_panel(
    rt: Runtime,
    principal: Principal,
    pack: Pack,
    name: str,
    view: ViewSpec,
    path: dict[str, str],
    preset: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Entities, pings, km and stale entities; km per entity as bars."""
    from gristmill.api.routers.view_entities import answer_track

    spec = view.track
    assert spec is not None
    body = answer_track(rt, principal, pack, view, Ask(path, preset=preset), None)
    t = body["totals"]
    stale = ", ".join(str(s[spec.entity]) for s in body["stale"][:10]) or "none"
    kpis = [
        {
            "name": "entities",
            "label": label(spec.entity) + "s",
            "raw": t["entities"],
            "text": fmt(t["entities"], ""),
        },
        {"name": "pings", "label": "pings", "raw": t["pings"], "text": fmt(t["pings"], "")},
        {"name": "km", "label": "km travelled", "raw": t["km"], "text": f"{t['km']:,.1f}"},
        {
            "name": "stale",
            "label": f"stale (>{body['stale_minutes']:g} min)",
            "raw": t["stale"],
            "text": stale,
        },
    ]
    rows = sorted(body["entities"], key=lambda e: str(e[spec.entity]))
    charts = [
        {
            "id": f"chart-{name}-km",
            "title": f"km per {label(spec.entity)}",
            "money": False,
            "traces": [
                {
                    "name": "km",
                    "x": [str(e[spec.entity]) for e in rows],
                    "y": [e["km"] for e in rows],
                    "type": "bar",
                }
            ],
        }
    ]
    return _panel(name, view, body, kpis, charts, path, preset), charts


PANELS = {
    "breakdown": breakdown_panel,
    "reliability": reliability_panel,
    "lifecycle": lifecycle_panel,
    "track": track_panel,
}
"""Panel builder per view kind (``kpis`` views are drawn by ``ui.py`` itself)."""
