"""Answers of ``kind: breakdown`` and ``kind: reliability`` views (the usage seed's
``/usage`` and ``/reliability``): metric-layer queries grouped by the view's dimensions, with
path parameters as tenant filters and a freshness block that says when the answer is stale.

A path parameter (``{orgId}``) becomes an equality filter on its column; the tenant rule of
``api.query`` then answers 404 when the caller is scoped to another value, so the route is
no oracle of which organisations exist.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from gristmill.api.query import metric_query
from gristmill.api.routers.view_kinds import view_range
from gristmill.auth.permissions import Principal
from gristmill.core import sketch
from gristmill.core.errors import bad_request
from gristmill.metrics.model import MetricQuery
from gristmill.metrics.reliability import Series, SpikeRule, merged, rate, spikes
from gristmill.metrics.service import additive_rows, fold, foldable, run
from gristmill.metrics.timerange import TimeRange, buckets, label
from gristmill.pack.analytics import MetricSpec, ViewSpec
from gristmill.pack.models import Pack
from gristmill.rollup.freshness import list_freshness
from gristmill.runtime import Runtime

MAX_PATH_VALUE = 200
MAX_PERCENTILES = 10


@dataclass(frozen=True)
class Ask:
    """What a caller asked of a breakdown or reliability view: the route's parameters, the
    query string (filters by name) and the range, grain and zone."""

    path: Mapping[str, str]
    query: Mapping[str, str] = field(default_factory=dict)
    grain: str | None = None
    preset: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    tz: str = "UTC"
    percentiles: str | None = None
    """Reliability only: ``50,95,99``."""


def path_filters(view: ViewSpec, values: Mapping[str, str]) -> list[str]:
    """``column:eq:value`` filters of the route's parameters."""
    out = []
    for param, column in view.path.items():
        v = values.get(param, "")
        if not v or len(v) > MAX_PATH_VALUE or "\x00" in v:
            raise bad_request("invalid-path", f"{param} must be 1 to {MAX_PATH_VALUE} characters")
        out.append(f"{column}:eq:{v}")
    return out


def request_filters(allowed: Sequence[str], query: Mapping[str, str]) -> list[str]:
    """Filters a caller passes by dimension name; a comma list means any of them."""
    out = []
    for dim in allowed:
        v = query.get(dim)
        if v:
            out.append(f"{dim}:in:{v}" if "," in v else f"{dim}:eq:{v}")
    return out


def freshness_block(
    rt: Runtime,
    pack: Pack,
    view: ViewSpec,
    path: Mapping[str, str],
    tables: set[str | None] | None = None,
) -> dict[str, Any]:
    """Newest event and load of the rows this answer reads (the path's tenant when there is
    one), the pipeline's lag, and ``stale`` past the pack's budget. ``tables``: those the
    answer reads, when not the tables of the view's metrics."""
    wm = rt.watermark(pack.name)
    scope = {col: path[param] for param, col in view.path.items()}
    if tables is None:
        tables = {pack.spec.metrics[m].table for m in view.metric_names()}
    rows = [
        r
        for r in list_freshness(rt.warehouse, [pack.name], scope or None, wm)
        if r["table"] in tables
    ]
    newest_event = max(
        (r["newest_occurred_at"] for r in rows if r["newest_occurred_at"]), default=None
    )
    newest_load = max((r["newest_loaded_at"] for r in rows if r["newest_loaded_at"]), default=None)
    budget = pack.spec.freshness_budget
    out: dict[str, Any] = {
        "newest_event_at": newest_event,
        "newest_load_at": newest_load,
        **wm.as_dict(),
        "budget_seconds": None if budget is None else budget.total_seconds(),
        "stale": budget is not None and wm.lag_seconds > budget.total_seconds(),
    }
    return out


def _grain(grain: str | None, allowed: Sequence[str], default: str) -> str:
    g = grain or default
    if g not in allowed:
        raise bad_request("invalid-grain", f"grain must be one of {', '.join(allowed)}")
    return g


def _prologue(
    view: ViewSpec, ask: Ask, grains: Sequence[str], default: str, filters: Sequence[str]
) -> tuple[str, TimeRange, list[str]]:
    """The grain, the range and the filters (the view's, the path's, the caller's)."""
    g = _grain(ask.grain, grains, default)
    rng = view_range(view, ask.preset, ask.start, ask.end, ask.tz)
    conds = [f"{c}:eq:{v}" for c, v in view.filters.items()]
    conds += path_filters(view, ask.path) + request_filters(filters, ask.query)
    return g, rng, conds


def _echo(
    view: ViewSpec, ask: Ask, rng: TimeRange, g: str, filters: Sequence[str]
) -> dict[str, Any]:
    """What every answer restates of its question."""
    return {
        **{param: ask.path[param] for param in view.path},
        "range": rng.as_dict(),
        "grain": g,
        "filters": {k: ask.query[k] for k in filters if ask.query.get(k)},
    }


