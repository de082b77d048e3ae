"""Dependencies as ``Annotated`` aliases, and permissions as declarative dependencies.

A route says ``Depends(require(Permission.QUARANTINE_READ))`` and gets the principal; the
role -> permission table in :mod:`gristmill.auth.permissions` is the only place that decides.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPBearer

from gristmill.auth.keys import token_from_headers
from gristmill.auth.permissions import Principal
from gristmill.auth.sessions import COOKIE
from gristmill.core.errors import forbidden, unauthorized
from gristmill.core.permissions import Permission
from gristmill.runtime import Runtime

# Dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in a
# worker thread, and three thread hops per ingest request cost more than the ingest itself.
# None of them blocks (key lookups hit a cache; a miss is one indexed SQLite read).


async def get_runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


# Declared only so the OpenAPI document names the schemes on every operation that needs a
# principal (FastAPI adds ``security`` for these); get_principal reads the headers itself.
_bearer = HTTPBearer(
    scheme_name="bearer",
    auto_error=False,
    description="A Gristmill key (write or secret) or a JWT from your identity provider.",
)
_session = APIKeyCookie(
    name=COOKIE,
    scheme_name="session",
    auto_error=False,
    description="The dashboard's sign-in session (GET and HEAD only).",
)


async def get_principal(
    request: Request,
    rt: RuntimeDep,
    _b: Annotated[object, Depends(_bearer)] = None,
    _s: Annotated[object, Depends(_session)] = None,
) -> Principal:
    """From ``Authorization`` (key or JWT), else — for reads only — the dashboard session."""
    token = token_from_headers(request.headers.get("authorization"))
    if token is not None:
        if (why := rt.keys.refusal(token)) is not None:
            raise unauthorized(why)
        principal = rt.keys.resolve(token)
        if principal is None:
            raise unauthorized("the key or token is unknown, revoked or expired")
        request.state.principal = principal  # for the audit trail (api/audit.py)
        return principal
    sid = request.cookies.get(COOKIE)
    if sid and request.method in ("GET", "HEAD"):
        session = rt.sessions.get(sid)
        if session is not None and rt.keys.still_valid(session):
            request.state.principal = session
            return session
    raise unauthorized("send a key as 'Authorization: Bearer <key>'")


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(perm: Permission) -> Callable[..., Awaitable[Principal]]:
    async def check(principal: PrincipalDep, rt: RuntimeDep) -> Principal:
        if not rt.roles.allows(principal, perm):
            raise forbidden(f"role {principal.role!r} lacks permission {perm.value!r}")
        return principal

    check.__name__ = f"require_{perm.name.lower()}"
    return check
