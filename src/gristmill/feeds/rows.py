"""From CSV records to checked rows of a feed template.

Headers match a template column by name or alias, ignoring case, spaces, ``-`` and ``_``
(``Transaction Date``, ``transaction_date``, ``TRANSACTION-DATE``). The header is the first
record (of the first 20) that names every required column: title rows above it (``Sales
report March``, an Excel ``sep=;`` line) are skipped and reported. Every data record after it
becomes exactly one :class:`Row`, valid or not, so ``rows_in = accepted + rejected`` holds
by construction, and each rejected row carries its line number and reasons; a summary
(``Total``) row is rejected with the ``summary_row`` code (:mod:`gristmill.feeds.summary`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from gristmill.feeds.csvread import CsvError, Dialect, Record, RecordReader, open_dialect
from gristmill.feeds.dates import DateDecision, DateEvidence, decide, gather
from gristmill.feeds.summary import WordRule, reason
from gristmill.feeds.template import CellType, Feed, FeedColumn
from gristmill.feeds.values import (
    AmbiguousDate,
    CellError,
    parse_date,
    parse_integer,
    parse_money,
)

HEADER_SEARCH = 20
"""Records looked at for the header row (title rows above it are skipped)."""

PLACEHOLDERS = frozenset({"none", "null", "nan", "n/a", "na", "-", "--", "—", "?", "#n/a"})
"""What a blank name looks like after a spreadsheet or pandas wrote it: never a product."""

_NORM = re.compile(r"[\s_\-.]+")


def norm_header(h: str) -> str:
    return _NORM.sub("", h.strip().strip("\ufeff").lower())


class MissingColumns(ValueError):
    def __init__(self, missing: list[str], headers: list[str]) -> None:
        super().__init__(f"missing required columns: {', '.join(missing)}")
        self.missing = missing
        self.headers = headers


@dataclass(frozen=True, slots=True)
class Header:
    names: list[str]
    """The file's headers as written."""
    index: dict[str, int]
    """template column -> field position."""
    ignored: list[str]


def match_header(feed: Feed, fields: list[str]) -> Header:
    wanted: dict[str, str] = {}
    for col, spec in feed.spec.columns.items():
        for name in (col, *spec.aliases):
            wanted.setdefault(norm_header(name), col)
    index: dict[str, int] = {}
    ignored: list[str] = []
    for i, h in enumerate(fields):
        found = wanted.get(norm_header(h))
        if found is None or found in index:
            ignored.append(h)
        else:
            index[found] = i
    missing = [c for c in feed.required if c not in index]
    if missing:
        raise MissingColumns(missing, fields)
    return Header([f.strip().strip("\ufeff") for f in fields], index, ignored)


@dataclass(slots=True)
class Row:
    line: int
    original: dict[str, str]
    normalized: dict[str, Any]
    issues: list[str] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    summary: bool = False
    """A total line (``summary_row``): rejected, and not a reason to fail the commit."""
    readings: dict[str, dict[str, Any]] = field(default_factory=dict)
    """column -> both readings of an ambiguous date (no order decided yet)."""

    @property
    def valid(self) -> bool:
        return not self.issues


Parser = Callable[[str], Any]


def _parser(spec: FeedColumn, dialect: Dialect, order: str | None, name: bool) -> Parser:
    comma = dialect.decimal_comma
    if spec.type is CellType.MONEY:
        return lambda t: parse_money(t, decimal_comma=comma)
    if spec.type is CellType.INTEGER:
        return lambda t: parse_integer(t, decimal_comma=comma)
    if spec.type is CellType.DATE:
        return lambda t: parse_date(t, order)
    limit = spec.max_length

    def text(t: str) -> str:
        if len(t) > limit:
            raise CellError(f"longer than {limit} characters")
        if "\ufffd" in t:
            raise CellError("undecodable characters")
        if name and t.casefold() in PLACEHOLDERS:
            raise CellError(f"blank ({t!r} is no name)")
        return " ".join(t.split())

    return text


