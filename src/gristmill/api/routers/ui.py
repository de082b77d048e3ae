"""The dashboard: ``GET /ui`` (server-rendered KPI cards and Plotly charts of the caller's
views, a preset picker, a freshness badge and the pipeline's conservation counters).

Sign-in takes an API key once and keeps an opaque session cookie (HttpOnly, SameSite=Lax);
the key itself never goes into the cookie. Plotly is served from the installed ``plotly``
package, so the dashboard works without network access.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Form, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from gristmill.api.deps import RuntimeDep
from gristmill.api.routers.ui_panels import (
    PANELS,
    fmt,
    label,
    path_values,
)
from gristmill.api.routers.views import answer_view
from gristmill.auth.keys import token_from_headers
from gristmill.auth.permissions import OPERATOR, Principal
from gristmill.auth.sessions import COOKIE
from gristmill.core.errors import Problem
from gristmill.core.permissions import Permission
from gristmill.runtime import Runtime
from gristmill.web import TEMPLATES

router = APIRouter(prefix="/ui", include_in_schema=False)
env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))


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


def _script_json(data: Any) -> str:
    """JSON safe inside a <script> element."""
    return orjson.dumps(data).decode().replace("</", "<\\/").replace("\u2028", "\\u2028")


@router.get("")
def dashboard(
    request: Request, rt: RuntimeDep, preset: str | None = None, tz: str = "UTC"
) -> Response:
    principal = _caller(rt, request)
    if principal is None or principal.role == "writer":
        return RedirectResponse("/ui/login", status_code=303)
    views: list[dict[str, Any]] = []
    charts: list[dict[str, Any]] = []
    presets = ["7d", "30d", "90d"]
    wm = None
    for pack in rt.packs.values():
        if principal.pack not in (None, pack.name):
            continue
        wm = rt.watermark(pack.name)
        for name, view in pack.spec.views.items():
            if view.kind not in PANEL_KINDS:  # events, aggregations … are APIs only
                continue
            if principal.role != OPERATOR and principal.role not in view.roles:
                continue
            chosen = preset if preset in view.presets else view.default_preset
            presets = view.presets
            if view.kind != "kpis":
                path = path_values(pack, view, principal, request.query_params)
                if path is None:
                    views.append(
                        {"name": name, "title": view.title or name, "pick": list(view.path)}
                    )
                    continue
                build = PANELS[view.kind]
                try:
                    panel, more = build(rt, principal, pack, name, view, path, chosen)
                except Problem as p:
                    panel = {"name": name, "title": view.title or name, "error": p.detail}
                    more = []
                views.append(panel)
                charts += more
                continue
            try:
                body = answer_view(
                    rt,
                    principal,
                    pack,
                    name,
                    view,
                    preset=chosen,
                    tz=tz,
                    start=None,
                    end=None,
                    debug=False,
                )
            except Problem as p:
                text = html.escape(f"{p.title}: {p.detail}")
                return HTMLResponse(f"<p>{text}</p>", status_code=p.status)
            units = {m: pack.spec.metrics[m].unit for m in view.kpis}
            kpis = [
                {
                    "name": k,
                    "label": label(k),
                    "raw": body["kpis"].get(k),
                    "text": fmt(body["kpis"].get(k), units[k]),
                }
                for k in view.kpis
            ]
            for metric in view.series.metrics if view.series else []:
                pts = body["series"]["points"]
                money = pack.spec.metrics[metric].unit == "cents"
                charts.append(
                    {
                        "id": f"chart-{name}-{metric}",
                        "title": label(metric),
                        "x": [p["bucket"] for p in pts],
                        "y": [
                            (p[metric] / 100 if money and p[metric] is not None else p[metric])
                            for p in pts
                        ],
                        "kind": "bar" if pack.spec.metrics[metric].type == "count" else "scatter",
                        "money": money,
                    }
                )
            views.append(
                {
                    "name": name,
                    "title": view.title or name,
                    "range": body["range"],
                    "kpis": kpis,
                    "charts": [{"metric": m} for m in (view.series.metrics if view.series else [])],
                    "preset": chosen,
                }
            )
    conservation = None
    retention: dict[str, Any] | None = None
    if rt.roles.allows(principal, Permission.PIPELINE_READ):
        conservation = rt.conservation()
        if principal.pack is not None:
            conservation = conservation.only_pack(principal.pack)
        retention = rt.governance.retention_status()
        retention["categories"] = [
            c for c in retention["categories"] if principal.pack in (None, c["pack"])
        ]
    page = env.get_template("dashboard.html").render(
        views=views,
        charts_json=_script_json(charts),
        presets=presets,
        preset=next((v["preset"] for v in views if "preset" in v), None),
        query=dict(request.query_params),
        tz=tz,
        freshness=(wm.as_dict() if wm else {"as_of": "", "lag_seconds": 0.0}),
        conservation=conservation,
        retention=retention,
        who=f"{principal.role}" + (f" · {principal.pack}" if principal.pack else ""),
    )
    return HTMLResponse(page)


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
