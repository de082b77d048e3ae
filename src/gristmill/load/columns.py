"""The column chunks of a batch's blocks as one Arrow array per column.

A frame of version 3 carries most columns as typed chunks in Arrow's memory layout
(``gristmill.core.columns``): a column of a batch is then a concatenation of the chunks'
bytes and a cumulative sum of their lengths, wrapped as an Arrow array with no Python object
per value. Chunks that are plain sequences (version 1 and 2 frames, and columns whose values
a chunk cannot hold) go through ``pa.array`` as before; a column mixing both kinds is built
run by run and concatenated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gristmill.core import columns
from gristmill.core.columns import HEAD, Chunk

_INT32_MAX = 2**31 - 1

_NULL, _LIST = -1, -2
"""Run kinds besides the chunk tags: a column the block does not hold, a plain sequence."""


_KIND = {columns.TEXT: columns.BYTES, columns.NULLS: _NULL}
"""Chunk tags built by the same run (text and bytes share a layout; NULL chunks are nulls)."""


def _kind(chunk: Chunk | None) -> int:
    if chunk is None:
        return _NULL
    if type(chunk) is bytes:
        return _KIND.get(chunk[0], chunk[0])
    return _LIST


def _runs(chunks: Sequence[Chunk | None]) -> list[tuple[int, int, int]]:
    """``chunks`` cut into runs of one kind, as (kind, start, end): a column whose chunks
    are all of one tag (the usual) is told by one set comprehension, not a call per chunk."""
    if all(type(c) is bytes for c in chunks):
        tags = {c[0] for c in chunks}  # type: ignore[index]
        if len(tags) == 1:
            (tag,) = tags
            return [(_KIND.get(tag, tag), 0, len(chunks))]
    runs: list[tuple[int, int, int]] = []
    i, k = 0, len(chunks)
    while i < k:
        kind = _kind(chunks[i])
        j = i + 1
        while j < k and _kind(chunks[j]) == kind:
            j += 1
        runs.append((kind, i, j))
        i = j
    return runs


class ChunkError(ValueError):
    """Chunks of a batch that do not hold what their headers say (a damaged frame): the
    batch is built again with every frame checked, and the bad ones go to quarantine."""


def _counted(blobs: Sequence[bytes], lengths: Sequence[int]) -> bool:
    """Whether each chunk's count (its bytes 1 to 4) is its block's."""
    heads = b"".join([c[1:HEAD] for c in blobs])
    return heads == np.asarray(lengths, dtype="<u4").tobytes()


def _text(chunks: Sequence[Chunk | None], lengths: Sequence[int]) -> pa.Array:
    """Text or bytes chunks as one string array, checked as a whole: each chunk's count,
    each chunk's lengths against its bytes (one ``bincount``), and UTF-8 (Arrow's
    validation of the result). Slices are ``bytes``, not memoryviews, which the cyclic
    garbage collector would track."""
    blobs: list[bytes] = chunks  # type: ignore[assignment]
    if not _counted(blobs, lengths):
        raise ChunkError("a text chunk whose count is not its block's")
    lens = np.frombuffer(
        b"".join([c[HEAD : HEAD + 4 * n] for c, n in zip(blobs, lengths, strict=True)]),
        dtype="<i4",
    )
    data = b"".join([c[HEAD + 4 * n :] for c, n in zip(blobs, lengths, strict=True)])
    valid = lens >= 0
    sizes = np.where(valid, lens, 0)
    if lens.size and lens.min() < -1:
        raise ChunkError("a text chunk with a negative length")
    have = [len(c) - HEAD - 4 * n for c, n in zip(blobs, lengths, strict=True)]
    owner = np.repeat(np.arange(len(blobs)), lengths)
    if not np.array_equal(np.bincount(owner, weights=sizes, minlength=len(blobs)), have):
        raise ChunkError("a text chunk whose lengths do not add up to its bytes")
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    nulls = len(lens) - int(np.count_nonzero(valid))
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    if len(data) <= _INT32_MAX:
        out = pa.StringArray.from_buffers(
            len(lens), pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data), bitmap, nulls
        )
    else:
        out = pa.LargeStringArray.from_buffers(
            len(lens), pa.py_buffer(offsets), pa.py_buffer(data), bitmap, nulls
        )
    try:
        out.validate(full=True)
    except pa.ArrowInvalid as exc:
        raise ChunkError(f"a text chunk that is not UTF-8: {exc}") from exc
    return out if out.type == pa.string() else out.cast(pa.string())


def _int64(chunks: Sequence[Chunk | None], lengths: Sequence[int]) -> pa.Array:
    blobs: list[bytes] = chunks  # type: ignore[assignment]
    if [len(c) for c in blobs] != [1 + 8 * n for n in lengths]:
        raise ChunkError("an int64 chunk whose size is not its block's count")
    return pa.array(np.frombuffer(b"".join([c[1:] for c in blobs]), dtype="<i8"))


def _kinds(chunks: Sequence[Chunk | None], lengths: Sequence[int]) -> pa.Array:
    """``k`` chunks as one string array: each chunk's codes moved into one dictionary for
    the run (a lookup table per chunk, applied to all codes at once), then one ``take``."""
    blobs: list[bytes] = chunks  # type: ignore[assignment]
    distinct: dict[str, int] = {}
    lut: list[int] = []
    bases: list[int] = []
    ks: list[int] = []
    if not _counted(blobs, lengths):
        raise ChunkError("a kinds chunk whose count is not its block's")
    try:
        for chunk in blobs:
            names = columns.kinds(chunk)
            bases.append(len(lut))
            ks.append(len(names))
            lut += [distinct.setdefault(v, len(distinct)) for v in names]
    except (ValueError, IndexError) as exc:
        raise ChunkError(f"a kinds chunk that cannot be read: {exc}") from exc
    codes = np.frombuffer(
        b"".join([c[len(c) - n :] for c, n in zip(blobs, lengths, strict=True)]), dtype=np.uint8
    )
    if (codes >= np.repeat(np.array(ks, dtype=np.int64), lengths)).any():
        raise ChunkError("a kinds chunk with a code past its values")
    at = np.repeat(np.array(bases, dtype=np.int64), lengths) + codes
    index = np.array(lut, dtype=np.int32)[at]
    return pa.array(list(distinct), pa.string()).take(pa.array(index))


def _nulls(chunks: Sequence[Chunk | None], lengths: Sequence[int]) -> pa.Array:
    """A run of absent columns (None) and ``n`` chunks, which are their count alone."""
    blobs = [(c, n) for c, n in zip(chunks, lengths, strict=True) if c is not None]
    held: list[bytes] = [c for c, _ in blobs]  # type: ignore[misc]
    if not _counted(held, [n for _, n in blobs]) or any(len(c) != HEAD for c in held):
        raise ChunkError("a NULL chunk whose count is not its block's")
    return pa.nulls(sum(lengths))


_RUNS: dict[int, Callable[[Sequence[Chunk | None], Sequence[int]], pa.Array]] = {
    columns.BYTES: _text,
    columns.INT64: _int64,
    columns.KINDS: _kinds,
    _NULL: _nulls,
}


def arrow_column(
    chunks: Sequence[Chunk | None], lengths: Sequence[int], type_: pa.DataType
) -> pa.Array:
    """One array of ``type_`` from ``chunks`` (``chunks[i]`` holds ``lengths[i]`` values;
    ``None``: all NULL). A chunk of another type than ``type_`` (the pack changed a column's
    type after the collector framed it) is cast, and fails as ``pa.array`` would."""
    pieces: list[pa.Array] = []
    try:
        runs = _runs(chunks)
    except IndexError as exc:  # an empty chunk
        raise ChunkError("an empty column chunk") from exc
    for kind, i, j in runs:
        if kind == _LIST:
            piece = pa.array(list(chain.from_iterable(chunks[i:j])), type=type_)  # type: ignore[arg-type]
        else:
            build = _RUNS.get(kind)
            if build is None:
                raise ChunkError(f"unknown column chunk tag {bytes([kind])!r}")
            try:
                piece = build(chunks[i:j], lengths[i:j])
            except ChunkError:
                raise
            except (ValueError, IndexError) as exc:  # a chunk cut short of its header's sizes
                raise ChunkError(f"a column chunk that cannot be read: {exc}") from exc
            if piece.type != type_:
                piece = piece.cast(type_)
        pieces.append(piece)
    if not pieces:
        return pa.array([], type=type_)
    return pieces[0] if len(pieces) == 1 else pa.concat_arrays(pieces)


def repeat(values: Sequence[Any], lengths: Sequence[int], type_: pa.DataType) -> pa.Array:
    """``values[i]`` ``lengths[i]`` times each: a frame-level value (receive time, source,
    dedupe scope) as a column, by index instead of a Python list per row."""
    distinct = list(dict.fromkeys(values))
    code = {v: i for i, v in enumerate(distinct)}
    index = np.repeat(np.fromiter((code[v] for v in values), np.int32, len(values)), lengths)
    return pa.array(distinct, type=type_).take(pa.array(index))


def first_deliveries(table: pa.Table) -> pa.Table:
    """The first row of each (``_dedupe_scope``, ``event_id``), in batch order. Each column
    is dictionary-encoded and the pair of codes made one integer, so a pair is one key
    however its texts would join; ``np.unique`` gives each key's first row."""
    ids = pc.dictionary_encode(table["event_id"].combine_chunks())
    if len(ids.dictionary) == table.num_rows:  # the usual batch: nothing repeats
        return table
    scopes = pc.dictionary_encode(table["_dedupe_scope"].combine_chunks())
    key = scopes.indices.to_numpy().astype(np.int64) * len(ids.dictionary)
    key += ids.indices.to_numpy()
    _, first = np.unique(key, return_index=True)
    first.sort()
    return table.take(pa.array(first))
