"""Export jobs in the metadata store (SQLAlchemy Core: SQLite embedded, PostgreSQL scaled out).

A job is unique per ``key``, the hash of (pack, export, scope, period, parameters,
watermark): asking again for the same export at the same watermark finds the existing row
(a unique index, so two concurrent requests cannot both create one). Its scope is also kept
as one row per column in ``export_job_scopes``, which is what lets a scoped caller's job list
be filtered in SQL instead of scanning every tenant's jobs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from gristmill.core.clock import iso
from gristmill.meta.ddl import create_tables, get_or_make_secret
from gristmill.meta.governance import install_secret

metadata = sa.MetaData()

export_jobs = sa.Table(
    "export_jobs",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("key", sa.String(64), nullable=False, unique=True),
    sa.Column("pack", sa.String(64), nullable=False),
    sa.Column("export", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("scope", sa.Text, nullable=False),  # JSON {column: value}
    sa.Column("period", sa.String(120), nullable=False),
    sa.Column("params", sa.Text, nullable=False),  # JSON: range, filters, columns …
    sa.Column("watermark_us", sa.BigInteger, nullable=True),  # newest load time cut at
    sa.Column("newest_event_us", sa.BigInteger, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # queued|running|succeeded|failed
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
    sa.Column("owner", sa.String(40), nullable=True),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("rows", sa.BigInteger, nullable=True),
    sa.Column("bytes", sa.BigInteger, nullable=True),
    sa.Column("totals", sa.Text, nullable=True),  # JSON {column: integer}
    sa.Column("checksum", sa.String(64), nullable=True),
    sa.Column("csv_path", sa.Text, nullable=True),
    sa.Column("manifest_path", sa.Text, nullable=True),
    sa.Column("reconciled", sa.Boolean, nullable=True),
    sa.Column("reconciliation", sa.Text, nullable=True),  # JSON
    sa.Column("requested_by", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("downloaded_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_export_jobs_status", "status", "not_before"),
    sa.Index("ix_export_jobs_pack", "pack", "seq"),
)

export_job_scopes = sa.Table(
    "export_job_scopes",
    metadata,
    sa.Column("job_id", sa.String(40), primary_key=True),
    sa.Column("col", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(200), nullable=False),
    sa.Index("ix_export_job_scopes", "col", "value", "job_id"),
)

FINISHED = ("succeeded", "failed")


def now() -> datetime:
    return datetime.now(UTC)


def _utc(t: datetime | None) -> datetime | None:
    """SQLite hands timezone-aware columns back naive; they were written in UTC."""
    if t is None:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _iso(t: datetime | None) -> str | None:
    t = _utc(t)
    return None if t is None else t.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class ExportJob:
    seq: int
    id: str
    key: str
    pack: str
    export: str
    kind: str
    scope: dict[str, str]
    period: str
    params: dict[str, Any]
    watermark_us: int | None
    newest_event_us: int | None
    status: str
    attempts: int
    error: str | None
    rows: int | None
    bytes: int | None
    totals: dict[str, Any] | None
    checksum: str | None
    csv_path: str | None
    manifest_path: str | None
    reconciled: bool | None
    reconciliation: dict[str, Any] | None
    requested_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    downloaded_at: datetime | None
    owner: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def as_dict(self) -> dict[str, Any]:
        """The job as the API shows it (without URLs, which the service signs per call)."""
        return {
            "id": self.id,
            "pack": self.pack,
            "export": self.export,
            "kind": self.kind,
            "scope": self.scope,
            "period": self.period,
            "params": self.params,
            "status": self.status,
            "attempts": self.attempts,
            "error": self.error,
            "rows": self.rows,
            "bytes": self.bytes,
            "totals": self.totals,
            "checksum": self.checksum,
            "watermark": None if self.watermark_us is None else iso(self.watermark_us),
            "newest_event_at": None if self.newest_event_us is None else iso(self.newest_event_us),
            "reconciled": self.reconciled,
            "reconciliation": self.reconciliation,
            "requested_by": self.requested_by,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "downloaded_at": _iso(self.downloaded_at),
        }


def _job(r: Mapping[Any, Any]) -> ExportJob:
    def js(v: str | None) -> Any:
        return None if v is None else json.loads(v)

    created = _utc(r["created_at"])
    assert created is not None
    return ExportJob(
        seq=int(r["seq"]),
        id=r["id"],
        key=r["key"],
        pack=r["pack"],
        export=r["export"],
        kind=r["kind"],
        scope=json.loads(r["scope"]),
        period=r["period"],
        params=json.loads(r["params"]),
        watermark_us=r["watermark_us"],
        newest_event_us=r["newest_event_us"],
        status=r["status"],
        attempts=int(r["attempts"] or 0),
        error=r["error"],
        rows=r["rows"],
        bytes=r["bytes"],
        totals=js(r["totals"]),
        checksum=r["checksum"],
        csv_path=r["csv_path"],
        manifest_path=r["manifest_path"],
        reconciled=r["reconciled"],
        reconciliation=js(r["reconciliation"]),
        requested_by=r["requested_by"],
        created_at=created,
        started_at=_utc(r["started_at"]),
        finished_at=_utc(r["finished_at"]),
        downloaded_at=_utc(r["downloaded_at"]),
        owner=r["owner"],
    )


@dataclass(frozen=True, slots=True)
class NewJob:
    id: str
    key: str
    pack: str
    export: str
    kind: str
    scope: Mapping[str, str]
    period: str
    params: Mapping[str, Any]
    watermark_us: int | None
    newest_event_us: int | None
    requested_by: str
    csv_path: str
    manifest_path: str


class ExportStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        create_tables(metadata, engine)

    def signing_secret(self) -> bytes:
        """The key of local download URLs, made once per install (beside the subjects key)."""
        return get_or_make_secret(self.engine, install_secret, "exports")

    # -- create -----------------------------------------------------------------------------
    def get_or_create(self, new: NewJob) -> tuple[ExportJob, bool]:
        """The job of ``new.key``: created now (True), or the existing one (False). A failed
        job asked for again is queued again under its id (its attempts start over)."""
        at = now()
        try:
            with self.engine.begin() as c:
                c.execute(
                    export_jobs.insert().values(
                        id=new.id,
                        key=new.key,
                        pack=new.pack,
                        export=new.export,
                        kind=new.kind,
                        scope=json.dumps(dict(new.scope), sort_keys=True),
                        period=new.period,
                        params=json.dumps(dict(new.params), sort_keys=True),
                        watermark_us=new.watermark_us,
                        newest_event_us=new.newest_event_us,
                        status="queued",
                        attempts=0,
                        not_before=at,
                        requested_by=new.requested_by,
                        created_at=at,
                        csv_path=new.csv_path,
                        manifest_path=new.manifest_path,
                    )
                )
                for col, value in sorted(new.scope.items()):
                    c.execute(
                        export_job_scopes.insert().values(job_id=new.id, col=col, value=value)
                    )
        except sa.exc.IntegrityError:
            with self.engine.begin() as c:
                c.execute(
                    export_jobs.update()
                    .where(export_jobs.c.key == new.key, export_jobs.c.status == "failed")
                    .values(status="queued", attempts=0, not_before=at, finished_at=None)
                )
            job = self.by_key(new.key)
            if job is None:  # deleted between the two statements (expired): try once more
                return self.get_or_create(new)
            return job, False
        job = self.get(new.id)
        assert job is not None
        return job, True

    # -- read -------------------------------------------------------------------------------
    def get(self, job_id: str) -> ExportJob | None:
        with self.engine.connect() as c:
            r = c.execute(sa.select(export_jobs).where(export_jobs.c.id == job_id)).first()
        return None if r is None else _job(r._mapping)

    def by_key(self, key: str) -> ExportJob | None:
        with self.engine.connect() as c:
            r = c.execute(sa.select(export_jobs).where(export_jobs.c.key == key)).first()
        return None if r is None else _job(r._mapping)

    def list_jobs(
        self,
        *,
        packs: Sequence[str] | None,
        scope: Mapping[str, str],
        export: str | None = None,
        status: str | None = None,
        before_seq: int | None = None,
        limit: int = 100,
    ) -> list[ExportJob]:
        """Newest first. ``packs`` None: every pack (the operator). ``scope``: only jobs whose
        scope holds each of these column values (a scoped caller's own)."""
        q = sa.select(export_jobs).order_by(export_jobs.c.seq.desc()).limit(limit)
        if packs is not None:
            q = q.where(export_jobs.c.pack.in_(list(packs)))
        if export is not None:
            q = q.where(export_jobs.c.export == export)
        if status is not None:
            q = q.where(export_jobs.c.status == status)
        if before_seq is not None:
            q = q.where(export_jobs.c.seq < before_seq)
        for col, value in sorted(scope.items()):
            s = export_job_scopes
            q = q.where(
                sa.exists().where(
                    s.c.job_id == export_jobs.c.id, s.c.col == col, s.c.value == value
                )
            )
        with self.engine.connect() as c:
            return [_job(r._mapping) for r in c.execute(q)]

    def created_before(self, t: datetime) -> list[ExportJob]:
        q = sa.select(export_jobs).where(export_jobs.c.created_at < t).order_by(export_jobs.c.seq)
        with self.engine.connect() as c:
            return [_job(r._mapping) for r in c.execute(q)]

    def counts(self) -> dict[str, int]:
        """status -> jobs in it now."""
        q = sa.select(export_jobs.c.status, sa.func.count()).group_by(export_jobs.c.status)
        with self.engine.connect() as c:
            return {str(status): int(n) for status, n in c.execute(q)}

    def with_files(self) -> list[ExportJob]:
        """Succeeded jobs (their files exist unless something removed them)."""
        q = sa.select(export_jobs).where(export_jobs.c.status == "succeeded")
        with self.engine.connect() as c:
            return [_job(r._mapping) for r in c.execute(q.order_by(export_jobs.c.seq))]

    def not_downloaded(self) -> list[ExportJob]:
        q = (
            sa.select(export_jobs)
            .where(export_jobs.c.status == "succeeded", export_jobs.c.downloaded_at.is_(None))
            .order_by(export_jobs.c.seq)
        )
        with self.engine.connect() as c:
            return [_job(r._mapping) for r in c.execute(q)]

    # -- the worker's side ------------------------------------------------------------------
    def claim(self, owner: str, stale_before: datetime) -> ExportJob | None:
        """Take the next runnable job: a queued one whose time has come, or a running one
        whose heartbeat stopped (its process died). The conditional UPDATE makes two workers
        racing for one job safe: only one sees its row change."""
        at = now()
        t = export_jobs.c
        runnable = sa.or_(
            sa.and_(t.status == "queued", t.not_before <= at),
            sa.and_(t.status == "running", t.heartbeat_at < stale_before),
        )
        with self.engine.begin() as c:
            rows = c.execute(
                sa.select(t.id, t.status, t.heartbeat_at).where(runnable).order_by(t.seq).limit(8)
            ).all()
            for r in rows:
                cond = [t.id == r.id, t.status == r.status]
                if r.status == "running":
                    cond.append(t.heartbeat_at == r.heartbeat_at)
                res = c.execute(
                    export_jobs.update()
                    .where(*cond)
                    .values(
                        status="running",
                        owner=owner,
                        heartbeat_at=at,
                        started_at=at,
                        attempts=t.attempts + 1,
                    )
                )
                if res.rowcount == 1:
                    claimed = c.execute(sa.select(export_jobs).where(t.id == r.id)).first()
                    assert claimed is not None
                    return _job(claimed._mapping)
        return None

    def running(self) -> list[ExportJob]:
        with self.engine.connect() as c:
            q = sa.select(export_jobs).where(export_jobs.c.status == "running")
            return [_job(r._mapping) for r in c.execute(q)]

    def requeue(self, job_id: str, owner: str) -> bool:
        """Give a running job of a dead owner back to the queue (its attempt stays counted)."""
        with self.engine.begin() as c:
            res = c.execute(
                export_jobs.update()
                .where(
                    export_jobs.c.id == job_id,
                    export_jobs.c.owner == owner,
                    export_jobs.c.status == "running",
                )
                .values(status="queued", not_before=now(), owner=None)
            )
        return res.rowcount == 1

    def heartbeat(self, job_id: str, owner: str) -> bool:
        """Still ours? False when another worker took the job over (we were presumed dead)."""
        with self.engine.begin() as c:
            res = c.execute(
                export_jobs.update()
                .where(
                    export_jobs.c.id == job_id,
                    export_jobs.c.owner == owner,
                    export_jobs.c.status == "running",
                )
                .values(heartbeat_at=now())
            )
        return res.rowcount == 1

    def succeed(self, job_id: str, owner: str, **result: Any) -> bool:
        values = {
            k: json.dumps(v, sort_keys=True) if isinstance(v, dict) else v
            for k, v in result.items()
        }
        with self.engine.begin() as c:
            res = c.execute(
                export_jobs.update()
                .where(export_jobs.c.id == job_id, export_jobs.c.owner == owner)
                .values(status="succeeded", error=None, finished_at=now(), **values)
            )
        return res.rowcount == 1

    def fail(self, job_id: str, owner: str, error: str, *, retry_at: datetime | None) -> None:
        """Record a failed attempt: queued again at ``retry_at``, or failed for good."""
        values: dict[str, Any] = {"error": error[:4000]}
        if retry_at is None:
            values |= {"status": "failed", "finished_at": now()}
        else:
            values |= {"status": "queued", "not_before": retry_at}
        with self.engine.begin() as c:
            c.execute(
                export_jobs.update()
                .where(export_jobs.c.id == job_id, export_jobs.c.owner == owner)
                .values(**values)
            )

    def set_reconciliation(self, job_id: str, reconciled: bool, detail: Mapping[str, Any]) -> None:
        with self.engine.begin() as c:
            c.execute(
                export_jobs.update()
                .where(export_jobs.c.id == job_id)
                .values(
                    reconciled=reconciled,
                    reconciliation=json.dumps(dict(detail), sort_keys=True, default=str),
                )
            )

    def mark_downloaded(self, job_id: str) -> None:
        with self.engine.begin() as c:
            c.execute(
                export_jobs.update()
                .where(export_jobs.c.id == job_id, export_jobs.c.downloaded_at.is_(None))
                .values(downloaded_at=now())
            )

    def delete(self, job_ids: Sequence[str]) -> int:
        if not job_ids:
            return 0
        with self.engine.begin() as c:
            c.execute(export_job_scopes.delete().where(export_job_scopes.c.job_id.in_(job_ids)))
            res = c.execute(export_jobs.delete().where(export_jobs.c.id.in_(job_ids)))
        return int(res.rowcount)
