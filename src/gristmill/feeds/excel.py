"""``.xlsx`` uploads: the sheet that holds the feed's table, rewritten as a UTF-8 CSV.

People export from Excel by uploading the workbook itself. Rather than refusing it, the
upload is converted once, when it is saved, so preview, commit and the fast lane all read
the same CSV: the first sheet whose first rows contain the template's header (else the
first sheet), cells as Excel stores them: numbers in plain decimal notation (``3.5``, never
a locale's ``3,5``), dates as ISO days (a time of day is kept only when it is not
midnight), formulas as their last computed values. A workbook that cannot be read is
refused with "an Excel workbook — export it as CSV".
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

from gristmill.feeds.csvread import CsvError, NotText

ZIP_MAGIC = b"PK\x03\x04"
HEADER_ROWS = 20


class ExcelError(CsvError):
    """A workbook we cannot read."""


def is_workbook(path: Path) -> bool:
    """A ZIP container holding ``xl/workbook.xml`` (xlsx, xlsm)."""
    with path.open("rb") as fh:
        if fh.read(4) != ZIP_MAGIC:
            return False
    try:
        with zipfile.ZipFile(path) as z:
            return "xl/workbook.xml" in z.namelist()
    except zipfile.BadZipFile:
        return False


def is_zip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == ZIP_MAGIC


def cell_text(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, datetime):
        return v.date().isoformat() if v.time() == time(0) else v.isoformat(sep=" ")
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v.is_integer():
            return str(int(v))
        # The shortest text that reads back as the same double: 3.1, not 3.100000000000000088.
        return format(Decimal(repr(v)), "f")
    return str(v)


def to_csv(src: Path, dst: Path, is_header: Callable[[Sequence[str]], bool]) -> str:
    """Write the sheet holding the feed's table to ``dst``; returns the sheet's name."""
    from openpyxl import load_workbook  # only when a workbook is uploaded
    from openpyxl.utils.exceptions import InvalidFileException

    with src.open("rb") as fh:  # a file object: openpyxl would judge a path by its suffix
        try:
            wb = load_workbook(fh, read_only=True, data_only=True)
        except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ValueError) as e:
            raise ExcelError(f"an Excel workbook we cannot read ({e}) — export it as CSV") from e
        try:
            return _write(wb.worksheets, dst, is_header)
        except CsvError:
            raise
        except Exception as e:  # openpyxl raises many kinds for damaged parts
            raise ExcelError(f"an Excel workbook we cannot read ({e}) — export it as CSV") from e
        finally:
            wb.close()


def _write(sheets: Sequence[Any], dst: Path, is_header: Callable[[Sequence[str]], bool]) -> str:
    if not sheets:
        raise ExcelError("an Excel workbook without sheets — export it as CSV")
    chosen = sheets[0]
    for ws in sheets:
        head = [
            [cell_text(v) for v in row]
            for _, row in zip(range(HEADER_ROWS), ws.iter_rows(values_only=True), strict=False)
        ]
        if any(is_header(r) for r in head):
            chosen = ws
            break
    with dst.open("w", encoding="utf-8", newline="") as out:
        w = csv.writer(out, lineterminator="\n")
        w.writerows(_rows(chosen.iter_rows(values_only=True)))
    return str(chosen.title)


def _rows(rows: Iterable[tuple[object, ...]]) -> Iterable[list[str]]:
    """Every row as wide as the sheet: a row's empty trailing cells are fields too."""
    for row in rows:
        yield [cell_text(v) for v in row]


def refuse_archive(path: Path) -> None:
    if is_zip(path) and not is_workbook(path):
        raise NotText("not a text file: a ZIP archive")
