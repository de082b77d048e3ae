"""Ingest for every dialect: native ``POST /v1/events``, Segment/RudderStack, PostHog,
Snowplow and CloudEvents (see docs/collectors.md).

Ingest requests skip FastAPI's routing and middleware: :class:`IngestApp` answers them from
the raw ASGI scope (the FastAPI routes below stay for the OpenAPI document and as a fallback).
A single-event request spends most of its time in framework layers otherwise; see
BENCHMARKS.md. Native status codes:

* 200 — every event accepted (durable in the log);
* 207 — some accepted, some rejected (rejected ones are in quarantine; see ``results``);
* 422 — none accepted (problem+json, one entry per item in ``errors``);
* 400 — the body is not JSON or not valid gzip (kept in quarantine) or empty;
* 401 / 403 — no key, unknown or revoked key, or a key that may not ingest;
* 413 — over a size limit (the limit is in the body); nothing is kept;
* 415 — an unsupported Content-Encoding;
* 429 + Retry-After — over a rate limit per key or per client address (settings
  ``rate_limits``, :mod:`gristmill.api.ratelimit`); nothing is kept;
* 503 + Retry-After — the log is over its cap; nothing is kept, retry later.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from gristmill.api.deps import RuntimeDep
from gristmill.api.ratelimit import RateLimiter
from gristmill.auth.keys import token_from_headers
from gristmill.auth.permissions import Principal
from gristmill.collect.cloudevents import structured_from_binary
from gristmill.collect.service import DIALECTS
from gristmill.core.errors import Problem, forbidden, payload_too_large, unauthorized
from gristmill.core.permissions import Permission
from gristmill.runtime import Runtime

router = APIRouter(tags=["ingest"])
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Route:
    dialect: str
    query: Mapping[str, str] = field(default_factory=dict)
    cloudevents: bool = False
    """Binary-mode CloudEvents arrive as ``ce-*`` headers + data; they become structured."""


ROUTES: dict[tuple[str, str], Route] = {
    ("POST", "/v1/events"): Route("native"),
    ("POST", "/v1/batch"): Route("segment"),
    **{
        ("POST", f"/v1/{c}"): Route("segment", {"_call": c})
        for c in ("track", "identify", "page", "screen", "group", "alias")
    },
    **{
        (m, p): Route("posthog")
        for p in ("/batch/", "/capture/", "/e/", "/i/v0/e/", "/track/")
        for m in ("GET", "POST")
    },
    ("POST", "/i/v1/analytics/events"): Route("posthog_v1"),
    ("POST", "/com.snowplowanalytics.snowplow/tp2"): Route("snowplow"),
    ("GET", "/i"): Route("snowplow_pixel"),
    ("POST", "/api/v1/events"): Route("cloudevents", cloudevents=True),
}


@dataclass(frozen=True, slots=True)
class Answered:
    status: int
    body: bytes
    media_type: str
    headers: tuple[tuple[str, str], ...] = ()


class TooLarge(Exception):
    pass


Reader = Callable[[int], Awaitable[bytes]]
TRUE = frozenset({"1", "true", "yes"})


def is_historical(headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
    """An import of old events, on any dialect: header ``Gristmill-Historical: true`` or query
    ``_historical=true``. Device times are then kept as sent, with no clock-skew correction."""
    flag = headers.get("gristmill-historical") or query.get("_historical") or ""
    return flag.lower() in TRUE


async def handle(
    rt: Runtime,
    counters: Any,
    route: Route,
    path: str,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    read: Reader,
    *,
    client: str | None = None,
    limiter: RateLimiter | None = None,
) -> Answered:
    """Read, authenticate (a header key, or a key inside the body), frame, append, answer —
    every answer, errors included, in the dialect's own format. Rate limits (``limiter``):
    the client address first, the key as soon as it is known; both before the append."""
    d = DIALECTS[route.dialect]
    started = time.perf_counter()

    def answer(status: int, body: bytes, media: str, hdrs: Any, problem: str | None) -> Answered:
        if problem is not None and status != 422 and problem != "events-rejected":
            counters.reject(problem)
        counters.count(path, status, time.perf_counter() - started)
        return Answered(status, body, media, tuple(hdrs))

    def fail(p: Problem) -> Answered:
        a = d.problem(p)
        return answer(a.status, a.body, a.media_type, a.headers, p.slug)

    def who(token: str | None) -> Principal | None:
        return rt.keys.resolve(token) if token else None

    def missing() -> Problem:
        return unauthorized(
            "send a valid write key (Authorization: Bearer or Basic, or in "
            "the body where the client library puts it)"
        )

    lim = limiter
    if lim is not None:
        ip = lim.address(client, headers)
        if lim.trusted(ip):
            lim = None
        elif (over := lim.ingest_by_ip(ip)) is not None:
            return fail(over)

    header = token_from_headers(headers.get("authorization"))
    if header is not None and (why := rt.keys.refusal(header)) is not None:
        return fail(unauthorized(why))
    principal = who(header)
    if principal is None and (header is not None or not d.body_key):
        return fail(missing())
    if lim is not None and principal is not None:
        over = lim.ingest_by_key(principal, header)
        if over is not None:
            return fail(over)
    try:
        limit = rt.collector.body_limit(d)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise payload_too_large(limit, "request body")
        raw = await read(limit)
        ctype = headers.get("content-type", "")
        if route.cloudevents and (
            not ctype.startswith(("application/cloudevents", "application/json"))
            or "ce-id" in headers
        ):
            raw = structured_from_binary(headers, raw) or raw
        opened = rt.collector.open(
            d,
            raw,
            ctype,
            headers.get("content-encoding"),
            {**query, **route.query},
            historical=is_historical(headers, query),
        )
    except Problem as p:
        return fail(p)
    if principal is None:
        body_key = opened.batch.key if opened.batch is not None else None
        principal = who(body_key or d.query_key(query))
        if principal is None:
            return fail(missing())
        if lim is not None and (over := lim.ingest_by_key(principal, None)) is not None:
            return fail(over)
    if not rt.roles.allows(principal, Permission.INGEST):
        return fail(forbidden(f"role {principal.role!r} may not send events"))
    assert principal.pack is not None
    assert principal.source is not None
    reply = await rt.collector.finish(d, principal.pack, principal.source, opened)
    return answer(reply.status, reply.body, reply.media_type, reply.headers, reply.problem)


class IngestApp:
    """The ASGI fast path for ingest routes; everything else goes to ``app``."""

    def __init__(self, rt: Runtime, counters: Any, limiter: RateLimiter | None = None) -> None:
        self.rt = rt
        self.counters = counters
        self.limiter = limiter if limiter is not None and limiter.enabled else None

    def route(self, scope: Mapping[str, Any]) -> Route | None:
        if scope["type"] != "http":
            return None
        return ROUTES.get((scope["method"], scope["path"]))

    async def __call__(
        self, route: Route, scope: Mapping[str, Any], receive: Any, send: Any
    ) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = dict(urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1")))

        async def read(limit: int) -> bytes:
            chunks: list[bytes] = []
            size = 0
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    raise ConnectionResetError("client went away")
                body = msg.get("body", b"")
                size += len(body)
                if size > limit:
                    raise payload_too_large(limit, "request body")
                chunks.append(body)
                if not msg.get("more_body", False):
                    return b"".join(chunks)

        peer = scope.get("client")
        try:
            a = await handle(
                self.rt,
                self.counters,
                route,
                scope["path"],
                headers,
                query,
                read,
                client=peer[0] if peer else None,
                limiter=self.limiter,
            )
        except ConnectionResetError:
            return
        except Exception:  # the framework's error middleware is bypassed: answer 500 here
            log.exception("ingest failed")
            a = Answered(
                500,
                b'{"type":"about:blank","title":"Internal Server Error","status":500}',
                "application/problem+json",
            )
        raw_headers = [
            (b"content-type", a.media_type.encode()),
            (b"content-length", str(len(a.body)).encode()),
        ]
        raw_headers += [(k.lower().encode(), v.encode()) for k, v in a.headers]
        await send({"type": "http.response.start", "status": a.status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": a.body})


async def _via_framework(request: Request, rt: Runtime) -> Response:
    route = ROUTES[(request.method, request.url.path)]

    async def read(limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise payload_too_large(limit, "request body")
            chunks.append(chunk)
        return b"".join(chunks)

    a = await handle(
        rt,
        request.app.state.counters,
        route,
        request.url.path,
        request.headers,
        request.query_params,
        read,
        client=request.client.host if request.client else None,
        limiter=getattr(request.app.state, "ratelimiter", None),
    )
    return Response(a.body, a.status, dict(a.headers), media_type=a.media_type)


SUMMARIES = {
    "native": "Native events",
    "segment": "Segment / RudderStack",
    "posthog": "PostHog capture (v0)",
    "posthog_v1": "PostHog capture (v1)",
    "snowplow": "Snowplow tracker protocol",
    "snowplow_pixel": "Snowplow (GET pixel)",
    "cloudevents": "CloudEvents (structured, batch or binary mode)",
}


def _route_handler(method: str, path: str) -> Callable[..., Any]:
    async def endpoint(request: Request, rt: RuntimeDep) -> Response:
        return await _via_framework(request, rt)

    endpoint.__name__ = "ingest_" + method.lower() + path.replace("/", "_").replace(".", "_")
    return endpoint


for (_method, _path), _route in ROUTES.items():
    router.add_api_route(
        _path, _route_handler(_method, _path), methods=[_method], summary=SUMMARIES[_route.dialect]
    )
