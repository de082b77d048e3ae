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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gristmill.api.routers.ui_format import (
    FRACTION,
    GRAIN_WORDS,
    MONEY_UNITS,
    chart_title,
    dollars,
    exact_money,
    fmt,
    label,
    money_text,
    y_axis,
)
from gristmill.api.routers.view_breakdown import Ask, answer_breakdown, answer_reliability
from gristmill.api.routers.views import answer_view
from gristmill.auth.permissions import Principal
from gristmill.pack.analytics import ViewSpec
from gristmill.pack.models import Pack
from gristmill.runtime import Runtime


@dataclass(frozen=True, slots=True)
class Span:
    """The range the page asked for: a preset, or ``start``/``end`` in zone ``tz``."""

    preset: str | None
    start: datetime | None
    end: datetime | None
    tz: str

    def for_view(self, view: ViewSpec, *, always_range: bool = False) -> Span:
        """What this view can take: an explicit range only when it allows one (otherwise its
        preset, and the panel says so), a preset only among the view's own."""
        if self.start is not None and (always_range or view.allow_range):
            return self
        preset = self.preset if self.preset in view.presets else view.default_preset
        return Span(preset, None, None, self.tz)


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


def _trace(name: str, xs: list[Any], ys: list[Any], kind: str, unit: str | None) -> dict[str, Any]:
    scale = MONEY_UNITS.get(unit or "")
    if scale is None:
        return {"name": name, "x": xs, "y": ys, "type": kind}
    exact = [dollars(v, unit or "") for v in ys]
    return {
        "name": name,
        "x": xs,
        "y": [None if d is None else float(d) for d in exact],
        "text": [money_text(d) for d in exact],  # the one money rule, also in hover labels
        "type": kind,
    }


def _stacked(
    view: str, metric: str, unit: str, rows: list[dict[str, Any]], by: str, grain: str | None
) -> dict[str, Any]:
    series: dict[Any, dict[str, Any]] = defaultdict(dict)
    for r in rows:
        series[r.get(by)][r["bucket"]] = r.get(metric)
    traces = [
        _trace(str(k), list(points), list(points.values()), "bar", unit)
        for k, points in sorted(series.items(), key=lambda kv: str(kv[0]))
    ]
    totals: dict[Any, float] = defaultdict(float)
    for t in traces:
        for x, y in zip(t["x"], t["y"], strict=True):
            totals[x] += y or 0
    return {
        "id": f"chart-{view}-{metric}",
        "title": chart_title(metric, unit, (), grain, by),
        "stack": True,
        "traces": traces,
        "yaxis": y_axis(list(totals.values()), money=unit in MONEY_UNITS, percent=False),
    }


