"""Pack views: one GET route per view a pack declares (e.g. ``/api/v1/vendor/analytics``).

Only the roles a view names may call it (others 403). The caller's role scope and the view's
scope limit every row; nothing in the request can widen them.
"""

# No ``from __future__ import annotations`` here: the handlers' parameter annotations refer
# to each view (its presets) and FastAPI must evaluate them where they are defined.
import inspect
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request
from starlette.responses import Response

from gristmill.api.deps import PrincipalDep, RuntimeDep
from gristmill.api.query import debug_allowed, metric_query, time_range
from gristmill.api.responses import JSONBytes
from gristmill.api.routers.view_breakdown import Ask, answer_breakdown, answer_reliability
from gristmill.api.routers.view_entities import answer_lifecycle, answer_track
from gristmill.api.routers.view_kinds import (
    RealtimeCache,
    answer_aggregations,
    answer_events,
    answer_realtime,
    answer_sync_status,
    parse_when,
)
from gristmill.auth.permissions import Principal
from gristmill.core.errors import forbidden
from gristmill.metrics.service import fold, foldable, run
from gristmill.pack.analytics import ViewSpec
from gristmill.pack.models import Pack
from gristmill.runtime import Runtime


def answer_view(
    rt: Runtime,
    principal: Principal,
    pack: Pack,
    name: str,
    view: ViewSpec,
    *,
    preset: str | None,
    tz: str,
    start: datetime | None,
    end: datetime | None,
    debug: bool,
) -> dict[str, Any]:
    rng = time_range(
        preset,
        start,
        end,
        tz,
        default_preset=view.default_preset,
        allowed_presets=view.presets,
        allow_range=view.allow_range,
    )
    dbg = debug_allowed(rt, principal, debug)
    fixed = [f"{c}:eq:{v}" for c, v in view.filters.items()]
    body: dict[str, Any] = {
        "view": name,
        "title": view.title,
        "pack": pack.name,
        "range": rng.as_dict(),
        "presets": view.presets,
        "freshness": rt.watermark(pack.name).as_dict(),
    }
    debug_out: list[dict[str, Any]] = []
    kpis: dict[str, Any] | None = None
    if view.series is not None:
        sq = metric_query(
            rt,
            principal,
            pack,
            metrics=view.series.metrics,
            rng=rng,
            grain=view.series.grain,
            group_by=(),
            filters=fixed,
            view_scope=view.scope,
            debug=dbg,
        )
        series = run(rt.warehouse, sq)
        body["series"] = {"grain": view.series.grain, "points": series.rows}
        debug_out += series.debug(rt.warehouse.dialect) if dbg else []
        if foldable(sq, tuple(view.kpis)):
            # Totals of additive KPIs are the sum of the series: one query instead of two.
            kpis = fold(sq, series.rows, tuple(view.kpis))
    if kpis is None:
        kq = metric_query(
            rt,
            principal,
            pack,
            metrics=view.kpis,
            rng=rng,
            grain=None,
            group_by=(),
            filters=fixed,
            view_scope=view.scope,
            debug=dbg,
        )
        result = run(rt.warehouse, kq)
        kpis = result.rows[0] if result.rows else {}
        debug_out = result.debug(rt.warehouse.dialect) + debug_out if dbg else []
    body["kpis"] = kpis
    if dbg:
        body["debug"] = debug_out
    return body


def _handler(pack: Pack, name: str, view: ViewSpec) -> Callable[..., Response]:
    def handle(
        rt: RuntimeDep,
        principal: Annotated[Principal, Depends(_allowed(pack, name, view))],
        preset: Annotated[
            str | None,
            Query(
                description=f"One of {', '.join(view.presets)}.",
                json_schema_extra={"enum": [*view.presets, None]},
            ),
        ] = None,
        tz: Annotated[str, Query(description="IANA time zone.")] = "UTC",
        start: Annotated[datetime | None, Query(include_in_schema=view.allow_range)] = None,
        end: Annotated[datetime | None, Query(include_in_schema=view.allow_range)] = None,
        debug: bool = False,
    ) -> Response:
        return JSONBytes(
            answer_view(
                rt,
                principal,
                pack,
                name,
                view,
                preset=preset,
                tz=tz,
                start=start,
                end=end,
                debug=debug,
            )
        )

    handle.__name__ = f"view_{pack.name}_{name}"
    return handle


