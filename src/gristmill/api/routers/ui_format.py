"""How the dashboard writes numbers: one money rule, labels that tell a count from an amount,
chart titles in words, and y axes whose ticks never repeat.

Money rule (docs/analytics.md, "Dashboard"): an amount is shown to the cent, rounded half-up
from the exact decimal value. The exact value is ``Decimal(str(api_value)) / scale`` — never a
float division — and a money ratio (AOV = GMV / orders) is divided exactly from its numerator
and denominator when the same answer carries them, so it is rounded once, not twice. Every
money text on the page (cards, chart hover labels, tables) is made here, on the server; the
browser only places it. The old ``f"{v / 100:.2f}"`` rounded ``562.5`` cents to ``$5.62``
(binary float, round-half-even) where the API and the feeds workbench say ``$5.63``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from typing import Any

from gristmill.pack.analytics import MetricSpec

MONEY_UNITS = {"cents": 100, "micros": 1_000_000}
FRACTION = "fraction"
"""A metric unit for shares (click-through rate): the value 0.0322 is shown as 3.22%."""
CENT = Decimal("0.01")
ACRONYMS = {"gmv": "GMV", "aov": "AOV", "ctr": "CTR", "p95": "p95", "p50": "p50", "ms": "ms"}
GRAIN_WORDS = {"hour": "per hour", "day": "per day", "week": "per week", "month": "per month"}


def dollars(value: Any, unit: str) -> Decimal | None:
    """The exact amount in dollars of an API value in ``unit`` (cents, micros)."""
    if value is None:
        return None
    try:
        with localcontext() as ctx:
            ctx.prec = 60
            return Decimal(str(value)) / MONEY_UNITS[unit]
    except InvalidOperation:
        return None


def money_text(amount: Decimal | None) -> str:
    """``$1,234.57``: half-up to the cent of the exact amount."""
    if amount is None:
        return "n/a"
    with localcontext() as ctx:
        ctx.prec = 60
        cents = amount.quantize(CENT, rounding=ROUND_HALF_UP)
    sign = "-" if cents < 0 else ""
    return f"{sign}${abs(cents):,.2f}"


def fmt(value: Any, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit in MONEY_UNITS:
        return money_text(dollars(value, unit))
    if unit == FRACTION:  # 0.0322 → 3.22%, half-up like money
        with localcontext() as ctx:
            ctx.prec = 60
            pct = (Decimal(str(value)) * 100).quantize(CENT, rounding=ROUND_HALF_UP)
        return f"{pct}%"
    if isinstance(value, float):
        return f"{value:,.4f}".rstrip("0").rstrip(".")
    return f"{value:,}"


def exact_money(
    name: str, metrics: Mapping[str, MetricSpec], row: Mapping[str, Any]
) -> Decimal | None:
    """A money metric's exact dollars in ``row``; a ratio from its parts when both are there."""
    m = metrics[name]
    if m.unit not in MONEY_UNITS:
        return None
    if m.type == "ratio" and m.numerator in row and m.denominator in row:
        num, den = row[m.numerator or ""], row[m.denominator or ""]
        if num is None or not den:
            return None
        with localcontext() as ctx:
            ctx.prec = 60
            return Decimal(str(num)) / Decimal(str(den)) / MONEY_UNITS[m.unit]
    return dollars(row.get(name), m.unit)


def words(name: str) -> str:
    """``payouts_completed_cents`` → ``Payouts completed``; ``gmv_cents`` → ``GMV``."""
    for suffix in ("_cents", "_micros"):
        name = name.removesuffix(suffix)
    parts = [ACRONYMS.get(p, p) for p in name.split("_")]
    text = " ".join(parts)
    return text[:1].upper() + text[1:]


def label(name: str, unit: str | None = None, siblings: Sequence[str] = ()) -> str:
    """A card label; a count and an amount of the same thing (``payouts_completed`` and
    ``payouts_completed_cents``) get ``· count`` and ``· amount`` so they never read alike."""
    base = words(name)
    if any(s != name and words(s) == base for s in siblings):
        return f"{base} · {'amount' if unit in MONEY_UNITS else 'count'}"
    return base


def chart_title(
    name: str, unit: str | None, siblings: Sequence[str], grain: str | None, by: str = ""
) -> str:
    """``GMV per day``, ``Payouts completed per day · amount``, ``Spend per hour by model``."""
    text = label(name, unit, siblings)
    base, _, tail = text.partition(" · ")
    out = base + (f" {GRAIN_WORDS[grain]}" if grain in GRAIN_WORDS else "")
    if by:
        out += f" by {by.replace('_', ' ')}"
    return out + (f" · {tail}" if tail else "")


NICE = (1, 2, 5)


def nice_step(top: float, decimals: int, ticks: int = 5) -> float:
    """A 1-2-5 step that puts about ``ticks`` ticks under ``top`` and is never finer than one
    unit of the last displayed decimal, so no two ticks print the same text."""
    smallest = 10.0**-decimals
    if top <= 0:
        return smallest
    raw = top / ticks
    exp10 = 10.0 ** len(str(int(raw))) / 10 if raw >= 1 else smallest
    while True:
        for n in NICE:
            step = n * exp10
            if step >= raw and step >= smallest - 1e-12:
                return round(step, decimals)
        exp10 *= 10


def y_axis(values: Sequence[float | None], *, money: bool, percent: bool) -> dict[str, Any]:
    """Plotly ``yaxis`` settings: the tick format and a linear tick step chosen for it.

    Money under $100 shows cents, above it whole dollars; counts show integers; rates show
    one decimal of a percent. ``dtick`` is a multiple of the smallest printed unit, so
    ``$1, $1, $2`` (a 0.5 step printed without cents) cannot happen."""
    top = max((v for v in values if v is not None), default=0.0)
    if percent:
        fmt_, decimals = ".1%", 3
    elif money:
        fmt_, decimals = ("$,.2f", 2) if top < 100 else ("$,.0f", 0)
    else:
        fmt_, decimals = (",.0f", 0) if top >= 5 or float(top).is_integer() else (",.2f", 2)
    step = nice_step(float(top), decimals)
    return {
        "rangemode": "tozero",
        "tickformat": fmt_,
        "tickmode": "linear",
        "tick0": 0,
        "dtick": step,
    }
