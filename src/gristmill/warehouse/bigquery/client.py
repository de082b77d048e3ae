"""BigQuery warehouse through the official client (``google-cloud-bigquery``).

Loading: each table's batch (and its quarantine rows) is written as Parquet and staged by a
**load job whose id is derived from the batch id** into ``_gristmill_stage``; a retried batch
gets a 409 for that id and waits for the job already there instead of staging twice. Then
one multi-statement **transaction in a session** runs everything the other engines run in
theirs: the ledger check (a committed batch is a no-op), the dedupe anti-join against
``<dataset>._gm_dedupe``, the inserts, rollup and freshness maintenance, quarantine, the
ledger row and the log offset. BigQuery aborts one of two transactions that change the same
table, so two loaders racing on one key cannot both insert it: the loser's batch is retried
and finds the key. The Storage Write API's offsets give exactly-once appends to *one*
table; a load touches several tables and must commit them together, so it is not used.
"""

from __future__ import annotations

import io
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from google.api_core import exceptions as gexc
from google.auth.exceptions import DefaultCredentialsError
from google.cloud import bigquery
from sqlglot import exp

from gristmill.config import BigQuerySettings
from gristmill.core.clock import to_datetime
from gristmill.pack.models import Pack
from gristmill.sql import ddl
from gristmill.warehouse.base import AfterInsert, LedgerTotals, LoadBatch, LoadResult, Readiness
from gristmill.warehouse.bigquery.factory import CAPABILITIES, CREDENTIALS, DIALECT, NAME
from gristmill.warehouse.bigquery.sql import (
    BATCH,
    DEDUPE_TABLE,
    QUARANTINE_STAGE,
    LoadStatements,
    Naming,
    ledger_insert,
    load_job_id,
    pack_ddl,
    partition_rollup,
    stage_table,
    typed_params,
)
from gristmill.warehouse.common import (
    NothingToWarm,
    SystemSQL,
    catalog_problems,
    ledger_snapshot,
    settle,
    split_snapshot,
)

SYSTEM = SystemSQL.build(DIALECT)
READY_TTL_S = 30.0
MAX_STAGE_ATTEMPTS = 5
LEDGER = ledger_snapshot(DIALECT)


def _ref(client: Any, t: exp.Table) -> str:
    return f"{client.project}.{t.db}.{t.name}"


