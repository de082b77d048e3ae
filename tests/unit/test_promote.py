"""Promoted values: JSON's loose numbers bridged to columns; values a column cannot hold are
refused in the collector, never handed to the loader."""

from __future__ import annotations

import pytest

from gristmill.collect.pipeline import EventPlan, Unloadable, _promote
from gristmill.pack.models import ColumnType

PLAN = EventPlan(
    (
        ("n", ColumnType.INT64),
        ("x", ColumnType.FLOAT64),
        ("j", ColumnType.JSON),
        ("t", ColumnType.TIMESTAMP),
    ),
    None,
    None,
    frozenset({"n", "x", "j", "t"}),
)


def test_coercions() -> None:
    assert _promote({"n": 3.0, "x": 2, "j": {"a": [1]}, "t": "1970-01-01T00:00:01Z"}, PLAN) == (
        3,
        2.0,
        '{"a":[1]}',
        1_000_000,
    )
    assert _promote({}, PLAN) == (None, None, None, None)


@pytest.mark.parametrize(
    "props", [{"n": 2**63}, {"n": -(2**63) - 1}, {"x": 10**400}, {"t": "not a time"}]
)
def test_unloadable_values(props: dict[str, object]) -> None:
    with pytest.raises(Unloadable):
        _promote(props, PLAN)


def test_int64_bounds_are_loadable() -> None:
    assert _promote({"n": 2**63 - 1}, PLAN)[0] == 2**63 - 1
    assert _promote({"n": -(2**63)}, PLAN)[0] == -(2**63)


def test_columns_other_event_types_promote_stay_null() -> None:
    plan = EventPlan(
        (("a", ColumnType.STRING), ("b", ColumnType.INT64)), None, None, frozenset({"a"})
    )
    # "b" is promoted by another event type of the table; this one's schema never checked it
    assert _promote({"a": "x", "b": {"not": "an int"}}, plan) == ("x", None)


def test_dates_are_checked() -> None:
    plan = EventPlan((("d", ColumnType.DATE),), None, None, frozenset({"d"}))
    assert _promote({"d": "2026-11-02"}, plan) == ("2026-11-02",)
    with pytest.raises(Unloadable):
        _promote({"d": "yesterday"}, plan)
