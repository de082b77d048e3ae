"""Cell parsers for the value types a feed template declares.

Real exports from spreadsheets and point-of-sale systems write money as ``$1,234.50``,
``1.234,50 €`` or ``(12.00)``, and dates in whatever the clerk's locale prints. Each parser
returns the normalized value or raises :class:`CellError` with a reason a person can act on.
Money is :class:`~decimal.Decimal` end to end and stored as integer cents: never a float.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

__all__ = [
    "AmbiguousDate",
    "CellError",
    "parse_date",
    "parse_integer",
    "parse_money",
    "parse_number",
]


class CellError(ValueError):
    """A cell that cannot be read as its declared type; the message is the reason."""


_CURRENCY = re.compile(r"(?i)\b(?:usd|eur|gbp|chf|jpy|cad|aud|idr|inr)\b|[$€£¥₹₩₽¢]|rp\.?")
_SPACES = re.compile(r"[\s\u00a0\u202f\u2009']")
_DIGITS = re.compile(r"^\d+(?:\.\d+)?$")
_GROUPED_COMMA = re.compile(r"^\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_GROUPED_DOT = re.compile(r"^\d{1,3}(?:\.\d{3})+(?:,\d+)?$")


def parse_number(text: str, *, decimal_comma: bool = False) -> Decimal:
    """A decimal number with optional currency symbol, sign, parentheses for negatives,
    thousands separators (``,`` ``.`` space or ``'``) and a decimal point or comma.

    When only one kind of separator appears and the reading is ambiguous (``1,234``), the
    file's convention decides: ``decimal_comma`` (files delimited by ``;`` or tab, as
    spreadsheets in decimal-comma locales write them) reads it as 1.234, otherwise as 1234.
    """
    s = _CURRENCY.sub("", text.strip())
    s = _SPACES.sub("", s)
    negative = False
    if s.startswith("(") and s.endswith(")"):
        negative, s = True, s[1:-1]
    if s.startswith(("-", "+")):
        negative, s = s[0] == "-", s[1:]
    elif s.endswith("-"):
        negative, s = True, s[:-1]
    if not s:
        raise CellError(f"not a number: {text.strip()[:40]!r}")
    if "," in s and "." in s:
        # Both present: the last one is the decimal separator.
        if s.rfind(",") > s.rfind("."):
            if not _GROUPED_DOT.match(s):
                raise CellError(f"not a number: {text.strip()[:40]!r}")
            s = s.replace(".", "").replace(",", ".")
        else:
            if not _GROUPED_COMMA.match(s):
                raise CellError(f"not a number: {text.strip()[:40]!r}")
            s = s.replace(",", "")
    elif "," in s:
        if s.count(",") > 1 or (_GROUPED_COMMA.match(s) and not decimal_comma):
            if not _GROUPED_COMMA.match(s):
                raise CellError(f"not a number: {text.strip()[:40]!r}")
            s = s.replace(",", "")
        else:
            s = s.replace(",", ".")
    elif s.count(".") > 1 or (decimal_comma and _GROUPED_DOT.match(s)):
        if not _GROUPED_DOT.match(s):
            raise CellError(f"not a number: {text.strip()[:40]!r}")
        s = s.replace(".", "")
    if not _DIGITS.match(s):
        raise CellError(f"not a number: {text.strip()[:40]!r}")
    try:
        value = Decimal(s)
    except InvalidOperation as exc:  # pragma: no cover - the pattern above admits only digits
        raise CellError(f"not a number: {text.strip()[:40]!r}") from exc
    return -value if negative else value


_PLAIN_MONEY = re.compile(r"(\d{1,15})(?:\.(\d{1,2}))?")


def parse_money(text: str, *, decimal_comma: bool = False) -> int:
    """Integer cents. More than two decimals is refused rather than rounded: a feed that
    carries fractions of a cent is telling us something we must not silently change."""
    if not decimal_comma and (m := _PLAIN_MONEY.fullmatch(text)):
        # The common case (``12.5``, ``1234.00``) without the general parser: same result.
        return int(m[1]) * 100 + int((m[2] or "0").ljust(2, "0"))
    value = parse_number(text, decimal_comma=decimal_comma)
    cents = value * 100
    if cents != cents.to_integral_value():
        raise CellError(f"more than 2 decimals: {text.strip()[:40]!r}")
    return int(cents)


def parse_integer(text: str, *, decimal_comma: bool = False) -> int:
    if text.isascii() and text.isdigit():
        return int(text)
    value = parse_number(text, decimal_comma=decimal_comma)
    if value != value.to_integral_value():
        raise CellError(f"not a whole number: {text.strip()[:40]!r}")
    return int(value)


_MONTH_NAMES = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]
_ISO = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_SLASH = re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})$")
_DOTTED = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})$")
_NUMERIC = re.compile(r"^(\d{1,2})([/-])(\d{1,2})\2(\d{4})$")
"""``03/04/2025`` or ``03-04-2025``: day-first in most of the world, month-first in the US."""

DAY_FIRST = "day_first"
MONTH_FIRST = "month_first"
DATE_ORDERS = (DAY_FIRST, MONTH_FIRST)
_ISO_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?$"
)
_MONTH_NAME = re.compile(r"^([A-Za-z]{3,9})\.? (\d{1,2}),? (\d{4})$")


class AmbiguousDate(CellError):
    """``03/04/2025`` with no day/month order decided: both readings are calendar dates."""

    def __init__(self, text: str, readings: dict[str, date]) -> None:
        super().__init__(f"ambiguous date: {text[:40]!r} (day-first or month-first?)")
        self.readings = readings


def numeric_parts(text: str) -> tuple[int, int, int] | None:
    """``(first, second, year)`` of a ``NN/NN/YYYY`` or ``NN-NN-YYYY`` date, else None."""
    m = _NUMERIC.match(text.strip())
    return (int(m[1]), int(m[3]), int(m[4])) if m else None


def parse_date(text: str, order: str | None = None) -> date:
    """ISO ``2025-01-31``, ``2025/01/31``, ``31.01.2025`` (day-first unless ``order`` is
    month-first), ``31/01/2025`` and ``01/31/2025`` (``/`` or ``-``; by ``order``, and when
    no order is decided only if one reading is impossible), ISO with a time
    (``2025-01-31T14:05:00Z``; the date as written, the time of day is not kept) and
    ``Jan 31, 2025`` (or ``January 31, 2025``)."""
    s = text.strip()
    if len(s) == 10 and s[4] == "-" and s[7] == "-" and s[:4].isdigit():
        try:  # the common ISO case without the regular expressions
            d = date.fromisoformat(s)
        except ValueError:
            pass
        else:
            if 1900 <= d.year <= 2200:
                return d
    parts: tuple[int, int, int] | None = None
    if m := _ISO.match(s) or _SLASH.match(s) or _ISO_TIME.match(s):
        parts = (int(m[1]), int(m[2]), int(m[3]))
    elif m := _DOTTED.match(s):
        a, b = int(m[1]), int(m[2])
        parts = (int(m[3]), a, b) if order == MONTH_FIRST else (int(m[3]), b, a)
    elif m := _NUMERIC.match(s):
        a, b, y = int(m[1]), int(m[3]), int(m[4])
        if order == DAY_FIRST:
            parts = (y, b, a)
        elif order == MONTH_FIRST:
            parts = (y, a, b)
        else:
            readings = {}
            for name, (mo, dy) in ((DAY_FIRST, (b, a)), (MONTH_FIRST, (a, b))):
                try:
                    readings[name] = date(y, mo, dy)
                except ValueError:
                    continue
            if len(readings) == 2 and a != b:
                raise AmbiguousDate(s, readings)
            if not readings:
                raise CellError(f"not a calendar date: {s[:40]!r}")
            d0 = next(iter(readings.values()))
            parts = (d0.year, d0.month, d0.day)
    elif m := _MONTH_NAME.match(s):
        word = m[1].lower()
        found = [i for i, full in enumerate(_MONTH_NAMES, 1) if full.startswith(word)]
        if not found or len(word) < 3:
            raise CellError(f"unknown month: {m[1]!r}")
        month = found[0]
        parts = (int(m[3]), month, int(m[2]))
    if parts is None:
        raise CellError(
            f"not a date: {s[:40]!r} (use YYYY-MM-DD, YYYY/MM/DD, DD.MM.YYYY, DD/MM/YYYY, "
            "MM/DD/YYYY or Mon D, YYYY)"
        )
    try:
        d = date(*parts)
    except ValueError as exc:
        raise CellError(f"not a calendar date: {s[:40]!r}") from exc
    if not 1900 <= d.year <= 2200:
        raise CellError(f"year out of range 1900..2200: {s[:40]!r}")
    return d


def iso(value: date | datetime) -> str:
    return value.isoformat()
