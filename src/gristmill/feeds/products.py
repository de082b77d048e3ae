"""Resolve product names of a feed against the tenant's products.

Exact first (case- and space-insensitive), then fuzzy: rapidfuzz's normalized Indel
similarity (``fuzz.ratio``, 0-100, the measure PHP's ``similar_text`` percentage the seed
names approximates) at or above the template's threshold. A name is resolved once per file.

Fuzzy matching only ever looks at the catalogue *as it was before the file*: a product the
commit creates is matched exactly (same name, case and spaces aside) and never fuzzily, so
``Latte`` and ``Lattee``, both new in one file, stay two products. And a fuzzy match is a
proposal: the preview lists it (name, product, score, rule) and the commit merges only the
names the user confirmed; any other is a new name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rapidfuzz import fuzz, process, utils

from gristmill.feeds.store import Product, name_key


@dataclass(frozen=True, slots=True)
class Match:
    status: str
    """``exact``, ``fuzzy`` or ``none``."""
    product: Product | None = None
    score: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.product is not None:
            out["product_id"] = self.product.id
            out["product_name"] = self.product.name
        if self.score is not None:
            out["score"] = round(self.score, 1)
        return out


NO_MATCH = Match("none")


class Matcher:
    def __init__(self, catalogue: Sequence[Product], threshold: float) -> None:
        self.threshold = threshold
        self._exact = {name_key(p.name): p for p in catalogue}
        self._names = [p.name for p in catalogue]
        self._by_index = list(catalogue)
        self._cache: dict[str, Match] = {}

    def add_exact(self, products: Sequence[Product]) -> None:
        """Products created during this file: matched by exact name only."""
        for p in products:
            key = name_key(p.name)
            self._exact[key] = p
            self._cache.pop(key, None)

    def rule(self, m: Match) -> str:
        return f"rapidfuzz ratio {m.score:.1f} >= threshold {self.threshold:g}"

    def match(self, name: str) -> Match:
        key = name_key(name)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        exact = self._exact.get(key)
        if exact is not None:
            m = Match("exact", exact)
        else:
            best = process.extractOne(
                name,
                self._names,
                scorer=fuzz.ratio,
                processor=utils.default_process,
                score_cutoff=self.threshold,
            )
            m = Match("fuzzy", self._by_index[best[2]], float(best[1])) if best else NO_MATCH
        if len(self._cache) < 100_000:
            self._cache[key] = m
        return m
