"""The audit trail of API calls: who read which analytics, who was refused, with what.

Every request to a route tagged with one of :data:`AUDITED_TAGS` gets exactly one row in the
append-only audit log (meta/governance.py), written before the response leaves: the caller
(key or token id), its role and pack, the route and the concrete path, the query parameters,
and the result (HTTP status). A non-GET call that succeeded, or a download through a signed
link, is the exception: its handler records the domain action itself (``erasure.requested``,
``export.create`` …) with richer detail, so the middleware does not write a second row for
it. Refusals (401, 403, 404, 429 from a handler) are always recorded here, since no handler
got to record them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gristmill.auth.permissions import Principal
from gristmill.runtime import Runtime

AUDITED_TAGS = frozenset({"views", "analytics", "exports", "governance", "quarantine", "feeds"})
SELF_AUDITED = frozenset({"download"})
"""GET routes whose handler writes its own entry (``export.download``) when it succeeds."""
MAX_PARAMS = 30
MAX_VALUE = 200


def actor(p: Principal | None) -> str:
    return "anonymous" if p is None else f"{p.kind}:{p.key_id or p.role}"


def _params(request: Request) -> dict[str, str]:
    items = list(request.query_params.multi_items())[:MAX_PARAMS]
    return {k[:64]: v[:MAX_VALUE] for k, v in items}


def audit_middleware(
    rt: Runtime,
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    async def audit(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        route: Any = request.scope.get("route")
        tags = set(getattr(route, "tags", None) or ())
        if route is None or not tags & AUDITED_TAGS:
            return response
        method = request.method
        self_audited = method not in ("GET", "HEAD") or getattr(route, "name", "") in SELF_AUDITED
        if self_audited and response.status_code < 400:
            return response  # the handler recorded the action itself
        p: Principal | None = getattr(request.state, "principal", None)
        tag = sorted(tags & AUDITED_TAGS)[0]
        action = f"{tag}.read" if method in ("GET", "HEAD") else f"{tag}.{method.lower()}"
        detail = {
            "role": None if p is None else p.role,
            "pack": None if p is None else p.pack,
            "route": getattr(route, "path", None),
            "params": _params(request),
            "result": response.status_code,
        }
        await run_in_threadpool(
            rt.governance.store.audit, actor(p), action, request.url.path[:200], **detail
        )
        return response

    return audit
