"""Deterministic CSV: the same rows always give the same bytes.

RFC 4180 (comma, CRLF, double quotes around a cell holding a comma, quote or line break,
quotes doubled). Cells: NULL is empty; integers exact (money stays integer cents, never a
float); booleans ``true``/``false``; times UTC ``2026-11-02T10:00:00.000000Z`` (always six
digits); JSON canonical (sorted keys, no spaces); floats their shortest round-trip form. Row
count, integer totals and the sha256 are taken from the bytes as they are written, so the
manifest describes exactly the file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any


def cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, Decimal):
        return str(int(v)) if v == v.to_integral_value() else format(v.normalize(), "f")
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ""
    if isinstance(v, datetime):
        t = v if v.tzinfo is not None else v.replace(tzinfo=UTC)
        return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, dict | list):
        return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return str(v)


def json_cell(v: Any) -> str:
    """A JSON column: engines hand it back as text (DuckDB) or parsed (PostgreSQL JSONB);
    both become the same canonical text."""
    if v is None:
        return ""
    parsed: Any = v
    if isinstance(v, str):
        try:
            parsed = json.loads(v)
        except ValueError:
            return v
    return json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass
class CsvSink:
    """Encodes rows and keeps what the manifest states about them."""

    columns: Sequence[str]
    totals_of: Sequence[str] = ()
    """Integer columns whose exact sums the manifest carries."""
    rows: int = 0
    size: int = 0
    totals: dict[str, int] = field(default_factory=dict)
    _sha: Any = field(default_factory=hashlib.sha256)

    def __post_init__(self) -> None:
        self.totals = dict.fromkeys(self.totals_of, 0)
        self._at = [list(self.columns).index(c) for c in self.totals_of]

    def _encode(self, rows: Iterable[Sequence[str]]) -> bytes:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
        w.writerows(rows)
        data = buf.getvalue().encode("utf-8")
        self._sha.update(data)
        self.size += len(data)
        return data

    def header(self) -> bytes:
        return self._encode([list(self.columns)])

    def encode(self, rows: Sequence[Sequence[str]]) -> bytes:
        """Rows of already formatted cells (see :func:`cell`)."""
        for r in rows:
            for name, i in zip(self.totals_of, self._at, strict=True):
                if r[i] != "":
                    self.totals[name] += int(r[i])
        self.rows += len(rows)
        return self._encode(rows)

    @property
    def sha256(self) -> str:
        return str(self._sha.hexdigest())


def read_totals(chunks: Iterator[bytes], columns: Sequence[str]) -> tuple[int, dict[str, int]]:
    """Row count and integer totals of ``columns``, parsed back from a CSV as written (the
    reconciliation reads the file itself, not what the writer remembered)."""
    text = io.TextIOWrapper(io.BufferedReader(_ChunkReader(chunks)), encoding="utf-8", newline="")
    reader = csv.reader(text)
    header = next(reader, None) or []
    at = {c: header.index(c) for c in columns if c in header}
    totals = dict.fromkeys(at, 0)
    n = 0
    for row in reader:
        n += 1
        for c, i in at.items():
            if row[i] != "":
                totals[c] += int(row[i])
    return n, totals


class _ChunkReader(io.RawIOBase):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            nxt = next(self._chunks, None)
            if nxt is None:
                return 0
            self._buf = nxt
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def read_rows(chunks: Iterator[bytes]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a stored CSV (the restatement check compares them cell by cell)."""
    text = io.TextIOWrapper(io.BufferedReader(_ChunkReader(chunks)), encoding="utf-8", newline="")
    reader = csv.reader(text)
    header = next(reader, None) or []
    return header, list(reader)
