"""Export endpoints: ask for an export a pack declares, follow its job, download it.

Handlers only translate HTTP to :class:`~gristmill.exports.ExportService` calls (which check
roles and scope, so a pack's own routes mounted on the same service behave the same).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request
from fastapi import Path as FPath
from starlette.responses import FileResponse, Response, StreamingResponse

from gristmill.api.deps import RuntimeDep, require
from gristmill.api.responses import JSONBytes
from gristmill.api.routers.views import with_path
from gristmill.auth.permissions import Principal
from gristmill.core.errors import bad_request, not_found
from gristmill.core.permissions import Permission
from gristmill.exports import ExportJob, RowsStream
from gristmill.exports.requests import MetricsRequest, RowsRequest
from gristmill.exports.service import actor
from gristmill.pack.exports import ExportSpec, RowsExportSpec
from gristmill.pack.models import Pack
from gristmill.runtime import Runtime

router = APIRouter(tags=["exports"])
CreatorDep = Annotated[Principal, Depends(require(Permission.EXPORTS_CREATE))]
ReaderDep = Annotated[Principal, Depends(require(Permission.EXPORTS_READ))]


def _job(request: Request, rt: Runtime, job: ExportJob, p: Principal, **kw: Any) -> Response:
    body = rt.exports.describe(job, base_url=str(request.base_url), issued_to=actor(p), **kw)
    return JSONBytes(
        body,
        status_code=200 if job.finished else 202,
        headers={"Location": f"/v1/exports/jobs/{job.id}"},
    )


@router.post(
    "/v1/exports/{pack}/{export}",
    summary="Ask for an export: rows streamed as CSV, or a job (202)",
    responses={
        200: {"description": "text/csv: the rows (a small rows window), or a finished job"},
        202: {"description": "A job; follow its Location"},
    },
)
def create_export(
    request: Request,
    rt: RuntimeDep,
    principal: CreatorDep,
    pack: str,
    export: str,
    body: Annotated[RowsRequest | MetricsRequest, Body()],
) -> Response:
    return _created(request, rt, principal, pack, export, body.model_dump(exclude_unset=True))


@router.get("/v1/exports/jobs", summary="Export jobs of the caller's scope, newest first")
def list_jobs(
    rt: RuntimeDep,
    principal: ReaderDep,
    pack: Annotated[str | None, Query(max_length=64)] = None,
    export: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str | None, Query(pattern="^(queued|running|succeeded|failed)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    jobs, nxt = rt.exports.list_jobs(
        principal, pack=pack, export=export, status=status, limit=limit, cursor=cursor
    )
    items = [j.as_dict() | {"links": {"self": f"/v1/exports/jobs/{j.id}"}} for j in jobs]
    return JSONBytes({"items": items, "next_cursor": nxt})


@router.get("/v1/exports/jobs/{job_id}", summary="One export job; signed URLs once succeeded")
def get_job(
    request: Request,
    rt: RuntimeDep,
    principal: ReaderDep,
    job_id: str,
    expires_s: Annotated[int | None, Query(ge=1, le=7 * 86400)] = None,
) -> Response:
    return _job(request, rt, rt.exports.job(principal, job_id), principal, expires_s=expires_s)


@router.get(
    "/v1/exports/jobs/{job_id}/reconcile",
    summary="Check the stored CSV's totals against the source again",
)
def reconcile(rt: RuntimeDep, principal: ReaderDep, job_id: str) -> Response:
    return JSONBytes(rt.exports.reconcile(job_id, principal))


@router.get(
    "/v1/exports/download/{token}",
    summary="Download a local export file through a signed link (403 once expired or altered)",
)
def download(rt: RuntimeDep, token: str) -> Response:
    d = rt.exports.download(token)
    return FileResponse(d.path, media_type=d.media_type, filename=d.filename)


# -- routes a pack declares for its exports (``exports.<name>.route``) ------------------------
def _pack_routes(pack: Pack, name: str, spec: ExportSpec) -> list[tuple[str, str, Any]]:
    """(method, path, handler) of one export's own routes: ask, list its jobs, show one."""
    assert spec.route is not None
    rows = isinstance(spec, RowsExportSpec)

    def pinned(path: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        """Route parameters as filters (rows) or scope (metrics); a body naming another
        value of the same column is refused."""
        pins = {spec.path[param]: value for param, value in path.items()}
        key = "filters" if rows else "scope"
        asked = body.get(key)
        asked = {} if asked in (None, "all") else dict(asked)
        for col, value in pins.items():
            if col in asked and asked[col] != value:
                raise bad_request("invalid-request", f"{col} is set by the route: {value!r}")
        return body | {key: asked | pins} if pins else body

    def create(
        request: Request,
        rt: RuntimeDep,
        principal: CreatorDep,
        path: dict[str, str],
        body: Annotated[RowsRequest | MetricsRequest, Body()],
    ) -> Response:
        return _created(
            request,
            rt,
            principal,
            pack.name,
            name,
            pinned(path, body.model_dump(exclude_unset=True)),
        )

    def jobs(
        rt: RuntimeDep,
        principal: ReaderDep,
        path: dict[str, str],
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(max_length=20)] = None,
    ) -> Response:
        found, nxt = rt.exports.list_jobs(
            principal, pack=pack.name, export=name, limit=limit, cursor=cursor
        )
        pins = {spec.path[k]: v for k, v in path.items()}
        items = [
            j.as_dict() | {"links": {"self": f"/v1/exports/jobs/{j.id}"}}
            for j in found
            if _matches(j.scope, j.params, pins)
        ]
        return JSONBytes({"items": items, "next_cursor": nxt})

    def show(
        request: Request,
        rt: RuntimeDep,
        principal: ReaderDep,
        path: dict[str, str],
        job_id: Annotated[str, FPath(max_length=40)],
        expires_s: Annotated[int | None, Query(ge=1, le=7 * 86400)] = None,
    ) -> Response:
        job = rt.exports.job(principal, job_id)
        pins = {spec.path[k]: v for k, v in path.items()}
        if job.pack != pack.name or job.export != name or not _matches(job.scope, job.params, pins):
            raise not_found(f"no job {job_id[:40]!r} here")
        return _job(request, rt, job, principal, expires_s=expires_s)

    return [
        ("POST", spec.route, with_path(spec.path, create)),
        ("GET", spec.route, with_path(spec.path, jobs)),
        ("GET", spec.route + "/{job_id}", with_path(spec.path, show)),
    ]


