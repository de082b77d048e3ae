"""Which loads write a rollup's fold mark (gristmill.warehouse.folds.Folds.marks)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlglot import exp

from gristmill.warehouse.base import RollupFold
from gristmill.warehouse.folds import EPOCH, Appended, Folds, fold_start

FOLD = RollupFold(exp.to_table("m._gm_rollup_x"), timedelta(hours=1), (), exp.select("1"))
T0 = datetime(2026, 10, 1, tzinfo=UTC)


def _at(hours: int) -> Appended:
    return {("m", "_gm_rollup_x"): (FOLD, T0 + timedelta(hours=hours))}


def test_a_sole_writer_writes_the_mark_only_when_it_moves_down() -> None:
    folds = Folds(every=4, sole_writer=True)
    writes = []
    for hours in (5, 6, 7, 2):  # the 4th load folds: no mark, the fold clears it
        appended = _at(hours)
        folded = folds.due(appended)
        writes.append((hours, bool(folds.marks(appended, folded)), bool(folded)))
        folds.committed(appended, folded)
    assert writes == [(5, True, False), (6, False, False), (7, False, False), (2, False, True)]
    appended = _at(9)  # after the fold the mark is clear: the next append writes it
    assert folds.marks(appended, folds.due(appended))
    folds.committed(appended, [])
    assert folds.marks(_at(3), [])  # an earlier bucket: written again
    assert not folds.marks(_at(10), [])
    folds.forget()  # a rebuild cleared the stored marks
    assert folds.marks(_at(10), [])


def test_with_other_writers_every_append_writes_the_mark() -> None:
    folds = Folds(every=32)
    for hours in (5, 6, 7):
        appended = _at(hours)
        assert folds.marks(appended, folds.due(appended))
        folds.committed(appended, [])


def test_where_a_fold_starts() -> None:
    lo = T0 + timedelta(hours=5)
    assert fold_start([], lo) == EPOCH  # no mark: not known, so everything
    assert fold_start([(None,)], lo) == lo  # nothing left unfolded but this process's own
    earlier = int((T0 - EPOCH) / timedelta(microseconds=1))
    assert fold_start([(earlier,)], lo) == T0
