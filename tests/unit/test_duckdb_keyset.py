"""The in-memory dedupe key set answers exactly what a Python set of the same keys answers,
through adds, merges and prunes, including keys that share their high 64 bits."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from gristmill.warehouse.duckdb import keys as keys_mod
from gristmill.warehouse.duckdb.keys import KeySet, Run

# Few distinct high halves, so keys sharing one (the rare case on real md5 keys) are common.
HI = st.sampled_from([0, 1, 7, 2**63, 2**64 - 1])
LO = st.integers(0, 2**64 - 1)
KEY = st.tuples(HI, LO)
STEP = st.one_of(
    st.tuples(st.just("add"), st.lists(KEY, max_size=30), st.integers(0, 5)),
    st.tuples(st.just("prune"), st.just([]), st.integers(0, 6)),
)


def _arrays(keys: list[tuple[int, int]], t: int) -> tuple[keys_mod.U64, keys_mod.U64, keys_mod.I64]:
    return (
        np.array([k[0] for k in keys], dtype=np.uint64),
        np.array([k[1] for k in keys], dtype=np.uint64),
        np.full(len(keys), t, dtype=np.int64),
    )


def _arrow(keys: list[tuple[int, int]], t: int) -> pa.Table:
    return pa.table(
        {
            "hi": pa.array([k[0] for k in keys], pa.uint64()),
            "lo": pa.array([k[1] for k in keys], pa.uint64()),
            "t": pa.array([t] * len(keys), pa.int64()),
        }
    )


def _ask(ks: KeySet, keys: list[tuple[int, int]]) -> list[bool]:
    hi, lo, _ = _arrays(keys, 0)
    return [bool(b) for b in ks.contains(hi, lo)]


@settings(max_examples=300, deadline=None)
@given(
    first=st.lists(KEY, max_size=40, unique=True),
    steps=st.lists(STEP, max_size=12),
    probes=st.lists(KEY, max_size=40),
    merge_min=st.sampled_from([1, 3, 1000]),
)
def test_keyset_is_a_set(
    first: list[tuple[int, int]],
    steps: list[tuple[str, list[tuple[int, int]], int]],
    probes: list[tuple[int, int]],
    merge_min: int,
) -> None:
    keys_mod.MERGE_MIN, before = merge_min, keys_mod.MERGE_MIN
    try:
        ks = KeySet.from_arrow(_arrow(first, 3))
        model: dict[tuple[int, int], int] = dict.fromkeys(first, 3)
        for op, batch, t in steps:
            if op == "add":
                fresh = [k for k in dict.fromkeys(batch) if k not in model]  # as a load adds
                ks.add(Run(*_arrays(fresh, t)))
                model.update(dict.fromkeys(fresh, t))
            else:
                ks.prune(t)
                model = {k: v for k, v in model.items() if v >= t}
            assert len(ks) == len(model)
        asked = probes + list(model)
        assert _ask(ks, asked) == [k in model for k in asked]
    finally:
        keys_mod.MERGE_MIN = before
