"""Time ranges, presets and grains in a caller's time zone.

Preset ``Nd`` covers from the start of the day N-1 days before today, in the requested IANA
time zone, up to now: ``7d`` on a Wednesday afternoon in New York is last Thursday 00:00
New York time to this instant, i.e. today plus the six full days before it. Preset ``Nh`` is
the same in hours, rolling across midnight: ``24h`` at 00:30 is this hour plus the 23 full
hours before it, so a view an on-call engineer opens just after midnight is not empty (``1d``
would hold only the last 30 minutes).
Ranges are half-open, ``[start, end)``, and carried as UTC instants.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from gristmill.core.errors import Problem

GRAINS = ("hour", "day", "week", "month")
_PRESET = re.compile(r"^([1-9][0-9]{0,3})([dh])$")
MAX_BUCKETS = 10_000


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    # "localtime" is the machine's own zone file, not an IANA name: the warehouses do not
    # know it (DuckDB answered it with an error, a 500, until it was left out here).
    return (frozenset(available_timezones()) - {"localtime"}) | {"UTC"}


def known_zones() -> frozenset[str]:
    """The allowlist ``tz`` parameters are checked against (the OpenAPI enum)."""
    return _zones()


def zone(name: str) -> ZoneInfo:
    """An IANA zone from the allowlist of zones this machine knows, else 400."""
    if name not in _zones():
        raise Problem(
            400,
            "invalid-timezone",
            "Unknown time zone",
            f"{name[:64]!r} is not an IANA time zone name (e.g. America/New_York)",
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:  # pragma: no cover - allowlisted above
        raise Problem(400, "invalid-timezone", "Unknown time zone", str(exc)) from exc


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: datetime
    """Inclusive, UTC."""
    end: datetime
    """Exclusive, UTC."""
    tz: ZoneInfo
    preset: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "start": self.start.astimezone(self.tz).isoformat(),
            "end": self.end.astimezone(self.tz).isoformat(),
            "timezone": self.tz.key,
            "preset": self.preset,
        }


def preset_range(preset: str, tz: ZoneInfo, now: datetime) -> TimeRange:
    m = _PRESET.match(preset)
    if not m:
        raise Problem(
            400,
            "invalid-preset",
            "Unknown preset",
            f"{preset[:32]!r} is not a preset like 24h, 7d, 30d or 90d",
        )
    n = int(m.group(1))
    if m.group(2) == "h":
        # The hour is floored in the zone (India's hours start at :30 UTC), then stepped back
        # in UTC, so a DST change inside the range neither adds nor drops an hour.
        hour = now.astimezone(tz).replace(minute=0, second=0, microsecond=0)
        start = hour.astimezone(UTC) - timedelta(hours=n - 1)
        return TimeRange(start, now.astimezone(UTC), tz, preset)
    today = now.astimezone(tz).date()
    start = local_midnight(today - timedelta(days=n - 1), tz)
    return TimeRange(start.astimezone(UTC), now.astimezone(UTC), tz, preset)


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz)


EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def explicit_range(start: datetime, end: datetime, tz: ZoneInfo) -> TimeRange:
    """A caller's range; naive datetimes are read in ``tz``; bounded to 1900..2200."""
    try:
        s = (start if start.tzinfo else start.replace(tzinfo=tz)).astimezone(UTC)
        e = (end if end.tzinfo else end.replace(tzinfo=tz)).astimezone(UTC)
    except (OverflowError, ValueError):
        s = e = EARLIEST - timedelta(days=1)
    if not (EARLIEST <= s < LATEST and EARLIEST < e <= LATEST):
        raise Problem(
            400,
            "invalid-range",
            "Invalid range",
            "start and end must lie between 1900-01-01 and 2200-01-01",
        )
    if e <= s:
        raise Problem(400, "invalid-range", "Invalid range", "end must be after start")
    return TimeRange(s, e, tz)


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def week_grain(week_start: str = "monday") -> str:
    """The grain of weeks starting on ``week_start``: ``week`` (Monday, ISO) or ``week@N``
    (N days after Monday), carried through the query like any grain."""
    n = WEEKDAYS.index(week_start)
    return "week" if n == 0 else f"week@{n}"


def base_grain(grain: str) -> tuple[str, int]:
    """``week@6`` -> (``week``, 6); any other grain -> (grain, 0)."""
    if grain.startswith("week@"):
        return "week", int(grain[5:])
    return grain, 0


def bucket_start(t: datetime, grain: str, tz: ZoneInfo) -> datetime:
    """The local (naive) start of the bucket holding instant ``t``, as SQL's
    ``date_trunc(grain, t AT TIME ZONE tz)`` computes it (weeks start on Monday, or N days
    later for ``week@N``)."""
    grain, week_start = base_grain(grain)
    local = t.astimezone(tz).replace(tzinfo=None)
    if grain == "hour":
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if grain == "day":
        return day
    if grain == "week":
        return day - timedelta(days=(day.weekday() - week_start) % 7)
    if grain == "month":
        return day.replace(day=1)
    raise ValueError(grain)


def next_bucket(b: datetime, grain: str) -> datetime:
    grain = base_grain(grain)[0]
    if grain == "hour":
        return b + timedelta(hours=1)
    if grain == "day":
        return b + timedelta(days=1)
    if grain == "week":
        return b + timedelta(days=7)
    return (b.replace(day=28) + timedelta(days=4)).replace(day=1)


def hour_start(t: datetime, tz: ZoneInfo) -> datetime:
    """The instant (UTC) at which the local hour holding ``t`` began."""
    local = t.astimezone(tz)
    return (
        t - timedelta(minutes=local.minute, seconds=local.second, microseconds=local.microsecond)
    ).astimezone(UTC)


def buckets(r: TimeRange, grain: str) -> list[datetime]:
    """Every bucket the range touches, for zero-filled series: local dates (naive) for days
    and coarser, UTC instants for hours (as SQL's hour buckets are)."""
    if grain == "hour":
        hours = []
        t = hour_start(r.start, r.tz)
        while t < r.end:
            hours.append(t)
            if len(hours) > MAX_BUCKETS:
                raise Problem(
                    400,
                    "too-many-buckets",
                    "Range too long for the grain",
                    f"more than {MAX_BUCKETS} hour buckets; use a coarser grain",
                )
            t += timedelta(hours=1)
        return hours
    out = []
    b = bucket_start(r.start, grain, r.tz)
    last = bucket_start(r.end - timedelta(microseconds=1), grain, r.tz)
    while b <= last:
        out.append(b)
        if len(out) > MAX_BUCKETS:
            raise Problem(
                400,
                "too-many-buckets",
                "Range too long for the grain",
                f"more than {MAX_BUCKETS} {grain} buckets; use a coarser grain",
            )
        b = next_bucket(b, grain)
    return out


def label(b: datetime, grain: str, tz: ZoneInfo) -> str:
    """``2026-11-16`` for day and coarser; local ISO time with offset for hours."""
    if grain != "hour":
        return b.date().isoformat()
    return (b if b.tzinfo else b.replace(tzinfo=UTC)).astimezone(tz).isoformat()


def whole_hour_offsets(r: TimeRange) -> bool:
    """Whether the zone's UTC offset is a whole number of hours across the range, so UTC hour
    buckets map onto local buckets (false for India, Nepal, Newfoundland …)."""
    t = r.start
    while True:
        off = t.astimezone(r.tz).utcoffset() or timedelta(0)
        if off.total_seconds() % 3600:
            return False
        if t >= r.end:
            return True
        t = min(r.end, t + timedelta(days=1))


def utc_now() -> datetime:
    return datetime.now(UTC)
