"""Analytics: ``GET /v1/metrics``, ``GET /v1/events``, ``GET /v1/freshness``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from gristmill.api.deps import RuntimeDep, require
from gristmill.api.query import debug_allowed, metric_query, tenant_filters, time_range
from gristmill.api.responses import JSONBytes
from gristmill.auth.permissions import Principal
from gristmill.core.permissions import Permission
from gristmill.metrics.events import list_events, tables_for
from gristmill.metrics.model import build_conditions, parse_filter
from gristmill.metrics.service import run
from gristmill.rollup.freshness import list_freshness

router = APIRouter(tags=["analytics"])


def _csv(text: str | None) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()] if text else []


@router.get("/v1/metrics", summary="Any pack metric, scoped to the caller")
def metrics(
    rt: RuntimeDep,
    principal: Annotated[Principal, Depends(require(Permission.METRICS_READ))],
    metrics: Annotated[str, Query(description="Comma-separated metric names.")],
    preset: Annotated[str | None, Query(description="7d, 30d, 90d … (days up to now).")] = None,
    start: Annotated[datetime | None, Query(description="Range start (ISO 8601).")] = None,
    end: Annotated[datetime | None, Query(description="Range end, exclusive.")] = None,
    grain: Annotated[str | None, Query(description="hour, day, week or month.")] = None,
    tz: Annotated[str, Query(description="IANA time zone of buckets and presets.")] = "UTC",
    group_by: Annotated[str | None, Query(description="Comma-separated dimensions.")] = None,
    filter: Annotated[list[str], Query(description="column:op:value, repeatable.")] = [],  # noqa: B006
    pack: str | None = None,
    debug: bool = False,
) -> Response:
    p = rt.roles.pack_for(principal, pack)
    rng = time_range(preset, start, end, tz, default_preset=None)
    q = metric_query(
        rt,
        principal,
        p,
        metrics=_csv(metrics),
        rng=rng,
        grain=grain,
        group_by=_csv(group_by),
        filters=filter,
        debug=debug_allowed(rt, principal, debug),
    )
    result = run(rt.warehouse, q)
    body: dict[str, Any] = {
        "pack": p.name,
        "metrics": list(q.metrics),
        "range": rng.as_dict(),
        "grain": q.grain,
        "group_by": list(q.group_by),
        "rows": result.rows,
        "freshness": rt.watermark(p.name).as_dict(),
    }
    if q.debug:
        body["debug"] = result.debug(rt.warehouse.dialect)
    return JSONBytes(body)


@router.get("/v1/events", summary="Raw events in scope, newest first, with a cursor")
def events(
    rt: RuntimeDep,
    principal: Annotated[Principal, Depends(require(Permission.EVENTS_READ))],
    event_types: Annotated[str | None, Query(description="Comma-separated types.")] = None,
    start: datetime | None = None,
    end: datetime | None = None,
    preset: str | None = None,
    tz: str = "UTC",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
    filter: Annotated[list[str], Query(description="column:op:value, repeatable.")] = [],  # noqa: B006
    pack: str | None = None,
) -> Response:
    p = rt.roles.pack_for(principal, pack)
    rng = time_range(preset, start, end, tz, default_preset="90d")
    scope = rt.roles.scope(principal, p)
    types = _csv(event_types)
    filtered = [parse_filter(f)[0] for f in filter]
    readable = tables_for(p, types, scope, filtered) or tables_for(p, types, scope)
    conds = build_conditions(p, readable or list(p.spec.tables), filter)
    tenant_filters(conds, scope)
    page = list_events(
        lambda q, params: rt.warehouse.query(q, params),
        p,
        event_types=types,
        start=rng.start,
        end=rng.end,
        limit=limit,
        cursor=cursor,
        scope=scope,
        filters=conds,
    )
    return JSONBytes(
        {
            "pack": p.name,
            "range": rng.as_dict(),
            "total": page.total,
            "events": page.items,
            "next_cursor": page.next_cursor,
            "freshness": rt.watermark(p.name).as_dict(),
        }
    )


@router.get("/v1/freshness", summary="Newest event and load per table and tenant")
def freshness(
    rt: RuntimeDep,
    principal: Annotated[Principal, Depends(require(Permission.FRESHNESS_READ))],
    pack: str | None = None,
) -> Response:
    p = rt.roles.pack_for(principal, pack)
    scope = {c.column: c.value for c in rt.roles.scope(principal, p)}
    wm = rt.watermark(p.name)
    return JSONBytes(
        {
            "pack": p.name,
            **wm.as_dict(),
            "tables": list_freshness(rt.warehouse, [p.name], scope, wm),
        }
    )
