"""FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from gristmill import __version__
from gristmill.api.audit import audit_middleware
from gristmill.api.docs import add_docs
from gristmill.api.metrics import RequestCounters, build_registry
from gristmill.api.openapi import allowed_methods, describe
from gristmill.api.ratelimit import RateLimiter
from gristmill.api.responses import http_problem, problem_response, validation_problem
from gristmill.api.routers import analytics, governance, ingest, ops, quarantine, ui
from gristmill.api.routers import exports as exports_router
from gristmill.api.routers import feeds as feeds_router
from gristmill.api.routers import feeds_metrics as feeds_metrics_router
from gristmill.api.routers import feeds_ui as feeds_ui_router
from gristmill.api.routers.ingest import ROUTES as INGEST_ROUTES
from gristmill.api.routers.ingest import IngestApp
from gristmill.api.routers.views import add_view_routes
from gristmill.core.errors import Problem
from gristmill.runtime import Runtime


class GristmillAPI(FastAPI):
    """FastAPI, with ingest requests answered before its routing and middleware run (and
    query requests over a rate limit refused there too)."""

    ingest: IngestApp | None = None
    limiter: RateLimiter | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.ingest is not None:
            route = self.ingest.route(scope)
            if route is not None:
                await self.ingest(route, scope, receive, send)
                return
        if self.limiter is not None and await self.limiter.refuse_query(scope, send):
            return
        await super().__call__(scope, receive, send)


def create_app(rt: Runtime, *, url: str | None = None, start: bool = True) -> FastAPI:
    """An app over a runtime. With ``start``, the lifespan starts and stops the runtime."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if start:
            rt.start(url=url)
        try:
            yield
        finally:
            if start:
                rt.stop()

    app = GristmillAPI(
        title="Gristmill",
        version=__version__,
        lifespan=lifespan,
        description="Event-analytics pipeline: ingest, quarantine, exactly-once loads, KPIs. "
        "Every error is application/problem+json (RFC 9457).",
        docs_url=None,  # served from packaged assets by add_docs, never a CDN
        redoc_url=None,
    )
    app.state.runtime = rt
    app.state.counters = RequestCounters()
    app.state.prometheus = build_registry(rt, app.state.counters)
    app.state.ratelimiter = RateLimiter(
        rt.settings.rate_limits,
        app.state.counters,
        resolve=rt.keys.resolve,
        session=rt.sessions.get,
        query_paths={v.route for p in rt.packs.values() for v in p.spec.views.values()},
    )
    app.limiter = app.state.ratelimiter if rt.settings.rate_limits.enabled else None
    app.ingest = IngestApp(rt, app.state.counters, app.state.ratelimiter)

    @app.exception_handler(Problem)
    async def on_problem(_: Request, exc: Problem) -> Response:
        return problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> Response:
        return problem_response(validation_problem(exc))

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> Response:
        p = http_problem(request, exc)
        if exc.status_code == 405:  # every method of the path, not just one route's
            allow = allowed_methods(app.openapi(), request.url.path)
            if allow:
                p.headers["Allow"] = ", ".join(allow)
                p.detail = f"{request.method} is not allowed here; allowed: {', '.join(allow)}"
        return problem_response(p)

    @app.exception_handler(Exception)
    async def on_crash(_: Request, exc: Exception) -> Response:
        return problem_response(Problem(500, "internal", "Internal Server Error", "see the log"))

    app.openapi = describe(  # type: ignore[method-assign]
        app,
        INGEST_ROUTES,
        lambda path: app.state.ratelimiter.is_query(
            {"type": "http", "method": "GET", "path": path}
        ),
    )
    add_docs(app)

    app.include_router(ingest.router)
    app.include_router(ops.router)
    if rt.role == "collect":
        return app  # ingest, health and readiness only: no warehouse behind a collector
    app.middleware("http")(audit_middleware(rt))
    app.include_router(quarantine.router)
    app.include_router(governance.router)
    app.include_router(exports_router.router)
    exports_router.add_export_routes(app, rt)
    app.include_router(analytics.router)
    add_view_routes(app, rt)
    app.include_router(ui.router)
    app.include_router(feeds_router.router)
    app.include_router(feeds_metrics_router.router)
    app.include_router(feeds_ui_router.router)
    return app
