"""Governance records in the metadata store: the audit log, erasure requests and the
suppression list, plus the install secret that keys subject hashes.

None of these tables holds an erased identifier in clear: a request is stored with the
subject's keyed hashes and a count of identifiers, and its report names tables and counts.
The identifiers themselves live only in the running job's memory.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from gristmill.core.subjects import Mode, Suppression, SuppressionSet
from gristmill.meta.ddl import create_tables, get_or_make_secret

metadata = sa.MetaData()

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(200), nullable=False, default=""),
    sa.Column("detail", sa.Text, nullable=False, default="{}"),
)

erasure_requests = sa.Table(
    "erasure_requests",
    metadata,
    sa.Column("request_id", sa.String(40), primary_key=True),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending|running|completed|failed
    sa.Column("subjects", sa.Text, nullable=False),  # JSON list of keyed hashes
    # The identifiers themselves, only while the job needs them (a restart resumes the
    # request); wiped in the transaction that marks it completed or failed.
    sa.Column("pending_ids", sa.Text, nullable=True),
    sa.Column("requested_by", sa.String(200), nullable=False),
    sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("report", sa.Text, nullable=False, default="{}"),
    sa.Column("error", sa.Text, nullable=True),
)

suppressions = sa.Table(
    "suppressions",
    metadata,
    sa.Column("subject", sa.String(64), primary_key=True),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("request_id", sa.String(40), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

install_secret = sa.Table(
    "install_secret",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
)


APPEND_ONLY: dict[str, tuple[str, ...]] = {
    "sqlite": tuple(
        f"CREATE TRIGGER IF NOT EXISTS audit_log_no_{op.lower()} BEFORE {op} ON audit_log "
        "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
        for op in ("UPDATE", "DELETE")
    ),
    "postgresql": (
        "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$",
        "DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log",
        "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()",
    ),
}
"""Triggers that refuse UPDATE and DELETE on ``audit_log``, per metadata-store dialect."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "role": self.detail.get("role"),
            "action": self.action,
            "target": self.target,
            "result": self.detail.get("result"),
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class ErasureRecord:
    request_id: str
    mode: Mode
    status: str
    subjects: int
    requested_by: str
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    report: dict[str, Any]
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return None if t is None else _utc(t).isoformat()

        took = None
        if self.started_at is not None and self.finished_at is not None:
            took = round((_utc(self.finished_at) - _utc(self.started_at)).total_seconds(), 3)
        return {
            "request_id": self.request_id,
            "mode": self.mode.value,
            "status": self.status,
            "subjects": self.subjects,
            "requested_by": self.requested_by,
            "requested_at": iso(self.requested_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "seconds": took,
            "report": self.report,
            "error": self.error,
        }


def _utc(t: datetime) -> datetime:
    """SQLite hands timezone-aware columns back naive; they were written in UTC."""
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)


def write_audit(
    conn: sa.Connection, actor: str, action: str, target: str = "", **detail: Any
) -> None:
    """One audit row, inside the caller's transaction (the change and its record commit
    together)."""
    conn.execute(
        audit_log.insert().values(
            at=now(),
            actor=actor,
            action=action,
            target=target,
            detail=json.dumps(detail, sort_keys=True, default=str),
        )
    )


