"""Presets in hours roll across midnight; presets in days start at a local midnight."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gristmill.core.errors import Problem
from gristmill.metrics.timerange import preset_range
from gristmill.pack.analytics import ViewSpec


def test_hours_preset_just_after_midnight_keeps_yesterday_evening() -> None:
    now = datetime(2026, 12, 5, 0, 36, tzinfo=UTC)
    day = preset_range("1d", ZoneInfo("UTC"), now)
    hours = preset_range("24h", ZoneInfo("UTC"), now)
    assert day.start == datetime(2026, 12, 5, tzinfo=UTC)
    assert hours.start == datetime(2026, 12, 4, 1, tzinfo=UTC)
    assert hours.end == now
    assert hours.preset == "24h"


def test_hours_floor_in_the_callers_zone() -> None:
    # Kolkata is UTC+5:30: its hours start at half past in UTC.
    now = datetime(2026, 12, 5, 0, 45, tzinfo=UTC)
    r = preset_range("2h", ZoneInfo("Asia/Kolkata"), now)
    assert r.start == datetime(2026, 12, 4, 23, 30, tzinfo=UTC)


def test_hours_across_a_dst_change_count_elapsed_hours() -> None:
    # New York springs forward at 02:00 on 2026-03-08: the day has 23 hours, 24h still has 24.
    now = datetime(2026, 3, 8, 16, 10, tzinfo=UTC)  # 12:10 EDT
    r = preset_range("24h", ZoneInfo("America/New_York"), now)
    assert r.start == datetime(2026, 3, 7, 17, tzinfo=UTC)
    assert (now.replace(minute=0) - r.start) == timedelta(hours=23)
    day = preset_range("1d", ZoneInfo("America/New_York"), now)
    assert day.start == datetime(2026, 3, 8, 5, tzinfo=UTC)  # midnight EST


@pytest.mark.parametrize("bad", ["0h", "24x", "h", "10000h", "1.5d"])
def test_malformed_presets_are_refused(bad: str) -> None:
    with pytest.raises(Problem) as err:
        preset_range(bad, ZoneInfo("UTC"), datetime(2026, 1, 1, tzinfo=UTC))
    assert err.value.status == 400
    assert "24h" in err.value.detail


def test_pack_views_accept_hour_presets() -> None:
    spec = ViewSpec.model_validate(
        {
            "route": "/x",
            "roles": ["admin"],
            "kpis": ["orders"],
            "presets": ["24h", "7d"],
            "default_preset": "24h",
        }
    )
    assert spec.default_preset == "24h"
    with pytest.raises(ValueError, match="default_preset"):
        ViewSpec.model_validate(
            {
                "route": "/x",
                "roles": ["admin"],
                "kpis": ["orders"],
                "presets": ["7d"],
                "default_preset": "24h",
            }
        )
