"""CSV feed endpoints at the routes the sales-tracker seed names (``/dashboard/data-feeds``).

Who may import: the roles a feed template lists (scoped to their tenant claim, e.g.
``business_id``) and the operator (who names the tenant). A tenant id in a request that is
not the caller's own answers 404, like any other tenant's data; an upload token of another
tenant answers 404 too, an expired or unknown one 410.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from gristmill.api.deps import RuntimeDep, get_principal
from gristmill.auth.keys import token_from_headers
from gristmill.auth.permissions import OPERATOR, Principal
from gristmill.auth.sessions import COOKIE
from gristmill.core.errors import Problem, forbidden, not_found, payload_too_large
from gristmill.feeds.service import FeedService
from gristmill.feeds.template import Feed
from gristmill.runtime import Runtime

router = APIRouter(prefix="/dashboard/data-feeds", tags=["feeds"])

DateOrderChoice = Literal["day_first", "month_first"]


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    pack: str

    @property
    def operator(self) -> bool:
        return self.principal.role == OPERATOR


CSRF_HEADER = "x-gristmill-csrf"


def csrf_token(sid: str) -> str:
    """The workbench's anti-forgery token for a session: only a page that read it can send
    it, and a cross-site form cannot set a custom header at all."""
    return hashlib.sha256(f"gristmill-csrf:{sid}".encode()).hexdigest()[:40]


async def feeds_principal(request: Request, rt: RuntimeDep) -> Principal:
    """A key or token, else the dashboard session *with* its CSRF header (the workbench
    posts uploads from the browser, where the session cookie is all it has)."""
    token = token_from_headers(request.headers.get("authorization"))
    if token is None:
        sid = request.cookies.get(COOKIE)
        sent = request.headers.get(CSRF_HEADER, "")
        if sid and (
            request.method in ("GET", "HEAD") or hmac.compare_digest(sent, csrf_token(sid))
        ):
            session = rt.sessions.get(sid)
            if session is not None and rt.keys.still_valid(session):
                return session
    return await get_principal(request, rt)


async def feed_caller(
    principal: Annotated[Principal, Depends(feeds_principal)],
    rt: RuntimeDep,
    pack: Annotated[str | None, Query()] = None,
) -> Caller:
    """The pack a feed request is about: the key's own, or (operator) the named one or the
    only pack that declares feeds."""
    feeds = rt.feeds.feeds
    if principal.role == OPERATOR:
        chosen = pack or (next(iter(feeds)) if len(feeds) == 1 else None)
        if chosen is None or chosen not in feeds:
            raise forbidden(f"name a pack with feeds: {', '.join(feeds) or 'none served'}")
        return Caller(principal, chosen)
    if principal.pack not in feeds or (pack not in (None, principal.pack)):
        raise forbidden("this key's pack declares no feeds")
    return Caller(principal, str(principal.pack))


CallerDep = Annotated[Caller, Depends(feed_caller)]


def _feed(svc: FeedService, caller: Caller, data_type: str) -> Feed:
    feed = svc.feed(caller.pack, data_type)
    if not caller.operator and caller.principal.role not in feed.spec.roles:
        raise forbidden(f"feed {data_type!r} is for roles: {', '.join(feed.spec.roles)}")
    return feed


def _tenant(caller: Caller, feed_tenant: str, asked: str | int | None) -> str:
    """The tenant the request acts for: the caller's claim (a different one asked: 404), or
    for the operator the one asked for (required)."""
    asked_s = None if asked is None or asked == "" else str(asked)
    if caller.operator:
        if asked_s is None:
            raise Problem(422, "missing-tenant", "Missing tenant", f"give {feed_tenant}")
        return asked_s
    own = caller.principal.claims.get(feed_tenant)
    if own is None or own == "":
        raise forbidden(f"role {caller.principal.role!r} needs claim {feed_tenant!r}")
    if asked_s is not None and asked_s != str(own):
        raise not_found(f"no {feed_tenant} {asked_s[:64]!r} here")
    return str(own)


def _own_feed(rt: Runtime, caller: Caller, feed_id: int) -> dict[str, Any]:
    row = rt.feeds.store.get_feed(feed_id)
    if row is None or row["pack"] != caller.pack:
        raise not_found(f"no feed {feed_id}")
    feed = _feed(rt.feeds, caller, row["data_type"])
    if not caller.operator and row["business_id"] != str(
        caller.principal.claims.get(feed.spec.tenant)
    ):
        raise not_found(f"no feed {feed_id}")
    return row


@router.post("/preview")
def preview(
    request: Request,
    rt: RuntimeDep,
    caller: CallerDep,
    file: Annotated[UploadFile, File(description="The CSV file.")],
    data_type: Annotated[str, Form()] = "sales",
    business_id: Annotated[str | None, Form()] = None,
    date_order: Annotated[DateOrderChoice | None, Form()] = None,
) -> JSONResponse:
    """Keep the upload under a token and check its first rows (``feeds.preview_rows``);
    ``date_order`` previews the file read day-first or month-first."""
    limit = rt.settings.feeds.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise payload_too_large(limit, "upload")
    feed = _feed(rt.feeds, caller, data_type)
    tenant = _tenant(caller, feed.spec.tenant, business_id)
    up = rt.feeds.save_upload(
        tenant, caller.pack, data_type, file.filename or "upload.csv", file.file
    )
    try:
        return JSONResponse(rt.feeds.preview(up, date_order))
    except Problem:
        rt.feeds.discard(up)
        raise


class CommitBody(BaseModel):
    upload_token: str = Field(max_length=64)
    data_type: str = "sales"
    auto_create_products: bool = False
    allow_invalid: bool = False
    """Load the valid rows and keep the invalid ones as rejects (else 422 on any)."""
    business_id: str | int | None = None
    date_order: DateOrderChoice | None = None
    """How ``03/04/2025`` reads, when the file does not decide it (422 without)."""
    confirm_merges: list[str] = Field(default_factory=list, max_length=10_000)
    """Names of the file whose proposed fuzzy match (preview ``summary.merges``) to accept."""
    confirm_all_merges: bool = False


@router.post("/commit", status_code=202)
def commit(body: CommitBody, rt: RuntimeDep, caller: CallerDep) -> JSONResponse:
    """Stage the whole file and queue the transform: 202 with ``feed_id`` and ``status``."""
    feed = _feed(rt.feeds, caller, body.data_type)
    tenant = (
        None
        if caller.operator and body.business_id is None
        else _tenant(caller, feed.spec.tenant, body.business_id)
    )
    up = rt.feeds.upload_for(body.upload_token, tenant)
    if up.data_type != body.data_type:
        raise Problem(
            422,
            "data-type-mismatch",
            "Data type mismatch",
            f"the upload is a {up.data_type!r} feed",
        )
    result = rt.feeds.commit(
        up,
        auto_create_products=body.auto_create_products,
        allow_invalid=body.allow_invalid,
        date_order=body.date_order,
        confirm_merges=body.confirm_merges,
        confirm_all_merges=body.confirm_all_merges,
    )
    return JSONResponse(result.as_dict(), status_code=202)


class ProductIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    category: str | None = None
    unit: str | None = None
    selling_price: str | float | None = None
    cost_price: str | float | None = None


class ProductsBody(BaseModel):
    products: list[ProductIn] = Field(min_length=1, max_length=10_000)
    business_id: str | int | None = None
    data_type: str = "sales"


@router.post("/auto-create-products")
def auto_create_products(body: ProductsBody, rt: RuntimeDep, caller: CallerDep) -> JSONResponse:
    """Create the named products (existing names are reused): ``{name -> product_id}``."""
    feed = _feed(rt.feeds, caller, body.data_type)
    tenant = _tenant(caller, feed.spec.tenant, body.business_id)
    made = rt.feeds.create_products(tenant, [p.model_dump() for p in body.products])
    return JSONResponse({"success": True, "products": made})


@router.get("/{feed_id}/transform-status")
def transform_status(feed_id: int, rt: RuntimeDep, caller: CallerDep) -> JSONResponse:
    row = _own_feed(rt, caller, feed_id)
    return JSONResponse({"success": True, "status": row["status"], "summary": row["summary"]})


@router.post("/{feed_id}/transform", status_code=202)
def retransform(feed_id: int, rt: RuntimeDep, caller: CallerDep) -> JSONResponse:
    """Queue the transform again: after a failure, or when a queued or transforming feed has
    not moved for ``feeds.stale_after_s`` (its process died). A transformed feed stays."""
    row = _own_feed(rt, caller, feed_id)
    if row["status"] in ("queued", "transforming"):
        age = (datetime.now(UTC) - datetime.fromisoformat(row["updated_at"])).total_seconds()
        if age < rt.settings.feeds.stale_after_s:
            raise Problem(409, "feed-busy", "Feed busy", f"feed {feed_id} is {row['status']}")
        rt.feeds.store.update_feed(feed_id, status="failed")  # stale: claimable again
    if row["status"] == "transformed":
        return JSONResponse({"success": True, "feed_id": feed_id, "status": row["status"]}, 202)
    rt.feeds.transformer.requeue(feed_id)
    return JSONResponse({"success": True, "feed_id": feed_id, "status": "queued"}, 202)


@router.get("/{feed_id}/rejects")
def rejects(
    feed_id: int, rt: RuntimeDep, caller: CallerDep, limit: Annotated[int, Query(le=10_000)] = 1000
) -> JSONResponse:
    """Rejected rows of a feed: line, reasons, and the fields as they were in the file."""
    _own_feed(rt, caller, feed_id)
    return JSONResponse({"success": True, "rejects": rt.feeds.store.list_rejects(feed_id, limit)})


@router.get("")
def history(
    rt: RuntimeDep,
    caller: CallerDep,
    business_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JSONResponse:
    """The caller's feeds, newest first, each with its status and ``summary`` verbatim."""
    tenant_col = next(iter(rt.feeds.feeds[caller.pack].values())).spec.tenant
    tenant = (
        None
        if caller.operator and business_id is None
        else _tenant(caller, tenant_col, business_id)
    )
    rows = [r for r in rt.feeds.store.list_feeds(tenant, limit) if r["pack"] == caller.pack]
    return JSONResponse({"success": True, "feeds": rows})
