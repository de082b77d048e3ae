"""Time: RFC 3339 parsing, skew correction and the future clamp."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gristmill.core.clock import (
    FUTURE_TOLERANCE_US,
    MICROS,
    clamp_future,
    correct_skew,
    from_datetime,
    iso,
    parse_rfc3339_us,
)
from gristmill.core.durations import format_duration, parse_duration

times = st.integers(min_value=0, max_value=4_000_000_000 * MICROS)


def test_parse_rfc3339_offsets_and_fractions() -> None:
    assert parse_rfc3339_us("1970-01-01T00:00:01Z") == MICROS
    assert parse_rfc3339_us("1970-01-01T01:00:00.000250+01:00") == 250
    with pytest.raises(ValueError, match="no UTC offset"):
        parse_rfc3339_us("2026-01-01T00:00:00")


@given(times)
def test_iso_round_trip(us: int) -> None:
    assert parse_rfc3339_us(iso(us)) == us


@given(times, times, st.integers(min_value=-(10**12), max_value=10**12))
def test_skew_correction_preserves_device_intervals(received: int, device: int, skew: int) -> None:
    # The device clock is off by `skew`; it stamped the event and later the send.
    sent_device = device + 1_000_000
    occurred = correct_skew(received, sent_device + skew, device + skew)
    assert occurred == received - (sent_device - device)


def test_skew_needs_both_device_times() -> None:
    assert correct_skew(100, None, 50) == 50
    assert correct_skew(100, 70, None) is None


@given(times, st.integers(min_value=-(10**13), max_value=10**13))
def test_future_clamp(received: int, delta: int) -> None:
    occurred, clamped = clamp_future(received + delta, received)
    assert clamped == (delta > FUTURE_TOLERANCE_US)
    assert occurred == (received if clamped else received + delta)


def test_datetime_round_trip() -> None:
    dt = datetime(2026, 11, 2, 10, 0, 0, 123456, tzinfo=UTC)
    assert iso(from_datetime(dt)) == "2026-11-02T10:00:00.123456Z"


@pytest.mark.parametrize(
    ("text", "td"),
    [
        ("7d", timedelta(days=7)),
        ("36h", timedelta(hours=36)),
        ("7y", timedelta(days=7 * 365)),
        ("90s", timedelta(seconds=90)),
    ],
)
def test_durations(text: str, td: timedelta) -> None:
    assert parse_duration(text) == td
    assert parse_duration(format_duration(td)) == td


def test_bad_duration() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("a week")
