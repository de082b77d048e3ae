"""Error rates, latency percentiles and spikes per dimension value and time bucket.

Inputs are metric-layer rows (counts per bucket and dimension value, and counts per latency
bin), so every number here is as exact as the metric layer: counts from rollups or rows, and
percentiles read from a mergeable histogram (core/sketch.py, within the bins' relative error)
or passed in exact from rows.

A bucket **spikes** when it has at least ``min_requests`` calls and its error rate (or its
p95 latency) exceeds ``factor`` times the same dimension value's figure over the
``baseline_buckets`` buckets before it — the trailing window, which the caller's range is
extended backwards to cover, so the first bucket of a range has a baseline too — and the
excess is unlikely to be chance: a binomial tail bound below ``significance`` for the errors
(against ``factor`` times the baseline rate) or for the calls slower than ``factor`` times the
baseline p95 (against the baseline's share of such calls). Small buckets with one unlucky
call do not page anyone.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gristmill.core import sketch

Key = tuple[Any, ...]


@dataclass
class Series:
    """Per dimension key, per bucket index: requests, errors and a latency histogram."""

    labels: list[str]
    requests: dict[Key, list[int]] = field(default_factory=dict)
    errors: dict[Key, list[int]] = field(default_factory=dict)
    hist: dict[Key, list[dict[int, int]]] = field(default_factory=dict)

    def _slot(self, key: Key) -> None:
        if key not in self.requests:
            n = len(self.labels)
            self.requests[key] = [0] * n
            self.errors[key] = [0] * n
            self.hist[key] = [defaultdict(int) for _ in range(n)]

    def add_counts(self, key: Key, i: int, requests: int, errors: int) -> None:
        self._slot(key)
        self.requests[key][i] += requests
        self.errors[key][i] += errors

    def add_bin(self, key: Key, i: int, b: int, n: int) -> None:
        self._slot(key)
        self.hist[key][i][b] += n


def merged(hists: Sequence[dict[int, int]]) -> dict[int, int]:
    out: dict[int, int] = defaultdict(int)
    for h in hists:
        for b, n in h.items():
            out[b] += n
    return out


def rate(errors: int, requests: int) -> float | None:
    return None if requests == 0 else round(errors / requests, 6)


@dataclass(frozen=True)
class SpikeRule:
    baseline_buckets: int
    factor: float
    min_requests: int
    min_error_rate: float
    significance: float


def tail_bound(k: int, n: int, p: float) -> float:
    """An upper bound on P(X >= k) for X ~ Binomial(n, p): the Chernoff bound
    ``exp(-n D(k/n || p))``. Conservative (a bucket it calls significant surely is) and cheap
    for any n, unlike summing the exact tail of a bucket with 100k calls."""
    if n == 0 or k == 0:
        return 1.0
    x = k / n
    if x <= p:
        return 1.0
    if p <= 0:
        return 0.0
    d = x * math.log(x / p)
    if x < 1:
        d += (1 - x) * math.log((1 - x) / (1 - p))
    return math.exp(-n * d)


def _share_above(hist: dict[int, int], threshold: float, g: float) -> tuple[int, int]:
    """(calls whose bin lies wholly above ``threshold``, all calls) of a histogram."""
    total = sum(hist.values())
    above = sum(c for b, c in hist.items() if b != sketch.ZERO_BIN and g ** (b - 1) >= threshold)
    return above, total


class _Window:
    """The trailing ``size`` buckets of one dimension value, kept as running sums: each
    bucket is added once and dropped once, instead of the window being summed again for
    every bucket it is the baseline of."""

    def __init__(self, req: list[int], err: list[int], hist: list[dict[int, int]]) -> None:
        self.req, self.err, self.hist = req, err, hist
        self.requests = self.errors = 0
        self.bins: dict[int, int] = defaultdict(int)

    def add(self, i: int, sign: int = 1) -> None:
        self.requests += sign * self.req[i]
        self.errors += sign * self.err[i]
        for b, n in self.hist[i].items():
            self.bins[b] += sign * n
            if not self.bins[b]:
                del self.bins[b]


def spikes(
    s: Series, first: int, rule: SpikeRule, g: float, by: Sequence[str]
) -> list[dict[str, Any]]:
    """Spiking buckets at index >= ``first`` (the caller's range; earlier ones are baseline)."""
    out: list[dict[str, Any]] = []
    size = rule.baseline_buckets
    for key in sorted(s.requests, key=lambda k: tuple((v is None, v) for v in k)):
        req, err, hist = s.requests[key], s.errors[key], s.hist[key]
        base = _Window(req, err, hist)
        for j in range(max(0, first - size), first):
            base.add(j)
        dims = dict(zip(by, key, strict=True))
        for i in range(first, len(s.labels)):
            if req[i] >= rule.min_requests and base.requests >= rule.min_requests:
                out += _verdicts(rule, g, s.labels[i], dims, req[i], err[i], hist[i], base)
            base.add(i)  # the window moves on: [i - size + 1, i + 1)
            if i - size >= 0:
                base.add(i - size, -1)
    return out


def _verdicts(
    rule: SpikeRule,
    g: float,
    label: str,
    dims: dict[str, Any],
    requests: int,
    errors: int,
    hist: dict[int, int],
    base: _Window,
) -> list[dict[str, Any]]:
    """The spikes of one bucket against its trailing window (error rate, p95 latency)."""
    out: list[dict[str, Any]] = []
    here = errors / requests
    rate = base.errors / base.requests
    # A baseline without errors is not a rate of 0: take at least one error's worth, or the
    # first error after a quiet day would always spike.
    floor = max(rate, 1 / base.requests)
    row = {"bucket": label, **dims}
    if (
        here >= rule.min_error_rate
        and here > rule.factor * floor
        and tail_bound(errors, requests, rule.factor * floor) < rule.significance
    ):
        out.append(
            row
            | {
                "kind": "error_rate",
                "value": round(here, 6),
                "baseline": round(rate, 6),
                "requests": requests,
                "baseline_requests": base.requests,
            }
        )
    p95 = sketch.quantile(hist.items(), 0.95, g)
    base_p95 = sketch.quantile(base.bins.items(), 0.95, g)
    if p95 is not None and base_p95 and p95 > rule.factor * base_p95:
        # As many slow calls by chance? Compare the share of calls above the threshold here
        # with the baseline's share above it.
        slow, n_here = _share_above(hist, rule.factor * base_p95, g)
        slow_base, n_base = _share_above(base.bins, rule.factor * base_p95, g)
        q = max(slow_base / n_base, 1 / n_base) if n_base else 1.0
        if tail_bound(slow, n_here, q) < rule.significance:
            out.append(
                row
                | {
                    "kind": "p95_latency",
                    "value": round(p95, 3),
                    "baseline": round(base_p95, 3),
                    "requests": requests,
                    "baseline_requests": base.requests,
                }
            )
    return out
