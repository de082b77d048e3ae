"""When a warehouse with transactions folds the rollups it keeps as appended parts.

With ``caps.rollup_appends`` each load appends its batch's aggregates to a rollup as rows of
their own (:func:`gristmill.rollup.delta.fold`). Reads merge rows per key, so the numbers are
right whatever is folded; folding only bounds how many rows a key is read as. Every
:data:`EVERY` loads that appended to a rollup, the next one also folds it, inside its own
transaction, from the earliest bucket appended since the last fold. A fold that rolls back
with its load leaves this bookkeeping as it was, so the next load folds instead.

What was appended before this process started is not known here: a rollup's first fold after
a start covers all its buckets.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from gristmill.warehouse.base import RollupFold

EVERY = 32
"""Loads between folds of a rollup: a key is read as at most this many rows more."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Key = tuple[str, str]
Appended = dict[Key, tuple[RollupFold, datetime]]
"""The rollups one load appended to, each with the earliest bucket it may have touched."""


def _key(fold: RollupFold) -> Key:
    return (fold.table.db, fold.table.name)


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

    def __init__(self, every: int = EVERY) -> None:
        self.every = every
        self._loads: dict[Key, int] = defaultdict(int)
        self._lo: dict[Key, datetime] = {}
        """Rollups appended to since their last fold, and the earliest bucket appended."""
        self._folds: dict[Key, RollupFold] = {}
        self._known: set[Key] = set()
        """Rollups folded by this process: nothing unfolded before ``_lo`` is left in them."""

    def _start(self, key: Key, lo: datetime) -> datetime:
        return min(lo, self._lo.get(key, lo)) if key in self._known else EPOCH

    def due(self, appended: Appended) -> list[tuple[RollupFold, datetime]]:
        """The folds this load runs (if it commits), each with the bucket it starts at."""
        return [
            (fold, self._start(key, lo))
            for key, (fold, lo) in appended.items()
            if self._loads[key] + 1 >= self.every
        ]

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
            self._known.add(key)
