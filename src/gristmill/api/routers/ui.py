"""The dashboard: ``GET /ui`` (server-rendered KPI cards and Plotly charts of the caller's
views, a preset picker, a freshness badge and the pipeline's conservation counters).

Sign-in takes an API key once and keeps an opaque session cookie (HttpOnly, SameSite=Lax);
the key itself never goes into the cookie. Plotly is served from the installed ``plotly``
package, so the dashboard works without network access.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import available_timezones

import orjson
from fastapi import APIRouter, Form, Query, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from gristmill.api.deps import RuntimeDep
from gristmill.api.routers.ui_format import words
from gristmill.api.routers.ui_ops import feeds_link, operator_panels
from gristmill.api.routers.ui_ops import router as ops_router
from gristmill.api.routers.ui_panels import (
    PANELS,
    Span,
    kpis_panel,
    path_values,
)
from gristmill.api.routers.view_kinds import parse_when
from gristmill.auth.keys import token_from_headers
from gristmill.auth.permissions import OPERATOR, Principal
from gristmill.auth.sessions import COOKIE
from gristmill.core.errors import Problem
from gristmill.metrics.timerange import zone
from gristmill.pack.analytics import ViewSpec
from gristmill.pack.models import Pack
from gristmill.runtime import Runtime
from gristmill.web import TEMPLATES

router = APIRouter(prefix="/ui", include_in_schema=False)
env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
router.include_router(ops_router)


def _plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def _caller(rt: Runtime, request: Request) -> Principal | None:
    token = token_from_headers(request.headers.get("authorization"))
    if token is not None:
        return rt.keys.resolve(token)
    sid = request.cookies.get(COOKIE)
    session = rt.sessions.get(sid) if sid else None
    return session if session is not None and rt.keys.still_valid(session) else None


PANEL_KINDS = frozenset({"kpis", "breakdown", "reliability", "lifecycle", "track"})
ZONES = sorted(z for z in available_timezones() if "/" in z and not z.startswith("Etc/"))
"""The time-zone picker's list: IANA region/city names (the API takes any it knows)."""


def _script_json(data: Any) -> str:
    """JSON safe inside a <script> element."""
    return orjson.dumps(data).decode().replace("</", "<\\/").replace("\u2028", "\\u2028")


def _span(preset: str | None, tz: str, start: str, end: str) -> tuple[Span, str | None]:
    """The page's range; a bad zone or date falls back to UTC / the preset, with a message."""
    try:
        zone(tz)
    except Problem as p:
        return Span(preset, None, None, "UTC"), p.detail
    if not start and not end:
        return Span(preset, None, None, tz), None
    try:
        s, e = parse_when(start, tz, end=False), parse_when(end, tz, end=True)
    except Problem as p:
        return Span(preset, None, None, tz), p.detail
    if s is None or e is None or s >= e:
        return Span(preset, None, None, tz), "give a start date on or before the end date"
    return Span(None, s, e, tz), None


def _link(query: Mapping[str, str], **changes: str | None) -> str:
    """This page's query string with ``changes`` (None drops a key): preset links keep the
    zone and the chosen organisation."""
    out = {k: v for k, v in query.items() if k not in changes}
    out.update({k: v for k, v in changes.items() if v is not None})
    return urlencode(out)


def _view_title(pack: Pack, name: str, view: ViewSpec, principal: Principal) -> str:
    """The pack's own wording for the roles a view is written for ("Your store" for a
    vendor); anyone else sees it through (an operator) and gets a neutral name instead."""
    if principal.role in view.roles:
        return view.title or words(name)
    return f"{words(name)} ({' / '.join(view.roles)} view, every tenant)"


def _heading(principal: Principal, packs: list[Pack]) -> str:
    if principal.role == OPERATOR:
        return "Operations · " + (packs[0].spec.title if len(packs) == 1 else "every pack")
    pack = packs[0]
    role = pack.spec.roles.get(principal.role)
    scoped = [principal.claims.get(c) for c in (role.scope.values() if role else [])]
    if any(scoped):
        return f"{pack.spec.title} · " + ", ".join(str(v) for v in scoped if v)
    return f"{pack.spec.title} · {principal.role.replace('_', ' ')}"


