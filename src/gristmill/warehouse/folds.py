"""When a warehouse with transactions folds the rollups it keeps as appended parts.

With ``caps.rollup_appends`` each load appends its batch's aggregates to a rollup as rows of
their own (:func:`gristmill.rollup.delta.fold`). Reads merge rows per key, so the numbers are
right whatever is folded; folding only bounds how many rows a key is read as. Every
:data:`EVERY` loads that appended to a rollup, the next one also folds it, inside its own
transaction, from the earliest bucket appended since the last fold. A fold that rolls back
with its load leaves this bookkeeping as it was, so the next load folds instead.

Where that earliest bucket is kept: in the warehouse (:data:`MARKS`, one row per rollup), not
only in this process. Each load that appends lowers its rollup's mark in the load's own
transaction, and a fold reads it and clears it in its own. So a process's first fold after a
start, or a fold by one of several loaders (PostgreSQL), starts where the rollup's unfolded
rows start, not at its first bucket: on PostgreSQL a fold read the whole rollup inside the
first load after every start (0.10-0.13 s per rollup at 2M-10M events, against 0.02 s from
the mark); on DuckDB that read was already cheap. A rollup with no mark (made before the marks
existed) folds from its first bucket once; a rebuild leaves it fully folded (no bucket)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from gristmill.sql.ddl import column_def, create_table, table_ref
from gristmill.sql.system import SYSTEM_SCHEMA
from gristmill.sql.types import Logical, sql_type
from gristmill.warehouse.base import RollupFold

EVERY = 32
"""Loads between folds of a rollup: a key is read as at most this many rows more."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Key = tuple[str, str]
Appended = dict[Key, tuple[RollupFold, datetime]]
"""The rollups one load appended to, each with the earliest bucket it may have touched."""


def _key(fold: RollupFold) -> Key:
    return (fold.table.db, fold.table.name)


MARKS = table_ref(SYSTEM_SCHEMA, "rollup_folds")
"""Per rollup (``"<schema>.<table>"``), ``unfolded_from_us``: the earliest bucket (epoch µs)
that may hold rows appended since its last fold; NULL when none does. No row: not known."""
_ROLLUP, _FROM = exp.column("rollup", quoted=True), exp.column("unfolded_from_us", quoted=True)
_THIS = exp.column("rollup", quoted=True).eq(exp.Placeholder(this="r"))


def marks_ddl(dialect: str) -> exp.Create:
    create = create_table(
        MARKS,
        [
            column_def("rollup", sql_type(Logical.TEXT, dialect), not_null=True),
            column_def("unfolded_from_us", sql_type(Logical.INT64, dialect)),
        ],
    )
    create.this.append("expressions", exp.PrimaryKey(expressions=[_ROLLUP.this.copy()]))
    return create


LOWER_MARK = exp.update(
    MARKS,
    {
        "unfolded_from_us": exp.Least(
            this=exp.Coalesce(this=_FROM.copy(), expressions=[exp.Placeholder(this="lo")]),
            expressions=[exp.Placeholder(this="lo")],
        )
    },
    where=_THIS.copy(),
)
"""Run by a load that appended to rollup ``$r`` from bucket ``$lo`` on. A rollup with no
row stays unknown: a mark here would say that what lies before ``$lo`` is folded."""
READ_MARK = exp.select(_FROM.copy()).from_(MARKS).where(_THIS.copy())


def _clear_mark() -> exp.Insert:
    ins = exp.insert(exp.values([(exp.Placeholder(this="r"), exp.null())]), MARKS)
    ins.set(
        "conflict",
        exp.OnConflict(
            conflict_keys=[exp.Ordered(this=_ROLLUP.copy())],
            action=exp.var("DO UPDATE"),
            expressions=[exp.EQ(this=_FROM.copy(), expression=exp.null())],
        ),
    )
    return ins


CLEAR_MARK = (_clear_mark(),)
"""Run by a fold (and a rebuild): nothing of rollup ``$r`` is left unfolded. One upsert, not a
delete and an insert: a rebuild, which takes no advisory lock, may clear a mark while a fold
clears it too, and two inserts after two deletes would collide on the key."""


