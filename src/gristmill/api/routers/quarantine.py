"""Quarantine: list, inspect (with the original bytes) and replay."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from starlette.responses import Response

from gristmill.api.deps import RuntimeDep, require
from gristmill.api.responses import JSONBytes
from gristmill.auth.permissions import Principal
from gristmill.core.envelope import Reason
from gristmill.core.errors import not_found
from gristmill.core.permissions import Permission
from gristmill.load.quarantine import (
    QuarantineFilter,
    count_quarantine,
    list_quarantine,
    replay,
)

router = APIRouter(prefix="/v1/quarantine", tags=["quarantine"])
ReaderDep = Annotated[Principal, Depends(require(Permission.QUARANTINE_READ))]
ReplayerDep = Annotated[Principal, Depends(require(Permission.QUARANTINE_REPLAY))]


def _pack(principal: Principal, asked: str | None) -> str | None:
    """A pack role sees its own pack's quarantine only; the operator sees any."""
    if principal.pack is None:
        return asked
    if asked not in (None, principal.pack):
        raise not_found(f"no pack {asked[:64]!r} here")
    return principal.pack


@router.get("", summary="List quarantined events")
def list_(
    rt: RuntimeDep,
    principal: ReaderDep,
    pack: str | None = None,
    source: str | None = None,
    reason: Reason | None = None,
    include_replayed: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> Response:
    f = QuarantineFilter(
        _pack(principal, pack), source, reason.value if reason else None, include_replayed
    )
    rows = list_quarantine(rt.warehouse, f, limit=limit, after=cursor)
    return JSONBytes(
        {
            "items": rows,
            "counts": count_quarantine(rt.warehouse, f),
            "next_cursor": rows[-1]["quarantine_id"] if len(rows) == limit else None,
        }
    )


@router.get("/{quarantine_id}", summary="One quarantined event with its original bytes")
def get_one(rt: RuntimeDep, principal: ReaderDep, quarantine_id: str) -> Response:
    rows = list_quarantine(
        rt.warehouse,
        QuarantineFilter(pack=principal.pack, ids=(quarantine_id,), include_replayed=True),
        limit=1,
        with_raw=True,
    )
    if not rows:
        raise not_found(f"no quarantined event {quarantine_id!r}")
    return JSONBytes(rows[0])


class ReplayRequest(BaseModel):
    ids: list[str] = Field(default_factory=list, max_length=10_000)
    pack: str | None = None
    source: str | None = None
    reason: Reason | None = None
    limit: int = Field(10_000, ge=1, le=100_000)


@router.post("/replay", summary="Replay quarantined events through the collector again")
def replay_(rt: RuntimeDep, principal: ReplayerDep, body: ReplayRequest) -> Response:
    f = QuarantineFilter(
        _pack(principal, body.pack),
        body.source,
        body.reason.value if body.reason else None,
        False,
        tuple(body.ids),
    )
    result = replay(rt.warehouse, rt.collector, f, limit=body.limit)
    return JSONBytes(
        {
            "replayed": result.replayed,
            "accepted": result.accepted,
            "rejected": result.rejected,
            "failed": result.failed,
        }
    )