class BigQueryWarehouse(NothingToWarm):
    name = NAME
    dialect = DIALECT
    caps = CAPABILITIES

    def __init__(self, cfg: BigQuerySettings, *, read_only: bool = False) -> None:
        self.cfg = cfg
        self.read_only = read_only
        self._ready_at: dict[tuple[str, ...], float] = {}
        self.naming = Naming(cfg.dataset_prefix)
        try:
            self._client: Any = bigquery.Client(project=cfg.project, location=cfg.location)
        except DefaultCredentialsError as exc:
            raise ValueError(f"no Google credentials ({exc}): {CREDENTIALS}") from exc

    # -- statements -----------------------------------------------------------------------
    def _job(self, text: str, params: Mapping[str, Any] | None, session: str | None) -> Any:
        config = bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter(n, t, v) for n, t, v in typed_params(params, text)
            ]
        )
        if session is not None:
            config.connection_properties = [bigquery.ConnectionProperty("session_id", session)]
        job = self._client.query(text, job_config=config)
        job.result()
        return job

    def query_sql(self, sql_text: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        table: pa.Table = self._job(self.naming.sql(sql_text), params, None).to_arrow()
        return table

    def query(self, query: exp.Expr, params: Mapping[str, Any] | None = None) -> pa.Table:
        return self.query_sql(self.naming.sql(query), params)

    def execute(self, stmt: exp.Expr, params: Mapping[str, Any] | None = None) -> int:
        job = self._job(self.naming.sql(stmt), params, None)
        return int(job.num_dml_affected_rows or 0)

    def delete(self, table: exp.Table, where: exp.Expr) -> int:
        return self.execute(exp.delete(table).where(where))

    # -- provisioning and readiness ---------------------------------------------------------
    def provision(
        self, packs: Sequence[Pack], *, apply: bool, extra: Sequence[exp.Expr] = ()
    ) -> list[str]:
        """DDL for the packs (plus ``extra``); with ``apply``, run it and add the columns a
        pack gained. Idempotent: IF NOT EXISTS everywhere."""
        ddl_ = [*pack_ddl(packs, self.cfg.location), *(partition_rollup(e) for e in extra)]
        stmts = [self.naming.sql(s) for s in ddl_]
        if not apply:
            return stmts
        for s in stmts:
            self._job(s, None, None)
        for alter in ddl.missing_columns(packs, self.columns_of, DIALECT):
            text = self.naming.sql(alter)
            self._job(text, None, None)
            stmts.append(text)
        return stmts

    def columns_of(self, table: exp.Table) -> dict[str, str]:
        try:
            fixed = self.naming.fix(table)
            assert isinstance(fixed, exp.Table)
            found = self._client.get_table(_ref(self._client, fixed))
        except gexc.NotFound:
            return {}
        return {str(f.name): str(f.field_type) for f in found.schema}

    def table_exists(self, table: exp.Table) -> bool:
        return bool(self.columns_of(table))

    def check_ready(self, packs: Sequence[Pack]) -> Readiness:
        """A passing check is remembered for ``READY_TTL_S`` (probes every few seconds would
        spend API calls and warehouse time); a failing one is never remembered."""
        key = tuple(p.fingerprint for p in packs)
        if self._ready_at.get(key, -READY_TTL_S) + READY_TTL_S > time.monotonic():
            return Readiness(True)
        ready = self._check_ready(packs)
        if ready.ok:
            self._ready_at[key] = time.monotonic()
        return ready

    def _check_ready(self, packs: Sequence[Pack]) -> Readiness:
        """Fails fast and names what is missing: the dataset, then each table and column."""
        problems: list[str] = []
        datasets = ["_gristmill", *(p.dataset for p in packs)]
        try:
            for ds in datasets:
                name = self.cfg.dataset_prefix + ds
                try:
                    self._client.get_dataset(f"{self._client.project}.{name}")
                except gexc.NotFound:
                    problems.append(f"missing dataset {self._client.project}.{name}")
            if problems:
                return Readiness(False, tuple(problems))
            problems += catalog_problems(
                packs, lambda schema, table: self.columns_of(ddl.table_ref(schema, table))
            )
        except gexc.GoogleAPIError as exc:
            return Readiness(False, (f"bigquery unreachable: {exc}",))
        return Readiness(not problems, tuple(problems))

    # -- loading --------------------------------------------------------------------------
    def _stage(self, batch_id: str, what: str, data: pa.Table) -> exp.Table:
        """Stage an Arrow table by a load job keyed by (batch, target): idempotent."""
        ref = stage_table(self.cfg.dataset_prefix, batch_id, what)
        buf = io.BytesIO()
        pq.write_table(data, buf)
        buf.seek(0)
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        )
        for attempt in range(MAX_STAGE_ATTEMPTS):
            job_id = load_job_id(batch_id, what, attempt)
            try:
                job = self._client.load_table_from_file(
                    buf, _ref(self._client, ref), job_id=job_id, job_config=config, rewind=True
                )
            except gexc.Conflict:
                job = self._client.get_job(job_id)  # this batch was staged (or is being)
                job.reload()
                if job.state == "DONE" and job.error_result:
                    continue  # that attempt failed: its id is spent, try the next one
            job.result()
            return ref
        raise RuntimeError(f"staging batch {batch_id} for {what} failed {MAX_STAGE_ATTEMPTS}x")

    def commit_load(self, batch: LoadBatch) -> LoadResult:
        stages: dict[tuple[str, str], exp.Table] = {}
        for rows in batch.tables:
            key = (rows.pack.dataset, rows.table)
            stages[key] = self._stage(batch.batch_id, f"{key[0]}.{key[1]}", rows.rows)
        q_stage = None
        if batch.quarantine is not None and batch.quarantine.num_rows:
            q_stage = self._stage(batch.batch_id, "quarantine", batch.quarantine)
        begin = self._client.query(
            "BEGIN TRANSACTION", job_config=bigquery.QueryJobConfig(create_session=True)
        )
        begin.result()
        session: str = begin.session_info.session_id
        try:
            result = self._transaction(batch, stages, q_stage, session)
        finally:
            # Ends the session; an open transaction in it is rolled back.
            self._job("CALL BQ.ABORT_SESSION()", None, session)
        for ref in [*stages.values(), *([q_stage] if q_stage is not None else [])]:
            self._client.delete_table(_ref(self._client, ref), not_found_ok=True)
        return result

    def _transaction(
        self,
        batch: LoadBatch,
        stages: Mapping[tuple[str, str], exp.Table],
        q_stage: exp.Table | None,
        session: str,
    ) -> LoadResult:
        def run(stmt: exp.Expr | str, params: Mapping[str, Any] | None, naming: Naming) -> Any:
            return self._job(naming.sql(stmt), params, session)

        plain = self.naming
        seen = run(SYSTEM.seen_batch, {"b": batch.batch_id}, plain).result()
        if seen.total_rows:
            return LoadResult(batch.batch_id, {}, {}, {}, replayed=True)
        fresh: dict[tuple[str, str], int] = defaultdict(int)
        for rows in batch.tables:
            naming = Naming(
                self.cfg.dataset_prefix, {BATCH: stages[(rows.pack.dataset, rows.table)]}
            )
            st = LoadStatements.build(rows.pack, rows.table)
            for source, n in run(st.count_fresh, None, naming).result():
                fresh[(rows.pack.name, str(source))] += int(n)
            run(st.insert_fresh, None, naming)
            early, late = st.split(rows.after)
            for after in early:
                self._after(run, after, naming)
            run(st.remember, None, naming)
            for after in late:
                self._after(run, after, naming)
        if q_stage is not None:
            q_naming = Naming(self.cfg.dataset_prefix, {QUARANTINE_STAGE: q_stage})
            run(SYSTEM.insert_quarantine, None, q_naming)
        result, ledger = settle(batch, fresh)
        if ledger:
            stmt, params = ledger_insert(ledger)
            run(stmt, params, plain)
        off = {"log": batch.log_name, "grp": batch.group, "off": batch.last_offset}
        run(SYSTEM.delete_offset, off, plain)
        run(SYSTEM.insert_offset, off, plain)
        self._job("COMMIT TRANSACTION", None, session)
        return result

    @staticmethod
    def _after(run: Callable[..., Any], after: AfterInsert, naming: Naming) -> None:
        params: dict[str, Any] = {}
        if after.bounds is not None:
            row = next(iter(run(after.bounds, None, naming).result()), None)
            params = dict(row.items()) if row is not None else {}
            if all(v is None for v in params.values()):
                return
        for stmt in (*after.prepare, *after.statements):
            run(stmt, params or None, naming)

    def stored_offset(self, log_name: str, group: str) -> int:
        rows = self.query_sql(SYSTEM.select_offset, {"log": log_name, "grp": group}).to_pylist()
        return int(next(iter(rows[0].values()))) if rows else 0

    def ledger(self, log_name: str, group: str) -> LedgerTotals:
        # One statement reads one snapshot: the sums and the offset agree.
        rows = self.query_sql(LEDGER, {"log": log_name, "grp": group})
        return split_snapshot([tuple(r.values()) for r in rows.to_pylist()])

    def prune_dedupe(self, pack: Pack, now_us: int) -> int:
        cutoff = now_us - int(pack.spec.dedupe.window.total_seconds() * 1_000_000)
        stmt = exp.delete(ddl.table_ref(pack.dataset, DEDUPE_TABLE)).where(
            exp.LT(this=exp.column("first_seen"), expression=exp.Placeholder(this="cutoff"))
        )
        return self.execute(stmt, {"cutoff": to_datetime(cutoff)})

    def close(self) -> None:
        self._client.close()