def mark_of(table: exp.Table) -> dict[str, Any]:
    """``READ_MARK``'s and ``CLEAR_MARK``'s parameters for the rollup ``table``."""
    return {"r": f"{table.db}.{table.name}"}


def mark_args(fold: RollupFold, lo: datetime) -> dict[str, Any]:
    """``LOWER_MARK``'s parameters for a load that appended to ``fold``'s rollup from ``lo``."""
    return {**mark_of(fold.table), "lo": (lo - EPOCH) // timedelta(microseconds=1)}


def fold_start(stored: list[tuple[Any, ...]], lo: datetime) -> datetime:
    """Where a fold starts, from the rollup's stored mark (``READ_MARK``'s rows) and the
    earliest bucket this process appended since its last fold."""
    if not stored:
        return EPOCH  # not known: everything
    mark = stored[0][0]
    return lo if mark is None else min(lo, EPOCH + timedelta(microseconds=int(mark)))


def note(appended: Appended, fold: RollupFold, times: pa.ChunkedArray | pa.Array) -> None:
    """Record that this load appended to ``fold``'s rollup rows at ``times``."""
    earliest = pc.min(times).as_py()
    if earliest is None:
        return
    lo = earliest - fold.span  # a bucket starts at most one span before its rows
    key = _key(fold)
    if key in appended:
        lo = min(lo, appended[key][1])
    appended[key] = (fold, lo)


class Folds:
    """Per rollup: loads since its last fold, and the earliest bucket appended since."""

    def __init__(self, every: int = EVERY, *, sole_writer: bool = False) -> None:
        self.every = every
        self.sole_writer = sole_writer
        """No other process folds these rollups or writes their marks (DuckDB: one process
        writes the file), so this one knows what its marks hold."""
        self._loads: dict[Key, int] = defaultdict(int)
        self._lo: dict[Key, datetime] = {}
        """Rollups appended to since their last fold, and the earliest bucket appended."""
        self._folds: dict[Key, RollupFold] = {}

    def _start(self, key: Key, lo: datetime) -> datetime:
        """The earliest bucket this process appended to since the rollup's last fold (the
        warehouse's mark, :func:`fold_start`, may lie earlier)."""
        return min(lo, self._lo.get(key, lo))

    def due(self, appended: Appended) -> list[tuple[RollupFold, datetime]]:
        """The folds this load runs (if it commits), each with the bucket it starts at."""
        return [
            (fold, self._start(key, lo))
            for key, (fold, lo) in appended.items()
            if self._loads[key] + 1 >= self.every
        ]

    def marks(
        self, appended: Appended, folded: list[tuple[RollupFold, datetime]]
    ) -> list[tuple[RollupFold, datetime]]:
        """The appends whose rollup mark this load lowers (``LOWER_MARK``). Not a rollup
        this load folds (the fold reads from ``lo`` on and clears the mark). For a sole
        writer, not one whose mark this process already lowered to ``lo`` or below since the
        last fold: in-order loads then write a mark once per fold, not once per load."""
        done = {_key(f) for f, _ in folded}
        return [
            (fold, lo)
            for key, (fold, lo) in appended.items()
            if key not in done
            and not (self.sole_writer and key in self._lo and self._lo[key] <= lo)
        ]

    def forget(self) -> None:
        """A statement outside the loads wrote the marks (a rebuild): write them again."""
        self._lo.clear()
        self._loads.clear()

    def pending(self) -> list[tuple[RollupFold, datetime]]:
        """Every rollup appended to since its last fold, to fold now (not waiting for loads)."""
        return [(self._folds[key], self._start(key, lo)) for key, lo in self._lo.items()]

    def committed(self, appended: Appended, folded: list[tuple[RollupFold, datetime]]) -> None:
        """A transaction committed, with the appends ``appended`` and the folds ``folded``."""
        done = {_key(f) for f, _ in folded}
        for key, (fold, lo) in appended.items():
            self._folds[key] = fold
            if key not in done:
                self._loads[key] += 1
                self._lo[key] = min(lo, self._lo.get(key, lo))
        for key in done:
            self._loads[key] = 0
            self._lo.pop(key, None)
