"""The data-feeds workbench page: ``GET /ui/data-feeds``.

Server-rendered shell; the page's script talks to ``/dashboard/data-feeds`` (upload with
progress, preview, create missing products, commit, status polling) and to
``/dashboard/metrics`` (KPI cards and Plotly charts) with the session cookie plus the
session's CSRF token, which only this page can read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from gristmill.api.deps import RuntimeDep
from gristmill.api.routers.feeds import csrf_token
from gristmill.api.routers.ui import env
from gristmill.auth.permissions import OPERATOR
from gristmill.auth.sessions import COOKIE

router = APIRouter(prefix="/ui/data-feeds", include_in_schema=False)


@router.get("")
def workbench(
    request: Request, rt: RuntimeDep, poll_ms: Annotated[int, Query(ge=200, le=60_000)] = 5000
) -> Response:
    """The workbench; it polls a feed's status every ``poll_ms`` (the seed's 5 s default)."""
    sid = request.cookies.get(COOKIE)
    principal = rt.sessions.get(sid) if sid else None
    if sid is None or principal is None or not rt.keys.still_valid(principal):
        return RedirectResponse("/ui/login", status_code=303)
    packs = list(rt.feeds.feeds)
    pack = principal.pack if principal.pack in packs else (packs[0] if packs else None)
    if pack is None or (principal.role != OPERATOR and principal.pack != pack):
        return HTMLResponse("<p>No pack with feeds for this key.</p>", status_code=403)
    feeds = rt.feeds.feeds[pack]
    tenant = next(iter(feeds.values())).spec.tenant
    page = env.get_template("feeds.html").render(
        pack=pack,
        data_types=list(feeds),
        tenant=tenant,
        business=principal.claims.get(tenant, ""),
        operator=principal.role == OPERATOR,
        csrf=csrf_token(sid),
        poll_ms=poll_ms,
        who=f"{principal.role} · {pack}",
    )
    return HTMLResponse(page)
