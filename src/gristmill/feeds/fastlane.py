"""The fast lane of a commit: parse and check whole column batches with Arrow.

The row path (:mod:`gristmill.feeds.rows`) is the definition; this lane only decides rows
whose every cell has a plain shape for which the vectorized conversion gives exactly what
the row parser would (``1234.5`` money, ``12`` integers, ISO dates that round-trip, text that
is already whitespace-normalized). Every other row of the batch goes through the row parser
with its line number. Physical line numbers are only knowable when each line is one record,
so a file where that does not hold (a quoted field spanning lines, blank lines, a field count
the reader refuses) makes the lane give up before anything it staged is kept; the caller then
runs the row path over the whole file.

Summary rows never slip through: a row with any cell containing a summary stem (``total``,
``sum``, ``gesamt`` … a superset of what the word rule flags) goes to the row parser, and
the last rows of every batch are handed to the stager so its end-of-file sum check sees the
fast rows too (a trailing row equal to the column sums is taken back out of staging).
Placeholder product names (``None``, ``N/A``) also go to the row parser, which rejects them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from gristmill.feeds.csvread import Dialect, Record
from gristmill.feeds.rows import PLACEHOLDERS, Header, Plan, check_row
from gristmill.feeds.staging import Stager
from gristmill.feeds.template import CellType, FeedColumn

FAST_ENCODINGS = frozenset({"utf-8", "utf-8-sig"})
BLOCK = 8 << 20

# Every character Python's str.split() treats as whitespace, plus U+FFFD (undecodable).
_WS = "".join(f"\\x{{{c:x}}}" for c in range(sys.maxunicode + 1) if chr(c).isspace() or c == 0xFFFD)
_TEXT = rf"^[^{_WS}]+( [^{_WS}]+)*$"
_INT = r"^[0-9]{1,15}$"
_MONEY = r"^(?P<i>[0-9]{1,15})(?:\.(?P<f>[0-9]{1,2}))?$"
_MONEY_COMMA = r"^(?P<i>[0-9]{1,15})(?:,(?P<f>[0-9]{1,2}))?$"
_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


class GiveUp(Exception):
    """The file is not one record per line; the row path must handle it."""


def _fast_column(s: pa.Array, spec: FeedColumn, comma: bool) -> tuple[pa.Array, pa.Array]:
    """(values, ok) for one trimmed string column; ``ok`` false sends the row to the row path."""
    blank = pc.equal(s, "")
    if spec.type in (CellType.INTEGER, CellType.MONEY):
        if spec.type is CellType.INTEGER:
            good = pc.match_substring_regex(s, _INT)
            values = pc.cast(pc.if_else(good, s, None), pa.int64())
        else:
            parts = pc.extract_regex(s, _MONEY_COMMA if comma else _MONEY)
            good = pc.is_valid(parts)
            whole = pc.cast(pc.struct_field(parts, [0]), pa.int64())
            frac = pc.cast(pc.utf8_rpad(pc.struct_field(parts, [1]), 2, "0"), pa.int64())
            values = pc.add(pc.multiply(whole, 100), frac)
        if spec.min is not None:
            good = pc.and_(good, pc.greater_equal(pc.fill_null(values, spec.min), spec.min))
    elif spec.type is CellType.DATE:
        shaped = pc.match_substring_regex(s, _DATE)
        ts = pc.strptime(
            pc.if_else(shaped, s, None), format="%Y-%m-%d", unit="s", error_is_null=True
        )
        values = pc.cast(ts, pa.date32())
        # strptime rolls 2025-02-30 over to March: only a date that prints back as the same
        # text is kept. The cast prints ISO dates and costs a tenth of strftime (1 s per 1M).
        back = pc.cast(values, pa.string())
        year = pc.year(ts)
        good = pc.and_(
            pc.fill_null(pc.equal(back, s), False),
            pc.and_(pc.greater_equal(year, 1900), pc.less_equal(year, 2200)),
        )
    elif spec.type is CellType.STRING:
        good = pc.and_(
            pc.match_substring_regex(s, _TEXT),
            pc.less_equal(pc.utf8_length(s), spec.max_length),
        )
        values = s
    else:  # pragma: no cover - every CellType is handled above
        raise AssertionError(spec.type)
    good = pc.fill_null(good, False)
    if spec.required:
        return values, good
    # Optional and blank: fine, with the row path's blank value.
    blank_value = 0 if spec.type is CellType.MONEY else None
    values = pc.if_else(blank, pa.scalar(blank_value, values.type), values)
    return values, pc.or_(blank, good)


def stage_fast(
    stager: Stager,
    path: Path,
    dialect: Dialect,
    header: Header,
    header_end: int,
    progress: Callable[[int, int], None] | None = None,
    order: str | None = None,
) -> bool:
    """Stage ``path`` through the fast lane; False (nothing kept) when it cannot.
    ``order``: the file's day/month order (:mod:`gristmill.feeds.dates`)."""
    if dialect.encoding not in FAST_ENCODINGS:
        return False
    try:
        _run(stager, path, dialect, header, header_end, progress, order)
    except (GiveUp, pa.ArrowInvalid):
        stager.discard_staged()
        return False
    return True


