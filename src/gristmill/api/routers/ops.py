"""Operations: health, readiness, Prometheus metrics, pipeline stats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from gristmill.api.deps import RuntimeDep, require
from gristmill.api.responses import JSONBytes, problem_response
from gristmill.auth.permissions import Principal
from gristmill.core.clock import MICROS, from_datetime, iso, now_us, parse_rfc3339_us, to_datetime
from gristmill.core.durations import format_duration, parse_duration
from gristmill.core.errors import Problem, bad_request
from gristmill.core.permissions import Permission
from gristmill.load.quarantine_stats import source_quarantine
from gristmill.load.trace import trace_event

router = APIRouter(tags=["operations"])
DEFAULT_WINDOW = timedelta(hours=1)
MIN_WINDOW, MAX_WINDOW = timedelta(minutes=1), timedelta(days=31)


@router.get("/healthz", summary="Liveness")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness of log, warehouse tables and loader")
def readyz(rt: RuntimeDep) -> Response:
    problems = rt.readiness()
    if problems:
        return problem_response(
            Problem(
                503,
                "not-ready",
                "Not ready",
                "; ".join(problems),
                errors=[{"message": p} for p in problems],
                headers={"Retry-After": "5"},
            )
        )
    return JSONBytes(
        {
            "ready": True,
            "role": rt.role,
            "log": rt.log.name,
            "log_depth": rt.log_depth(),
            "warehouse": None if rt.role == "collect" else rt.warehouse.name,
            "packs": sorted(rt.packs),
        }
    )


@router.get("/metrics", summary="Prometheus metrics")
def metrics(request: Request, rt: RuntimeDep) -> Response:
    allow = rt.settings.server.metrics_allow
    host = request.client.host if request.client else ""
    if "*" not in allow and host not in allow:
        return problem_response(
            Problem(403, "forbidden", "Forbidden", f"{host} is not in server.metrics_allow")
        )
    return Response(generate_latest(request.app.state.prometheus), media_type=CONTENT_TYPE_LATEST)


def pipeline_stats(
    rt: RuntimeDep, pack: str | None = None, window: timedelta = DEFAULT_WINDOW
) -> dict[str, Any]:
    """The operator sees every pack; a pack role only its own pack's sources.

    ``sources`` holds each source's quarantine rate and last reasons over ``window`` (what
    the dashboard shows); ``balances`` the all-time conservation per source."""
    c = rt.conservation()
    if pack is not None:
        c = c.only_pack(pack)
    st = rt.loader.stats
    oldest = c.log.oldest_pending_received_at if pack is None else c.log.oldest_pending.get(pack)
    conserved = c.as_dict()
    conserved["balances"] = conserved.pop("sources")
    registries = rt.collector.registries
    return {
        **conserved,
        "window": format_duration(window),
        "sources": source_quarantine(rt.warehouse, window, datetime.now(UTC), pack),
        "schema_pins": [
            {
                "pack": p.pack,
                "source": p.source,
                "event_type": p.event_type,
                "version": p.version,
                "newest": registries[p.pack].latest(p.event_type) if p.pack in registries else None,
                "pinned_at": iso(from_datetime(p.pinned_at)),
                "pinned_by": p.pinned_by,
            }
            for p in rt.meta.pins.list(pack)
        ],
        "load_lag_seconds": 0.0 if oldest is None else max(0.0, (now_us() - oldest) / MICROS),
        "loader": {
            "running": rt.loader.alive,
            "batches": st.batches,
            "events": st.events,
            "loaded": st.loaded,
            "failures": st.failures,
            "last_error": st.last_error,
            "last_commit_at": None if st.last_commit_at is None else iso(st.last_commit_at),
            "last_batch_seconds": round(st.last_batch_seconds, 4),
            "last_wait_seconds": round(st.last_wait_seconds, 4),
            "last_wait_ended": st.last_wait_ended or None,
        },
        "log_cap_bytes": rt.settings.log.max_bytes,
        "warehouse": rt.warehouse.name,
        "packs": sorted(rt.packs) if pack is None else [pack],
    }


@router.get("/v1/pipeline/events/{event_id}", summary="Where is an event: loaded, quarantined?")
def trace(
    rt: RuntimeDep,
    principal: Annotated[Principal, Depends(require(Permission.PIPELINE_READ))],
    event_id: str,
    since: Annotated[
        str | None,
        Query(
            max_length=40,
            pattern=r"^(\d{1,9}[smhdwy]|\d{4}-\d{2}-\d{2}T[0-9:.]+(Z|[+-]\d{2}:\d{2}))$",
            description="Only events received at or after this: an RFC 3339 time "
            "(2026-12-06T10:00:00Z) or a span back from now (15m, 2h, 7d). Event ids have "
            "no index; this lets the search skip every older part of the tables.",
        ),
    ] = None,
) -> Response:
    packs = rt.packs if principal.pack is None else {principal.pack: rt.packs[principal.pack]}
    return JSONBytes(trace_event(rt.warehouse, packs, event_id, _since(since)))


def _since(text: str | None) -> datetime | None:
    """``since`` of the trace: a time, or a span back from now; anything else is a 400."""
    if text is None:
        return None
    try:
        return to_datetime(now_us() - int(parse_duration(text).total_seconds() * 1_000_000))
    except (ValueError, OverflowError):
        pass
    try:
        return to_datetime(parse_rfc3339_us(text))
    except (ValueError, OverflowError) as exc:
        raise bad_request(
            "invalid-since", f"since must be an RFC 3339 time or a span like 15m, not {text!r}"
        ) from exc


@router.get("/v1/pipeline/stats", summary="Conservation per source, log depth, loader state")
def stats(
    rt: RuntimeDep,
    principal: Annotated[Principal, Depends(require(Permission.PIPELINE_READ))],
    window: Annotated[
        str,
        Query(
            max_length=12,
            description="Span of the per-source quarantine rates: a whole number and one of "
            "s, m, h, d, w, y, between 1m and 31d (e.g. 1h, 7d); anything else is a 400.",
        ),
    ] = "1h",
) -> Response:
    try:
        span = parse_duration(window)
    except ValueError as exc:
        raise bad_request("invalid-window", str(exc)) from exc
    if not MIN_WINDOW <= span <= MAX_WINDOW:
        raise bad_request("invalid-window", f"window must be between 1m and 31d, not {window}")
    return JSONBytes(pipeline_stats(rt, principal.pack, span))
