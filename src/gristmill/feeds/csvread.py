"""Read real-world CSV files as a stream of records with their line numbers.

Encoding is decided from a sample: a BOM (UTF-8, UTF-16) wins; else UTF-8 if the sample
decodes; else charset-normalizer's guess limited to encodings spreadsheets actually write
(cp1252 and friends). The delimiter is the candidate (``,`` ``;`` tab ``|``) that splits the
sampled lines into the same number of fields most often. The file is then read through
``csv`` incrementally. Excel's ``sep=;`` first line names the delimiter outright (and is
then no record of the header's). A sample with NUL bytes or control characters (outside
UTF-16) is no text at all and is refused as such, not as a CSV missing its columns.
Quoted fields may hold delimiters, quotes and newlines; memory
stays bounded by one record whatever the file size.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from charset_normalizer import from_bytes

SAMPLE_BYTES = 64 * 1024
DELIMITERS = (",", ";", "\t", "|")
ALLOWED_GUESSES = ("cp1252", "latin_1", "utf_8")
MAX_FIELD = 1 << 20

csv.field_size_limit(MAX_FIELD)


class CsvError(ValueError):
    """The file cannot be read as CSV at all (empty, binary, no header)."""


class NotText(CsvError):
    """Binary content (an image, a PDF, an archive, an old Excel workbook)."""


_SEP_LINE = re.compile(r"^\ufeff?\s*\"?sep=(.)\"?[ \t]*\r?(?:\n|$)", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
_MAGIC = (
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\xd0\xcf\x11\xe0", "an Excel 97-2003 workbook (.xls): save it as .xlsx or export as CSV"),
)


def refuse_binary(sample: bytes, encoding: str, text: str) -> None:
    """Raise :class:`NotText` unless the sample reads as text."""
    for magic, what in _MAGIC:
        if sample.startswith(magic):
            raise NotText(f"not a text file: {what}")
    if not encoding.startswith("utf-16") and b"\x00" in sample:
        raise NotText("not a text file (it holds NUL bytes)")
    head = text[:SAMPLE_BYTES]
    if head and len(_CONTROL.findall(head)) > max(2, len(head) // 100):
        raise NotText("not a text file (control characters, not a CSV)")


@dataclass(frozen=True, slots=True)
class Dialect:
    encoding: str
    delimiter: str
    bom: bool
    sep_line: bool = False
    """The file starts with Excel's ``sep=X`` line."""

    @property
    def decimal_comma(self) -> bool:
        """Files delimited by ``;`` or tab come from decimal-comma locales (Excel's list
        separator follows the decimal separator), so ``1,234`` there means 1.234."""
        return self.delimiter in (";", "\t")


@dataclass(frozen=True, slots=True)
class Record:
    line: int
    """1-based line of the file where the record starts."""
    fields: list[str]


def detect_encoding(sample: bytes) -> tuple[str, bool]:
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig", True
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16", True
    if b"\x00" in sample[:4096] and sample[1:2] == b"\x00":
        return "utf-16-le", False
    try:
        sample.decode("utf-8")
        return "utf-8", False
    except UnicodeDecodeError as e:
        # A sample cut inside a multi-byte character fails only in its last 3 bytes.
        if e.start >= len(sample) - 3:
            return "utf-8", False
    best = from_bytes(sample, cp_isolation=list(ALLOWED_GUESSES)).best()
    if best is None:
        return "cp1252", False
    return str(best.encoding), False


def _split_counts(lines: list[str], delimiter: str) -> list[int]:
    reader = csv.reader(lines, delimiter=delimiter, quotechar='"')
    try:
        return [len(r) for r in reader if r and any(f.strip() for f in r)]
    except csv.Error:
        return []


def sniff_delimiter(text: str) -> str:
    """The delimiter splitting most sampled lines into the same number (2 or more) of
    fields. The most common count, not the first line's: a title row above the header
    (``Sales report March``) has no delimiter at all."""
    lines = text.splitlines(keepends=True)[:50]
    if len(lines) > 1 and not text.endswith(("\n", "\r")):
        lines = lines[:-1]  # the sample may end inside a record
    best, best_score = ",", (-1, -1)
    for d in DELIMITERS:
        counts = _split_counts(lines, d)
        multi = [c for c in counts if c >= 2]
        if not multi:
            continue
        width = Counter(multi).most_common(1)[0][0]
        score = (sum(1 for c in counts if c == width), width)
        if score > best_score:
            best, best_score = d, score
    return best


def open_dialect(path: Path) -> Dialect:
    with path.open("rb") as fh:
        sample = fh.read(SAMPLE_BYTES)
    if not sample.strip(b"\r\n\t \x00\xef\xbb\xbf\xff\xfe"):
        raise CsvError("the file is empty")
    encoding, bom = detect_encoding(sample)
    text = sample.decode(encoding, errors="replace")
    refuse_binary(sample, encoding, text)
    if m := _SEP_LINE.match(text):
        return Dialect(encoding, m[1], bom, sep_line=True)
    return Dialect(encoding, sniff_delimiter(text), bom)


class RecordReader:
    """Records of an open file with the line each starts on; blank lines are skipped (and
    are not records). Undecodable bytes become U+FFFD rather than stopping the file: the row
    then fails validation with its line number instead of the whole import failing.
    Owns the file: use it as a context manager."""

    def __init__(self, path: Path, dialect: Dialect) -> None:
        self.dialect = dialect
        self._fh: BinaryIO = path.open("rb")
        self._text = io.TextIOWrapper(
            self._fh, encoding=dialect.encoding, errors="replace", newline=""
        )
        self._reader = csv.reader(
            self._text, delimiter=dialect.delimiter, quotechar='"', strict=False
        )
        self._end = 0

    def __iter__(self) -> Iterator[Record]:
        return self

    def __next__(self) -> Record:
        while True:
            try:
                fields = next(self._reader)
            except csv.Error as e:
                raise CsvError(f"line {self._end + 1}: {e}") from e
            start = self._end + 1
            self._end = self._reader.line_num
            if fields and any(f.strip() for f in fields):
                return Record(start, fields)

    @property
    def line_num(self) -> int:
        """The last physical line read so far."""
        return self._end

    def bytes_read(self) -> int:
        """How far into the file reading has got (for progress bars)."""
        return self._fh.tell() if not self._fh.closed else 0

    def close(self) -> None:
        self._text.close()

    def __enter__(self) -> RecordReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
