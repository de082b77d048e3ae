"""Exports for one process: requests checked against the caller, jobs queued in the metadata
store and run by one worker thread, signed download links, reconciliation, and the hooks
governance calls (``expire``, ``pending_files``).

Built by :class:`~gristmill.runtime.Runtime`; the API routes, the CLI and a pack's own routes
(mounted by the lead for the usage seed) all call this class and stay thin.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlglot import exp

from gristmill.auth.permissions import OPERATOR, Principal
from gristmill.auth.roles import RoleTable
from gristmill.config import ExportSettings
from gristmill.core.clock import from_datetime, iso, now_us
from gristmill.core.durations import parse_duration
from gristmill.core.errors import Problem, bad_request, forbidden, not_found
from gristmill.core.ids import new_token
from gristmill.core.permissions import Permission
from gristmill.exports import housekeeping, report, requests
from gristmill.exports.destination import Destination, DestinationUnavailable
from gristmill.exports.rows import RowsSlice, count, export_columns, total_columns
from gristmill.exports.runner import (
    Runner,
    conditions,
    object_keys,
    period_params,
    stream,
)
from gristmill.exports.signing import BadToken, sign, verify
from gristmill.exports.store import ExportJob, ExportStore, NewJob, now
from gristmill.exports.worker import Worker
from gristmill.metrics.compile import Params
from gristmill.metrics.timerange import utc_now, zone
from gristmill.pack.checks_exports import export_tables
from gristmill.pack.exports import MetricsExportSpec, RowsExportSpec
from gristmill.pack.models import Pack
from gristmill.rollup.freshness import ALL, FRESHNESS
from gristmill.warehouse.base import Warehouse

log = logging.getLogger(__name__)

Audit = Callable[..., None]
"""``audit(actor, action, target, **detail)``: one append-only audit row."""


@dataclass(frozen=True)
class RowsStream:
    """A rows export small enough to answer at once (``stream_max_rows``)."""

    rows: int
    watermark: str | None
    filename: str
    body: Iterator[bytes]


@dataclass(frozen=True)
class Download:
    path: Path
    filename: str
    media_type: str


def actor(p: Principal) -> str:
    return f"{p.kind}:{p.key_id or p.role}"


class ExportService:
    def __init__(
        self,
        *,
        packs: Mapping[str, Pack],
        roles: RoleTable,
        store: ExportStore,
        settings: ExportSettings,
        data_dir: Path,
        warehouse: Callable[[], Warehouse],
        audit: Audit,
    ) -> None:
        self.packs = dict(packs)
        self.roles = roles
        self.store = store
        self.settings = settings
        self._data_dir = data_dir
        self._warehouse = warehouse
        self._audit = audit
        self._dest: Destination | None = None
        self._key: bytes | None = None
        self.worker = Worker(store, settings, self._produce, self._checked)

    # -- parts made on first use (a process that never exports needs no fsspec) --------------
    @property
    def dest(self) -> Destination:
        if self._dest is None:
            url = self.settings.destination or f"file://{(self._data_dir / 'exports').resolve()}"
            try:
                self._dest = Destination(url, self.settings.s3)
            except DestinationUnavailable as exc:
                raise Problem(503, "exports-unavailable", "Exports unavailable", str(exc)) from exc
        return self._dest

    def _signing_key(self) -> bytes:
        if self._key is None:
            configured = self.settings.signing_key
            self._key = (
                configured.get_secret_value().encode()
                if configured is not None
                else self.store.signing_secret()
            )
        return self._key

    def cut(self, pack: Pack, tables: Sequence[str]) -> tuple[int | None, int | None]:
        """The watermark an export is cut at: the newest load time (and newest event time)
        of its tables, from the freshness table the load transaction keeps."""
        params = Params()
        q = (
            exp.select(
                exp.alias_(exp.func("max", exp.column("newest_loaded_at")), "l"),
                exp.alias_(exp.func("max", exp.column("newest_occurred_at")), "o"),
            )
            .from_(FRESHNESS)
            .where(
                exp.and_(
                    exp.EQ(this=exp.column("pack"), expression=params.bind(pack.name)),
                    exp.EQ(this=exp.column("scope_column"), expression=exp.Literal.string(ALL)),
                    exp.In(this=exp.column("tbl"), expressions=[params.bind(t) for t in tables]),
                )
            )
        )
        r = self._warehouse().query(q, params.values).to_pylist()[0]

        def us(v: datetime | None) -> int | None:
            return None if v is None else from_datetime(requests.utc(v))

        return us(r["l"]), us(r["o"])

    def _check(self, p: Principal, perm: Permission) -> None:
        if not self.roles.allows(p, perm):
            raise forbidden(f"role {p.role!r} lacks permission {perm.value!r}")

    # -- asking for an export ------------------------------------------------------------------
    def create(
        self, p: Principal, pack_name: str, export_name: str, body: Mapping[str, Any]
    ) -> ExportJob | RowsStream:
        """One entry for both kinds: the body is read by the export's kind."""
        _, spec = requests.find_export(p, self.packs, pack_name, export_name)
        if isinstance(spec, RowsExportSpec):
            r = requests.parse_body(requests.RowsRequest, body)
            return self.create_rows_export(
                p,
                pack_name,
                export_name,
                start=r.start,
                end=r.end,
                filters=r.filters,
                as_job=r.as_job,
            )
        m = requests.parse_body(requests.MetricsRequest, body)
        return self.create_metrics_job(p, pack_name, export_name, period=m.period, scope=m.scope)

    def create_rows_export(
        self,
        p: Principal,
        pack_name: str,
        export_name: str,
        *,
        start: datetime,
        end: datetime,
        filters: Mapping[str, Any] | None = None,
        as_job: bool = False,
    ) -> ExportJob | RowsStream:
        """Rows of the window: streamed when at most ``stream_max_rows``, else a job."""
        self._check(p, Permission.EXPORTS_CREATE)
        pack, spec = requests.find_export(p, self.packs, pack_name, export_name)
        if not isinstance(spec, RowsExportSpec):
            raise bad_request("wrong-kind", f"{export_name!r} is a {spec.kind} export")
        start, end = requests.utc(start), requests.utc(end)
        if end <= start:
            raise bad_request("invalid-range", "end must be after start")
        if end - start > spec.max_window:
            raise bad_request(
                "window-too-long", f"this export covers at most {spec.max_window} per request"
            )
        scope = self.roles.scope(p, pack, spec.scope)
        own = requests.own_values(scope)
        conds = requests.row_filters(pack, spec, filters or {}, own)
        cut_us, newest_us = self.cut(pack, [spec.table])
        rows = RowsSlice(pack, spec.table, start, end, cut_us, (*scope, *conditions(conds)))
        n = count(self._warehouse(), rows)
        period = f"{requests.compact(start)}-{requests.compact(end)}"
        if n <= spec.stream_max_rows and not as_job:
            self._audit(
                actor(p),
                "export.create",
                f"{pack.name}.{export_name}",
                mode="stream",
                scope=own,
                period=period,
                filters=conds,
                rows=n,
            )
            cols = export_columns(pack, spec)
            return RowsStream(
                n,
                None if cut_us is None else iso(cut_us),
                f"{export_name}_{period}.csv",
                stream(
                    self._warehouse(), rows, cols, self.settings.chunk_rows, total_columns(cols)
                ),
            )
        params = {"start": start.isoformat(), "end": end.isoformat(), "filters": conds}
        return self._job(p, pack, export_name, spec, own, period, params, (cut_us, newest_us))

    def create_metrics_job(
        self,
        p: Principal,
        pack_name: str,
        export_name: str,
        *,
        period: str,
        scope: Mapping[str, str] | str = "all",
    ) -> ExportJob:
        """A month (``2026-11``) or the month to date (``mtd``) of a metrics export."""
        self._check(p, Permission.EXPORTS_CREATE)
        pack, spec = requests.find_export(p, self.packs, pack_name, export_name)
        if not isinstance(spec, MetricsExportSpec):
            raise bad_request("wrong-kind", f"{export_name!r} is a {spec.kind} export")
        resolved = report.resolve_period(period, zone(spec.tz), utc_now())
        own = requests.own_values(self.roles.scope(p, pack, spec.scope))
        tables = export_tables(pack, spec)
        if isinstance(scope, str) and scope != "all":
            raise bad_request("invalid-scope", "scope is {column: value} or 'all'")
        full = requests.metrics_scope(
            pack, tables, scope if isinstance(scope, Mapping) else "all", own
        )
        params = period_params(resolved) | {"tz": spec.tz}
        wm = self.cut(pack, tables)
        return self._job(p, pack, export_name, spec, full, resolved.label, params, wm)

    def _job(
        self,
        p: Principal,
        pack: Pack,
        export_name: str,
        spec: RowsExportSpec | MetricsExportSpec,
        scope: Mapping[str, str],
        period: str,
        params: Mapping[str, Any],
        wm: tuple[int | None, int | None],
    ) -> ExportJob:
        key = requests.job_key(pack.name, export_name, scope, period, params, wm[0])
        job_id = new_token("exp", 12)
        csv_key, manifest_key = object_keys(
            pack.name, export_name, period, job_id, scope, spec.prefix_by
        )
        job, created = self.store.get_or_create(
            NewJob(
                job_id,
                key,
                pack.name,
                export_name,
                spec.kind,
                scope,
                period,
                params,
                *wm,
                requested_by=actor(p),
                csv_path=self.dest.path(csv_key),
                manifest_path=self.dest.path(manifest_key),
            )
        )
        self._audit(
            actor(p),
            "export.create",
            job.id,
            mode="job",
            created=created,
            pack=pack.name,
            export=export_name,
            scope=dict(scope),
            period=period,
        )
        self.worker.notify()
        return job

    # -- reading jobs -------------------------------------------------------------------------
    def _visible(self, p: Principal, job: ExportJob) -> bool:
        if p.role == OPERATOR:
            return True
        pack = self.packs.get(job.pack)
        spec = pack.spec.exports.get(job.export) if pack is not None else None
        if pack is None or spec is None or p.pack != job.pack or p.role not in spec.roles:
            return False
        try:
            own = requests.own_values(self.roles.scope(p, pack, spec.scope))
        except Problem:
            return False
        return all(job.scope.get(c) == v for c, v in own.items())

    def job(self, p: Principal, job_id: str) -> ExportJob:
        """A job the caller may see; 404 for any other (no oracle of other tenants' jobs)."""
        self._check(p, Permission.EXPORTS_READ)
        job = self.store.get(job_id)
        if job is None or not self._visible(p, job):
            raise not_found(f"no export job {job_id[:64]!r}")
        return job

    def list_jobs(
        self,
        p: Principal,
        *,
        pack: str | None = None,
        export: str | None = None,
        status: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[ExportJob], str | None]:
        """Newest first, the caller's own scope only (unless unscoped); ``cursor`` pages."""
        self._check(p, Permission.EXPORTS_READ)
        before = None
        if cursor:
            if not cursor.isdigit():
                raise bad_request("invalid-cursor", "the cursor is not one this API returned")
            before = int(cursor)
        packs: list[str] | None = None
        sql_scope: dict[str, str] = {}
        if p.role != OPERATOR:
            if p.pack is None or p.pack not in self.packs or pack not in (None, p.pack):
                return [], None
            packs = [p.pack]
            sql_scope = requests.own_values(self.roles.scope(p, self.packs[p.pack]))
        elif pack is not None:
            packs = [pack]
        page = self.store.list_jobs(
            packs=packs,
            scope=sql_scope,
            export=export,
            status=status,
            before_seq=before,
            limit=limit + 1,
        )
        more = len(page) > limit
        page = page[:limit]
        nxt = str(page[-1].seq) if more and page else None
        return [j for j in page if self._visible(p, j)], nxt

    def describe(
        self,
        job: ExportJob,
        *,
        base_url: str = "",
        expires_s: int | None = None,
        issued_to: str | None = None,
    ) -> dict[str, Any]:
        """The job as JSON, with signed URLs when it succeeded. On S3 the URL is the store's
        own presigned one (the download itself is not seen here, so handing it out is what the
        audit log records); locally a Gristmill link whose use is audited."""
        out = job.as_dict() | {"links": {"self": f"/v1/exports/jobs/{job.id}"}}
        if job.status != "succeeded" or job.csv_path is None or job.manifest_path is None:
            return out
        ttl = expires_s or self.settings.expires_s
        expires_at = now_us() // 1_000_000 + ttl
        if self.dest.local:
            key = self._signing_key()
            base = (self.settings.public_url or base_url).rstrip("/")
            out["url"] = f"{base}/v1/exports/download/{sign(key, job.id, 'csv', expires_at)}"
            out["manifest_url"] = (
                f"{base}/v1/exports/download/{sign(key, job.id, 'manifest', expires_at)}"
            )
        else:
            out["url"] = self.dest.presign(job.csv_path, ttl)
            out["manifest_url"] = self.dest.presign(job.manifest_path, ttl)
            if issued_to is not None:
                self._audit(issued_to, "export.download", job.id, via="presigned_url")
                self.store.mark_downloaded(job.id)
        out["expires_at"] = iso(expires_at * 1_000_000)
        out["object"] = self.dest.display(job.csv_path)
        return out

    def download(self, token: str) -> Download:
        """The file a local download link names; 403 when altered or expired."""
        try:
            grant = verify(self._signing_key(), token, now_us() // 1_000_000)
        except BadToken as exc:
            raise forbidden(str(exc)) from None
        job = self.store.get(grant.job_id)
        path = None
        if job is not None:
            path = job.csv_path if grant.file == "csv" else job.manifest_path
        if job is None or path is None or not self.dest.local or not self.dest.exists(path):
            raise not_found("this export is gone (expired or deleted)")
        self._audit("link", "export.download", job.id, file=grant.file)
        if grant.file == "csv":
            self.store.mark_downloaded(job.id)
        return Download(
            self.dest.local_file(path),
            Path(path).name,
            "text/csv; charset=utf-8" if grant.file == "csv" else "application/json",
        )

    # -- reconciliation -----------------------------------------------------------------------
    def reconcile(self, job: ExportJob | str, p: Principal | None = None) -> dict[str, Any]:
        """Check the stored CSV against its source again (and store the answer)."""
        if isinstance(job, str):
            found = self.job(p, job) if p is not None else self.store.get(job)
            if found is None:
                raise not_found(f"no export job {job[:64]!r}")
            job = found
        if job.status != "succeeded":
            raise Problem(409, "not-finished", "Not finished", f"job {job.id} is {job.status}")
        pack, spec = self._spec(job)
        result = self._runner(job).reconcile(pack, spec, job)
        self.store.set_reconciliation(job.id, bool(result["reconciled"]), result)
        return {"job": job.id} | result

    # -- the worker -----------------------------------------------------------------------------
    def _spec(self, job: ExportJob) -> tuple[Pack, RowsExportSpec | MetricsExportSpec]:
        pack = self.packs.get(job.pack)
        spec = pack.spec.exports.get(job.export) if pack is not None else None
        if pack is None or spec is None:
            raise LookupError(f"export {job.pack}.{job.export} is not served by this process")
        return pack, spec

    def _runner(self, job: ExportJob) -> Runner:
        return Runner(
            self._warehouse(),
            self.dest,
            self.cut,
            self.settings.chunk_rows,
            heartbeat=lambda: self.store.heartbeat(job.id, self.worker.owner),
            pause_s=self.settings.test_chunk_pause_s,
        )

    def _produce(self, job: ExportJob) -> dict[str, Any]:
        pack, spec = self._spec(job)
        return self._runner(job).produce(pack, spec, job)

    def _checked(self, job: ExportJob, result: dict[str, Any]) -> dict[str, Any]:
        """The reconciliation of a file just written, for the update that marks the job
        succeeded (so nobody sees it finished and not yet checked)."""
        known = {f.name for f in dataclasses.fields(ExportJob)}
        done = dataclasses.replace(
            job, status="succeeded", **{k: v for k, v in result.items() if k in known}
        )
        try:
            pack, spec = self._spec(done)
            r = self._runner(done).reconcile(pack, spec, done)
            return {"reconciled": bool(r["reconciled"]), "reconciliation": r}
        except Exception as exc:  # the file stands; the check says why it could not run
            log.exception("reconciling export job %s failed", job.id)
            return {"reconciled": False, "reconciliation": {"error": f"{exc}"}}

    def run_one(self) -> str | None:
        """Claim and run one runnable job in this thread; its id, or None when none is."""
        return self.worker.run_one()

    def run_pending(self) -> list[str]:
        """Run every runnable job in this thread (the CLI without a server, tests)."""
        return self.worker.run_pending()

    def start(self) -> None:
        """Resume what dead processes left running, then run the worker thread."""
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()

    # -- observability (api/metrics_ops.py reads these) ---------------------------------------
    def counts(self) -> dict[str, int]:
        """status -> jobs now in it (``gristmill_export_jobs{status}``)."""
        return self.store.counts()

    @property
    def failures(self) -> int:
        """Failed attempts in this process (``gristmill_export_job_failures_total``)."""
        return self.worker.failures

    # -- governance hooks (exports/housekeeping.py) ---------------------------------------------
    def expire(self, older_than: datetime | None = None, *, dry_run: bool = False) -> list[str]:
        """Jobs created before ``older_than`` (default now minus ``exports.retention``): their
        files and rows deleted (with ``dry_run``, only listed)."""
        cutoff = older_than or now() - parse_duration(self.settings.retention)
        return housekeeping.expire(self.store, self.dest, self._audit, cutoff, dry_run=dry_run)

    def erase_subject(self, needles: Sequence[bytes]) -> dict[str, int]:
        """Delete every stored export file whose bytes name the subject, and its job."""
        return housekeeping.erase_subject(self.store, self.dest, self._audit, needles)

    def pending_files(self) -> list[str]:
        """Files of finished exports nobody has downloaded yet (``file://`` or ``s3://``)."""
        out = []
        for job in self.store.not_downloaded():
            out += [self.dest.display(p) for p in (job.csv_path, job.manifest_path) if p]
        return out