def answer_breakdown(
    rt: Runtime, principal: Principal, pack: Pack, view: ViewSpec, ask: Ask
) -> dict[str, Any]:
    spec = view.breakdown
    assert spec is not None
    g, rng, conds = _prologue(view, ask, spec.grains, spec.default_grain, spec.filters)
    names = list(dict.fromkeys(spec.metrics.values()))

    def query(grain_: str | None, by: Sequence[str]) -> MetricQuery:
        return metric_query(
            rt,
            principal,
            pack,
            metrics=names,
            rng=rng,
            grain=grain_,
            group_by=by,
            filters=conds,
            view_scope=view.scope,
        )

    def fields(row: Mapping[str, Any]) -> dict[str, Any]:
        return {f: row.get(m) for f, m in spec.metrics.items()}

    sq = query(g, spec.by)
    rows = run(rt.warehouse, sq).rows
    series = [{"bucket": r["bucket"], **{d: r[d] for d in spec.by}, **fields(r)} for r in rows]
    if foldable(sq, tuple(names)):
        # Counts and sums add up: the per-value rows and the totals follow from the series,
        # one query instead of three.
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for r in rows:
            groups.setdefault(tuple(r[d] for d in spec.by), []).append(r)
        per_value = [
            dict(zip(spec.by, key, strict=True)) | fold(sq, grouped, tuple(names))
            for key, grouped in sorted(groups.items(), key=lambda kv: _order(kv[0]))
        ]
        total = fold(sq, rows, tuple(names))
    else:
        per_value = run(rt.warehouse, query(None, spec.by)).rows
        total = (run(rt.warehouse, query(None, ())).rows or [{}])[0]
    by_value = [{**{d: r[d] for d in spec.by}, **fields(r)} for r in per_value]
    return {
        **_echo(view, ask, rng, g, spec.filters),
        "units": {f: pack.spec.metrics[m].unit or None for f, m in spec.metrics.items()},
        "currency": pack.price_book.spec.currency if pack.price_book else None,
        "totals": fields(total),
        f"by_{'_'.join(spec.by)}" if spec.by else "by": by_value,
        "buckets": series,
        "freshness": freshness_block(rt, pack, view, ask.path),
    }


