"""Dashboard panels of the ``breakdown`` and ``reliability`` view kinds (the usage seed's
usage-and-spend and reliability pages): KPI cards from the answer's totals, stacked bars per
dimension value, error-rate and p95 lines, and the spikes with their baselines.

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
