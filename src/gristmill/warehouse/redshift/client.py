"""Redshift warehouse through the official connector (``redshift_connector``).

Loading, in one transaction: first the batch's offsets row is deleted — under Redshift's
serializable isolation a second loader of the same log group then conflicts and retries
instead of committing the batch twice — then the ledger check (a committed batch is a no-op),
each table's rows into a temporary ``_gm_batch_<i>`` (``COPY`` from the staging bucket for
large tables, multi-row ``INSERT`` for small ones: :func:`staging.use_copy`), the dedupe
anti-join against ``<schema>._gm_dedupe``, the inserts, rollup and freshness maintenance,
quarantine, ledger and the new offset. Staged files are removed after the transaction.
Parameters are bound by the connector (``format`` style, see :func:`staging.to_format`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import redshift_connector
from sqlglot import exp

from gristmill.config import RedshiftSettings
from gristmill.core.clock import to_datetime
from gristmill.pack.models import Pack
from gristmill.sql import ddl
from gristmill.warehouse.base import AfterInsert, LedgerTotals, LoadBatch, LoadResult, Readiness
from gristmill.warehouse.common import (
    NothingToWarm,
    catalog_problems,
    run_after_insert,
    settle,
    split_snapshot,
)
from gristmill.warehouse.redshift.factory import CAPABILITIES, DIALECT, NAME
from gristmill.warehouse.redshift.sql import (
    BATCH,
    DEDUPE_TABLE,
    LEDGER,
    QUARANTINE_STAGE,
    SESSION,
    SYSTEM,
    LoadStatements,
    copy_from_s3,
    insert_chunks,
    insert_rows,
    insert_values,
    pack_ddl,
    sql,
    stage_table,
    staging_key,
    statements,
)
from gristmill.warehouse.redshift.staging import Staging, to_format, use_copy

READY_TTL_S = 30.0


class RedshiftWarehouse(NothingToWarm):
    name = NAME
    dialect = DIALECT
    caps = CAPABILITIES

    def __init__(self, cfg: RedshiftSettings, *, read_only: bool = False) -> None:
        self.cfg = cfg
        self.read_only = read_only
        self._ready_at: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()
        assert cfg.password is not None
        self._conn: Any = redshift_connector.connect(
            host=cfg.host,
            port=cfg.port,
            database=cfg.database,
            user=cfg.user,
            password=cfg.password.get_secret_value(),
        )
        self._conn.autocommit = True
        self._staging = (
            Staging(cfg.staging.bucket, cfg.staging.s3) if cfg.staging.bucket is not None else None
        )
        for stmt in SESSION:
            self._conn.cursor().execute(stmt)

    def _run(self, cur: Any, text: str, params: Any = None) -> Any:
        out, values = to_format(text, params)
        cur.execute(out, values or None)
        return cur

    # -- reading and statements ---------------------------------------------------------------
    def query_sql(self, sql_text: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        with self._lock:
            cur = self._run(self._conn.cursor(), sql_text, params)
            names = [str(d[0]) for d in cur.description or ()]
            rows = list(cur.fetchall()) if names else []
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
        return pa.table({n: pa.array(list(c)) for n, c in zip(names, columns, strict=True)})

    def query(self, query: exp.Expr, params: Mapping[str, Any] | None = None) -> pa.Table:
        return self.query_sql(sql(query), params)

    def execute(self, stmt: exp.Expr, params: Mapping[str, Any] | None = None) -> int:
        with self._lock:
            cur = self._run(self._conn.cursor(), sql(stmt), params)
            return max(int(cur.rowcount or 0), 0)

    def delete(self, table: exp.Table, where: exp.Expr) -> int:
        return self.execute(exp.delete(table).where(where))

    # -- provisioning and readiness -----------------------------------------------------------
    def provision(
        self, packs: Sequence[Pack], *, apply: bool, extra: Sequence[exp.Expr] = ()
    ) -> list[str]:
        from gristmill.warehouse.redshift.sql import sort_rollup

        stmts = [sql(s) for s in [*pack_ddl(packs), *(sort_rollup(e) for e in extra)]]
        if not apply:
            return stmts
        with self._lock:
            cur = self._conn.cursor()
            for s in stmts:
                cur.execute(s)
        for alter in ddl.missing_columns(packs, self.columns_of, DIALECT):
            text = sql(alter)
            with self._lock:
                self._conn.cursor().execute(text)
            stmts.append(text)
        return stmts

    def columns_of(self, table: exp.Table) -> dict[str, str]:
        q = (
            "SELECT column_name, data_type FROM svv_columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position"
        )
        with self._lock:
            cur = self._conn.cursor()
            cur.execute(q, (table.db, table.name))
            rows = cur.fetchall()
        return {str(n): str(t) for n, t in rows}

    def table_exists(self, table: exp.Table) -> bool:
        return bool(self.columns_of(table))

    def check_ready(self, packs: Sequence[Pack]) -> Readiness:
        """A passing check is remembered for ``READY_TTL_S``; a failing one never is."""
        key = tuple(p.fingerprint for p in packs)
        if self._ready_at.get(key, -READY_TTL_S) + READY_TTL_S > time.monotonic():
            return Readiness(True)
        try:
            problems = catalog_problems(
                packs, lambda schema, table: self.columns_of(ddl.table_ref(schema, table))
            )
        except redshift_connector.Error as exc:
            return Readiness(False, (f"redshift unreachable: {exc}",))
        if not problems:
            self._ready_at[key] = time.monotonic()
        return Readiness(not problems, tuple(problems))

    # -- loading ------------------------------------------------------------------------------
    def _stage(self, cur: Any, name: str, data: pa.Table, key: str, staged: list[str]) -> None:
        cur.execute(f"DROP TABLE IF EXISTS {exp.to_identifier(name, quoted=True).sql(DIALECT)}")
        cur.execute(stage_table(name, data.schema))
        if data.num_rows == 0:
            return
        if self._staging is not None and use_copy(self.cfg, data.num_rows):
            url = self._staging.put(key, data)
            staged.append(key)
            cur.execute(copy_from_s3(name, url, self.cfg.staging.iam_role))
            return
        width = max(data.num_columns, 1)
        for start, length in insert_chunks(data.num_rows, width):
            part = data.slice(start, length)
            self._run(cur, insert_rows(name, part.schema, part.num_rows), insert_values(part))

    def commit_load(self, batch: LoadBatch) -> LoadResult:
        staged: list[str] = []
        prefix = self.cfg.staging.prefix
        with self._lock:
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN")
                names: list[str] = []
                for i, rows in enumerate(batch.tables):
                    name = f"{BATCH}_{i}"
                    key = staging_key(prefix, f"{batch.batch_id}-{uuid.uuid4().hex}", i)
                    self._stage(cur, name, rows.rows, key, staged)
                    names.append(name)
                if batch.quarantine is not None and batch.quarantine.num_rows:
                    key = staging_key(prefix, f"{batch.batch_id}-{uuid.uuid4().hex}", -1)
                    self._stage(cur, QUARANTINE_STAGE, batch.quarantine, key, staged)
                result = self._transaction(cur, batch, names)
                cur.execute("ROLLBACK" if result.replayed else "COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            finally:
                for key in staged:
                    assert self._staging is not None
                    self._staging.delete(key)
            return result

    def _transaction(self, cur: Any, batch: LoadBatch, staged: Sequence[str]) -> LoadResult:
        off = {"log": batch.log_name, "grp": batch.group, "off": batch.last_offset}
        self._run(cur, SYSTEM.delete_offset, off)  # the conflict point: see the docstring
        if self._run(cur, SYSTEM.seen_batch, {"b": batch.batch_id}).fetchone():
            return LoadResult(batch.batch_id, {}, {}, {}, replayed=True)
        fresh: dict[tuple[str, str], int] = defaultdict(int)
        for rows, name in zip(batch.tables, staged, strict=True):
            st = LoadStatements.build(rows.pack, rows.table)

            def text(e: exp.Expr, stage: str = name) -> str:
                return sql(_restage(e, stage))

            for source, n in self._run(cur, text(st.count_fresh)).fetchall():
                fresh[(rows.pack.name, str(source))] += int(n)
            self._run(cur, text(st.insert_fresh))
            early, late = st.split(rows.after)
            for after in early:
                self._after(cur, after, name)
            self._run(cur, text(st.remember))
            for after in late:
                self._after(cur, after, name)
        if batch.quarantine is not None and batch.quarantine.num_rows:
            self._run(cur, SYSTEM.insert_quarantine)
        result, ledger = settle(batch, fresh)
        for row in ledger:
            self._run(cur, SYSTEM.insert_ledger, list(row))
        self._run(cur, SYSTEM.insert_offset, off)
        return result

    def _after(self, cur: Any, after: AfterInsert, stage: str) -> None:
        run_after_insert(
            after,
            cur,
            self._run,
            lambda e: statements(_restage(e, stage)),
        )

    def stored_offset(self, log_name: str, group: str) -> int:
        rows = self.query_sql(SYSTEM.select_offset, {"log": log_name, "grp": group}).to_pylist()
        return int(next(iter(rows[0].values()))) if rows else 0

    def ledger(self, log_name: str, group: str) -> LedgerTotals:
        with self._lock:
            cur = self._run(self._conn.cursor(), LEDGER, {"log": log_name, "grp": group})
            rows = cur.fetchall()
        return split_snapshot(rows)

    def prune_dedupe(self, pack: Pack, now_us: int) -> int:
        cutoff = now_us - int(pack.spec.dedupe.window.total_seconds() * 1_000_000)
        stmt = exp.delete(ddl.table_ref(pack.dataset, DEDUPE_TABLE)).where(
            exp.LT(this=exp.column("first_seen"), expression=exp.Placeholder(this="cutoff"))
        )
        return self.execute(stmt, {"cutoff": to_datetime(cutoff)})

    def close(self) -> None:
        self._conn.close()


def _restage(e: exp.Expr, stage: str) -> exp.Expr:
    """Point a statement's ``_gm_batch`` at this table's stage."""

    def visit(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Table) and not node.args.get("db") and node.name == BATCH:
            out = exp.to_table(stage)
            if node.alias:
                out.set("alias", node.args["alias"].copy())
            return out
        return node

    return e.copy().transform(visit, copy=False)
