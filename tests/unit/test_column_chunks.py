"""Typed column chunks (frame version 3): whatever a column holds, the loader's Arrow array
of its chunks equals ``pa.array`` of its values (the oracle), in any mix of chunks and plain
sequences; a chunk that does not hold what it says is refused, never misread."""

from __future__ import annotations

from itertools import accumulate
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gristmill.core import columns
from gristmill.load.columns import ChunkError, arrow_column, first_deliveries

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
"""Any text msgpack can carry (no lone surrogates), NUL and non-ASCII included."""
COLUMNS: dict[str, tuple[st.SearchStrategy[Any], pa.DataType]] = {
    "text": (TEXT, pa.string()),
    "bytes": (TEXT.map(str.encode), pa.string()),
    "int64": (st.integers(-(2**63), 2**63 - 1), pa.int64()),
    "float": (st.floats(allow_nan=False), pa.float64()),
    "bool": (st.booleans(), pa.bool_()),
}


@st.composite
def column(draw: st.DrawFn) -> tuple[list[Any], pa.DataType, list[int]]:
    values, type_ = COLUMNS[draw(st.sampled_from(sorted(COLUMNS)))]
    col = draw(st.lists(st.one_of(st.none(), values) if draw(st.booleans()) else values))
    cuts = sorted(draw(st.lists(st.integers(0, len(col)), max_size=4)))
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, len(col)], strict=True)]
    return col, type_, [s for s in sizes if s]


def chunked(col: list[Any], sizes: list[int], plain: list[bool]) -> list[columns.Chunk]:
    out: list[columns.Chunk] = []
    at = 0
    for size, keep in zip(sizes, plain + [False] * len(sizes), strict=False):
        part = col[at : at + size]
        at += size
        out.append(part if keep else columns.pack(part))
    return out


@settings(max_examples=300, deadline=None)
@given(column(), st.lists(st.booleans(), max_size=5))
def test_chunks_build_what_pa_array_builds(
    case: tuple[list[Any], pa.DataType, list[int]], plain: list[bool]
) -> None:
    col, type_, sizes = case
    chunks = chunked(col, sizes, plain)
    for chunk, size in zip(chunks, sizes, strict=True):
        columns.check(chunk, size)
        assert columns.count(chunk) == size
    for chunk, size, start in zip(chunks, sizes, [0, *accumulate(sizes)], strict=False):
        assert columns.unpack(chunk, size) == col[start : start + size]
    got = arrow_column(chunks, sizes, type_)
    assert got.equals(pa.array(col, type=type_))


@given(st.lists(st.sampled_from(["order_placed", "ad_click", "résumé", ""]), min_size=1))
def test_kinds_chunk_round_trips(col: list[str]) -> None:
    kinds = list(dict.fromkeys(col))
    chunk = columns.pack_kinds(col, kinds)
    columns.check(chunk, len(col))
    assert set(columns.kinds(chunk)) == set(col)  # type: ignore[arg-type]
    assert columns.unpack(chunk, len(col)) == col
    assert arrow_column([chunk, chunk], [len(col)] * 2, pa.string()).to_pylist() == col * 2


def test_what_a_chunk_cannot_hold_stays_a_plain_sequence() -> None:
    assert columns.pack([2**63, 1]) == [2**63, 1]  # past int64: msgpack carries it
    assert columns.pack(["a", 1]) == ["a", 1]  # mixed types
    assert columns.pack([1.5, 2.5]) == [1.5, 2.5]
    assert columns.pack(["\ud800"]) == ["\ud800"]  # a lone surrogate is not UTF-8
    assert columns.pack([None, None]) == b"n\x02\x00\x00\x00"
    assert columns.pack([None, "ü"])[:1] == b"s"
    assert columns.pack([None, b"{}"])[:1] == b"y"


def _damaged(chunk: bytes) -> list[bytes]:
    """Ways a text chunk of two one-letter values can be damaged."""
    return [
        chunk[:-1] + b"\xff",  # not UTF-8
        chunk[:5] + (2).to_bytes(4, "little", signed=True) + chunk[9:],  # lengths too long
        chunk[:5] + (-2).to_bytes(4, "little", signed=True) + chunk[9:],  # a bad length
        chunk[:1] + (3).to_bytes(4, "little") + chunk[5:],  # the wrong count
        b"z" + chunk[1:],  # an unknown tag
    ]


@pytest.mark.parametrize("bad", _damaged(columns.pack(["a", "b"])))  # type: ignore[arg-type]
def test_a_damaged_chunk_is_refused_alone_and_in_a_batch(bad: bytes) -> None:
    with pytest.raises(ValueError):
        columns.check(bad, 2)
    good = columns.pack(["c", "d"])
    with pytest.raises(ChunkError):
        arrow_column([good, bad], [2, 2], pa.string())


def test_damaged_kinds_and_int_chunks_are_refused() -> None:
    kinds = columns.pack_kinds(["x", "y"], ["x", "y"])
    past = kinds[:-1] + b"\x07"  # a code past the two values
    assert isinstance(kinds, bytes)
    ints = columns.pack([1, 2])
    assert isinstance(ints, bytes)
    for bad, n, type_ in ((past, 2, pa.string()), (ints[:-1], 2, pa.int64())):
        with pytest.raises(ValueError):
            columns.check(bad, n)
        with pytest.raises(ChunkError):
            arrow_column([bad], [n], type_)


def test_first_deliveries_keys_pairs_not_joined_text() -> None:
    t = pa.table({"event_id": ["a", "a", "b", "a"], "_dedupe_scope": ["s", "t", "s", "s"]})
    t = t.append_column("n", pa.array([1, 2, 3, 4]))
    assert first_deliveries(t)["n"].to_pylist() == [1, 2, 3]
    unique = t.slice(1, 2)
    assert first_deliveries(unique) is unique


def test_a_chunk_cut_short_is_a_chunk_error() -> None:
    whole = columns.pack(["abc", "de"])
    assert isinstance(whole, bytes)
    for cut in (whole[:7], whole[:11], whole[:2]):
        with pytest.raises(ChunkError):
            arrow_column([cut], [2], pa.string())
