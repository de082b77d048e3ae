"""Export endpoints: ask for an export a pack declares, follow its job, download it.

Handlers only translate HTTP to :class:`~gristmill.exports.ExportService` calls (which check
roles and scope, so a pack's own routes mounted on the same service behave the same).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from starlette.responses import FileResponse, Response, StreamingResponse

from gristmill.api.deps import RuntimeDep, require
from gristmill.api.responses import JSONBytes
from gristmill.auth.permissions import Principal
from gristmill.core.permissions import Permission
from gristmill.exports import ExportJob, RowsStream
from gristmill.exports.requests import MetricsRequest, RowsRequest
from gristmill.exports.service import actor
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
    out = rt.exports.create(principal, pack, export, body.model_dump(exclude_unset=True))
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