@dataclass(frozen=True, slots=True)
class Plan:
    """Per file: for each template column, where it sits and how it is parsed."""

    width: int
    names: list[str]
    columns: list[tuple[str, int, FeedColumn, Parser, Any]]
    """(column, position or -1, spec, parser, value when blank)."""
    words: WordRule
    date_column: str | None

    @staticmethod
    def build(feed: Feed, header: Header, dialect: Dialect, order: str | None = None) -> Plan:
        cols = []
        lookup = feed.spec.lookup.column if feed.spec.lookup is not None else None
        for col, spec in feed.spec.columns.items():
            blank = 0 if spec.type is CellType.MONEY and not spec.required else None
            parse = _parser(spec, dialect, order, col == lookup)
            cols.append((col, header.index.get(col, -1), spec, parse, blank))
        words = WordRule.build(feed.spec.summary_rows.words)
        return Plan(len(header.names), header.names, cols, words, feed.date_column)


def check_row(plan: Plan, rec: Record) -> Row:
    fields = rec.fields
    n = len(fields)
    row = Row(rec.line, dict(zip(plan.names, fields, strict=False)), {}, raw=fields)
    if n != plan.width:
        row.issues.append(f"expected {plan.width} fields, found {n}")
    norm = row.normalized
    for col, pos, spec, parse, blank in plan.columns:
        text = fields[pos].strip() if 0 <= pos < n else ""
        if not text:
            if spec.required:
                row.issues.append(f"{col}: required")
            norm[col] = blank
            continue
        try:
            value = parse(text)
            if spec.min is not None and isinstance(value, int) and value < spec.min:
                raise CellError(f"below the minimum {spec.min}: {text[:40]!r}")
        except AmbiguousDate as e:
            row.readings[col] = {k: d.isoformat() for k, d in e.readings.items()}
            value = None
        except CellError as e:
            row.issues.append(f"{col}: {e}")
            value = None
        norm[col] = value
    dated = plan.date_column is None or norm.get(plan.date_column) is not None
    if (cell := plan.words.hit(fields, dated or bool(row.readings))) is not None:
        mark_summary(row, reason(cell))
    return row


def mark_summary(row: Row, why: str) -> None:
    """The row is a total line: that is its one reason (the blank product and date a total
    line has are consequences, not news)."""
    row.summary = True
    row.issues[:] = [why]


class Scan:
    """An open file: dialect and header known, rows to come (one pass, streaming).

    A context manager: it owns the file handle."""

    def __init__(self, feed: Feed, path: Path, date_order: str | None = None) -> None:
        self.dialect = open_dialect(path)
        self._reader = RecordReader(path, self.dialect)
        self.skipped: list[int] = []
        """Lines of the records above the header (title rows, ``sep=``)."""
        try:
            self.header = self._find_header(feed)
            self._header_end = self._reader.line_num
            self.dates: DateDecision = decide(
                feed.spec.date_order.value, date_order, lambda: self._evidence(feed, path)
            )
        except BaseException:
            self._reader.close()
            raise
        self._feed = feed

    def _find_header(self, feed: Feed) -> Header:
        first: MissingColumns | None = None
        for _ in range(HEADER_SEARCH):
            rec = next(self._reader, None)
            if rec is None:
                break
            try:
                return match_header(feed, rec.fields)
            except MissingColumns as e:
                if first is None or len(e.missing) < len(first.missing):
                    first = e
                self.skipped.append(rec.line)
        if first is None:
            raise CsvError("the file is empty")
        raise first

    def _evidence(self, feed: Feed, path: Path) -> DateEvidence:
        """Only for a feed with a date column (under ``auto``)."""
        if feed.date_column is None or feed.date_column not in self.header.index:
            return DateEvidence()
        return gather(path, self.dialect)

    @property
    def rows(self) -> Iterator[Row]:
        plan = Plan.build(self._feed, self.header, self.dialect, self.dates.order)
        for rec in self._reader:
            yield check_row(plan, rec)

    def bytes_read(self) -> int:
        return self._reader.bytes_read()

    @property
    def header_end(self) -> int:
        """The physical line the header record ends on."""
        return self._header_end

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> Scan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scan(feed: Feed, path: Path, date_order: str | None = None) -> Scan:
    """Open ``path`` and find its header; raises :class:`CsvError` for an empty or
    headerless file and :class:`MissingColumns` when no record of the first 20 names every
    required column (the one closest to it is reported)."""
    return Scan(feed, path, date_order)


def jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value