class GovernanceStore:
    """Audit, erasure requests and suppressions over the metadata store's engine."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        create_tables(metadata, engine)
        self._append_only()
        self.secret = self._secret()

    def _append_only(self) -> None:
        """Make the store itself refuse to change or remove audit rows (triggers), so no code
        path — an API, a script, a bug — can rewrite history; only dropping the table can."""
        stmts = APPEND_ONLY.get(self.engine.dialect.name, ())
        with self.engine.begin() as c:
            for stmt in stmts:
                c.exec_driver_sql(stmt)

    def _secret(self) -> bytes:
        return get_or_make_secret(self.engine, install_secret, "subjects")

    # -- audit --------------------------------------------------------------------------
    def audit(self, actor: str, action: str, target: str = "", **detail: Any) -> None:
        with self.engine.begin() as c:
            write_audit(c, actor, action, target, **detail)

    def audit_entries(
        self, *, limit: int = 100, action: str | None = None, before_id: int | None = None
    ) -> list[AuditEntry]:
        q = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if action is not None:  # exact, or a prefix ending in "*" ("erasure.*")
            if action.endswith("*"):
                q = q.where(audit_log.c.action.startswith(action[:-1], autoescape=True))
            else:
                q = q.where(audit_log.c.action == action)
        if before_id is not None:
            q = q.where(audit_log.c.id < before_id)
        with self.engine.connect() as c:
            return [
                AuditEntry(
                    r.id, _utc(r.at), r.actor, r.action, r.target, json.loads(r.detail or "{}")
                )
                for r in c.execute(q)
            ]

    # -- suppression ----------------------------------------------------------------------
    def suppression_set(self) -> SuppressionSet:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(suppressions.c.subject, suppressions.c.mode)).all()
        return SuppressionSet(self.secret, {r.subject: Mode(r.mode) for r in rows})

    def settled_suppression_set(self) -> SuppressionSet:
        """The suppressed subjects no pending or running request names: the ones whose
        erasure has run (completed or failed), which ``erasure verify`` may check and
        repair without racing the job that is erasing them now."""
        with self.engine.connect() as c:
            rows = c.execute(sa.select(suppressions.c.subject, suppressions.c.mode)).all()
            busy = c.execute(
                sa.select(erasure_requests.c.subjects).where(
                    erasure_requests.c.status.in_(["pending", "running"])
                )
            ).scalars()
            skip = {h for text in busy for h in json.loads(text)}
        return SuppressionSet(
            self.secret, {r.subject: Mode(r.mode) for r in rows if r.subject not in skip}
        )

    # -- erasure requests -----------------------------------------------------------------
    def create_request(
        self,
        request_id: str,
        mode: Mode,
        subjects: Sequence[str],
        actor: str,
        identifiers: Sequence[str] = (),
    ) -> None:
        """Record the request and suppress its subjects in one transaction: from this commit
        on, the collector drops (or anonymizes) the subject's new events."""
        at = now()
        with self.engine.begin() as c:
            c.execute(
                erasure_requests.insert().values(
                    request_id=request_id,
                    mode=mode.value,
                    status="pending",
                    subjects=json.dumps(sorted(subjects)),
                    pending_ids=json.dumps(list(identifiers)),
                    requested_by=actor,
                    requested_at=at,
                    report="{}",
                )
            )
            have = {
                r.subject: r.mode
                for r in c.execute(
                    sa.select(suppressions.c.subject, suppressions.c.mode).where(
                        suppressions.c.subject.in_(list(subjects))
                    )
                )
            }
            for s in subjects:
                if s not in have:
                    c.execute(
                        suppressions.insert().values(
                            subject=s, mode=mode.value, request_id=request_id, created_at=at
                        )
                    )
                elif mode is Mode.DELETE and have[s] != Mode.DELETE.value:
                    c.execute(
                        suppressions.update()
                        .where(suppressions.c.subject == s)
                        .values(mode=mode.value, request_id=request_id)
                    )
            write_audit(
                c, actor, "erasure.requested", request_id, mode=mode.value, subjects=len(subjects)
            )

    def set_status(
        self,
        request_id: str,
        status: str,
        *,
        report: Mapping[str, Any] | None = None,
        error: str | None = None,
        actor: str = "gristmill",
    ) -> None:
        values: dict[str, Any] = {"status": status}
        if status == "running":
            values["started_at"] = now()
        if status in ("completed", "failed"):
            values["finished_at"] = now()
            values["pending_ids"] = None
        if report is not None:
            values["report"] = json.dumps(report, sort_keys=True, default=str)
        if error is not None:
            values["error"] = error
        with self.engine.begin() as c:
            c.execute(
                erasure_requests.update()
                .where(erasure_requests.c.request_id == request_id)
                .values(**values)
            )
            if status in ("completed", "failed"):
                write_audit(
                    c,
                    actor,
                    f"erasure.{status}",
                    request_id,
                    **({"report": report} if report is not None else {}),
                    **({"error": error} if error else {}),
                )

    def request(self, request_id: str) -> ErasureRecord | None:
        with self.engine.connect() as c:
            r = c.execute(
                sa.select(erasure_requests).where(erasure_requests.c.request_id == request_id)
            ).first()
        return None if r is None else _record(r._mapping)

    def unfinished(self) -> list[tuple[str, Mode, list[str]]]:
        """Requests a restart must resume: (id, mode, identifiers)."""
        q = (
            sa.select(erasure_requests.c.request_id, erasure_requests.c.mode)
            .add_columns(erasure_requests.c.pending_ids)
            .where(erasure_requests.c.status.in_(["pending", "running"]))
            .order_by(erasure_requests.c.requested_at)
        )
        with self.engine.connect() as c:
            return [
                (r.request_id, Mode(r.mode), list(json.loads(r.pending_ids or "[]")))
                for r in c.execute(q)
            ]

    def requests(self, *, status: str | None = None, limit: int = 100) -> list[ErasureRecord]:
        q = sa.select(erasure_requests).order_by(erasure_requests.c.requested_at.desc())
        if status is not None:
            q = q.where(erasure_requests.c.status == status)
        with self.engine.connect() as c:
            return [_record(r._mapping) for r in c.execute(q.limit(limit))]


def _record(r: Mapping[Any, Any]) -> ErasureRecord:
    return ErasureRecord(
        request_id=r["request_id"],
        mode=Mode(r["mode"]),
        status=r["status"],
        subjects=len(json.loads(r["subjects"])),
        requested_by=r["requested_by"],
        requested_at=_utc(r["requested_at"]),
        started_at=None if r["started_at"] is None else _utc(r["started_at"]),
        finished_at=None if r["finished_at"] is None else _utc(r["finished_at"]),
        report=json.loads(r["report"] or "{}"),
        error=r["error"],
    )


def watch_suppression(url: str, stop: threading.Event, every_s: float = 5.0) -> Suppression:
    """A :class:`Suppression` kept current from the metadata store by a daemon thread, for
    processes that collect without the API (the relay, queue consumers): an erasure recorded
    by ``serve`` reaches them within ``every_s``."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    store = GovernanceStore(sa.create_engine(url, **kwargs))
    held = Suppression(store.suppression_set())

    def loop() -> None:
        while not stop.wait(every_s):
            with contextlib.suppress(sa.exc.SQLAlchemyError):  # next round tries again
                held.replace(store.suppression_set())
        store.engine.dispose()

    threading.Thread(target=loop, name="suppression-watch", daemon=True).start()
    return held
