"""Log-spaced bins with a relative error bound: a mergeable latency histogram.

A value ``x > 0`` falls in bin ``i = ceil(log_g x)``, the interval ``(g^(i-1), g^i]``, with
``g = (1 + a) / (1 - a)`` for relative error ``a``. Every value of bin ``i`` is within a
relative ``a`` of the bin's representative ``2 g^i / (g + 1)`` — the DDSketch construction.
Bins are plain integers, so a histogram is a count per (bucket, dimensions, bin): rollups
keep it with ``count`` alone, and merging two histograms is adding counts, exact under late
and duplicate events like any other count. A quantile read from the merged counts is within
``a`` (relative) of the exact one computed from rows with the same rank rule; interpolating
between two such values keeps the bound, since each is within ``a`` of its true value.

``x <= 0`` has its own bin, :data:`ZERO_BIN`, whose representative is 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

ZERO_BIN = -(2**31)


def gamma(relative_error: float) -> float:
    if not 0 < relative_error < 1:
        raise ValueError("relative_error must be between 0 and 1")
    return (1 + relative_error) / (1 - relative_error)


def bin_of(x: float, g: float) -> int:
    if x <= 0:
        return ZERO_BIN
    return math.ceil(math.log(x) / math.log(g))


def value_of(i: int, g: float) -> float:
    """The representative of bin ``i``: within ``a`` of every value the bin holds."""
    if i == ZERO_BIN:
        return 0.0
    return 2 * g**i / (g + 1)


def quantile(counts: Iterable[tuple[int, int]], p: float, g: float) -> float | None:
    """Quantile ``p`` (0..1) of a histogram given as (bin, count) pairs, with the
    interpolating rule of ``percentile_cont`` / ``quantile_cont``: position ``p (n - 1)``
    between the order statistics around it. None for an empty histogram."""
    bins = sorted((b, c) for b, c in counts if c > 0)
    n = sum(c for _, c in bins)
    if n == 0:
        return None
    pos = p * (n - 1)
    lo = math.floor(pos)
    frac = pos - lo
    a = _at(bins, lo, g)
    if frac == 0:
        return a
    b = _at(bins, lo + 1, g)
    return a + frac * (b - a)


def _at(bins: list[tuple[int, int]], rank: int, g: float) -> float:
    """The representative of the value at 0-based ``rank`` in sorted order."""
    seen = 0
    for b, c in bins:
        seen += c
        if rank < seen:
            return value_of(b, g)
    return value_of(bins[-1][0], g)


def exact_quantile(values: Iterable[float], p: float) -> float | None:
    """The same rule over raw values (tests and the exact path's oracle)."""
    xs = sorted(values)
    if not xs:
        return None
    pos = p * (len(xs) - 1)
    lo = math.floor(pos)
    frac = pos - lo
    if frac == 0 or lo + 1 >= len(xs):
        return float(xs[lo])
    return xs[lo] + frac * (xs[lo + 1] - xs[lo])
