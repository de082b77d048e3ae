"""Human durations used in packs and settings: ``90s``, ``15m``, ``36h``, ``7d``, ``2w``, ``7y``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_RE = re.compile(r"^\s*(\d+)\s*([smhdwy])\s*$")


def parse_duration(text: str) -> timedelta:
    """Parse ``<int><unit>``; a year is 365 days (retention is stated in whole days anyway)."""
    m = _RE.match(text)
    if not m:
        raise ValueError(
            f"{text!r} is not a duration; use a whole number and one of s, m, h, d, w, y "
            "(for example 7d or 36h)"
        )
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def format_duration(td: timedelta) -> str:
    secs = int(td.total_seconds())
    for unit in ("y", "w", "d", "h", "m"):
        if secs and secs % _UNITS[unit] == 0:
            return f"{secs // _UNITS[unit]}{unit}"
    return f"{secs}s"
