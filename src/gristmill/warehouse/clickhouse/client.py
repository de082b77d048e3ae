"""ClickHouse warehouse: the same load contract as the transactional engines, without
multi-statement transactions.

A load is a sequence of idempotent steps, every row it writes tagged with the batch id
(``_gm_batch_id``), and **one** ledger insert as the commit point (a single-block INSERT into
a MergeTree is atomic):

1. the batch id is in the ledger: it committed before — a no-op (the offset is written again,
   in case the crash came between the ledger and the offset);
2. the batch id is in ``_gristmill.attempts`` but not the ledger: an earlier attempt died
   part-way — delete what it wrote (pack rows, dedupe keys, quarantine rows by
   ``_gm_batch_id``), so nothing is doubled;
3. record the attempt; stage the batch in a temporary table; keys-first dedupe against
   ``<dataset>._gm_dedupe`` (point lookups on its primary key); insert fresh keys and rows;
   recompute the rollup buckets the batch touched (ReplacingMergeTree: the new row replaces
   the old one); raise freshness (AggregatingMergeTree, max);
4. insert the ledger rows (commit), then the offset.

Queries never see a row twice: a key is inserted only when fresh, and a retried batch first
removes its own leftovers. What they can see, as on any engine without transactions, is the
rows of a batch before its ledger row lands (read-uncommitted per batch). One writer per
dataset: two loader processes racing the same event id in different batches could both find
it fresh (the log's consumer group gives each batch to one loader; a retry storm across two
collectors at the same moment is the remaining window, and is documented).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from gristmill.core.clock import to_datetime
from gristmill.pack.models import Pack
from gristmill.sql import ddl
from gristmill.sql.system import LOADS, OFFSETS, QUARANTINE, QUARANTINE_COLUMNS
from gristmill.sql.types import Logical
from gristmill.warehouse.base import (
    AfterInsert,
    LedgerTotals,
    LoadBatch,
    LoadResult,
    Partition,
    Readiness,
    TableRows,
)
from gristmill.warehouse.clickhouse.compact import PartsKeeper
from gristmill.warehouse.clickhouse.connection import Connection
from gristmill.warehouse.clickhouse.factory import CAPABILITIES, DIALECT, NAME
from gristmill.warehouse.clickhouse.sql import (
    ATTEMPTED,
    ATTEMPTS,
    BATCH,
    BATCH_COLUMN,
    COMPENSATE_QUARANTINE,
    DEDUPE_TABLE,
    SEEN_BATCH,
    LoadStatements,
    _nullable,
    for_clickhouse,
    pack_ddl,
    render,
    sql,
    stage,
)
from gristmill.warehouse.common import (
    NothingToWarm,
    Rendered,
    SystemSQL,
    catalog_problems,
    ledger_totals,
    settle,
)

SYSTEM = SystemSQL.build(DIALECT)
_COLUMNS = (
    "SELECT name, type FROM system.columns WHERE database = {s:String} AND table = {t:String} "
    "ORDER BY position"
)
_ENGINE = "SELECT engine FROM system.tables WHERE database = {s:String} AND name = {t:String}"
_LEDGER_SCHEMA = pa.schema(
    [
        ("batch_id", pa.string()),
        ("log", pa.string()),
        ("grp", pa.string()),
        ("pack", pa.string()),
        ("source", pa.string()),
        ("loaded", pa.int64()),
        ("duplicates", pa.int64()),
        ("quarantined", pa.int64()),
        ("last_offset", pa.int64()),
        ("committed_at", pa.timestamp("us", tz="UTC")),
    ]
)


_BINARY: dict[tuple[str, str], list[str]] = {
    (QUARANTINE.db, QUARANTINE.name): [n for n, t, _ in QUARANTINE_COLUMNS if t is Logical.BINARY]
}


def _now() -> datetime:
    return datetime.now(UTC)


_PARTS = (
    "SELECT partition, partition_id, sum(rows) AS rows FROM system.parts "
    "WHERE database = {s:String} AND table = {t:String} AND active "
    "GROUP BY partition, partition_id"
)
_PARTITION_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


def _partition_start(value: str, granularity: str) -> datetime | None:
    v = value.strip("'")
    try:
        if granularity == "month":
            return datetime(int(v[:4]), int(v[4:6]), 1, tzinfo=UTC)
        t = datetime.fromisoformat(v)
    except ValueError:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def _partition_end(start: datetime, granularity: str) -> datetime:
    if granularity == "hour":
        return start + timedelta(hours=1)
    if granularity == "day":
        return start + timedelta(days=1)
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


REWRITTEN = "rewrite:"
"""Prefix of the ``_gm_batch_id`` an UPDATE gives the rows it rewrote (:func:`rewrite_marker`):
never a load's id, so never compensated, and never an earlier, different UPDATE's, so a later
UPDATE (an erasure after a reprice) reaches rows an earlier one rewrote."""

EVENT_KEY = ("event_id", "source", "event_type")
"""One row per key in a pack's event table: the rows a rewrite has already copied."""


