"""Typed column chunks: how a frame (version 3) carries a column of one block as bytes.

Version 2 wrote every column as a msgpack array of values, so the loader decoded one Python
object per value and handed them back to ``pa.array`` one by one: ~2 µs per event of the
loader's time went to turning objects the collector had already typed back into memory
Arrow could have read as it was. A *chunk* here is the column in Arrow's own memory layout,
so the loader concatenates the chunks of a batch with a few NumPy calls and wraps the result
as an Arrow array without touching a value (``gristmill.load.columns``).

A chunk is a msgpack ``bin`` whose first byte says what it holds:

- ``s`` — text: ``n`` as a little-endian uint32, ``n`` little-endian int32 byte lengths
  (``-1`` for NULL), then the UTF-8 bytes of the values end to end (Arrow's string layout,
  with lengths for offsets);
- ``y`` — the same layout for ``bytes`` values (``properties`` and ``context``, JSON text);
- ``q`` — ``n`` little-endian int64 values, no NULL (ids of time, counts, cents);
- ``k`` — text of few distinct values (``event_type``): ``n`` as uint32, the number of
  distinct values ``k`` (< 256) as uint8, their ``k`` int32 lengths and UTF-8 bytes, then
  one uint8 code per value. The loader routes a block by its distinct event types without
  reading a value per event;
- ``n`` — ``n`` as uint32 and nothing else: every value NULL (an optional field no event of
  the block has).

Any other column (floats, bools, integers with a NULL or past 64 bits, values of mixed
types) stays a msgpack array, as in version 2; the loader reads both, in any mix. The values
of a text chunk stay plain UTF-8, so erasure's byte scan of the log finds a subject in a
chunk as it did in a msgpack string.

The encoder costs the collector a join, a ``len`` per value and two copies per text column.
The loader checks a batch's chunks as a whole as it builds them (``load.columns``); when one
does not add up, :func:`check` finds its frame (a sum and a UTF-8 decode per chunk), which is
quarantined whole, with its bytes, instead of failing the batch.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

TEXT = 0x73  # "s"
BYTES = 0x79  # "y"
INT64 = 0x71  # "q"
KINDS = 0x6B  # "k"
NULLS = 0x6E  # "n"

_LE = sys.byteorder == "little"
_COUNT = struct.Struct("<I")
HEAD = 5
"""A chunk's tag and count (``s``, ``y``, ``k``, ``n``), before its lengths or codes."""

Chunk = Sequence[Any] | bytes
"""A column of a block as it travels: a chunk (``bytes``) or a plain sequence of values."""


@lru_cache(maxsize=1024)
def _heads(n: int) -> struct.Struct:
    """A text chunk's tag, count and ``n`` lengths: one ``pack`` call (an ``array`` filled
    from an iterator costs the collector four times as much)."""
    return struct.Struct(f"<cI{n}i")


@lru_cache(maxsize=1024)
def _ints(n: int) -> struct.Struct:
    return struct.Struct(f"<c{n}q")


def _text(col: Sequence[Any], joined: str, tag: bytes) -> Chunk:
    """``col`` (all ``str``, no NULL) as a text chunk (``col`` itself if it cannot be)."""
    try:
        data = joined.encode()
    except UnicodeEncodeError:  # a lone surrogate: msgpack could not carry it either
        return col
    n = len(col)
    if joined.isascii():
        return _heads(n).pack(tag, n, *map(len, col)) + data
    return _heads(n).pack(tag, n, *[len(v.encode()) for v in col]) + data


def _nullable(col: Sequence[Any]) -> Chunk:
    """A column of text (or bytes) values and NULLs as a chunk with -1 lengths for the
    NULLs; ``col`` itself when it holds anything else."""
    present = [v for v in col if v is not None]
    kind = type(present[0])
    n = len(col)
    try:
        if kind is bytes:
            data = b"".join(present)
            return _heads(n).pack(b"y", n, *[-1 if v is None else len(v) for v in col]) + data
        if kind is not str:
            return col
        joined = "".join(present)
        data = joined.encode()
    except (TypeError, UnicodeEncodeError):  # values of several types, a lone surrogate
        return col
    if joined.isascii():
        lens = [-1 if v is None else len(v) for v in col]
    else:
        lens = [-1 if v is None else len(v.encode()) for v in col]
    return _heads(n).pack(b"s", n, *lens) + data


def pack(col: Sequence[Any]) -> Chunk:
    """``col`` as a chunk when its values allow one, else ``col`` itself. The chunk's
    kind comes from the values (the collector has already made each promoted value its
    column's type: an INT64 column holds ``int``, never ``bool``)."""
    n = len(col)
    if not n:
        return col
    first = type(col[0])
    try:
        if first is str:
            return _text(col, "".join(col), b"s")
        if first is bytes:
            return _heads(n).pack(b"y", n, *map(len, col)) + b"".join(col)
        if first is int:
            return _ints(n).pack(b"q", *col)
    except (TypeError, struct.error):  # a NULL or a value of another type among them
        pass
    if col.count(None) == n:
        return _COUNT_ONLY.pack(b"n", n)
    if None in col:
        return _nullable(col)
    return col


_COUNT_ONLY = struct.Struct("<cI")


