"""Snowflake warehouse through the official connector (``snowflake-connector-python``).

Loading: before the transaction (DDL would commit it) each table's batch becomes a temporary
table ``_gm_batch``: the Arrow rows are written as Parquet, ``PUT`` to the table's stage and
``COPY``-ed in by column name. Then one transaction: first the batch's offsets row is deleted
— a DML lock that makes a second loader of the same log group wait until this one commits,
after which its statements see this batch (Snowflake reads committed data per statement) —
then the ledger check (a committed batch is a no-op), the dedupe anti-join against
``<schema>._gm_dedupe``, the inserts, rollup and freshness maintenance, quarantine, ledger and
the new offset. Parameters are bound server-side (``qmark``).
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import snowflake.connector
from sqlglot import exp

from gristmill.config import SnowflakeSettings
from gristmill.core.clock import to_datetime
from gristmill.pack.models import Pack
from gristmill.sql import ddl
from gristmill.warehouse.base import AfterInsert, LedgerTotals, LoadBatch, LoadResult, Readiness
from gristmill.warehouse.common import (
    NothingToWarm,
    SystemSQL,
    catalog_problems,
    ledger_snapshot,
    run_after_insert,
    settle,
    split_snapshot,
)
from gristmill.warehouse.snowflake.factory import CAPABILITIES, DIALECT, NAME
from gristmill.warehouse.snowflake.sql import (
    BATCH,
    DEDUPE_TABLE,
    QUARANTINE_STAGE,
    SESSION,
    LoadStatements,
    copy_into_stage,
    pack_ddl,
    qmark,
    sql,
    stage_table,
)

SYSTEM = SystemSQL.build(DIALECT)
READY_TTL_S = 30.0
LEDGER = ledger_snapshot(DIALECT)


class SnowflakeWarehouse(NothingToWarm):
    name = NAME
    dialect = DIALECT
    caps = CAPABILITIES

    def __init__(self, cfg: SnowflakeSettings, *, read_only: bool = False) -> None:
        self.cfg = cfg
        self.read_only = read_only
        self._ready_at: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()
        assert cfg.password is not None
        self._conn: Any = snowflake.connector.connect(
            account=cfg.account,
            user=cfg.user,
            password=cfg.password.get_secret_value(),
            database=cfg.database,
            warehouse=cfg.warehouse,
            role=cfg.role,
            paramstyle="qmark",
            autocommit=True,
        )
        for stmt in SESSION:
            self._conn.cursor().execute(stmt)

    def _run(self, cur: Any, text: str, params: Any = None) -> Any:
        out, values = qmark(text, params)
        return cur.execute(out, values)

    # -- reading and statements ---------------------------------------------------------------
    def query_sql(self, sql_text: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        with self._lock:
            cur = self._conn.cursor()
            self._run(cur, sql_text, params)
            # An empty result still has its columns; timestamps keep microseconds.
            out: pa.Table = cur.fetch_arrow_all(
                force_return_table=True, force_microsecond_precision=True
            )
            return out

    def query(self, query: exp.Expr, params: Mapping[str, Any] | None = None) -> pa.Table:
        return self.query_sql(sql(query), params)

    def execute(self, stmt: exp.Expr, params: Mapping[str, Any] | None = None) -> int:
        with self._lock:
            cur = self._conn.cursor()
            self._run(cur, sql(stmt), params)
            return max(int(cur.rowcount or 0), 0)

    def delete(self, table: exp.Table, where: exp.Expr) -> int:
        return self.execute(exp.delete(table).where(where))

    # -- provisioning and readiness -----------------------------------------------------------
    def provision(
        self, packs: Sequence[Pack], *, apply: bool, extra: Sequence[exp.Expr] = ()
    ) -> list[str]:
        stmts = [sql(s) for s in [*pack_ddl(packs), *extra]]
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
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position"
        )
        with self._lock:
            rows = self._conn.cursor().execute(q, [table.db, table.name]).fetchall()
        return {str(n): str(t) for n, t in rows}

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
        problems: list[str] = []
        try:
            with self._lock:
                current = self._conn.cursor().execute("SELECT CURRENT_DATABASE()").fetchone()
            if current is None or current[0] is None:  # the session could not use it
                return Readiness(False, (f"missing database {self.cfg.database} (or no access)",))
            problems += catalog_problems(
                packs, lambda schema, table: self.columns_of(ddl.table_ref(schema, table))
            )
        except snowflake.connector.errors.Error as exc:
            return Readiness(False, (f"snowflake unreachable: {exc}",))
        return Readiness(not problems, tuple(problems))

    # -- loading ------------------------------------------------------------------------------
    def _stage(self, cur: Any, name: str, data: pa.Table) -> None:
        cur.execute(stage_table(name, data.schema))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "batch.parquet"
            pq.write_table(data, path)
            table = exp.to_table(name).sql(dialect=DIALECT, identify=True)
            cur.execute(f"PUT 'file://{path.as_posix()}' @%{table} OVERWRITE = TRUE")
            cur.execute(copy_into_stage(name))

    def commit_load(self, batch: LoadBatch) -> LoadResult:
        with self._lock:
            cur = self._conn.cursor()
            # Every table is staged under its own name first (``_gm_batch_<i>``), so all of
            # them commit in one transaction; statements are pointed at their stage.
            staged: list[str] = []
            for i, rows in enumerate(batch.tables):
                name = f"{BATCH}_{i}"
                self._stage(cur, name, rows.rows)
                staged.append(name)
            if batch.quarantine is not None and batch.quarantine.num_rows:
                self._stage(cur, QUARANTINE_STAGE, batch.quarantine)
            try:
                cur.execute("BEGIN")
                result = self._transaction(cur, batch, staged)
                cur.execute("ROLLBACK" if result.replayed else "COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            return result

    def _transaction(self, cur: Any, batch: LoadBatch, staged: Sequence[str]) -> LoadResult:
        off = {"log": batch.log_name, "grp": batch.group, "off": batch.last_offset}
        self._run(cur, SYSTEM.delete_offset, off)  # the lock: see the module docstring
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
            lambda e: [sql(_restage(e, stage))],
        )

    def stored_offset(self, log_name: str, group: str) -> int:
        rows = self.query_sql(SYSTEM.select_offset, {"log": log_name, "grp": group}).to_pylist()
        return int(next(iter(rows[0].values()))) if rows else 0

    def ledger(self, log_name: str, group: str) -> LedgerTotals:
        # One statement reads one snapshot: the sums and the offset agree.
        with self._lock:
            cur = self._conn.cursor()
            rows = self._run(cur, LEDGER, {"log": log_name, "grp": group}).fetchall()
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
