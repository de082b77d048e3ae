"""The dashboard's number rules (ui_format.py): one money rule, distinct labels and ticks."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gristmill.api.routers.ui_format import (
    chart_title,
    dollars,
    exact_money,
    fmt,
    label,
    money_text,
    nice_step,
    y_axis,
)
from gristmill.pack.analytics import MetricSpec


def test_money_is_half_up_on_the_exact_decimal() -> None:
    # 562.5 cents: a float division and "%.2f" said $5.62 (round-half-even on a binary
    # float); the API and the feeds workbench say $5.63.
    assert f"{562.5 / 100:.2f}" == "5.62"
    assert fmt(562.5, "cents") == "$5.63"
    assert fmt(100.5, "cents") == "$1.01"  # 1.005 is 1.00499… as a float
    assert fmt(-250, "cents") == "-$2.50"
    assert fmt(123456789, "cents") == "$1,234,567.89"
    assert fmt(1_234_565, "micros") == "$1.23"
    assert fmt(1_235_000, "micros") == "$1.24"
    assert fmt(None, "cents") == "n/a"
    assert money_text(dollars("0.005", "cents")) == "$0.00"


def test_money_ratio_is_divided_from_its_parts() -> None:
    """AOV from GMV and orders is rounded once: 562.4963 cents is $5.62, although the API's
    two-decimal AOV (562.50) would round to $5.63 a second time."""
    metrics = {
        "gmv_cents": MetricSpec(type="sum", table="t", column="amount_cents", unit="cents"),
        "orders": MetricSpec(type="count", table="t"),
        "aov_cents": MetricSpec(
            type="ratio", numerator="gmv_cents", denominator="orders", unit="cents"
        ),
    }
    row = {"gmv_cents": 1_124_992_600, "orders": 2_000_000, "aov_cents": 562.5}
    assert exact_money("aov_cents", metrics, row) == Decimal("5.624963")
    assert money_text(exact_money("aov_cents", metrics, row)) == "$5.62"
    assert money_text(exact_money("aov_cents", metrics, {"aov_cents": 562.5})) == "$5.63"
    assert exact_money("aov_cents", metrics, {"gmv_cents": 0, "orders": 0}) is None
    assert exact_money("orders", metrics, row) is None


def test_count_and_amount_read_differently() -> None:
    names = ["payouts_completed", "payouts_completed_cents", "gmv_cents"]
    assert label("payouts_completed", None, names) == "Payouts completed · count"
    assert label("payouts_completed_cents", "cents", names) == "Payouts completed · amount"
    assert label("gmv_cents", "cents", names) == "GMV"
    assert chart_title("gmv_cents", "cents", names, "day") == "GMV per day"
    assert (
        chart_title("payouts_completed_cents", "cents", names, "day")
        == "Payouts completed per day · amount"
    )
    assert chart_title("spend_micros", "micros", [], "hour", "model") == "Spend per hour by model"


@pytest.mark.parametrize(
    ("values", "money", "percent"),
    [
        ([0.5, 1.2, 2.4], True, False),  # $1, $1, $2 with a 0.5 step and no cents
        ([0.01, 0.02], True, False),
        ([150.0, 2400.0], True, False),
        ([0, 1, 2, 3], False, False),
        ([0.004, 0.061], False, True),
        ([0.2, 0.7], False, False),
        ([], True, False),
    ],
)
def test_ticks_never_repeat_at_the_shown_precision(
    values: list[float], money: bool, percent: bool
) -> None:
    axis = y_axis(values, money=money, percent=percent)
    fmt_ = axis["tickformat"]
    decimals = int(fmt_.split(".")[1][0])
    scale = 100 if fmt_.endswith("%") else 1
    ticks = [round(i * axis["dtick"] * scale, decimals) for i in range(12)]
    assert len(set(ticks)) == len(ticks), (axis, ticks)
    top = max(values, default=0)
    assert axis["dtick"] * 8 >= top  # a handful of ticks, not hundreds


def test_nice_step() -> None:
    assert nice_step(37 * 5, 0) == 50
    assert nice_step(0.15, 2) == 0.05
    assert nice_step(3, 0) == 1
    assert nice_step(0, 2) == 0.01


def test_fraction_shows_as_percent() -> None:
    assert fmt(0.0322, "fraction") == "3.22%"
    assert fmt(0.00125, "fraction") == "0.13%"  # half-up
    assert fmt(0, "fraction") == "0.00%"