def pack_kinds(col: Sequence[str], kinds: Sequence[str]) -> Chunk:
    """``col``, whose distinct values are ``kinds`` (in any order), as a ``k`` chunk; a
    text chunk when there are too many."""
    if len(kinds) > 255:
        return pack(col)
    code = {v: i for i, v in enumerate(kinds)}
    try:
        names = "".join(kinds).encode()
    except UnicodeEncodeError:
        return col
    k = len(kinds)
    head = struct.pack(f"<cIB{k}i", b"k", len(col), k, *[len(v.encode()) for v in kinds])
    return head + names + bytes(map(code.__getitem__, col))


def kinds(chunk: bytes) -> tuple[str, ...]:
    """The distinct values of a ``k`` chunk, in code order. Blocks of a table repeat a few
    headers (the event types in order of first appearance), so they are read once."""
    return _kinds(chunk[HEAD : len(chunk) - count(chunk)])


@lru_cache(maxsize=4096)
def _kinds(head: bytes) -> tuple[str, ...]:
    """The values of a ``k`` chunk's header (from the distinct count to the codes)."""
    chunk = bytes(HEAD) + head
    k = chunk[HEAD]
    sizes = array("i")
    sizes.frombytes(memoryview(chunk)[HEAD + 1 : HEAD + 1 + 4 * k])
    if not _LE:
        sizes.byteswap()
    at = HEAD + 1 + 4 * k
    out: list[str] = []
    for size in sizes:
        if size < 0:
            raise ValueError("a kinds chunk with a negative length")
        out.append(str(memoryview(chunk)[at : at + size], "utf-8"))
        at += size
    if at != len(chunk):
        raise ValueError("a kinds chunk whose lengths do not add up to its header")
    return tuple(out)


def codes(chunk: bytes) -> memoryview:
    """The per-value codes of a ``k`` chunk (the last ``n`` bytes)."""
    n = count(chunk)
    return memoryview(chunk)[len(chunk) - n :]


def check(chunk: Chunk, n: int) -> None:
    """Raise ValueError unless ``chunk`` holds ``n`` values in a layout :func:`pack` writes
    (for text, lengths that add up to the bytes and bytes that are UTF-8)."""
    if not isinstance(chunk, bytes):
        if len(chunk) != n:
            raise ValueError(f"a column holds {len(chunk)} values, its block {n}")
        return
    tag = chunk[0] if chunk else None
    if tag == INT64:
        if len(chunk) != 1 + 8 * n:
            raise ValueError(f"an int64 chunk of {len(chunk)} bytes for {n} values")
        return
    if tag == NULLS:
        if len(chunk) != HEAD or count(chunk) != n:
            raise ValueError(f"a NULL chunk does not hold {n} values")
        return
    if tag == KINDS:
        if len(chunk) < HEAD + 1 + n or count(chunk) != n:
            raise ValueError(f"a kinds chunk does not hold {n} values")
        names = kinds(chunk)
        if n and max(codes(chunk)) >= len(names):
            raise ValueError("a kinds chunk with a code past its values")
        return
    if tag not in (TEXT, BYTES):
        raise ValueError(f"unknown column chunk tag {chunk[:1]!r}")
    end = HEAD + 4 * n
    if len(chunk) < end or _COUNT.unpack_from(chunk, 1)[0] != n:
        raise ValueError(f"a text chunk of {len(chunk)} bytes does not hold {n} values")
    lens = lengths(chunk, n)
    if lens and min(lens) < -1:
        raise ValueError("a text chunk with a negative length")
    if sum(lens) + lens.count(-1) != len(chunk) - end:
        raise ValueError("a text chunk whose lengths do not add up to its bytes")
    str(memoryview(chunk)[end:], "utf-8")  # UnicodeDecodeError is a ValueError


def lengths(chunk: bytes, n: int) -> array[int]:
    """The byte lengths of a text chunk's ``n`` values (-1: NULL)."""
    out: array[int] = array("i")
    out.frombytes(memoryview(chunk)[HEAD : HEAD + 4 * n])
    if not _LE:
        out.byteswap()
    return out


def count(chunk: Chunk) -> int:
    """How many values ``chunk`` says it holds."""
    if not isinstance(chunk, bytes):
        return len(chunk)
    if chunk[:1] == b"q":
        return (len(chunk) - 1) // 8
    return int(_COUNT.unpack_from(chunk, 1)[0]) if len(chunk) >= HEAD else 0


def unpack(chunk: Chunk, n: int) -> list[Any]:
    """The values of ``chunk`` as Python objects: for the rare paths that need an event back
    whole (quarantine of events the pack no longer routes, a split block, a scope column
    that is not text). A checked chunk only."""
    if not isinstance(chunk, bytes):
        return list(chunk)
    if chunk[0] == NULLS:
        return [None] * n
    if chunk[0] == KINDS:
        names = kinds(chunk)
        return [names[c] for c in codes(chunk)]
    if chunk[0] == INT64:
        ints: array[int] = array("q")
        ints.frombytes(memoryview(chunk)[1:])
        if not _LE:
            ints.byteswap()
        return ints.tolist()
    data = memoryview(chunk)[HEAD + 4 * n :]
    as_text = chunk[0] == TEXT
    out: list[Any] = []
    at = 0
    for size in lengths(chunk, n):
        if size < 0:
            out.append(None)
            continue
        piece = data[at : at + size]
        out.append(str(piece, "utf-8") if as_text else bytes(piece))
        at += size
    return out