def _allowed(pack: Pack, name: str, view: ViewSpec) -> Callable[..., Principal]:
    def allowed(principal: PrincipalDep) -> Principal:
        if principal.role != "operator" and not (
            principal.pack == pack.name and principal.role in view.roles
        ):
            raise forbidden(f"view {name!r} is for roles: {', '.join(view.roles)}")
        return principal

    return allowed


def _events_handler(pack: Pack, name: str, view: ViewSpec) -> Callable[..., Response]:
    def handle(
        rt: RuntimeDep,
        principal: Annotated[Principal, Depends(_allowed(pack, name, view))],
        event_types: Annotated[str | None, Query(description="Comma-separated types.")] = None,
        start_date: Annotated[str | None, Query(description="Inclusive; time or date.")] = None,
        end_date: Annotated[
            str | None, Query(description="Exclusive time, or a whole date.")
        ] = None,
        tz: str = "UTC",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: str | None = None,
    ) -> Response:
        types = [t for t in (event_types or "").split(",") if t]
        return JSONBytes(
            answer_events(
                rt,
                principal,
                pack,
                view,
                event_types=types,
                start=parse_when(start_date, tz, end=False),
                end=parse_when(end_date, tz, end=True),
                tz=tz,
                limit=limit,
                cursor=cursor,
            )
        )

    return handle


def _aggregations_handler(pack: Pack, name: str, view: ViewSpec) -> Callable[..., Response]:
    agg = view.aggregate
    assert agg is not None
    names = ", ".join(agg.filters) or "none"

    def handle(
        request: Request,
        rt: RuntimeDep,
        principal: Annotated[Principal, Depends(_allowed(pack, name, view))],
        aggregation_type: Annotated[str, Query(pattern="^(hourly|daily|weekly)$")] = "daily",
        start_date: Annotated[str | None, Query(description="Inclusive; time or date.")] = None,
        end_date: Annotated[
            str | None, Query(description="Exclusive time, or a whole date.")
        ] = None,
        preset: str | None = None,
        tz: Annotated[str, Query(description="IANA time zone of the buckets.")] = "UTC",
        week_start: Annotated[str | None, Query(description="monday … sunday")] = None,
    ) -> Response:
        filters = {k: v for k, v in request.query_params.items() if k in agg.filters}
        return JSONBytes(
            answer_aggregations(
                rt,
                principal,
                pack,
                view,
                aggregation_type=aggregation_type,
                start=parse_when(start_date, tz, end=False),
                end=parse_when(end_date, tz, end=True),
                preset=preset,
                tz=tz,
                week_start=week_start,
                filters=filters,
            )
        )

    handle.__doc__ = f"Filters by name (query parameters): {names}."
    return handle


def _realtime_handler(pack: Pack, name: str, view: ViewSpec) -> Callable[..., Response]:
    def handle(
        request: Request,
        rt: RuntimeDep,
        principal: Annotated[Principal, Depends(_allowed(pack, name, view))],
        tz: str = "UTC",
    ) -> Response:
        cache: RealtimeCache = request.app.state.realtime
        return JSONBytes(answer_realtime(rt, cache, principal, pack, name, view, tz=tz))

    return handle


def _sync_handler(pack: Pack, name: str, view: ViewSpec) -> Callable[..., Response]:
    def handle(
        rt: RuntimeDep, _: Annotated[Principal, Depends(_allowed(pack, name, view))]
    ) -> Response:
        return JSONBytes(answer_sync_status(rt, pack))

    return handle


def with_path(path: dict[str, str], handle: Callable[..., Response]) -> Callable[..., Response]:
    """FastAPI reads a handler's parameters from its signature: declare each route parameter
    (``{orgId}``, mapped to its column in ``path``) as a path parameter and hand them to
    ``handle`` as one ``path`` dict."""
    sig = inspect.signature(handle, eval_str=True)  # a module may postpone annotations
    rest = [p for p in sig.parameters.values() if p.name != "path"]
    declared = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[str, Path(max_length=200, description=f"Value of {column}.")],
        )
        for name, column in path.items()
    ]

    def wrapper(**kwargs: Any) -> Response:
        values = {name: kwargs.pop(name) for name in path}
        return handle(path=values, **kwargs)

    wrapper.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[*(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in rest), *declared]
    )
    return wrapper


