"""From CSV records to checked rows of a feed template.

Headers match a template column by name or alias, ignoring case, spaces, ``-`` and ``_``
(``Transaction Date``, ``transaction_date``, ``TRANSACTION-DATE``). Every data record
becomes exactly one :class:`Row`, valid or not, so ``rows_in = accepted + rejected`` holds
by construction, and each rejected row carries its line number and reasons.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from gristmill.feeds.csvread import CsvError, Dialect, Record, RecordReader, open_dialect
from gristmill.feeds.template import CellType, Feed, FeedColumn
from gristmill.feeds.values import CellError, parse_date, parse_integer, parse_money

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

    @property
    def valid(self) -> bool:
        return not self.issues


Parser = Callable[[str], Any]


def _parser(spec: FeedColumn, dialect: Dialect) -> Parser:
    comma = dialect.decimal_comma
    if spec.type is CellType.MONEY:
        return lambda t: parse_money(t, decimal_comma=comma)
    if spec.type is CellType.INTEGER:
        return lambda t: parse_integer(t, decimal_comma=comma)
    if spec.type is CellType.DATE:
        return parse_date
    limit = spec.max_length

    def text(t: str) -> str:
        if len(t) > limit:
            raise CellError(f"longer than {limit} characters")
        if "\ufffd" in t:
            raise CellError("undecodable characters")
        return " ".join(t.split())

    return text


@dataclass(frozen=True, slots=True)
class Plan:
    """Per file: for each template column, where it sits and how it is parsed."""

    width: int
    names: list[str]
    columns: list[tuple[str, int, FeedColumn, Parser, Any]]
    """(column, position or -1, spec, parser, value when blank)."""

    @staticmethod
    def build(feed: Feed, header: Header, dialect: Dialect) -> Plan:
        cols = []
        for col, spec in feed.spec.columns.items():
            blank = 0 if spec.type is CellType.MONEY and not spec.required else None
            cols.append((col, header.index.get(col, -1), spec, _parser(spec, dialect), blank))
        return Plan(len(header.names), header.names, cols)


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
        except CellError as e:
            row.issues.append(f"{col}: {e}")
            value = None
        norm[col] = value
    return row


class Scan:
    """An open file: dialect and header known, rows to come (one pass, streaming).

    A context manager: it owns the file handle."""

    def __init__(self, feed: Feed, path: Path) -> None:
        self.dialect = open_dialect(path)
        self._reader = RecordReader(path, self.dialect)
        try:
            first = next(self._reader, None)
            if first is None:
                raise CsvError("the file is empty")
            self.header = match_header(feed, first.fields)
            self._header_end = self._reader.line_num
        except BaseException:
            self._reader.close()
            raise
        self._feed = feed

    @property
    def rows(self) -> Iterator[Row]:
        plan = Plan.build(self._feed, self.header, self.dialect)
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


def scan(feed: Feed, path: Path) -> Scan:
    """Open ``path`` and check its header; raises :class:`CsvError` for an empty or
    headerless file and :class:`MissingColumns` when a required column is absent."""
    return Scan(feed, path)


def jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value