def _panels(
    rt: Runtime, principal: Principal, pack: Pack, span: Span, query: Mapping[str, str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    views: list[dict[str, Any]] = []
    charts: list[dict[str, Any]] = []
    for name, view in pack.spec.views.items():
        if view.kind not in PANEL_KINDS:  # events, aggregations … are APIs only
            continue
        if principal.role != OPERATOR and principal.role not in view.roles:
            continue
        title = _view_title(pack, name, view, principal)
        path: dict[str, str] | None = {}
        if view.kind != "kpis":
            path = path_values(pack, view, principal, query)
            if path is None:
                views.append({"name": name, "title": title, "pick": list(view.path)})
                continue
        try:
            if view.kind == "kpis":
                panel, more = kpis_panel(rt, principal, pack, name, view, span)
            else:
                build = PANELS[view.kind]
                panel, more = build(rt, principal, pack, name, view, path or {}, span)
        except Problem as p:
            views.append({"name": name, "title": title, "error": p.detail})
            continue
        panel["title"] = title + (" · " + ", ".join(path.values()) if path else "")
        views.append(panel)
        charts += more
    return views, charts


@router.get("")
def dashboard(
    request: Request,
    rt: RuntimeDep,
    preset: str | None = None,
    tz: str = "UTC",
    start: str = "",
    end: str = "",
    every: Annotated[int, Query(ge=5, le=3600)] = 60,
) -> Response:
    """The dashboard. Everything it shows is in the query string (``preset`` or
    ``start``/``end`` dates, ``tz``, route parameters such as ``orgId``), so a link to it
    shows the same range to whoever opens it; ``every`` is the auto-refresh period (s)."""
    principal = _caller(rt, request)
    if principal is None or principal.role == "writer":
        return RedirectResponse("/ui/login", status_code=303)
    span, problem = _span(preset or None, tz, start, end)
    packs = [p for p in rt.packs.values() if principal.pack in (None, p.name)]
    views: list[dict[str, Any]] = []
    charts: list[dict[str, Any]] = []
    presets = ["7d", "30d", "90d"]
    wm = None
    for pack in packs:
        wm = rt.watermark(pack.name)
        got, more = _panels(rt, principal, pack, span, request.query_params)
        views += got
        charts += more
        presets = next(
            (v.presets for v in pack.spec.views.values() if v.kind in PANEL_KINDS), presets
        )
    ops = operator_panels(rt, principal)
    page = env.get_template("dashboard.html").render(
        heading=_heading(principal, packs) if packs else "Gristmill",
        views=views,
        charts_json=_script_json(charts),
        presets=presets,
        preset=None
        if span.start
        else (span.preset or next((v["preset"] for v in views if v.get("preset")), None)),
        span=span,
        start=start if span.start else "",
        end=end if span.start else "",
        problem=problem,
        zones=ZONES,
        query=dict(request.query_params),
        link=partial(_link, request.query_params),
        refresh_ms=every * 1000,
        tz=span.tz,
        freshness=(wm.as_dict() if wm else {"as_of": "", "lag_seconds": 0.0}),
        feeds_link=feeds_link(rt, principal),
        who=f"{principal.role}" + (f" · {principal.pack}" if principal.pack else ""),
        **ops,
    )
    return HTMLResponse(page, status_code=400 if problem else 200)


@router.get("/login")
def login_form() -> Response:
    return HTMLResponse(env.get_template("login.html").render(error=None))


def _signed_in(rt: Runtime, principal: Principal) -> Response:
    resp = RedirectResponse("/ui", status_code=303)
    resp.set_cookie(
        COOKIE,
        rt.sessions.create(principal),
        httponly=True,
        samesite="lax",
        max_age=rt.settings.auth.session_ttl_s,
        path="/",
    )
    return resp


@router.post("/login")
def login(rt: RuntimeDep, key: Annotated[str, Form()]) -> Response:
    principal = rt.keys.resolve(key.strip())
    if principal is None or principal.role == "writer":
        page = env.get_template("login.html").render(
            error="That key is unknown, revoked, or a write key (use a secret key)."
        )
        return HTMLResponse(page, status_code=401)
    return _signed_in(rt, principal)


@router.get("/login/once/{nonce}")
def login_once(rt: RuntimeDep, nonce: str) -> Response:
    principal = rt.sessions.redeem(nonce)
    if principal is None:
        return RedirectResponse("/ui/login", status_code=303)
    return _signed_in(rt, principal)


@router.post("/logout")
def logout(request: Request, rt: RuntimeDep) -> Response:
    sid = request.cookies.get(COOKIE)
    if sid:
        rt.sessions.drop(sid)
    resp = RedirectResponse("/ui/login", status_code=303)
    resp.delete_cookie(COOKIE, path="/")
    return resp


@router.get("/static/plotly.min.js")
def plotly_js() -> Response:
    return FileResponse(
        _plotly_js(),
        media_type="application/javascript",
        headers={"Cache-Control": "public, max-age=86400"},
    )
