"""Check a rollup against its rows, and rebuild it: the repair path beside delta maintenance.

Loads keep rollups by merging each batch's aggregates (:mod:`gristmill.rollup.delta`) or by
recomputing touched buckets; either way a rollup is derived data, so the rows are the oracle.
``check`` computes what a full rebuild would store and compares it with what is stored, key by
key, without writing; ``rebuild`` replaces the rollup with it in one transaction. The CLI
(``gristmill rollups``) and the API (``/v1/rollups/{pack}``) both call these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlglot import exp

from gristmill.pack.models import Pack
from gristmill.rollup.delta import merged
from gristmill.rollup.maintain import rebuild_rollup
from gristmill.rollup.spec import full_rebuild, rollup_table
from gristmill.warehouse.base import Warehouse


@dataclass(frozen=True)
class RollupCheck:
    pack: str
    rollup: str
    stored_rows: int
    expected_rows: int
    missing: int
    """Keys (bucket, dimensions) the rows give and the rollup lacks."""
    extra: int
    """Keys the rollup holds and the rows no longer give."""
    different: int
    """Keys in both whose components differ."""
    examples: list[dict[str, Any]] = field(default_factory=list)
    """Up to five differing keys, with both sides."""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.different)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


def _normal(v: Any) -> Any:
    """Sets compare as sets; an empty set and NULL both mean no values (count 0)."""
    if isinstance(v, list):
        return tuple(sorted(v, key=repr)) or None
    return v


def _keyed(rows: list[dict[str, Any]], width: int) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for r in rows:
        vals = tuple(_normal(v) for v in r.values())
        out[vals[:width]] = vals[width:]
    return out


def check(wh: Warehouse, pack: Pack, name: str) -> RollupCheck:
    r = pack.spec.rollups[name]
    insert = full_rebuild(pack, name, r, wh.dialect)[1]
    expected_q = insert.expression
    assert isinstance(expected_q, exp.Query)
    width = 1 + len(r.dimensions)
    stored = _keyed(wh.query(merged(pack, name, wh.dialect)).to_pylist(), width)
    expected = _keyed(wh.query(expected_q).to_pylist(), width)
    missing = [k for k in expected if k not in stored]
    extra = [k for k in stored if k not in expected]
    different = [k for k in expected if k in stored and stored[k] != expected[k]]
    examples = [
        {
            "key": [str(v) for v in k],
            "stored": [str(v) for v in stored.get(k, ())],
            "expected": [str(v) for v in expected.get(k, ())],
        }
        for k in (different + missing + extra)[:5]
    ]
    return RollupCheck(
        pack.name,
        name,
        len(stored),
        len(expected),
        len(missing),
        len(extra),
        len(different),
        examples,
    )


def rebuild(wh: Warehouse, pack: Pack, name: str) -> int:
    """Replace the rollup with what its rows give (:func:`rebuild_rollup`); the rows it holds."""
    rebuild_rollup(wh, pack, name)
    count = exp.select(exp.func("count", exp.Star()).as_("n")).from_(rollup_table(pack, name))
    return int(wh.query(count).to_pylist()[0]["n"])
