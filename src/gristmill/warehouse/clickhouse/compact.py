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
from collections.abc import Callable, Mapping
from typing import Any

from sqlglot import exp

from gristmill.warehouse.base import RollupParts
from gristmill.warehouse.clickhouse.connection import Connection
from gristmill.warehouse.clickhouse.sql import for_clickhouse, sql

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


def compact(
    conn: Connection,
    parts: RollupParts,
    render: Callable[[exp.Expr], str] = lambda e: sql(for_clickhouse(e)),
) -> int:
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
