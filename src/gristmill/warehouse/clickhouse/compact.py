"""Compaction of ClickHouse rollups kept as parts.

Each load appends its batch's rollup delta as rows tagged with the batch id (a retry removes
them, see client.py). Reads merge rows per key, so parts are always right; they only cost read
time as they pile up. Compaction folds them, one month partition at a time:

1. a scratch table shaped like the rollup (``CREATE TABLE … AS``) receives the partition's
   new content — every compacted or committed row merged into one row per key, plus the rows
   of parts whose batch is not in the ledger (a load that died half-way: its retry must still
   find them to remove);
2. ``ALTER TABLE … REPLACE PARTITION ID … FROM`` swaps it in, atomically: readers see the old
   partition or the new one, never both, never neither; a crash before it leaves the rollup
   as it was (the scratch table is dropped on the next run).

A compaction runs under the warehouse's write lock, between loads, so no part is written to a
partition while its replacement is built. Any other writer of the rollup in another process
(the single-writer-per-dataset rule of client.py) could lose a part written in that window.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from sqlglot import exp

from gristmill.warehouse.base import AfterInsert, LoadBatch, RollupParts
from gristmill.warehouse.clickhouse.connection import Connection
from gristmill.warehouse.clickhouse.sql import for_clickhouse, sql
from gristmill.warehouse.common import bind_new

EVERY = 64
"""Loads between compactions of a rollup: a key is read as at most this many rows more."""

_PARTITION = re.compile(r"^[0-9]{1,12}$")
"""Rollups are partitioned by ``toYYYYMM(bucket)``: partition ids are digits."""


def _pending(parts: RollupParts) -> str:
    col = exp.column(parts.part_column, quoted=True)
    return sql(
        exp.select(exp.column("_partition_id"))
        .distinct()
        .from_(parts.table.copy())
        .where(col.neq(exp.Literal.string("")))
    )


def compact(conn: Connection, parts: RollupParts, render: Callable[[exp.Expr], str]) -> int:
    """Fold the committed parts of every partition that has any; the partitions compacted."""
    table = parts.table
    scratch = exp.to_table(f"{table.name}_gm_compact", db=table.db, quoted=True)
    target = sql(table.copy())
    cols = ", ".join(sql(exp.to_identifier(c, quoted=True)) for c in parts.columns)
    done = 0
    for row in conn.query(_pending(parts)).to_pylist():
        pid = str(row["_partition_id"])
        if not _PARTITION.match(pid):
            raise ValueError(f"unexpected rollup partition id {pid!r} in {target}")
        params: Mapping[str, Any] = {"p": pid}
        conn.command(sql(exp.Drop(tables=[scratch.copy()], kind="TABLE", exists=True)))
        conn.command(f"CREATE TABLE {sql(scratch)} AS {target}")
        try:
            for select in (parts.folded, parts.kept):
                conn.command(f"INSERT INTO {sql(scratch)} ({cols}) {render(select)}", params)
            # The id is checked digits above: ALTER takes no bound parameters.
            conn.command(f"ALTER TABLE {target} REPLACE PARTITION ID '{pid}' FROM {sql(scratch)}")
        finally:
            conn.command(sql(exp.Drop(tables=[scratch.copy()], kind="TABLE", exists=True)))
        done += 1
    return done


def _key(parts: RollupParts) -> tuple[str, str]:
    return (parts.table.db, parts.table.name)


class PartsKeeper:
    """The rollup side of a ClickHouse load: appends each batch's part, removes a dead
    attempt's, compacts every :data:`EVERY` loads, and folds parts before a recompute (which
    replaces a key's ``''`` row and would leave its parts beside it). Called under the
    warehouse's write lock."""

    def __init__(self, conn: Connection, render: Callable[[exp.Expr], str]) -> None:
        self._conn = conn
        self._render = render
        self._parts: dict[tuple[str, str], RollupParts] = {}
        self._loads_since: dict[tuple[str, str], int] = defaultdict(int)
        self._touched: set[tuple[str, str]] = set()
        self._folded: set[tuple[str, str]] = set()
        self._substituted: dict[tuple[int, int], tuple[exp.Expr, exp.Select, str]] = {}

    def step(self, after: AfterInsert, batch_id: str, new: exp.Select) -> bool:
        """Run ``after`` if it is a delta step (True), or prepare the rollup for a recompute
        step the caller runs (False)."""
        parts = after.parts
        if parts is None:
            return False
        key = _key(parts)
        self._parts[key] = parts
        if after.bounds is not None:  # a recompute: its rows must be the only ones of a key
            if key not in self._folded:
                compact(self._conn, parts, self._render)
                self._folded.add(key)
            return False
        for stmt in after.statements:
            self._conn.command(self._with_new(stmt, new), {"b": batch_id})
        self._touched.add(key)
        return True

    def _with_new(self, stmt: exp.Expr, new: exp.Select) -> str:
        """``stmt`` reading ``new`` where it names ``_gm_new``, rendered once per pair."""
        key = (id(stmt), id(new))
        hit = self._substituted.get(key)
        if hit is None or hit[0] is not stmt or hit[1] is not new:
            hit = (stmt, new, sql(for_clickhouse(bind_new(stmt, new))))
            self._substituted[key] = hit
        return hit[2]

    def compensate(self, batch: LoadBatch) -> None:
        """Remove the parts an unfinished attempt of ``batch`` appended."""
        for rows in batch.tables:
            for after in rows.after:
                if after.parts is not None:
                    part = exp.column(after.parts.part_column, quoted=True)
                    mine = exp.delete(after.parts.table.copy()).where(
                        part.eq(exp.Placeholder(this="b"))
                    )
                    self._conn.command(sql(for_clickhouse(mine)), {"b": batch.batch_id})

    def committed(self) -> None:
        """The load that appended the pending parts committed: compact what is due."""
        for key in self._touched:
            self._loads_since[key] += 1
            if self._loads_since[key] >= EVERY:
                self._compact(key)
        self._touched.clear()

    def _compact(self, key: tuple[str, str]) -> int:
        self._loads_since[key] = 0
        return compact(self._conn, self._parts[key], self._render)

    def compact_all(self) -> int:
        return sum(self._compact(key) for key in list(self._parts))
