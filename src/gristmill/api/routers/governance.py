"""Governance endpoints: erasure requests and their receipts, retention runs, spend
restatements (reprice), the audit log.

Erasure answers ``202 Accepted`` once the request is recorded and the subject suppressed
(from that moment nothing new of the subject loads); the rows are erased by the worker and
``GET /v1/erasure/{id}`` shows the lifecycle and, when done, the receipt.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field, model_validator
from starlette.responses import Response

from gristmill.api.deps import RuntimeDep, require
from gristmill.api.responses import JSONBytes
from gristmill.auth.permissions import Principal
from gristmill.core.errors import bad_request, not_found
from gristmill.core.permissions import Permission
from gristmill.core.subjects import Mode
from gristmill.governance.erasure import Subject
from gristmill.rollup import repair

router = APIRouter(tags=["governance"])
EraserDep = Annotated[Principal, Depends(require(Permission.ERASURE_WRITE))]
ErasureReaderDep = Annotated[Principal, Depends(require(Permission.ERASURE_READ))]
RetentionDep = Annotated[Principal, Depends(require(Permission.RETENTION_RUN))]
RepriceDep = Annotated[Principal, Depends(require(Permission.REPRICE_RUN))]
RollupsDep = Annotated[Principal, Depends(require(Permission.ROLLUPS_REPAIR))]
AuditDep = Annotated[Principal, Depends(require(Permission.AUDIT_READ))]
RetentionReaderDep = Annotated[Principal, Depends(require(Permission.PIPELINE_READ))]

Ident = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[^\x00]+$")]


class ErasureBody(BaseModel):
    """Who to erase. Every identifier is matched in every pack: ``user_id`` and
    ``anonymous_id`` columns, and the properties a pack declares as ``subject_properties``."""

    user_id: Ident | None = None
    user_ids: list[Ident] = Field(default=[], max_length=100)
    anonymous_ids: list[Ident] = Field(default=[], max_length=100)
    emails: list[Ident] = Field(default=[], max_length=100)
    mode: Mode = Mode.DELETE

    @model_validator(mode="after")
    def _some_subject(self) -> ErasureBody:
        if not (self.user_id or self.user_ids or self.anonymous_ids or self.emails):
            raise ValueError("name at least one of user_id, user_ids, anonymous_ids, emails")
        return self


def _actor(p: Principal) -> str:
    return f"{p.kind}:{p.key_id or p.role}"


@router.post(
    "/v1/erasure",
    status_code=202,
    summary="Erase or anonymize a subject everywhere (GDPR Art. 17)",
    responses={202: {"description": "Recorded and suppressed; the job runs in the background"}},
)
def request_erasure(rt: RuntimeDep, principal: EraserDep, body: ErasureBody) -> Response:
    subject = Subject(
        (*([body.user_id] if body.user_id else []), *body.user_ids),
        tuple(body.anonymous_ids),
        tuple(body.emails),
    )
    request_id = rt.governance.request_erasure(subject, body.mode, _actor(principal))
    record = rt.governance.status(request_id)
    assert record is not None
    return JSONBytes(
        record.as_dict() | {"links": {"self": f"/v1/erasure/{request_id}"}},
        status_code=202,
        headers={"Location": f"/v1/erasure/{request_id}"},
    )


@router.post(
    "/v1/erasure/verify",
    summary="Find rows that still name an erased subject; erase them again with repair=true",
)
def erasure_verify(
    rt: RuntimeDep,
    principal: EraserDep,
    repair: bool = False,
    pack: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Every distinct identity in the pack tables is hashed and looked up among the erased
    subjects (whose requests are not pending or running); the answer counts per table and
    mode what still names one, never an identifier. A key of one pack reaches that pack
    only; the operator every pack, or the one named."""
    names = None
    if principal.pack is not None or pack is not None:
        names = [rt.roles.pack_for(principal, pack).name]
    report = rt.governance.verify_erasures(repair=repair, actor=_actor(principal), packs=names)
    return JSONBytes(report.as_dict())


@router.get("/v1/erasure/{request_id}", summary="An erasure request's status and receipt")
def erasure_status(rt: RuntimeDep, _: ErasureReaderDep, request_id: str) -> Response:
    record = rt.governance.status(request_id)
    if record is None:
        raise not_found(f"no erasure request {request_id[:64]!r}")
    return JSONBytes(record.as_dict())