def rewrite_marker(stmt: exp.Update, params: Mapping[str, Any] | None) -> str:
    """The marker of one UPDATE: a digest of its text and values. The same statement run
    again (the retry of an erasure that stopped between the rewrite's insert and its delete)
    has the same marker, and finds the rows it already copied."""
    text = sql(for_clickhouse(stmt.copy()))
    values = sorted((k, repr(v)) for k, v in (params or {}).items())
    digest = hashlib.sha256(repr((text, values)).encode()).hexdigest()[:32]
    return REWRITTEN + digest


class ClickHouseWarehouse(NothingToWarm):
    name = NAME
    dialect = DIALECT
    caps = CAPABILITIES

    def __init__(self, conn: Connection, *, read_only: bool = False) -> None:
        self._conn = conn
        self.read_only = read_only
        self._write_lock = threading.Lock()
        self._statements: dict[tuple[str, str], LoadStatements] = {}
        self._engines: dict[tuple[str, str], str] = {}
        self._rendered = Rendered(lambda e: sql(for_clickhouse(e)))
        self._parts = PartsKeeper(conn, self._render)

    @property
    def connection_kind(self) -> str:
        return self._conn.kind

    def _render(self, stmt: exp.Expr) -> str:
        """Shared statements are built once and reused: render each once."""
        return self._rendered(stmt)

    # -- provisioning -------------------------------------------------------------------
    def provision(
        self, packs: Sequence[Pack], *, apply: bool, extra: Sequence[exp.Expr] = ()
    ) -> list[str]:
        """DDL for the packs (plus ``extra``); with ``apply``, run it and add any columns a
        pack gained. Idempotent: every statement is IF NOT EXISTS."""
        stmts = render([*(pack_ddl(packs) if packs else []), *extra])
        if not apply:
            return stmts
        with self._write_lock:
            for s in stmts:
                self._conn.command(s)
            for pack in packs:
                for table in pack.spec.tables:
                    have = self._columns(pack.dataset, table)
                    for col in pack.columns(table):
                        if col.name not in have:
                            alter = exp.Alter(
                                this=ddl.table_ref(pack.dataset, table),
                                kind="TABLE",
                                actions=[
                                    _nullable(
                                        ddl.column_def(col.name, ddl.data_type(col.type, DIALECT))
                                    )
                                ],
                            )
                            self._conn.command(sql(alter))
                            stmts.append(sql(alter))
            self._engines.clear()
        return stmts

    def _columns(self, schema: str, table: str) -> dict[str, str]:
        rows = self._conn.query(_COLUMNS, {"s": schema, "t": table}).to_pylist()
        return {str(r["name"]): str(r["type"]) for r in rows}

    def table_exists(self, table: exp.Table) -> bool:
        return bool(self._columns(table.db, table.name))

    def columns_of(self, table: exp.Table) -> dict[str, str]:
        return self._columns(table.db, table.name)

    def check_ready(self, packs: Sequence[Pack]) -> Readiness:
        try:
            problems = catalog_problems(packs, self._columns)
        except Exception as exc:  # the driver's own error types differ per connection
            return Readiness(False, (f"clickhouse unreachable: {exc}".strip()[:500],))
        return Readiness(not problems, tuple(problems))

    # -- loading ------------------------------------------------------------------------
    def _stmts(self, rows: TableRows) -> LoadStatements:
        key = (rows.pack.name, rows.table)
        st = self._statements.get(key)
        if st is None:
            st = LoadStatements.build(rows.pack, rows.table)
            self._statements[key] = st
        return st

    def _stage(self, name: str, data: pa.Table) -> None:
        for s in stage(name, data.schema):
            self._conn.command(s)
        self._conn.insert_arrow(name, data)

    def _compensate(self, batch: LoadBatch) -> None:
        """Remove what an unfinished attempt of this batch wrote (rare: after a crash)."""
        b = {"b": batch.batch_id}
        for pack in {rows.pack.name: rows.pack for rows in batch.tables}.values():
            for table in pack.spec.tables:
                for s in LoadStatements.build(pack, table).compensate:
                    self._conn.command(s, b)
        self._parts.compensate(batch)
        self._conn.command(COMPENSATE_QUARANTINE, b)

    def _write_offset(self, batch: LoadBatch) -> None:
        self._conn.insert_arrow(
            sql(OFFSETS),
            pa.table(
                {
                    "log": [batch.log_name],
                    "grp": [batch.group],
                    "offset": pa.array([batch.last_offset], pa.int64()),
                    "updated_at": pa.array([_now()], pa.timestamp("us", tz="UTC")),
                }
            ),
        )

    def commit_load(self, batch: LoadBatch) -> LoadResult:
        b = {"b": batch.batch_id}
        with self._write_lock:
            if self._conn.query(SEEN_BATCH, b).num_rows:
                self._write_offset(batch)
                return LoadResult(batch.batch_id, {}, {}, {}, replayed=True)
            if self._conn.query(ATTEMPTED, b).num_rows:
                self._compensate(batch)
            self._conn.insert_arrow(
                sql(ATTEMPTS),
                pa.table(
                    {
                        "batch_id": [batch.batch_id],
                        "started_at": pa.array([_now()], pa.timestamp("us", tz="UTC")),
                    }
                ),
            )
            fresh: dict[tuple[str, str], int] = defaultdict(int)
            for rows in batch.tables:
                st = self._stmts(rows)
                self._stage(BATCH, rows.rows)
                for s in (*st.keys, *st.seen):
                    self._conn.command(s)
                repeats = self._conn.query(st.count_seen).column("n")[0].as_py()
                if repeats == 0:
                    self._conn.command(st.remember_all, b)
                    self._conn.command(st.insert_all, b)
                    counts = pc.value_counts(rows.rows.column("source")).to_pylist()
                    by_source = [(c["values"], c["counts"]) for c in counts]
                else:
                    self._conn.command(st.remember_fresh, b)
                    self._conn.command(st.insert_fresh, b)
                    by_source = [
                        (r["source"], r["n"]) for r in self._conn.query(st.count_fresh).to_pylist()
                    ]
                new = st.new_all if repeats == 0 else st.new_fresh
                for after in rows.after:
                    if not self._parts.step(after, batch.batch_id, new):
                        self._after_insert(after)
                for source, n in by_source:
                    fresh[(rows.pack.name, str(source))] += int(n)
            if batch.quarantine is not None and batch.quarantine.num_rows:
                q = batch.quarantine
                n = q.num_rows
                q = q.append_column(
                    "quarantined_at", pa.array([_now()] * n, pa.timestamp("us", tz="UTC"))
                ).append_column(BATCH_COLUMN, pa.array([batch.batch_id] * n, pa.string()))
                self._conn.insert_arrow(sql(QUARANTINE), q)
            result, ledger = settle(batch, fresh)
            if ledger:
                now = _now()
                rows_ = [(*row, now) for row in ledger]
                cols = list(zip(*rows_, strict=True))
                self._conn.insert_arrow(
                    sql(LOADS),
                    pa.Table.from_arrays(
                        [
                            pa.array(list(c), f.type)
                            for c, f in zip(cols, _LEDGER_SCHEMA, strict=True)
                        ],
                        schema=_LEDGER_SCHEMA,
                    ),
                )
            self._write_offset(batch)
            self._parts.committed()
        return result

    def compact_rollups(self) -> int:
        """Fold the committed parts of every rollup this warehouse has loaded (loads do so
        every :data:`~gristmill.warehouse.clickhouse.compact.EVERY`); partitions compacted."""
        with self._write_lock:
            return self._parts.compact_all()

    def _is_replacing(self, table: exp.Table) -> bool:
        key = (table.db, table.name)
        engine = self._engines.get(key)
        if engine is None:
            rows = self._conn.query(_ENGINE, {"s": key[0], "t": key[1]}).to_pylist()
            engine = str(rows[0]["engine"]) if rows else ""
            self._engines[key] = engine
        return engine.startswith("Replacing")

    def _after_insert(self, after: AfterInsert) -> None:
        for stmt in after.prepare:
            self._conn.command(self._render(stmt))
        params: dict[str, Any] = {}
        if after.bounds is not None:
            params = self._conn.query(self._render(after.bounds)).to_pylist()[0]
            if all(v is None for v in params.values()):
                return
        for stmt in after.statements:
            if isinstance(stmt, exp.Delete) and self._is_replacing(stmt.this):
                # The insert that follows replaces these rows by key (ReplacingMergeTree):
                # no moment without them, and no delete mutation per load.
                continue
            self._conn.command(self._render(stmt), params or None)

    def stored_offset(self, log_name: str, group: str) -> int:
        rows = self._conn.query(SYSTEM.select_offset, {"log": log_name, "grp": group})
        return int(rows.column(0)[0].as_py()) if rows.num_rows else 0

    def ledger(self, log_name: str, group: str) -> LedgerTotals:
        rows = self._conn.query(SYSTEM.sum_ledger, {"log": log_name})
        off = self._conn.query(SYSTEM.select_offset, {"log": log_name, "grp": group})
        return ledger_totals(
            [tuple(r.values()) for r in rows.to_pylist()],
            [tuple(r.values()) for r in off.to_pylist()],
        )

    def prune_dedupe(self, pack: Pack, now_us: int) -> int:
        cutoff = now_us - int(pack.spec.dedupe.window.total_seconds() * 1_000_000)
        stmt = exp.delete(ddl.table_ref(pack.dataset, DEDUPE_TABLE)).where(
            exp.LT(this=exp.column("first_seen"), expression=exp.Placeholder(this="cutoff"))
        )
        return self.execute(stmt, {"cutoff": to_datetime(cutoff)})

    # -- retention ----------------------------------------------------------------------
    def partitions(self, pack: Pack, table: str) -> list[Partition]:
        """Active partitions from ``system.parts``, oldest first; their time range follows
        from the partition value and the pack's granularity (``toDate``, ``toStartOfHour``,
        ``toYYYYMM``)."""
        gran = pack.spec.tables[table].partition_by.granularity
        rows = self._conn.query(_PARTS, {"s": pack.dataset, "t": table}).to_pylist()
        out = []
        for r in rows:
            start = _partition_start(str(r["partition"]), gran)
            if start is None:
                continue
            end = _partition_end(start, gran)
            out.append(Partition(str(r["partition_id"]), start, end, int(r["rows"])))
        return sorted(out, key=lambda p: p.start)

    def drop_partitions(self, pack: Pack, table: str, parts: Sequence[Partition]) -> None:
        """One ``ALTER TABLE`` dropping up to a hundred partitions at a time."""
        ref = sql(ddl.table_ref(pack.dataset, table))
        for start in range(0, len(parts), 100):
            chunk = parts[start : start + 100]
            for p in chunk:
                if not _PARTITION_ID.match(p.name):
                    raise ValueError(f"not a partition id: {p.name!r}")
            drops = ", ".join(f"DROP PARTITION ID '{p.name}'" for p in chunk)
            with self._write_lock:
                self._conn.command(f"ALTER TABLE {ref} {drops}")

    # -- reading ------------------------------------------------------------------------
    def query(self, query: exp.Expr, params: Mapping[str, Any] | None = None) -> pa.Table:
        out = self._conn.query(sql(for_clickhouse(query)), params)
        reads = {(t.db, t.name) for t in query.find_all(exp.Table)}
        binary = [c for (db, t), cols in _BINARY.items() if (db, t) in reads for c in cols]
        for name in binary:
            # ClickHouse has one String type for text and bytes: columns declared binary
            # (the quarantine's original bytes) come back as bytes, as on other engines.
            if name in out.column_names:
                i = out.column_names.index(name)
                out = out.set_column(i, name, out.column(i).cast(pa.binary()))
        return out

    def query_sql(self, sql_text: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run SQL this package rendered from sqlglot for this dialect (cached text)."""
        return self._conn.query(sql_text, params)

    def execute(self, stmt: exp.Expr, params: Mapping[str, Any] | None = None) -> int:
        """Run a statement; for a DELETE or UPDATE, the number of rows it matched (counted
        first: ClickHouse does not report affected rows)."""
        stmt = for_clickhouse(stmt)
        n = 0
        with self._write_lock:
            if isinstance(stmt, exp.Delete | exp.Update):
                target = stmt.this
                where = stmt.args.get("where")
                count = exp.select(exp.func("count", exp.Star()).as_("n")).from_(target.copy())
                if where is not None:
                    count = count.where(where.this.copy())
                n = int(self._conn.query(sql(count), params).column("n")[0].as_py())
                if n == 0:
                    return 0
            if isinstance(stmt, exp.Update):
                self._rewrite(stmt, params)
                return n
            self._conn.command(sql(stmt), params)
            if isinstance(stmt, exp.Drop | exp.Create | exp.Alter):
                self._engines.clear()
        return n

    def delete(self, table: exp.Table, where: exp.Expr) -> int:
        return self.execute(exp.delete(table).where(where))

    def _rewrite(self, stmt: exp.Update, params: Mapping[str, Any] | None) -> None:
        """``UPDATE`` as insert-the-new-rows then delete-the-old: MergeTree cannot update
        its key columns (``user_id`` is one when a pack clusters by it), and lightweight
        updates need a table setting. Used by erasure in anonymize mode and by reprice, on
        few rows."""
        table = stmt.this
        where = stmt.args.get("where")
        cond = where.this if where is not None else exp.true()
        sets = {e.this.name: e.expression for e in stmt.expressions}
        cols = list(self._columns(table.db, table.name))
        # The rows this statement inserts carry its marker, so its delete spares them (they
        # may still match ``cond``) and takes every older version, rewritten or not.
        params = {**(params or {}), "_gm_rewrite": rewrite_marker(stmt, params)}
        marker = exp.Placeholder(this="_gm_rewrite")
        old = exp.and_(cond.copy(), exp.column(BATCH_COLUMN).neq(marker))
        fresh = old.copy()
        if set(EVENT_KEY) <= set(cols):  # a retry copies only what the first try did not
            key = exp.Tuple(expressions=[exp.column(c, quoted=True) for c in EVENT_KEY])
            copied = (
                exp.select(*(exp.column(c, quoted=True) for c in EVENT_KEY))
                .from_(table.copy())
                .where(exp.column(BATCH_COLUMN).eq(marker.copy()))
            )
            fresh = exp.and_(fresh, exp.Not(this=exp.In(this=key, query=exp.Subquery(this=copied))))
        # No aliases: ClickHouse resolves a SELECT alias in WHERE before the column.
        select = [
            marker.copy()
            if c == BATCH_COLUMN
            else (sets[c].copy() if c in sets else exp.column(c, quoted=True))
            for c in cols
        ]
        insert = exp.insert(
            exp.select(*select).from_(table.copy()).where(fresh),
            table.copy(),
            columns=[exp.to_identifier(c, quoted=True) for c in cols],
        )
        self._conn.command(sql(for_clickhouse(insert)), params)
        self._conn.command(sql(for_clickhouse(exp.delete(table.copy()).where(old))), params)

    def close(self) -> None:
        self._conn.close()
