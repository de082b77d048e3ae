"""A pack's price book and the spend it computes (``enrichment.pricing`` in pack.yaml).

Spend is computed by Gristmill, never taken from the producer: each event's quantities
(tokens in, out, cached) times the price in force **at the event's time** for its match key
(provider, model). Prices are decimal strings per ``per_units`` units (``"2.50"`` per million
tokens); arithmetic is on exact fractions and the result is rounded once per event, half up,
to a whole micro-unit of the currency. Every total — rollup, API answer, export — is then a
sum of integers, which is why they reconcile to 0 difference.

An event whose key has no price at its time gets no spend (NULL), never 0: it is counted as
*unpriced* by a metric over that NULL, so a missing price is visible, not a silent discount.
When the book changes, ``gristmill reprice`` recomputes stored spend with this same function.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gristmill.core.errors import ConfigError
from gristmill.pack.names import IDENT

Ident = Annotated[str, Field(pattern=IDENT)]
MICROS = 1_000_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PricingSpec(_Model):
    """``enrichment.pricing``: which column gets the spend and how events meet prices."""

    column: Ident
    """An ``int64`` column: spend in micro-units of the book's currency (NULL when unpriced)."""
    book: str = "prices.yaml"
    """The price book file, in the pack folder."""
    match: list[Ident] = Field(min_length=1)
    """Properties whose values name a price (``[provider, model]``)."""
    quantities: dict[Ident, Ident] = Field(min_length=1)
    """price name -> property holding how many units were used (``input: tokens_in``)."""
    included_in: dict[Ident, Ident] = {}
    """price -> price whose units already count these (``cached: input``: cached tokens are
    part of ``tokens_in`` and are billed once, at the cached price)."""


def _decimal(v: Any) -> str:
    if isinstance(v, float):
        raise ValueError("write prices as strings ('2.50'): a float is not exact")
    try:
        d = Decimal(str(v))
    except InvalidOperation:
        raise ValueError(f"{v!r} is not a decimal number") from None
    if not d.is_finite() or d < 0:
        raise ValueError(f"{v!r} is not a price")
    return str(d)


class PriceEntry(_Model):
    match: dict[Ident, str]
    """Values of the spec's ``match`` properties (``{provider: openai, model: gpt-4o}``)."""
    effective_from: date
    """UTC date from which this price applies (until the next entry of the same key)."""
    prices: dict[Ident, Annotated[str, Field(min_length=1)]]
    """price name -> decimal string per ``per_units`` units."""

    @field_validator("prices", mode="before")
    @classmethod
    def _exact(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: _decimal(x) for k, x in v.items()}
        return v


class PriceBookSpec(_Model):
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    per_units: int = Field(1_000_000, ge=1)
    """Prices are per this many units (per million tokens by default)."""
    entries: list[PriceEntry] = Field(min_length=1)


def _us(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()) * MICROS


@dataclass(frozen=True)
class PriceBook:
    """A loaded book: per match key, entries sorted by effective time."""

    spec: PriceBookSpec
    pricing: PricingSpec
    digest: str
    """Hash of the book file: part of the pack fingerprint and of every reprice report."""
    _starts: dict[tuple[str, ...], list[int]] = field(default_factory=dict)
    _prices: dict[tuple[str, ...], list[dict[str, Fraction]]] = field(default_factory=dict)

    @classmethod
    def build(cls, spec: PriceBookSpec, pricing: PricingSpec, digest: str) -> PriceBook:
        book = cls(spec, pricing, digest)
        rows: dict[tuple[str, ...], list[tuple[int, dict[str, Fraction]]]] = {}
        for e in spec.entries:
            key = tuple(e.match[m] for m in pricing.match)
            prices = {k: Fraction(Decimal(v)) for k, v in e.prices.items()}
            rows.setdefault(key, []).append((_us(e.effective_from), prices))
        for key, items in rows.items():
            items.sort(key=lambda t: t[0])
            book._starts[key] = [t for t, _ in items]
            book._prices[key] = [p for _, p in items]
        return book

    def price_at(self, key: tuple[str, ...], at_us: int) -> dict[str, Fraction] | None:
        starts = self._starts.get(key)
        if not starts:
            return None
        i = bisect.bisect_right(starts, at_us) - 1
        return None if i < 0 else self._prices[key][i]

    def spend_micros(self, props: Mapping[str, Any], at_us: int) -> int | None:
        """Spend of one event in micro-units, or None when no price covers it."""
        key = tuple(str(props.get(m)) for m in self.pricing.match)
        prices = self.price_at(key, at_us)
        if prices is None:
            return None
        units: dict[str, int] = {}
        for name, prop in self.pricing.quantities.items():
            v = props.get(prop)
            units[name] = int(v) if isinstance(v, int) and not isinstance(v, bool) else 0
        for part, whole in self.pricing.included_in.items():
            units[whole] = max(0, units.get(whole, 0) - units.get(part, 0))
        total = Fraction(0)
        for name, n in units.items():
            if n == 0:
                continue
            price = prices.get(name)
            if price is None:
                return None  # a quantity the book does not price: unpriced, not free
            total += n * price
        exact = total * MICROS / self.spec.per_units
        return int((exact + Fraction(1, 2)) // 1)  # half up; spend is never negative


def load_book(root: Path, pricing: PricingSpec) -> PriceBook:
    """Load ``<pack>/<pricing.book>``; errors name the file and the entry."""
    file = root / pricing.book
    try:
        text = file.read_text(encoding="utf-8")
        raw = yaml.safe_load(text)
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such file (enrichment.pricing.book)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    try:
        spec = PriceBookSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            "\n".join(
                f"{file} {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
        ) from exc
    problems: list[str] = []
    seen: set[tuple[tuple[str, ...], date]] = set()
    for i, e in enumerate(spec.entries):
        if set(e.match) != set(pricing.match):
            problems.append(f"entries.{i}.match: give exactly {', '.join(pricing.match)}")
            continue
        unknown = set(e.prices) - set(pricing.quantities)
        if unknown:
            problems.append(f"entries.{i}.prices: unknown price names {sorted(unknown)}")
        k = (tuple(e.match[m] for m in pricing.match), e.effective_from)
        if k in seen:
            problems.append(f"entries.{i}: a second price for the same key and date")
        seen.add(k)
    if problems:
        raise ConfigError("\n".join(f"{file} {p}" for p in problems))
    return PriceBook.build(spec, pricing, hashlib.sha256(text.encode()).hexdigest()[:16])