def _order(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """The metric layer's row order: by value, NULL last."""
    return tuple((v is None, v) for v in key)


def parse_percentiles(text: str | None, default: Sequence[float]) -> list[float]:
    if not text:
        return list(default)
    out: list[float] = []
    for part in text.split(",")[: MAX_PERCENTILES + 1]:
        try:
            v = float(part)
        except ValueError:
            raise bad_request("invalid-percentiles", f"{part[:20]!r} is not a number") from None
        if not 0 < v < 100:
            raise bad_request("invalid-percentiles", "each percentile lies between 0 and 100")
        out.append(v)
    if len(out) > MAX_PERCENTILES:
        raise bad_request("invalid-percentiles", f"at most {MAX_PERCENTILES} percentiles")
    return list(dict.fromkeys(out))


def _pname(p: float) -> str:
    return f"p{p:g}".replace(".", "_")


def _with_percentiles(pack: Pack, column: str, table: str, ps: Sequence[float]) -> Pack:
    """The pack plus transient exact-percentile metrics of ``column`` (the raw path answers
    them); the fingerprint changes with them so cached SQL never mixes shapes."""
    extra = {
        f"_gm_{_pname(p)}": MetricSpec(
            type="percentile", p=p / 100, table=table, column=column, precision=3
        )
        for p in ps
    }
    spec = pack.spec.model_copy(update={"metrics": {**pack.spec.metrics, **extra}})
    tag = ",".join(f"{p:g}" for p in ps)
    return dataclasses.replace(pack, spec=spec, fingerprint=f"{pack.fingerprint}|p{tag}")


def _extended(rng: TimeRange, grain: str, n: int) -> TimeRange:
    step = timedelta(hours=n) if grain == "hour" else timedelta(days=n)
    return TimeRange(rng.start - step, rng.end, rng.tz, rng.preset)


def answer_reliability(
    rt: Runtime, principal: Principal, pack: Pack, view: ViewSpec, ask: Ask
) -> dict[str, Any]:
    spec = view.reliability
    assert spec is not None
    g, rng, conds = _prologue(view, ask, spec.grains, spec.default_grain, spec.filters)
    ps = parse_percentiles(ask.percentiles, spec.percentiles)
    ext = _extended(rng, g, spec.baseline_buckets)
    bins = pack.spec.enrichment.log_bins[spec.latency_bins]
    gamma = sketch.gamma(bins.relative_error)
    by = list(spec.by)

    def mq(
        p: Pack, metrics: list[str], r: TimeRange, grain_: str | None, group: list[str]
    ) -> MetricQuery:
        return metric_query(
            rt,
            principal,
            p,
            metrics=metrics,
            rng=r,
            grain=grain_,
            group_by=group,
            filters=conds,
            view_scope=view.scope,
        )

    def rows(
        p: Pack, metrics: list[str], r: TimeRange, grain_: str | None, group: list[str]
    ) -> list[dict[str, Any]]:
        return run(rt.warehouse, mq(p, metrics, r, grain_, group)).rows

    labels = [label(b, g, ext.tz) for b in buckets(ext, g)]
    index = {lab: i for i, lab in enumerate(labels)}
    first = index[label(buckets(rng, g)[0], g, rng.tz)]
    s = Series(labels)
    # The range and the trailing window before it are asked apart: a bucket cut by the
    # range's start reports only the range's rows; its earlier part is not baseline either.
    parts = [(rng, True)]
    if ext.start < rng.start:
        parts.append((TimeRange(ext.start, rng.start, rng.tz), False))
    n = len(by)
    for part, inside in parts:
        counts = mq(pack, [spec.requests, spec.errors], part, g, by)
        for b, *rest in additive_rows(rt.warehouse, counts):
            i = index.get(b)
            if i is not None and (i >= first) == inside:
                s.add_counts(tuple(rest[:n]), i, rest[n] or 0, rest[n + 1] or 0)
        bins_q = mq(pack, [spec.requests], part, g, [*by, spec.latency_bins])
        for b, *rest in additive_rows(rt.warehouse, bins_q):
            i = index.get(b)
            if i is not None and (i >= first) == inside and rest[n] is not None:
                s.add_bin(tuple(rest[:n]), i, int(rest[n]), rest[n + 1] or 0)

    hours = (rng.end - rng.start).total_seconds() / 3600
    exact = hours <= spec.exact_max_hours
    exact_rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    exact_totals: dict[tuple[Any, ...], dict[str, Any]] = {}
    if exact:
        table = pack.spec.metrics[spec.requests].table
        assert table is not None
        xp = _with_percentiles(pack, bins.property, table, ps)
        names = [f"_gm_{_pname(p)}" for p in ps]
        for r in rows(xp, names, rng, g, by):
            exact_rows[(r["bucket"], *(r[d] for d in by))] = r
        for r in rows(xp, names, rng, None, by):
            exact_totals[tuple(r[d] for d in by)] = r

    def pcts(hist: dict[int, int], exact_row: Mapping[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in ps:
            name = f"{_pname(p)}_ms"
            if exact_row is not None:
                out[name] = exact_row.get(f"_gm_{_pname(p)}")
            else:
                v = sketch.quantile(hist.items(), p / 100, gamma)
                out[name] = None if v is None else round(v, 3)
        return out

    out_buckets: list[dict[str, Any]] = []
    out_by: list[dict[str, Any]] = []
    for key in sorted(s.requests, key=lambda k: tuple((v is None, v) for v in k)):
        dims = dict(zip(by, key, strict=True))
        req, err, hist = s.requests[key], s.errors[key], s.hist[key]
        for i in range(first, len(labels)):
            if req[i] == 0:
                continue
            xr = exact_rows.get((labels[i], *key), {}) if exact else None
            out_buckets.append(
                {
                    "bucket": labels[i],
                    **dims,
                    "requests": req[i],
                    "errors": err[i],
                    "error_rate": rate(err[i], req[i]),
                    **pcts(hist[i], xr),
                }
            )
        total_req, total_err = sum(req[first:]), sum(err[first:])
        if total_req:
            xt = exact_totals.get(key, {}) if exact else None
            out_by.append(
                {
                    **dims,
                    "requests": total_req,
                    "errors": total_err,
                    "error_rate": rate(total_err, total_req),
                    **pcts(merged(hist[first:]), xt),
                }
            )
    rule = SpikeRule(
        spec.baseline_buckets,
        spec.spike_factor,
        spec.min_requests,
        spec.min_error_rate,
        spec.significance,
    )
    return {
        **_echo(view, ask, rng, g, spec.filters),
        "percentiles": ps,
        "latency": {
            "column": bins.property,
            "method": "exact" if exact else "histogram",
            "relative_error": None if exact else bins.relative_error,
            "exact_max_hours": spec.exact_max_hours,
        },
        f"by_{'_'.join(by)}" if by else "by": out_by,
        "buckets": out_buckets,
        "spikes": spikes(s, first, rule, gamma, by),
        "baseline": {
            "buckets": spec.baseline_buckets,
            "factor": spec.spike_factor,
            "min_requests": spec.min_requests,
            "min_error_rate": spec.min_error_rate,
            "significance": spec.significance,
            "latency": "histogram",
        },
        "freshness": freshness_block(rt, pack, view, ask.path),
    }
