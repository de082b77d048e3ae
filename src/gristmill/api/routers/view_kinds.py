"""Answers of the view kinds beyond KPIs (``kind:`` in a pack view): raw events,
bucketed aggregations, cached live values and the load status per table. Each is the engine's
own query layer under a route and parameter names a pack chooses — the seed's endpoints are
configuration, not code."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

from sqlglot import exp

from gristmill.api.query import metric_query, tenant_filters, time_range
from gristmill.auth.permissions import Principal
from gristmill.core.durations import parse_duration
from gristmill.core.errors import bad_request
from gristmill.metrics.events import list_events, tables_for
from gristmill.metrics.model import build_conditions
from gristmill.metrics.service import run
from gristmill.metrics.timerange import WEEKDAYS, TimeRange, utc_now, week_grain, zone
from gristmill.pack.analytics import ViewSpec
from gristmill.pack.models import Pack
from gristmill.rollup.freshness import list_freshness
from gristmill.runtime import Runtime
from gristmill.sql.system import LOADS

GRAINS = {"hourly": "hour", "daily": "day", "weekly": "week"}


def parse_when(text: str | None, tz: str, *, end: bool) -> datetime | None:
    """An instant, or a date (``2025-10-31``) taken in the caller's zone — as an end, the
    whole day is included (the seed's ``end_date: '2025-10-31'``)."""
    if text is None or text == "":
        return None
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            local = datetime(d.year, d.month, d.day, tzinfo=zone(tz))
            return local + timedelta(days=1) if end else local
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(
            "invalid-time", f"{text[:40]!r} is not an ISO 8601 time or date"
        ) from None
    return t if t.tzinfo is not None else t.replace(tzinfo=zone(tz))


def view_range(
    view: ViewSpec, preset: str | None, start: datetime | None, end: datetime | None, tz: str
) -> TimeRange:
    """The view's presets, or an explicit range (always accepted by these kinds)."""
    return time_range(
        preset or (None if (start or end) else view.default_preset),
        start,
        end,
        tz,
        default_preset=view.default_preset,
        allowed_presets=view.presets,
        allow_range=True,
    )


def answer_events(
    rt: Runtime,
    principal: Principal,
    pack: Pack,
    view: ViewSpec,
    *,
    event_types: list[str],
    start: datetime | None,
    end: datetime | None,
    tz: str,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """The seed's ``queryEvents``: ``total`` and a page of ``events``, newest first."""
    rng = view_range(view, None, start, end, tz)
    unknown = [t for t in event_types if t not in pack.spec.event_types]
    if unknown:
        raise bad_request("unknown-event-type", f"unknown event types: {', '.join(unknown)}")
    scope = rt.roles.scope(principal, pack, view.scope)
    tables = tables_for(pack, event_types, scope) or list(pack.spec.tables)
    conds = build_conditions(pack, tables, [f"{c}:eq:{v}" for c, v in view.filters.items()])
    tenant_filters(conds, scope)
    page = list_events(
        lambda q, params: rt.warehouse.query(q, params),
        pack,
        event_types=event_types,
        start=rng.start,
        end=rng.end,
        limit=limit,
        cursor=cursor,
        scope=scope,
        filters=conds,
    )
    return {
        "range": rng.as_dict(),
        "total": page.total,
        "events": page.items,
        "next_cursor": page.next_cursor,
        "freshness": rt.watermark(pack.name).as_dict(),
    }


def answer_aggregations(
    rt: Runtime,
    principal: Principal,
    pack: Pack,
    view: ViewSpec,
    *,
    aggregation_type: str,
    start: datetime | None,
    end: datetime | None,
    preset: str | None,
    tz: str,
    week_start: str | None,
    filters: Mapping[str, str],
) -> dict[str, Any]:
    """The seed's ``queryAggregations``: per bucket, the view's named metrics. Weekly buckets
    start on ``week_start`` in the caller's zone, so a DST change moves no event."""
    agg = view.aggregate
    assert agg is not None
    if aggregation_type not in GRAINS:
        raise bad_request("invalid-aggregation-type", "aggregation_type: hourly, daily or weekly")
    if week_start is not None and week_start not in WEEKDAYS:
        raise bad_request("invalid-week-start", f"week_start: one of {', '.join(WEEKDAYS)}")
    grain = GRAINS[aggregation_type]
    if grain == "week":
        grain = week_grain(week_start or agg.week_start)
    rng = view_range(view, preset, start, end, tz)
    conds = [f"{k}:eq:{v}" for k, v in view.filters.items()]
    conds += [f"{k}:eq:{v}" for k, v in filters.items() if k in agg.filters]
    names = list(dict.fromkeys(agg.metrics.values()))

    def answer(g: str | None) -> list[dict[str, Any]]:
        q = metric_query(
            rt,
            principal,
            pack,
            metrics=names,
            rng=rng,
            grain=g,
            group_by=(),
            filters=conds,
            view_scope=view.scope,
        )
        return run(rt.warehouse, q).rows

    buckets = [
        {"bucket": r["bucket"], **{field: r[m] for field, m in agg.metrics.items()}}
        for r in answer(grain)
    ]
    total_row = answer(None)  # a distinct count over the range is not the sum of its buckets
    totals = {field: (total_row[0][m] if total_row else None) for field, m in agg.metrics.items()}
    return {
        **totals,
        "aggregation_type": aggregation_type,
        "week_start": (week_start or agg.week_start) if grain.startswith("week") else None,
        "filters": {k: v for k, v in filters.items() if k in agg.filters},
        "range": rng.as_dict(),
        "buckets": buckets,
        "freshness": rt.watermark(pack.name).as_dict(),
    }


class RealtimeCache:
    """Live values per (view, caller scope), kept ``ttl_s`` and dropped as soon as the loader
    committed another batch (the loader's batch count is the invalidation signal)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[Any, ...], tuple[float, int, dict[str, Any]]] = {}

    def get(self, key: tuple[Any, ...], ttl_s: float, generation: int) -> dict[str, Any] | None:
        with self._lock:
            hit = self._entries.get(key)
        if hit is None or time.monotonic() - hit[0] > ttl_s or hit[1] != generation:
            return None
        return hit[2]

    def put(self, key: tuple[Any, ...], generation: int, body: dict[str, Any]) -> None:
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[key] = (time.monotonic(), generation, body)


def _window(window: str, tz: str, now: datetime) -> TimeRange:
    z = zone(tz)
    if window == "today":
        local = now.astimezone(z)
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return TimeRange(start.astimezone(now.tzinfo), now + timedelta(microseconds=1), z)
    return TimeRange(now - parse_duration(window), now + timedelta(microseconds=1), z)


def answer_realtime(
    rt: Runtime,
    cache: RealtimeCache,
    principal: Principal,
    pack: Pack,
    name: str,
    view: ViewSpec,
    *,
    tz: str,
) -> dict[str, Any]:
    spec = view.realtime
    assert spec is not None
    scope = tuple(sorted((c.column, str(c.value)) for c in rt.roles.scope(principal, pack)))
    key = (pack.name, name, tz, scope)
    generation = rt.loader.stats.batches
    cached = cache.get(key, spec.ttl_s, generation)
    if cached is not None:
        return cached | {"cached": True}
    now = utc_now()
    values: dict[str, Any] = {}
    for field, v in spec.values.items():
        q = metric_query(
            rt,
            principal,
            pack,
            metrics=[v.metric],
            rng=_window(v.window, tz, now),
            grain=None,
            group_by=(),
            filters=[f"{c}:eq:{x}" for c, x in view.filters.items()],
            view_scope=view.scope,
        )
        rows = run(rt.warehouse, q).rows
        values[field] = {
            "value": rows[0][v.metric] if rows else None,
            "window": v.window,
            "computed_at": utc_now().isoformat().replace("+00:00", "Z"),
        }
    body = {
        "values": values,
        "ttl_s": spec.ttl_s,
        "freshness": rt.watermark(pack.name).as_dict(),
    }
    cache.put(key, generation, body)
    return body | {"cached": False}


def answer_sync_status(rt: Runtime, pack: Pack) -> dict[str, Any]:
    """The seed's ``warehouse_sync_status``: per table the last load, batches loaded, the
    loader's failures (each failed batch is retried, so failures = retries), and lag."""
    batches = {
        str(r["pack"]): int(r["n"])
        for r in rt.warehouse.query(
            exp.select(
                "pack",
                exp.alias_(
                    exp.func("count", exp.Distinct(expressions=[exp.column("batch_id")])), "n"
                ),
            )
            .from_(LOADS)
            .where(exp.column("pack").eq(exp.Placeholder(this="p")))
            .group_by("pack"),
            {"p": pack.name},
        ).to_pylist()
    }
    wm = rt.watermark(pack.name)
    st = rt.loader.stats
    fresh = {r["table"]: r for r in list_freshness(rt.warehouse, [pack.name], None, wm)}
    now = utc_now()
    tables = []
    for table in pack.spec.tables:
        f = fresh.get(table, {})
        last = f.get("newest_loaded_at")
        lag = None
        if last is not None:
            lag = round(
                (now - datetime.fromisoformat(last.replace("Z", "+00:00"))).total_seconds(), 3
            )
        tables.append(
            {
                "table": f"{pack.dataset}.{table}",
                "last_load_at": last,
                "newest_event_at": f.get("newest_occurred_at"),
                "seconds_since_last_load": lag,
            }
        )
    return {
        "tables": tables,
        "batches": batches.get(pack.name, 0),
        "failures": st.failures,
        "retries": st.failures,
        "last_error": st.last_error,
        "lag_seconds": round(wm.lag_seconds, 3),
        "status": "healthy" if st.last_error is None else "retrying",
    }
