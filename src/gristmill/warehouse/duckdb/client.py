"""DuckDB warehouse: one file, one writer (the loader), many readers through cursors.

Dedupe keeps one 128-bit key per (scope, event_id) — ``md5_number`` of the two joined by a
unit separator — in ``<dataset>._gm_dedupe``. Joining on a 128-bit integer instead of two
strings measured about 3x faster at 5M keys on this machine. MD5 here is a hash for
bucketing, not security; a collision among 2^128 values is not a practical concern.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from gristmill.core.clock import to_datetime
from gristmill.pack.models import Pack
from gristmill.sql import ddl
from gristmill.warehouse import folds
from gristmill.warehouse.base import (
    AfterInsert,
    LedgerTotals,
    LoadBatch,
    LoadResult,
    Readiness,
    RollupFold,
    TableRows,
)
from gristmill.warehouse.common import (
    QUARANTINE_STAGE,
    Rendered,
    SystemSQL,
    catalog_problems,
    ledger_totals,
    settle,
)
from gristmill.warehouse.duckdb.factory import CAPABILITIES, DIALECT, NAME, ROW_GROUP_ROWS
from gristmill.warehouse.duckdb.keys import KeySet, Run, halves
from gristmill.warehouse.duckdb.sql import (
    BATCH,
    DEDUPE_TABLE,
    KEYS,
    SEEN_IN,
    LoadStatements,
    key_halves,
    pack_ddl,
    seen_from_halves,
)


def _sql(e: exp.Expr) -> str:
    return e.sql(dialect=DIALECT)


_KEY_HALVES = _sql(key_halves(exp.to_table(KEYS), "_k", "received_at"))
_SEEN_FROM_HALVES = seen_from_halves()


def _run(
    cur: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | list[Any] | None = None
) -> list[tuple[Any, ...]]:
    """Execute and read the result to its end: DuckDB refuses new work on a cursor whose last
    result is unfinished, and every statement (even COMMIT) has one."""
    return cur.execute(sql, params).fetchall()


class DuckDBWarehouse:
    name = NAME
    dialect = DIALECT
    caps = CAPABILITIES

    def __init__(
        self,
        path: Path,
        *,
        threads: int | None = None,
        memory_limit: str | None = None,
        checkpoint_threshold: str | None = None,
        read_only: bool = False,
        key_index: bool = True,
        fold_every: int = folds.EVERY,
    ) -> None:
        config: dict[str, Any] = {}
        if threads:
            config["threads"] = threads
        if memory_limit:
            config["memory_limit"] = memory_limit
        if checkpoint_threshold and not read_only:
            config["checkpoint_threshold"] = checkpoint_threshold
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = duckdb.connect(str(path), read_only=read_only, config=config)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._statements: dict[tuple[str, str], LoadStatements] = {}
        self._rendered = Rendered(_sql)
        self._key_index = key_index and not read_only
        self._keysets: dict[str, KeySet] = {}
        """Per pack, its dedupe keys in memory (``key_index``): loaded by :meth:`warm` or at
        its first load, kept equal to the table by this object (the file's only writer),
        dropped when another statement names the key table."""
        self._folds = folds.Folds(fold_every, sole_writer=True)

    def _cur(self) -> duckdb.DuckDBPyConnection:
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._db.cursor()
            self._local.cur = cur
        return cur

    # -- provisioning -------------------------------------------------------------------
    def provision(
        self, packs: Sequence[Pack], *, apply: bool, extra: Sequence[exp.Expr] = ()
    ) -> list[str]:
        """DDL for the packs (plus ``extra``, e.g. rollup tables); with ``apply``, run it and
        add any columns a pack gained."""
        stmts = [_sql(s) for s in [*(pack_ddl(packs) if packs else []), *extra]]
        if not apply:
            return stmts
        cur = self._cur()
        with self._write_lock:
            for s in stmts:
                self._forget(s)
                _run(cur, s)
            for alter in ddl.missing_columns(packs, self.columns_of, DIALECT):
                text = _sql(alter)
                _run(cur, text)
                stmts.append(text)
        return stmts

    def _columns(self, schema: str, table: str) -> dict[str, str]:
        rows = _run(
            self._cur(),
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = $s AND table_name = $t ORDER BY ordinal_position",
            {"s": schema, "t": table},
        )
        return {str(n): str(t) for n, t in rows}

    def table_exists(self, table: exp.Table) -> bool:
        return bool(self._columns(table.db, table.name))

    def columns_of(self, table: exp.Table) -> dict[str, str]:
        """Column name -> type, in table order; empty when the table does not exist."""
        return self._columns(table.db, table.name)

    def check_ready(self, packs: Sequence[Pack]) -> Readiness:
        problems = catalog_problems(packs, self._columns)
        return Readiness(not problems, tuple(problems))

    # -- loading ------------------------------------------------------------------------
    def _stmts(self, rows: TableRows) -> LoadStatements:
        key = (rows.pack.name, rows.table)
        st = self._statements.get(key)
        if st is None:
            st = LoadStatements.build(rows.pack, rows.table, DEDUPE_TABLE)
            self._statements[key] = st
        return st

    def commit_load(self, batch: LoadBatch) -> LoadResult:
        cur = self._cur()
        with self._write_lock:
            _run(cur, "BEGIN TRANSACTION")
            added: dict[str, list[Run]] = defaultdict(list)
            appended: folds.Appended = {}
            try:
                seen = _run(cur, SYSTEM.seen_batch, {"b": batch.batch_id})
                if seen:
                    _run(cur, "ROLLBACK")
                    return LoadResult(batch.batch_id, {}, {}, {}, replayed=True)
                fresh: dict[tuple[str, str], int] = defaultdict(int)
                for rows in batch.tables:
                    st = self._stmts(rows)
                    cur.register(BATCH, rows.rows)
                    try:
                        _run(cur, st.keys)
                        if self._key_index:
                            repeats = self._seen(cur, rows.pack, added[rows.pack.name])
                        else:
                            _run(cur, st.seen)
                            repeats = _run(cur, LoadStatements.COUNT_SEEN)[0][0]
                        if repeats == 0:
                            _run(cur, st.remember_all)
                            _run(cur, st.insert_all)
                            counts = pc.value_counts(rows.rows.column("source")).to_pylist()
                            by_source = [(c["values"], c["counts"]) for c in counts]
                        else:
                            _run(cur, st.remember_fresh)
                            _run(cur, st.insert_fresh)
                            by_source = _run(cur, st.count_fresh)
                        if rows.after:
                            _run(cur, st.new_all if repeats == 0 else st.new_fresh)
                        for after in rows.after:
                            self._after_insert(cur, after)
                            if after.fold is not None:
                                folds.note(appended, after.fold, rows.rows["occurred_at"])
                        if rows.after:
                            _run(cur, LoadStatements.DROP_NEW)
                    finally:
                        cur.unregister(BATCH)
                    for source, n in by_source:
                        fresh[(rows.pack.name, str(source))] += int(n)
                    for drop in LoadStatements.DROP:
                        _run(cur, drop)
                if batch.quarantine is not None and batch.quarantine.num_rows:
                    cur.register(QUARANTINE_STAGE, batch.quarantine)
                    try:
                        _run(cur, SYSTEM.insert_quarantine)
                    finally:
                        cur.unregister(QUARANTINE_STAGE)
                folded = self._folds.due(appended)
                for fold, lo in self._folds.marks(appended, folded):
                    _run(cur, self._rendered(folds.LOWER_MARK), folds.mark_args(fold, lo))
                self._fold(cur, folded)
                result, ledger = settle(batch, fresh)
                for row in ledger:
                    _run(cur, SYSTEM.insert_ledger, list(row))
                _run(cur, SYSTEM.delete_offset, {"log": batch.log_name, "grp": batch.group})
                _run(
                    cur,
                    SYSTEM.insert_offset,
                    {"log": batch.log_name, "grp": batch.group, "off": batch.last_offset},
                )
                _run(cur, "COMMIT")
            except BaseException:
                _run(cur, "ROLLBACK")
                raise
            self._folds.committed(appended, folded)
            for pack, runs in added.items():  # committed: the key table holds them now
                for run in runs:
                    self._keysets[pack].add(run)
        return result

    def _seen(self, cur: duckdb.DuckDBPyConnection, pack: Pack, added: list[Run]) -> int:
        """``_gm_seen`` from the in-memory key set: the batch's keys (``_gm_keys``) the pack
        already stored, or that an earlier table of this batch just stored (``added``, to
        which this table's fresh keys are appended); returns how many."""
        ks = self._keysets.get(pack.name)
        if ks is None:  # inside the transaction: the table as this load finds it
            ks = self._read_keys(cur, pack)
        rel = cur.sql(_KEY_HALVES)
        assert rel is not None
        hi, lo, t = halves(rel.to_arrow_table())
        found = ks.contains(hi, lo)
        for run in added:
            found |= run.contains(hi, lo)
        fresh = ~found
        added.append(Run(hi[fresh], lo[fresh], t[fresh]))
        repeats = int(found.sum())
        if repeats:  # the statements for a batch without repeats do not read _gm_seen
            cur.register(SEEN_IN, pa.table({"hi": hi[found], "lo": lo[found]}))
            try:
                _run(cur, _SEEN_FROM_HALVES)
            finally:
                cur.unregister(SEEN_IN)
        return repeats

    def _read_keys(self, cur: duckdb.DuckDBPyConnection, pack: Pack) -> KeySet:
        table = ddl.table_ref(pack.dataset, DEDUPE_TABLE)
        stored = cur.sql(_sql(key_halves(table, "k", "first_seen").order_by("hi")))
        assert stored is not None
        ks = self._keysets[pack.name] = KeySet.from_arrow(stored.to_arrow_table())
        return ks

    def warm(self, packs: Sequence[Pack]) -> None:
        """Read each pack's dedupe keys into memory now, so the first load after a start
        does not (1.6 s at 10M keys, BENCHMARKS.md). Under the write lock, so no load
        commits meanwhile and the set equals the table; a load that arrives waits for it
        only as long as it would have read the keys itself."""
        if not self._key_index:
            return
        with self._write_lock:
            cur = self._cur()
            for pack in packs:
                if pack.name in self._keysets:
                    continue
                if self.table_exists(ddl.table_ref(pack.dataset, DEDUPE_TABLE)):
                    self._read_keys(cur, pack)

    def keys_in_memory(self) -> dict[str, int]:
        """Per pack, the dedupe keys held in memory (24 bytes each; none until its first
        load after a start, or after an erasure)."""
        return {name: len(ks) for name, ks in dict(self._keysets).items()}

    def _forget(self, sql: str) -> None:
        """Drop what this process holds of a table that a statement other than a load or a
        prune names: the in-memory key sets (erasure deletes keys; the next load reads the
        table again), the fold marks it wrote (a rebuild clears them; loads write again)."""
        if DEDUPE_TABLE in sql:
            self._keysets.clear()
        if folds.MARKS.name in sql:
            self._folds.forget()

    def _fold(
        self, cur: duckdb.DuckDBPyConnection, folded: Sequence[tuple[RollupFold, datetime]]
    ) -> None:
        for fold, lo in folded:
            mark = folds.mark_of(fold.table)
            start = folds.fold_start(_run(cur, self._rendered(folds.READ_MARK), mark), lo)
            _run(cur, self._rendered(fold.drop))
            for stmt in fold.statements:
                _run(cur, self._rendered(stmt), {"lo": start})
            _run(cur, self._rendered(fold.drop))
            for stmt in folds.CLEAR_MARK:
                _run(cur, self._rendered(stmt), mark)

    def fold_rollups(self) -> int:
        """Fold now every rollup loads appended to since its last fold (see
        :mod:`gristmill.warehouse.folds`), in one transaction; how many."""
        cur = self._cur()
        with self._write_lock:
            folded = self._folds.pending()
            _run(cur, "BEGIN TRANSACTION")
            try:
                self._fold(cur, folded)
                _run(cur, "COMMIT")
            except BaseException:
                _run(cur, "ROLLBACK")
                raise
            self._folds.committed({}, folded)
        return len(folded)

    def _after_insert(self, cur: duckdb.DuckDBPyConnection, after: AfterInsert) -> None:
        for stmt in after.prepare:
            _run(cur, self._rendered(stmt))
        params: dict[str, Any] = {}
        if after.bounds is not None:
            rel = cur.sql(self._rendered(after.bounds))
            assert rel is not None
            # Through Arrow: DuckDB's own TIMESTAMPTZ -> Python conversion needs pytz.
            params = rel.to_arrow_table().to_pylist()[0]
            if all(v is None for v in params.values()):
                return
        for stmt in after.statements:
            _run(cur, self._rendered(stmt), params or None)

    def stored_offset(self, log_name: str, group: str) -> int:
        rows = _run(self._cur(), SYSTEM.select_offset, {"log": log_name, "grp": group})
        return int(rows[0][0]) if rows else 0

    def ledger(self, log_name: str, group: str) -> LedgerTotals:
        cur = self._cur()
        _run(cur, "BEGIN TRANSACTION")
        try:
            rows = _run(cur, SYSTEM.sum_ledger, {"log": log_name})
            off = _run(cur, SYSTEM.select_offset, {"log": log_name, "grp": group})
        finally:
            _run(cur, "COMMIT")
        return ledger_totals(rows, off)

    def prune_dedupe(self, pack: Pack, now_us: int) -> int:
        cutoff = now_us - int(pack.spec.dedupe.window.total_seconds() * 1_000_000)
        stmt = _sql(
            exp.delete(ddl.table_ref(pack.dataset, DEDUPE_TABLE)).where(
                exp.LT(this=exp.column("first_seen"), expression=exp.Placeholder(this="cutoff"))
            )
        )
        with self._write_lock:
            rows = _run(self._cur(), stmt, {"cutoff": to_datetime(cutoff)})
            ks = self._keysets.get(pack.name)
            if ks is not None:
                ks.prune(cutoff)
        return int(rows[0][0]) if rows else 0

    # -- reading ------------------------------------------------------------------------
    def query(self, query: exp.Expr, params: Mapping[str, Any] | None = None) -> pa.Table:
        return self.query_sql(_sql(query), params)

    def query_sql(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run SQL this package rendered from sqlglot for this dialect (cached text)."""
        rel = self._cur().sql(sql, params=dict(params or {}))
        if rel is None:
            raise ValueError("query() takes a statement that returns rows")
        return rel.to_arrow_table()

    def execute(self, stmt: exp.Expr, params: Mapping[str, Any] | None = None) -> int:
        text = _sql(stmt)
        with self._write_lock:
            self._forget(text)
            rows = _run(self._cur(), text, dict(params or {}))
        return int(rows[0][0]) if rows and rows[0] and isinstance(rows[0][0], int) else 0

    def delete(self, table: exp.Table, where: exp.Expr) -> int:
        return self.execute(exp.delete(table).where(where))

    # -- feeds: plain appends and short transactions outside the event load path ---------
    def insert_arrow(self, table: exp.Table, rows: pa.Table) -> int:
        """Append an Arrow table to ``table`` by column name (feed staging rows), in one
        transaction of one ``INSERT`` per row group: an insert of more rows runs on several
        threads and leaves its groups for the next checkpoint to write (measured on 1M rows:
        0.30 s + 0.42 s at the checkpoint in one insert, 0.57 s + 0.01 s in whole groups)."""
        cols = [exp.to_identifier(c, quoted=True) for c in rows.column_names]
        sql = _sql(exp.insert(exp.select(*cols).from_("_gm_rows"), table, columns=cols))
        step = ROW_GROUP_ROWS
        cur = self._cur()
        with self._write_lock:
            _run(cur, "BEGIN TRANSACTION")
            try:
                for off in range(0, rows.num_rows, step):
                    cur.register("_gm_rows", rows.slice(off, step))  # replaces the last slice
                    _run(cur, sql)
                _run(cur, "COMMIT")
            except BaseException:
                _run(cur, "ROLLBACK")
                raise
            finally:
                cur.unregister("_gm_rows")
        return int(rows.num_rows)

    def execute_all(self, stmts: Sequence[tuple[exp.Expr, Mapping[str, Any]]]) -> list[int]:
        """Run statements in one transaction; each one's first integer result."""
        cur = self._cur()
        out: list[int] = []
        with self._write_lock:
            _run(cur, "BEGIN TRANSACTION")
            try:
                for stmt, params in stmts:
                    text = _sql(stmt)
                    self._forget(text)
                    rows = _run(cur, text, dict(params) or None)
                    first = rows[0][0] if rows and rows[0] else 0
                    out.append(int(first) if isinstance(first, int) else 0)
                _run(cur, "COMMIT")
            except BaseException:
                _run(cur, "ROLLBACK")
                raise
        return out

    def checkpoint(self) -> None:
        """Write everything in the WAL to the file now (what a commit past the threshold, or
        :meth:`close`, does anyway): for a benchmark that counts the deferred work."""
        with self._write_lock:
            _run(self._cur(), "CHECKPOINT")

    def close(self) -> None:
        self._db.close()


SYSTEM = SystemSQL.build(DIALECT)
