"""Time in one unit: integer microseconds since the Unix epoch, UTC.

Integers cross the log, Arrow and every warehouse without time-zone or float surprises.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

MICROS = 1_000_000
FUTURE_TOLERANCE_US = 23 * 3600 * MICROS
"""A device time further ahead of the receive time than this is clamped (PostHog's rule)."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def now_us() -> int:
    return time.time_ns() // 1000


def parse_rfc3339_us(text: str) -> int:
    """Parse an ISO 8601 / RFC 3339 timestamp that carries a UTC offset.

    A naive timestamp is refused: guessing its zone silently shifts events by hours.
    """
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError("timestamp has no UTC offset; append Z or +hh:mm")
    return (dt - _EPOCH) // _ONE_US


def to_datetime(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def from_datetime(dt: datetime) -> int:
    return (dt - _EPOCH) // _ONE_US


def iso(us: int) -> str:
    return to_datetime(us).isoformat().replace("+00:00", "Z")


EARLIEST_US = -(70 * 365 + 17) * 86400 * MICROS
"""1900-01-01 UTC: nothing older is an event time (and every warehouse can store it)."""


class BadTime(ValueError):
    """An event time no warehouse should hold (before 1900, or not representable)."""


def check_time(us: int) -> int:
    """Refuse event times before 1900 (a skew correction against an absurd ``sent_at`` can
    land there); the future is already clamped. Caught in the collector: a value the loader
    cannot convert would stall its batch."""
    if us < EARLIEST_US:
        raise BadTime(f"event time {us} µs is before 1900-01-01")
    return us


def correct_skew(received_us: int, sent_us: int | None, device_us: int | None) -> int | None:
    """Shift a device time by the device clock's error, measured at send time.

    ``occurred_at = received_at - (sent_at - device_timestamp)``: the same rule Segment, PostHog
    and Snowplow apply. Without both device times no correction is possible.
    """
    if device_us is None:
        return None
    if sent_us is None:
        return device_us
    return received_us - (sent_us - device_us)


def clamp_future(occurred_us: int, received_us: int) -> tuple[int, bool]:
    """Clamp a time far in the future to the receive time; the flag says it happened."""
    if occurred_us - received_us > FUTURE_TOLERANCE_US:
        return received_us, True
    return occurred_us, False
