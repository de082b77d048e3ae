"""The dashboard's operations panels: conservation, retention, per-source quarantine rates, the
quarantine browser, and the link to the feeds workbench.

The quarantine browser reads through the quarantine API itself (``GET /v1/quarantine`` and
``GET /v1/quarantine/{id}`` accept the dashboard session for reads). Replaying is a write,
which the session cookie is not good for on the API, so ``POST /ui/quarantine/{id}/replay``
takes the session, checks ``quarantine:replay`` and hands over to the API's own replay
handler — one code path, whatever that handler counts or records.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from starlette.responses import Response

from gristmill.api.deps import RuntimeDep
from gristmill.api.routers.ops import pipeline_stats
from gristmill.api.routers.quarantine import ReplayRequest, replay_
from gristmill.auth.permissions import OPERATOR, Principal
from gristmill.auth.sessions import COOKIE
from gristmill.core.envelope import Reason
from gristmill.core.errors import forbidden, unauthorized
from gristmill.core.permissions import Permission
from gristmill.runtime import Runtime

router = APIRouter(prefix="/quarantine", tags=["quarantine"])  # audited like the API's
UI_HEADER = "x-gristmill-ui"
"""Sent by the dashboard's own script. A cross-site form cannot set it, and a cross-site
``fetch`` with it needs a CORS preflight this app never grants: the replay is not forgeable
even though the session cookie rides along."""


def _session(rt: Runtime, request: Request) -> Principal | None:
    sid = request.cookies.get(COOKIE)
    session = rt.sessions.get(sid) if sid else None
    return session if session is not None and rt.keys.still_valid(session) else None


def source_rates(stats: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Per-source quarantine rates from ``/v1/pipeline/stats`` when that answer carries them
    (``sources[].quarantine_rate``); None — and no panel — when it does not."""
    rows = [s for s in stats.get("sources", []) if "quarantine_rate" in s]
    if not rows:
        return None
    return sorted(rows, key=lambda s: (-float(s["quarantine_rate"] or 0), str(s["source"])))


def operator_panels(rt: Runtime, principal: Principal) -> dict[str, Any]:
    """What the page shows besides the views, by permission (never by role name)."""
    out: dict[str, Any] = {
        "conservation": None,
        "retention": None,
        "rates": None,
        "quarantine": None,
    }
    if rt.roles.allows(principal, Permission.PIPELINE_READ):
        conservation = rt.conservation()
        if principal.pack is not None:
            conservation = conservation.only_pack(principal.pack)
        out["conservation"] = conservation
        retention = rt.governance.retention_status()
        retention["categories"] = [
            c for c in retention["categories"] if principal.pack in (None, c["pack"])
        ]
        out["retention"] = retention
        out["rates"] = source_rates(pipeline_stats(rt, principal.pack))
    if rt.roles.allows(principal, Permission.QUARANTINE_READ):
        out["quarantine"] = {
            "reasons": [r.value for r in Reason],
            "packs": sorted(rt.packs) if principal.pack is None else [principal.pack],
            "replay": rt.roles.allows(principal, Permission.QUARANTINE_REPLAY),
        }
    return out


def feeds_link(rt: Runtime, principal: Principal) -> str | None:
    """``/ui/data-feeds`` when this caller can open the workbench (see ``feeds_ui``)."""
    packs = list(rt.feeds.feeds)
    if not packs:
        return None
    if principal.role == OPERATOR or principal.pack in packs:
        return "/ui/data-feeds"
    return None


@router.post("/{quarantine_id}/replay")
def replay_one(
    request: Request,
    rt: RuntimeDep,
    quarantine_id: str,
    ui: Annotated[str | None, Header(alias=UI_HEADER)] = None,
) -> Response:
    """Replay one quarantined event from the dashboard (session + ``quarantine:replay``)."""
    principal = _session(rt, request)
    if principal is None:
        raise unauthorized("sign in to the dashboard first")
    request.state.principal = principal  # the audit row names the caller (api/audit.py)
    if ui != "1":
        raise forbidden(f"send the {UI_HEADER} header (the dashboard's script does)")
    if not rt.roles.allows(principal, Permission.QUARANTINE_REPLAY):
        raise forbidden(f"role {principal.role!r} lacks permission 'quarantine:replay'")
    return replay_(rt, principal, ReplayRequest(ids=[quarantine_id[:200]]))
