"""PostgreSQL warehouse: binary COPY into a temp stage, keys-first dedupe and the insert in one
transaction with the rollup refresh, the quarantine rows, the ledger and the log offset.

One writer connection (the loader, and provisioning) behind a lock; readers use one
autocommit connection per thread, so API queries never wait for a load. Every connection runs
in UTC, and JSON comes back as text, as it does from DuckDB.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pgpq
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql as pgsql
from psycopg.types.string import TextLoader
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
    Partition,
    Readiness,
    RollupFold,
    TableRows,
)
from gristmill.warehouse.common import (
    QUARANTINE_STAGE,
    NothingToWarm,
    Rendered,
    SystemSQL,
    catalog_problems,
    ledger_totals,
    settle,
)
from gristmill.warehouse.postgres.factory import CAPABILITIES, DIALECT, NAME
from gristmill.warehouse.postgres.sql import (
    BATCH,
    DEDUPE_TABLE,
    LoadStatements,
    pack_ddl,
    partition,
    render,
    sql,
    stage_from_arrow,
)

SYSTEM = SystemSQL.build(DIALECT)
PARTITION_LOCK = "SELECT pg_advisory_xact_lock(7215031166010370101)"
"""A fixed advisory lock key ("gristmill partitions")."""
_UNITS = {"hour": "hour", "day": "day", "month": "month"}
PARTITIONS_SQL = (
    "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
    "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
    "JOIN pg_namespace n ON n.oid = p.relnamespace "
    "WHERE n.nspname = %(s)s AND p.relname = %(t)s"
)
_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


def _ts(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _connect(dsn: str, *, autocommit: bool) -> psycopg.Connection[tuple[Any, ...]]:
    conn = psycopg.connect(dsn, autocommit=autocommit, options="-c TimeZone=UTC")
    for name in ("json", "jsonb"):
        conn.adapters.register_loader(name, TextLoader)
    return conn


def _to_arrow(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> pa.Table:
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    return pa.Table.from_arrays([pa.array(list(c)) for c in cols], names=list(names))


class PostgresWarehouse(NothingToWarm):
    name = NAME
    dialect = DIALECT
    caps = CAPABILITIES

    def __init__(
        self,
        dsn: str,
        *,
        partitions_ahead: int = 7,
        read_only: bool = False,
        fold_every: int = folds.EVERY,
    ) -> None:
        self.dsn = dsn
        self.partitions_ahead = partitions_ahead
        self.read_only = read_only
        self._writer = _connect(dsn, autocommit=False)
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[psycopg.Connection[tuple[Any, ...]]] = []
        self._readers_lock = threading.Lock()
        self._statements: dict[tuple[str, str], LoadStatements] = {}
        self._rendered = Rendered(sql)
        self._partitions: set[tuple[str, str, datetime]] = set()
        self._folds = folds.Folds(fold_every)

    def _reader(self) -> psycopg.Connection[tuple[Any, ...]]:
        conn: psycopg.Connection[tuple[Any, ...]] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = _connect(self.dsn, autocommit=True)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @contextmanager
    def _txn(self) -> Iterator[psycopg.Cursor[tuple[Any, ...]]]:
        """The writer's transaction; rolled back on any error."""
        with self._write_lock, self._writer.transaction(), self._writer.cursor() as cur:
            yield cur

    # -- provisioning -------------------------------------------------------------------
    def provision(
        self, packs: Sequence[Pack], *, apply: bool, extra: Sequence[exp.Expr] = ()
    ) -> list[str]:
        """DDL for the packs (plus ``extra``); with ``apply``, run it and add any columns a
        pack gained. Idempotent: every statement is IF NOT EXISTS or OR REPLACE."""
        stmts = render(pack_ddl(packs, self.partitions_ahead) if packs else [], extra)
        if not apply:
            return stmts
        with self._txn() as cur:
            for s in stmts:
                cur.execute(s)

            def have(ref: exp.Table) -> dict[str, str]:  # inside this transaction
                return self._columns(ref.db, ref.name, cur)

            for alter in ddl.missing_columns(packs, have, DIALECT):
                text = sql(alter)
                cur.execute(text)
                stmts.append(text)
        return stmts

    def _columns(
        self, schema: str, table: str, cur: psycopg.Cursor[tuple[Any, ...]] | None = None
    ) -> dict[str, str]:
        q = (
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %(s)s AND table_name = %(t)s ORDER BY ordinal_position"
        )
        if cur is not None:
            rows = cur.execute(q, {"s": schema, "t": table}).fetchall()
        else:
            rows = self._reader().execute(q, {"s": schema, "t": table}).fetchall()
        return {str(n): str(t) for n, t in rows}

    def table_exists(self, table: exp.Table) -> bool:
        return bool(self._columns(table.db, table.name))

    def columns_of(self, table: exp.Table) -> dict[str, str]:
        return self._columns(table.db, table.name)

    def check_ready(self, packs: Sequence[Pack]) -> Readiness:
        try:
            problems = catalog_problems(packs, self._columns)
        except psycopg.OperationalError as exc:
            return Readiness(False, (f"postgres unreachable: {exc}".strip(),))
        return Readiness(not problems, tuple(problems))

    # -- loading ------------------------------------------------------------------------
    def _stmts(self, rows: TableRows) -> LoadStatements:
        key = (rows.pack.name, rows.table)
        st = self._statements.get(key)
        if st is None:
            st = LoadStatements.build(rows.pack, rows.table)
            self._statements[key] = st
        return st

    def _ensure_partitions(self, batch: LoadBatch) -> None:
        """Create the partitions a batch needs, each in its own short transaction, before the
        load transaction (which then takes no DDL locks)."""
        for rows in batch.tables:
            gran = rows.pack.spec.tables[rows.table].partition_by.granularity
            starts = pc.unique(
                pc.floor_temporal(rows.rows.column("occurred_at"), unit=_UNITS[gran])
            ).to_pylist()
            for start in starts:
                key = (rows.pack.dataset, rows.table, start)
                if start is None or key in self._partitions:
                    continue
                with self._writer.transaction():
                    # Concurrent CREATE … IF NOT EXISTS of one name can still collide in the
                    # catalog: loaders take turns.
                    self._writer.execute(PARTITION_LOCK)
                    self._writer.execute(sql(partition(rows.pack, rows.table, start)))
                self._partitions.add(key)

    def ensure_partitions(self, pack: Pack, table: str, times: pa.Array) -> None:
        """Partitions covering ``times`` for rows written outside the load path (feeds)."""
        rows = pa.table({"occurred_at": times})
        self._ensure_partitions(LoadBatch("", "", "", 0, [TableRows(pack, table, rows)]))

    @staticmethod
    def _copy(cur: psycopg.Cursor[tuple[Any, ...]], table: str, data: pa.Table) -> None:
        for s in stage_from_arrow(table, data.schema):
            cur.execute(s)
        encoder = pgpq.ArrowToPostgresBinaryEncoder(data.schema)
        stmt = pgsql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            pgsql.Identifier(table), pgsql.SQL(", ").join(map(pgsql.Identifier, data.column_names))
        )
        with cur.copy(stmt) as copy:
            copy.write(encoder.write_header())
            for rb in data.to_batches():
                copy.write(encoder.write_batch(rb))
            copy.write(encoder.finish())

    def commit_load(self, batch: LoadBatch) -> LoadResult:
        with self._write_lock:
            self._ensure_partitions(batch)
            appended: folds.Appended = {}
            with self._writer.transaction(), self._writer.cursor() as cur:
                if cur.execute(SYSTEM.seen_batch, {"b": batch.batch_id}).fetchone():
                    return LoadResult(batch.batch_id, {}, {}, {}, replayed=True)
                fresh: dict[tuple[str, str], int] = defaultdict(int)
                for rows in batch.tables:
                    st = self._stmts(rows)
                    self._copy(cur, BATCH, rows.rows)
                    for s in st.remember:
                        cur.execute(s)
                    if cur.rowcount == rows.rows.num_rows:
                        cur.execute(st.insert_all)
                        counts = pc.value_counts(rows.rows.column("source")).to_pylist()
                        by_source = [(c["values"], c["counts"]) for c in counts]
                    else:
                        cur.execute(st.insert_fresh)
                        by_source = cur.execute(st.count_fresh).fetchall()
                    if rows.after:
                        every = sum(n for _, n in by_source) == rows.rows.num_rows
                        for s in st.new_all if every else st.new_fresh:
                            cur.execute(s)
                    for after in rows.after:
                        self._after_insert(cur, after)
                        if after.fold is not None:
                            folds.note(appended, after.fold, rows.rows["occurred_at"])
                    if rows.after:
                        cur.execute(LoadStatements.DROP_NEW)
                    for source, n in by_source:
                        fresh[(rows.pack.name, str(source))] += int(n)
                if batch.quarantine is not None and batch.quarantine.num_rows:
                    self._copy(cur, QUARANTINE_STAGE, batch.quarantine)
                    cur.execute(SYSTEM.insert_quarantine)
                folded = self._folds.due(appended)
                for fold, lo in self._folds.marks(appended, folded):  # under the append's lock
                    cur.execute(self._rendered(folds.LOWER_MARK), folds.mark_args(fold, lo))
                self._fold(cur, folded)
                result, ledger = settle(batch, fresh)
                cur.executemany(SYSTEM.insert_ledger, ledger)
                cur.execute(SYSTEM.delete_offset, {"log": batch.log_name, "grp": batch.group})
                cur.execute(
                    SYSTEM.insert_offset,
                    {"log": batch.log_name, "grp": batch.group, "off": batch.last_offset},
                )
            self._folds.committed(appended, folded)
        return result

    def _fold(
        self, cur: psycopg.Cursor[tuple[Any, ...]], folded: Sequence[tuple[RollupFold, datetime]]
    ) -> None:
        """Fold rollups kept as appended rows. The rollup's advisory lock comes first (a load
        that appended to it holds it already), then its mark is read: an append by another
        loader either committed before (its mark is read) or waits for this commit. psycopg
        ignores the ``lo`` parameter where a statement has no placeholder."""
        for fold, lo in folded:
            for stmt in fold.lock:
                cur.execute(self._rendered(stmt))
            mark = folds.mark_of(fold.table)
            cur.execute(self._rendered(folds.READ_MARK), mark)
            start = folds.fold_start(cur.fetchall(), lo)
            cur.execute(self._rendered(fold.drop))
            for stmt in fold.statements:
                cur.execute(self._rendered(stmt), {"lo": start})
            cur.execute(self._rendered(fold.drop))
            for stmt in folds.CLEAR_MARK:
                cur.execute(self._rendered(stmt), mark)

    def fold_rollups(self) -> int:
        """Fold now every rollup this process appended to since its last fold (see
        :mod:`gristmill.warehouse.folds`), in one transaction; how many."""
        with self._txn() as cur:
            folded = self._folds.pending()
            self._fold(cur, folded)
        self._folds.committed({}, folded)
        return len(folded)

    def _after_insert(self, cur: psycopg.Cursor[tuple[Any, ...]], after: AfterInsert) -> None:
        for stmt in after.prepare:
            cur.execute(self._rendered(stmt))
        params: dict[str, Any] = {}
        if after.bounds is not None:
            cur.execute(self._rendered(after.bounds))
            assert cur.description is not None
            row = cur.fetchone()
            params = dict(zip([d.name for d in cur.description], row or (), strict=False))
            if all(v is None for v in params.values()):
                return
        for stmt in after.statements:
            cur.execute(self._rendered(stmt), params or None)

    def stored_offset(self, log_name: str, group: str) -> int:
        row = (
            self._reader().execute(SYSTEM.select_offset, {"log": log_name, "grp": group}).fetchone()
        )
        return int(row[0]) if row else 0

    def ledger(self, log_name: str, group: str) -> LedgerTotals:
        conn = self._reader()
        with conn.transaction():  # one snapshot for the sums and the offset
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            rows = conn.execute(SYSTEM.sum_ledger, {"log": log_name}).fetchall()
            off = conn.execute(SYSTEM.select_offset, {"log": log_name, "grp": group}).fetchall()
        return ledger_totals(rows, off)

    def prune_dedupe(self, pack: Pack, now_us: int) -> int:
        cutoff = now_us - int(pack.spec.dedupe.window.total_seconds() * 1_000_000)
        stmt = exp.delete(ddl.table_ref(pack.dataset, DEDUPE_TABLE)).where(
            exp.LT(this=exp.column("first_seen"), expression=exp.Placeholder(this="cutoff"))
        )
        return self.execute(stmt, {"cutoff": to_datetime(cutoff)})

    # -- retention ----------------------------------------------------------------------
    def partitions(self, pack: Pack, table: str) -> list[Partition]:
        """The table's partitions from the catalogue, oldest first."""
        rows = self._reader().execute(PARTITIONS_SQL, {"s": pack.dataset, "t": table}).fetchall()
        out = []
        for name, bound in rows:
            m = _BOUND.search(str(bound))
            if m is None:  # not a range partition Gristmill made
                continue
            out.append(Partition(str(name), _ts(m.group(1)), _ts(m.group(2))))
        return sorted(out, key=lambda p: p.start)

    def drop_partitions(self, pack: Pack, table: str, parts: Sequence[Partition]) -> None:
        """One ``DROP TABLE`` per hundred partitions, in one transaction."""
        for start in range(0, len(parts), 100):
            chunk = parts[start : start + 100]
            stmt = exp.Drop(
                tables=[ddl.table_ref(pack.dataset, p.name) for p in chunk],
                kind="TABLE",
                exists=True,
            )
            with self._txn() as cur:
                cur.execute(PARTITION_LOCK)
                cur.execute(sql(stmt))
            for p in chunk:  # a late event for that time recreates the partition on demand
                self._partitions.discard((pack.dataset, table, p.start))

    # -- reading ------------------------------------------------------------------------
    def query(self, query: exp.Expr, params: Mapping[str, Any] | None = None) -> pa.Table:
        return self.query_sql(sql(query), params)

    def query_sql(self, sql_text: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run SQL this package rendered from sqlglot for this dialect (cached text)."""
        with self._reader().cursor() as cur:
            cur.execute(sql_text, dict(params) if params else None)
            if cur.description is None:
                raise ValueError("query() takes a statement that returns rows")
            names = [d.name for d in cur.description]
            return _to_arrow(names, cur.fetchall())

    def execute(self, stmt: exp.Expr, params: Mapping[str, Any] | None = None) -> int:
        with self._txn() as cur:
            cur.execute(sql(stmt), dict(params) if params else None)
            return max(cur.rowcount, 0)

    def execute_all(self, stmts: Sequence[tuple[exp.Expr, Mapping[str, Any]]]) -> list[int]:
        """Run statements in one transaction (feeds: replace a feed's facts atomically)."""
        out: list[int] = []
        with self._txn() as cur:
            for stmt, params in stmts:
                cur.execute(sql(stmt), dict(params) if params else None)
                out.append(max(cur.rowcount, 0))
        return out

    def delete(self, table: exp.Table, where: exp.Expr) -> int:
        return self.execute(exp.delete(table).where(where))

    def close(self) -> None:
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._writer.close()