def _matches(scope: dict[str, Any], params: dict[str, Any], pins: dict[str, str]) -> bool:
    """Whether a job is about the route's values (its scope, or its rows filters)."""
    filters = {f[0]: f[2] for f in params.get("filters", []) if f[1] == "eq"}
    return all(str(scope.get(c, filters.get(c))) == v for c, v in pins.items())


def _created(
    request: Request,
    rt: Runtime,
    principal: Principal,
    pack: str,
    export: str,
    body: dict[str, Any],
) -> Response:
    out = rt.exports.create(principal, pack, export, body)
    if isinstance(out, RowsStream):
        return StreamingResponse(
            out.body,
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{out.filename}"',
                "X-Export-Rows": str(out.rows),
                "X-Export-Watermark": out.watermark or "",
            },
        )
    return _job(request, rt, out, principal)


def add_export_routes(app: FastAPI, rt: Runtime) -> None:
    for pack in rt.packs.values():
        for name, spec in pack.spec.exports.items():
            if spec.route is None:
                continue
            for method, path, handler in _pack_routes(pack, name, spec):
                handler.__name__ = f"export_{pack.name}_{name}_{method.lower()}"
                app.add_api_route(
                    path,
                    handler,
                    methods=[method],
                    tags=["exports"],
                    summary=(spec.title or name) + {"POST": "", "GET": " jobs"}[method],
                    description=spec.description,
                )