def kpis_panel(
    rt: Runtime, principal: Principal, pack: Pack, name: str, view: ViewSpec, span: Span
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Cards and a chart per series metric of a ``kpis`` view (the marketplace's)."""
    s = span.for_view(view)
    body = answer_view(
        rt,
        principal,
        pack,
        name,
        view,
        preset=s.preset,
        tz=s.tz,
        start=s.start,
        end=s.end,
        debug=False,
    )
    metrics = pack.spec.metrics
    grain = view.series.grain if view.series else None
    names = list(dict.fromkeys([*view.kpis, *(view.series.metrics if view.series else [])]))
    kpis = []
    for k in view.kpis:
        raw = body["kpis"].get(k)
        exact = exact_money(k, metrics, body["kpis"])
        kpis.append(
            {
                "name": k,
                "label": label(k, metrics[k].unit, names),
                "raw": raw,
                "text": money_text(exact)
                if metrics[k].unit in MONEY_UNITS
                else fmt(raw, metrics[k].unit),
                "money": metrics[k].unit in MONEY_UNITS,
            }
        )
    charts = []
    pts = body["series"]["points"] if view.series else []
    for metric in view.series.metrics if view.series else []:
        m = metrics[metric]
        xs = [p["bucket"] for p in pts]
        trace = _trace(
            label(metric),
            xs,
            [p[metric] for p in pts],
            "bar" if m.type == "count" else "scatter",
            m.unit,
        )
        if m.unit in MONEY_UNITS:  # ratios from their parts, as on the cards
            trace["text"] = [money_text(exact_money(metric, metrics, p)) for p in pts]
        charts.append(
            {
                "id": f"chart-{name}-{metric}",
                "title": chart_title(metric, m.unit, names, grain),
                "traces": [trace],
                "yaxis": y_axis(
                    trace["y"], money=m.unit in MONEY_UNITS, percent=m.unit == FRACTION
                ),
            }
        )
    panel = _panel(name, view, body, kpis, charts, {}, s)
    panel["presets_only"] = span.start is not None and s.start is None
    return panel, charts


def breakdown_panel(
    rt: Runtime,
    principal: Principal,
    pack: Pack,
    name: str,
    view: ViewSpec,
    path: dict[str, str],
    span: Span,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    spec = view.breakdown
    assert spec is not None
    s = span.for_view(view, always_range=True)
    body = answer_breakdown(
        rt, principal, pack, view, Ask(path, preset=s.preset, start=s.start, end=s.end, tz=s.tz)
    )
    units = {f: pack.spec.metrics[m].unit for f, m in spec.metrics.items()}
    names = list(spec.metrics)
    kpis = [
        {
            "name": f,
            "label": label(f, units[f], names),
            "raw": v,
            "text": fmt(v, units[f] or ""),
            "money": units[f] in MONEY_UNITS,
        }
        for f, v in body["totals"].items()
    ]
    by = spec.by[0] if spec.by else ""
    grain = body.get("grain")
    charts = [
        _stacked(name, f, units[f] or "", body["buckets"], by, grain)
        for f in spec.metrics
        if f in ("requests", "spend_micros", "errors") or units[f] in MONEY_UNITS
    ]
    return _panel(name, view, body, kpis, charts, path, s), charts


def reliability_panel(
    rt: Runtime,
    principal: Principal,
    pack: Pack,
    name: str,
    view: ViewSpec,
    path: dict[str, str],
    span: Span,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    spec = view.reliability
    assert spec is not None
    s = span.for_view(view, always_range=True)
    ask = Ask(path, preset=s.preset, start=s.start, end=s.end, tz=s.tz, percentiles="50,95")
    body = answer_reliability(rt, principal, pack, view, ask)
    by = spec.by[0] if spec.by else ""
    kpis = [
        {
            "name": f"{r.get(by)}",
            "label": f"{r.get(by)} · error rate",
            "raw": r["error_rate"],
            "text": f"{(r['error_rate'] or 0):.1%}",
            "sub": "p95 n/a" if r["p95_ms"] is None else f"p95 {r['p95_ms']:,.0f} ms",
        }
        for r in body[f"by_{by}" if by else "by"]
    ]
    charts = []
    grain = body.get("grain")
    per = f" {GRAIN_WORDS[grain]}" if grain in GRAIN_WORDS else ""
    for metric, title in (("error_rate", "Error rate"), ("p95_ms", "p95 latency (ms)")):
        series: dict[Any, dict[str, Any]] = defaultdict(dict)
        for r in body["buckets"]:
            series[r.get(by)][r["bucket"]] = r.get(metric)
        traces = [
            {"name": str(k), "x": list(p), "y": list(p.values()), "type": "scatter"}
            for k, p in sorted(series.items(), key=lambda kv: str(kv[0]))
        ]
        ys = [y for t in traces for y in t["y"]]
        charts.append(
            {
                "id": f"chart-{name}-{metric}",
                "title": title + per + (f" by {by}" if by else ""),
                "traces": traces,
                "yaxis": y_axis(ys, money=False, percent=metric == "error_rate"),
            }
        )
    panel = _panel(name, view, body, kpis, charts, path, s)
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
    span: Span,
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
        "preset": span.preset,
        "freshness": body["freshness"] if "newest_load_at" in body["freshness"] else None,
    }


def lifecycle_panel(
    rt: Runtime,
    principal: Principal,
    pack: Pack,
    name: str,
    view: ViewSpec,
    path: dict[str, str],
    span: Span,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Entities, steps reached, each duration's p50/p95 (minutes) and on-time share; a line
    of each duration's p50 per bucket and ``by`` value."""
    from gristmill.api.routers.view_entities import answer_lifecycle

    spec = view.lifecycle
    assert spec is not None
    s = span.for_view(view, always_range=True)
    ask = Ask(path, preset=s.preset, start=s.start, end=s.end, tz=s.tz)
    body = answer_lifecycle(rt, principal, pack, view, ask)
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
                "yaxis": y_axis(
                    [y for p in series.values() for y in p.values()], money=False, percent=False
                ),
                "traces": [
                    {"name": str(k), "x": list(p), "y": list(p.values()), "type": "scatter"}
                    for k, p in sorted(series.items(), key=lambda kv: str(kv[0]))
                ],
            }
        )
    return _panel(name, view, body, kpis, charts, path, s), charts


def track_panel(
    rt: Runtime,
    principal: Principal,
    pack: Pack,
    name: str,
    view: ViewSpec,
    path: dict[str, str],
    span: Span,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Entities, pings, km and stale entities; km per entity as bars."""
    from gristmill.api.routers.view_entities import answer_track

    spec = view.track
    assert spec is not None
    s = span.for_view(view, always_range=True)
    ask = Ask(path, preset=s.preset, start=s.start, end=s.end, tz=s.tz)
    body = answer_track(rt, principal, pack, view, ask, None)
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
            "yaxis": y_axis([e["km"] for e in rows], money=False, percent=False),
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
    return _panel(name, view, body, kpis, charts, path, s), charts


PANELS = {
    "breakdown": breakdown_panel,
    "reliability": reliability_panel,
    "lifecycle": lifecycle_panel,
    "track": track_panel,
}
"""Panel builder per view kind (``kpis`` views are drawn by ``ui.py`` itself)."""