@router.get("/v1/erasure", summary="Erasure requests, newest first")
def erasure_list(
    rt: RuntimeDep,
    _: ErasureReaderDep,
    status: Annotated[str | None, Query(pattern="^(pending|running|completed|failed)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    items = rt.governance.store.requests(status=status, limit=limit)
    return JSONBytes({"items": [r.as_dict() for r in items]})


@router.post("/v1/retention/run", summary="Enforce retention now (or count what it would do)")
def retention_run(rt: RuntimeDep, principal: RetentionDep, dry_run: bool = False) -> Response:
    report = rt.governance.run_retention(dry_run=dry_run, actor=_actor(principal))
    return JSONBytes(report.as_dict())


@router.post("/v1/reprice/{pack}", summary="Restate stored spend from the pack's price book")
def reprice_run(
    rt: RuntimeDep,
    principal: RepriceDep,
    pack: Annotated[str, Path(max_length=64)],
    since: datetime | None = None,
    until: datetime | None = None,
    dry_run: bool = False,
) -> Response:
    """Price every row in ``[since, until)`` again, update rows whose spend changed and
    recompute the rollup buckets they feed; audited as ``reprice.run``."""
    target = rt.roles.pack_for(principal, pack)
    if target.price_book is None:
        raise bad_request("no-price-book", f"pack {target.name!r} declares no enrichment.pricing")
    report = rt.governance.run_reprice(
        target.name,
        since=_aware(since),
        until=_aware(until),
        dry_run=dry_run,
        actor=_actor(principal),
    )
    return JSONBytes(report.as_dict())


def _rollups(rt: RuntimeDep, principal: Principal, pack: str, rollup: str | None) -> list[str]:
    target = rt.roles.pack_for(principal, pack)
    names = list(target.spec.rollups)
    if rollup is None:
        return names
    if rollup not in names:
        raise not_found(f"pack {target.name!r} declares no rollup {rollup!r}")
    return [rollup]


@router.get("/v1/rollups/{pack}/check", summary="Compare rollups with what their rows give")
def rollups_check(
    rt: RuntimeDep,
    principal: RollupsDep,
    pack: Annotated[str, Path(max_length=64)],
    rollup: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    """Per rollup: stored and expected keys, and how many are missing, extra or different
    (``ok`` when none); writes nothing. Loads keep rollups by delta merge or recompute; the
    rows are the oracle."""
    target = rt.roles.pack_for(principal, pack)
    names = _rollups(rt, principal, pack, rollup)
    items = [repair.check(rt.warehouse, target, n).as_dict() for n in names]
    return JSONBytes({"pack": target.name, "items": items})


@router.post("/v1/rollups/{pack}/rebuild", summary="Rebuild rollups from their rows")
def rollups_rebuild(
    rt: RuntimeDep,
    principal: RollupsDep,
    pack: Annotated[str, Path(max_length=64)],
    rollup: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    """Replace each rollup with what its rows give (one transaction per rollup where the engine
    has them); audited. The repair path after a suspected drift, or after editing rows by hand."""
    target = rt.roles.pack_for(principal, pack)
    names = _rollups(rt, principal, pack, rollup)
    items = [{"rollup": n, "rows": repair.rebuild(rt.warehouse, target, n)} for n in names]
    return JSONBytes({"pack": target.name, "items": items})


def _aware(t: datetime | None) -> datetime | None:
    return None if t is None or t.tzinfo is not None else t.replace(tzinfo=UTC)


@router.get("/v1/retention", summary="Retention per category: oldest row kept, next drop")
def retention_status(rt: RuntimeDep, _: RetentionReaderDep) -> Response:
    return JSONBytes(rt.governance.retention_status())


@router.get("/v1/audit", summary="The audit log, newest first")
def audit(
    rt: RuntimeDep,
    _: AuditDep,
    action: Annotated[str | None, Query(max_length=64, description="e.g. erasure.* ")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, description="id cursor")] = None,
) -> Response:
    if (
        action is not None
        and not action.replace("*", "").replace(".", "").replace("_", "").isalnum()
    ):
        raise bad_request("invalid-action", "action holds letters, digits, '.', '_' and '*'")
    rows = rt.governance.store.audit_entries(limit=limit, action=action, before_id=before)
    return JSONBytes(
        {
            "items": [e.as_dict() for e in rows],
            "next_before": rows[-1].id if len(rows) == limit else None,
        }
    )
