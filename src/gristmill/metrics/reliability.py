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


def spikes(
    s: Series, first: int, rule: SpikeRule, g: float, by: Sequence[str]
) -> list[dict[str, Any]]:
    """Spiking buckets at index >= ``first`` (the caller's range; earlier ones are baseline)."""
    out: list[dict[str, Any]] = []
    for key in sorted(s.requests, key=lambda k: tuple((v is None, v) for v in k)):
        req, err, hist = s.requests[key], s.errors[key], s.hist[key]
        for i in range(first, len(s.labels)):
            if req[i] < rule.min_requests:
                continue
            lo = max(0, i - rule.baseline_buckets)
            base_req, base_err = sum(req[lo:i]), sum(err[lo:i])
            if base_req < rule.min_requests:
                continue  # no baseline to compare with
            dims = dict(zip(by, key, strict=True))
            here = err[i] / req[i]
            base = base_err / base_req
            # A baseline without errors is not a rate of 0: take at least one error's worth,
            # or the first error after a quiet day would always spike.
            floor = max(base, 1 / base_req)
            if (
                here >= rule.min_error_rate
                and here > rule.factor * floor
                and tail_bound(err[i], req[i], rule.factor * floor) < rule.significance
            ):
                out.append(
                    {
                        "bucket": s.labels[i],
                        **dims,
                        "kind": "error_rate",
                        "value": round(here, 6),
                        "baseline": round(base, 6),
                        "requests": req[i],
                        "baseline_requests": base_req,
                    }
                )
            p95 = sketch.quantile(hist[i].items(), 0.95, g)
            base_hist = merged(hist[lo:i])
            base_p95 = sketch.quantile(base_hist.items(), 0.95, g)
            if p95 is not None and base_p95 and p95 > rule.factor * base_p95:
                # As many slow calls by chance? Compare the share of calls above the
                # threshold here with the baseline's share above it.
                slow, n_here = _share_above(hist[i], rule.factor * base_p95, g)
                slow_base, n_base = _share_above(base_hist, rule.factor * base_p95, g)
                q = max(slow_base / n_base, 1 / n_base) if n_base else 1.0
                if tail_bound(slow, n_here, q) >= rule.significance:
                    continue
                out.append(
                    {
                        "bucket": s.labels[i],
                        **dims,
                        "kind": "p95_latency",
                        "value": round(p95, 3),
                        "baseline": round(base_p95, 3),
                        "requests": req[i],
                        "baseline_requests": base_req,
                    }
                )
    return out
