"""Ingest: ``POST /v1/events`` (native envelopes, JSON array or NDJSON, plain or gzip).

Status codes:

* 200 — every event accepted (durable in the log);
* 207 — some accepted, some rejected (rejected ones are in quarantine; see ``results``);
* 422 — none accepted (problem+json, one entry per item in ``errors``);
* 400 — the body is not JSON or not valid gzip (kept in quarantine) or empty;
* 401 / 403 — no key, unknown or revoked key, or a key that may not ingest;
* 413 — over a size limit (the limit is in the body); nothing is kept;
* 415 — an unsupported Content-Encoding;
* 503 + Retry-After — the log is over its cap; nothing is kept, retry later.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from gristmill.api.deps import RuntimeDep
from gristmill.auth.keys import token_from_headers
from gristmill.auth.permissions import Principal
from gristmill.collect.cloudevents import structured_from_binary
from gristmill.collect.service import DIALECTS
from gristmill.core.errors import Problem, forbidden, payload_too_large, unauthorized
from gristmill.core.permissions import Permission
from gristmill.runtime import Runtime

router = APIRouter(tags=["ingest"])


async def read_body(request: Request, limit: int) -> bytes:
    """Read at most ``limit`` bytes of the (possibly compressed) body, else 413."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise payload_too_large(limit, "request body")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise payload_too_large(limit, "request body")
        chunks.append(chunk)
    return b"".join(chunks)


async def ingest(
    request: Request,
    rt: Runtime,
    dialect: str,
    query: dict[str, str] | None = None,
    rewrite: Callable[[bytes], bytes] | None = None,
) -> Response:
    """Read, authenticate (header key, or a key inside the body), frame, append, answer — with
    every answer, errors included, in the dialect's own format."""
    d = DIALECTS[dialect]
    counters = request.app.state.counters
    route = request.url.path

    def answer(
        status: int,
        body: bytes,
        media: str,
        headers: Sequence[tuple[str, str]],
        problem: str | None,
    ) -> Response:
        if problem is not None and status != 422 and problem != "events-rejected":
            counters.reject(problem)
        counters.count(route, status)
        return Response(body, status, dict(headers), media_type=media)

    def fail(p: Problem) -> Response:
        a = d.problem(p)
        return answer(a.status, a.body, a.media_type, a.headers, p.slug)

    def who(token: str | None) -> Principal | None:
        return rt.keys.resolve(token) if token else None

    header = token_from_headers(request.headers.get("authorization"))
    principal = who(header)
    if principal is None and (header is not None or not d.body_key):
        return fail(
            unauthorized(
                "send a valid write key (Authorization: Bearer or Basic, or "
                "in the body where the client library puts it)"
            )
        )
    try:
        raw = await read_body(request, rt.collector.body_limit(d))
        if rewrite is not None:
            raw = rewrite(raw)
        opened = rt.collector.open(
            d,
            raw,
            request.headers.get("content-type", ""),
            request.headers.get("content-encoding"),
            {**request.query_params, **(query or {})},
        )
    except Problem as p:
        return fail(p)
    if principal is None:
        body_key = opened.batch.key if opened.batch is not None else None
        principal = who(body_key or d.query_key(request.query_params))
        if principal is None:
            return fail(
                unauthorized(
                    "send a valid write key (Authorization: Bearer or Basic, "
                    "or in the body where the client library puts it)"
                )
            )
    if not rt.roles.allows(principal, Permission.INGEST):
        return fail(forbidden(f"role {principal.role!r} may not send events"))
    assert principal.pack is not None
    assert principal.source is not None
    reply = await rt.collector.finish(d, principal.pack, principal.source, opened)
    return answer(reply.status, reply.body, reply.media_type, reply.headers, reply.problem)


@router.post("/v1/events", summary="Ingest native events")
async def ingest_native(request: Request, rt: RuntimeDep) -> Response:
    return await ingest(request, rt, "native")


@router.post("/v1/batch", summary="Segment / RudderStack batch")
async def segment_batch(request: Request, rt: RuntimeDep) -> Response:
    return await ingest(request, rt, "segment")


def _segment_call(call: str) -> Callable[..., Any]:
    async def handle(request: Request, rt: RuntimeDep) -> Response:
        return await ingest(request, rt, "segment", {"_call": call})

    handle.__name__ = f"segment_{call}"
    return handle


for _call in ("track", "identify", "page", "screen", "group", "alias"):
    router.add_api_route(
        f"/v1/{_call}",
        _segment_call(_call),
        methods=["POST"],
        summary=f"Segment / RudderStack {_call}",
    )


def _posthog(path: str) -> None:
    async def handle(request: Request, rt: RuntimeDep) -> Response:
        return await ingest(request, rt, "posthog")

    handle.__name__ = "posthog_" + path.strip("/").replace("/", "_")
    router.add_api_route(path, handle, methods=["GET", "POST"], summary="PostHog capture (v0)")


for _path in ("/batch/", "/capture/", "/e/", "/i/v0/e/", "/track/"):
    _posthog(_path)


@router.post("/i/v1/analytics/events", summary="PostHog capture (v1)")
async def posthog_v1(request: Request, rt: RuntimeDep) -> Response:
    stamp = request.headers.get("posthog-request-timestamp")
    return await ingest(request, rt, "posthog_v1", {"_request_timestamp": stamp} if stamp else None)


@router.post("/com.snowplowanalytics.snowplow/tp2", summary="Snowplow tracker protocol (POST)")
async def snowplow_post(request: Request, rt: RuntimeDep) -> Response:
    return await ingest(request, rt, "snowplow")


@router.get("/i", summary="Snowplow tracker protocol (GET pixel)")
async def snowplow_get(request: Request, rt: RuntimeDep) -> Response:
    return await ingest(request, rt, "snowplow_pixel")


@router.post("/api/v1/events", summary="CloudEvents (structured, batch or binary mode)")
async def cloudevents(request: Request, rt: RuntimeDep) -> Response:
    ctype = request.headers.get("content-type", "")
    binary = not ctype.startswith(("application/cloudevents", "application/json")) or any(
        k.lower() == "ce-id" for k in request.headers
    )

    def to_structured(raw: bytes) -> bytes:
        return structured_from_binary(request.headers, raw) or raw

    return await ingest(request, rt, "cloudevents", rewrite=to_structured if binary else None)