def _series_handler(pack: Pack, name: str, view: ViewSpec) -> Callable[..., Response]:
    """Breakdown and reliability views: the same parameters, ``percentiles`` for the
    latter; filters by dimension name come from the query string."""
    spec = view.breakdown or view.reliability
    assert spec is not None
    answer = answer_breakdown if view.kind == "breakdown" else answer_reliability
    reliability = view.kind == "reliability"

    def handle(
        request: Request,
        rt: RuntimeDep,
        principal: Annotated[Principal, Depends(_allowed(pack, name, view))],
        path: dict[str, str],
        grain: Annotated[str | None, Query(description=" | ".join(spec.grains))] = None,
        preset: Annotated[str | None, Query(description=", ".join(view.presets))] = None,
        start: datetime | None = None,
        end: datetime | None = None,
        tz: Annotated[str, Query(description="IANA time zone of the buckets.")] = "UTC",
        percentiles: Annotated[
            str | None,
            Query(
                description="Comma list, e.g. 50,95,99 (each 0 < p < 100).",
                include_in_schema=reliability,
            ),
        ] = None,
    ) -> Response:
        ask = Ask(path, dict(request.query_params), grain, preset, start, end, tz, percentiles)
        return JSONBytes(answer(rt, principal, pack, view, ask))

    handle.__doc__ = f"Filters by name (query parameters): {', '.join(spec.filters) or 'none'}."
    return with_path(view.path, handle)


def _entity_handler(pack: Pack, name: str, view: ViewSpec) -> Callable[..., Response]:
    """Lifecycle and track views: the breakdown's parameters; ``stale_minutes`` for a track,
    and a lifecycle's buckets default to its pack's zone."""
    spec = view.lifecycle or view.track
    assert spec is not None
    is_track = view.track is not None
    default_tz = view.lifecycle.tz if view.lifecycle is not None else "UTC"
    grains = view.lifecycle.grains if view.lifecycle is not None else []

    def handle(
        request: Request,
        rt: RuntimeDep,
        principal: Annotated[Principal, Depends(_allowed(pack, name, view))],
        path: dict[str, str],
        preset: Annotated[str | None, Query(description=", ".join(view.presets))] = None,
        start: datetime | None = None,
        end: datetime | None = None,
        tz: Annotated[str, Query(description="IANA time zone of the buckets.")] = default_tz,
        grain: Annotated[
            str | None, Query(description=" | ".join(grains), include_in_schema=not is_track)
        ] = None,
        stale_minutes: Annotated[
            str | None,
            Query(
                description="Minutes without a ping that make an entity stale.",
                include_in_schema=is_track,
            ),
        ] = None,
    ) -> Response:
        ask = Ask(path, dict(request.query_params), grain, preset, start, end, tz)
        if is_track:
            return JSONBytes(answer_track(rt, principal, pack, view, ask, stale_minutes))
        return JSONBytes(answer_lifecycle(rt, principal, pack, view, ask))

    handle.__doc__ = f"Filters by name (query parameters): {', '.join(spec.filters) or 'none'}."
    return with_path(view.path, handle)


HANDLERS = {
    "kpis": lambda pack, name, view: _handler(pack, name, view),
    "events": _events_handler,
    "aggregations": _aggregations_handler,
    "realtime": _realtime_handler,
    "sync_status": _sync_handler,
    "breakdown": _series_handler,
    "reliability": _series_handler,
    "lifecycle": _entity_handler,
    "track": _entity_handler,
}


def add_view_routes(app: FastAPI, rt: Runtime) -> None:
    app.state.realtime = RealtimeCache()
    for pack in rt.packs.values():
        for name, view in pack.spec.views.items():
            handler = HANDLERS[view.kind](pack, name, view)
            handler.__name__ = f"view_{pack.name}_{name}"
            app.add_api_route(
                view.route,
                handler,
                methods=["GET"],
                tags=["views"],
                summary=view.title or name,
                description=view.description,
            )