def _run(
    stager: Stager,
    path: Path,
    dialect: Dialect,
    header: Header,
    header_end: int,
    progress: Callable[[int, int], None] | None,
    order: str | None,
) -> None:
    feed = stager.feed
    width = len(header.names)
    names = [f"c{i}" for i in range(width)]
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(
            column_names=names, skip_rows=header_end, block_size=BLOCK, encoding="utf8"
        ),
        parse_options=pacsv.ParseOptions(
            delimiter=dialect.delimiter, quote_char='"', newlines_in_values=True
        ),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    plan = Plan.build(feed, header, dialect, order)
    comma = dialect.decimal_comma
    summary_like = plan.words.prefilter()
    # Cells a word could hide in and still pass the lane: text and unmapped columns (a word
    # in a number or date column already fails that column's plain shape).
    typed = {pos for _, pos, spec, _, _ in plan.columns if spec.type is not CellType.STRING}
    wordy = [i for i in range(width) if i not in typed]
    size = path.stat().st_size
    total_lines, quoted = _physical_lines(path)
    next_line = header_end + 1
    lookup = feed.spec.lookup
    counting = _Counting()
    for batch in reader:
        n = batch.num_rows
        raw = [batch.column(i) for i in range(width)]
        for col in raw if quoted else ():  # a field holds a line end only inside quotes
            if (
                pc.any(pc.match_substring(col, "\n")).as_py()
                or pc.any(pc.match_substring(col, "\r")).as_py()
            ):
                raise GiveUp("a quoted field spans lines")
        lines = pc.add(counting.take(n), next_line)
        next_line += n
        trimmed = [pc.utf8_trim_whitespace(c) for c in raw]
        if pc.any(_all_blank(trimmed)).as_py():
            raise GiveUp("blank lines shift line numbers")
        values: dict[str, pa.Array] = {}
        ok = pc.is_valid(lines)  # all true
        for i in wordy:  # a possible summary row: the row parser decides
            ok = pc.and_(ok, pc.invert(pc.match_substring_regex(raw[i], summary_like)))
        for col, pos, spec, _parse, blank in plan.columns:
            if pos < 0:
                values[col] = (
                    pa.nulls(n, pa.string()) if blank is None else pa.repeat(pa.scalar(blank), n)
                )
                if spec.required:
                    ok = pc.is_null(lines)  # all false
                continue
            v, good = _fast_column(trimmed[pos], spec, comma)
            values[col] = v
            ok = pc.and_(ok, good)
        if lookup is not None:
            ok = _lookup(stager, values, ok, lookup.column)
        fast = pc.filter(pa.table({**values, "line": lines}), ok)
        stager.add_table(_staged(stager, fast))
        slow = pc.indices_nonzero(pc.invert(ok)).to_pylist()
        if slow:
            cols = [c.to_pylist() for c in raw]
            for i in slow:
                stager.add(check_row(plan, Record(lines[i].as_py(), [c[i] for c in cols])))
        for i in range(max(0, n - stager.rule.tail), n):  # the batch's last rows
            if ok[i].as_py():
                fields = [c[i].as_py() for c in raw]
                stager.remember_fast(check_row(plan, Record(lines[i].as_py(), fields)))
        if progress is not None:
            progress(min(size, size * next_line // max(total_lines, 1)), size)
    if next_line - 1 != total_lines:
        raise GiveUp("the reader's rows do not match the file's lines")


class _Counting:
    """0, 1, 2 … as an Arrow array, built once and sliced: ``pa.array(range(n))`` goes through
    a Python int per row (0.09 s per 1M lines)."""

    def __init__(self) -> None:
        self._a = pa.array([], pa.int64())

    def take(self, n: int) -> pa.Array:
        if len(self._a) < n:
            self._a = pa.array(range(max(n, 2 * len(self._a))), pa.int64())
        return self._a.slice(0, n)


def _all_blank(cells: list[pa.Array]) -> pa.Array:
    """Rows whose every (trimmed) cell is empty: a line of bare delimiters."""
    blank = pc.equal(pc.utf8_length(cells[0]), 0)
    for c in cells[1:]:
        blank = pc.and_(blank, pc.equal(pc.utf8_length(c), 0))
    return blank


def _lookup(stager: Stager, values: dict[str, pa.Array], ok: pa.Array, column: str) -> pa.Array:
    """Resolve the batch's distinct names once; add product columns; rows whose product is
    unknown (and not created) go to the row path, which rejects them with the reason."""
    names = pc.if_else(ok, values[column], None)
    enc = (
        pc.dictionary_encode(names).combine_chunks()
        if isinstance(names, pa.ChunkedArray)
        else pc.dictionary_encode(names)
    )
    uniq = [
        None if n is None or n.casefold() in PLACEHOLDERS else n for n in enc.dictionary.to_pylist()
    ]
    found = stager.resolve_many(uniq)
    ids = pa.array([p.id if p else None for p in found], pa.int64())
    canon = pa.array([p.name if p else None for p in found], pa.string())
    cost = pa.array([p.cost_price_cents if p else None for p in found], pa.int64())
    idx = enc.indices
    values["product_id"] = pc.take(ids, idx)
    values["product_name"] = pc.take(canon, idx)
    values["unit_cost"] = pc.take(cost, idx)
    return pc.and_(ok, pc.fill_null(pc.is_valid(values["product_id"]), False))


def _staged(stager: Stager, fast: pa.Table) -> pa.Table:
    n = fast.num_rows
    cols: dict[str, Any] = {}
    for field in stager.schema:
        if field.name == "data_feed_id":
            cols[field.name] = pa.repeat(pa.scalar(stager.feed_id, pa.int64()), n)
        elif field.name == stager.feed.spec.tenant:
            cols[field.name] = pa.repeat(pa.scalar(stager.up.business_id, pa.string()), n)
        else:
            cols[field.name] = pc.cast(fast.column(field.name), field.type)
    return pa.table(cols, schema=stager.schema)


def _physical_lines(path: Path) -> tuple[int, bool]:
    """Lines in the file as the row reader counts them (\\n, \\r\\n or a lone \\r), and
    whether it holds a quote character at all."""
    lines = 0
    quoted = False
    last = b""
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            lines += chunk.count(b"\n") + chunk.count(b"\r") - chunk.count(b"\r\n")
            if last == b"\r" and chunk[:1] == b"\n":
                lines -= 1  # a \r\n split across chunks was counted twice
            last = chunk[-1:]
            quoted = quoted or b'"' in chunk
    if last not in (b"\n", b"\r", b""):
        lines += 1
    return lines, quoted
