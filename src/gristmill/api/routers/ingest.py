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

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from gristmill.api.deps import RuntimeDep, require
from gristmill.api.responses import problem_response
from gristmill.auth.permissions import Principal
from gristmill.core.errors import Problem, payload_too_large
from gristmill.core.permissions import Permission

router = APIRouter(tags=["ingest"])
WriterDep = Annotated[Principal, Depends(require(Permission.INGEST))]


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


@router.post("/v1/events", summary="Ingest native events")
async def ingest_native(request: Request, rt: RuntimeDep, principal: WriterDep) -> Response:
    counters = request.app.state.counters
    assert principal.pack is not None
    assert principal.source is not None
    try:
        raw = await read_body(request, rt.settings.limits.max_request_bytes)
    except Problem as problem:
        counters.reject(problem.slug)
        counters.count("/v1/events", problem.status)
        return problem_response(problem)
    reply = await rt.collector.handle(
        pack=principal.pack,
        source=principal.source,
        dialect="native",
        raw=raw,
        content_type=request.headers.get("content-type", ""),
        content_encoding=request.headers.get("content-encoding"),
    )
    if reply.problem is not None and reply.status != 422:
        counters.reject(reply.problem)
    counters.count("/v1/events", reply.status)
    return Response(reply.body, reply.status, dict(reply.headers), media_type=reply.media_type)
