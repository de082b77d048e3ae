"""Realistic AI-usage traffic (seed 004): model calls per organisation, with skew and bursts.

Deterministic for a seed. Organisations follow a Zipf-like size, models a skewed mix with
their own latency (log-normal) and token profiles, traffic follows business hours. Error
bursts — a window of minutes where one model of one org fails a large share of calls and
slows down — are placed where the config says, so a test knows exactly which buckets spike.
A small share of calls is re-delivered (the same request id again, as a queue redelivery
would) and some name a model the price book does not know (loaded unpriced). With
``invalid_rate``, broken calls (the ways a producer breaks them) are added on top, each with
its own request id; they are not in ``distinct`` and end in quarantine.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gristmill.core.clock import from_datetime, iso

HOUR_WEIGHTS = [2, 1, 1, 1, 1, 2, 4, 8, 12, 14, 14, 13, 11, 12, 13, 12, 10, 8, 6, 5, 4, 3, 3, 2]

# (provider, model, share, median latency ms, sigma, mean tokens in, mean tokens out)
MODELS: list[tuple[str, str, float, float, float, int, int]] = [
    ("openai", "gpt-4o-mini", 0.40, 600, 0.45, 900, 250),
    ("openai", "gpt-4o", 0.22, 1400, 0.5, 1800, 450),
    ("anthropic", "claude-3-5-sonnet", 0.15, 1800, 0.5, 2200, 600),
    ("anthropic", "claude-3-5-haiku", 0.10, 700, 0.4, 1200, 300),
    ("google", "gemini-1.5-flash", 0.08, 500, 0.4, 1500, 350),
    ("openai", "o3-mini", 0.04, 5200, 0.6, 1600, 2400),
    ("acme", "acme-experimental", 0.01, 900, 0.5, 800, 200),  # not in the price book
]
ERROR_CODES = ["rate_limited", "upstream_5xx", "context_length", "overloaded"]


@dataclass(frozen=True)
class Burst:
    """Calls of ``org``/``model`` from ``start`` for ``minutes`` fail at ``error_rate`` and
    take ``slowdown`` times longer."""

    org: str
    model: str
    start: datetime
    minutes: int = 60
    error_rate: float = 0.5
    slowdown: float = 4.0
    calls: int = 400


@dataclass
class UsageConfig:
    events: int = 100_000
    days: int = 14
    orgs: int = 12
    seed: int = 11
    duplicate_rate: float = 0.01
    error_rate: float = 0.01
    timeout_rate: float = 0.003
    invalid_rate: float = 0.0
    bursts: list[Burst] = field(default_factory=list)
    end: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class UsageTraffic:
    events: list[dict[str, Any]]
    """Native envelopes, re-deliveries included, in send order."""
    distinct: list[dict[str, Any]]
    """Each request once (what the warehouse must hold)."""
    duplicates: int
    invalid: int = 0
    """Broken calls added (schema violations), not in ``distinct``."""


def org_name(i: int) -> str:
    return f"org_{i:03d}"


def generate_usage(cfg: UsageConfig) -> UsageTraffic:
    rng = random.Random(cfg.seed)  # noqa: S311 - reproducible demo data, not secrets
    orgs = [org_name(i) for i in range(cfg.orgs)]
    org_w = [1 / (i + 1) ** 1.05 for i in range(cfg.orgs)]
    projects = {o: [f"{o}_prj_{j}" for j in range(1 + i % 4)] for i, o in enumerate(orgs)}
    keys = {o: [f"{o}_key_{j}" for j in range(2 + i % 3)] for i, o in enumerate(orgs)}
    start = cfg.end - timedelta(days=cfg.days)
    end_us = from_datetime(cfg.end)
    n = 0

    def call(
        org: str, model: tuple[Any, ...], at: datetime, *, burst: Burst | None
    ) -> dict[str, Any]:
        nonlocal n
        n += 1
        provider, name, _, median, sigma, t_in, t_out = model
        slow = burst.slowdown if burst else 1.0
        latency = int(median * slow * math.exp(rng.gauss(0, sigma)))
        err_p = burst.error_rate if burst else cfg.error_rate
        r = rng.random()
        status = "error" if r < err_p else "timeout" if r < err_p + cfg.timeout_rate else "ok"
        tokens_in = max(1, int(rng.expovariate(1 / t_in)))
        cached = int(tokens_in * rng.choice([0, 0, 0, 0.25, 0.5, 0.9]))
        tokens_out = 0 if status != "ok" else max(1, int(rng.expovariate(1 / t_out)))
        props: dict[str, Any] = {
            "org_id": org,
            "project_id": rng.choice(projects[org]),
            "api_key_id": rng.choice(keys[org]),
            "model": name,
            "provider": provider,
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "cached_tokens": cached,
            "latency_ms": latency if status != "timeout" else max(latency, 30_000),
            "status": status,
            "error_code": None if status == "ok" else rng.choice(ERROR_CODES),
        }
        return {
            "event_id": f"req_{rng.getrandbits(64):016x}{n:08x}",
            "event_type": "usage_recorded",
            "occurred_at": iso(min(from_datetime(at), end_us - 1)),
            "properties": props,
        }

    distinct: list[dict[str, Any]] = []
    model_w = [m[2] for m in MODELS]
    burst_calls = sum(b.calls for b in cfg.bursts)
    for _ in range(max(0, cfg.events - burst_calls)):
        d = rng.randrange(cfg.days)
        h = rng.choices(range(24), HOUR_WEIGHTS)[0]
        at = start + timedelta(days=d, hours=h, seconds=rng.randrange(3600))
        if at >= cfg.end:
            at = cfg.end - timedelta(seconds=rng.randrange(1, 3600))
        org = rng.choices(orgs, org_w)[0]
        distinct.append(call(org, rng.choices(MODELS, model_w)[0], at, burst=None))
    for b in cfg.bursts:
        model = next(m for m in MODELS if m[1] == b.model)
        for _ in range(b.calls):
            at = b.start + timedelta(seconds=rng.randrange(b.minutes * 60))
            distinct.append(call(b.org, model, at, burst=b))
    rng.shuffle(distinct)
    # A re-delivery comes some time after its first delivery, as a queue's redelivery would.
    order: list[tuple[float, int]] = [(float(i), i) for i in range(len(distinct))]
    n_dups = int(len(distinct) * cfg.duplicate_rate)
    for _ in range(n_dups):
        i = rng.randrange(len(distinct))
        order.append((rng.uniform(i, len(distinct)), i))
    order.sort()
    events = [distinct[i] for _, i in order]
    n_bad = int(len(distinct) * cfg.invalid_rate)
    for k in range(n_bad):
        bad = dict(events[rng.randrange(len(events))])
        props = dict(bad["properties"])
        if k % 3 == 0:
            props["tokens_in"] = f"{props['tokens_in']:,}"  # a formatted number, not an integer
        elif k % 3 == 1:
            props["status"] = "cancelled"  # not one of ok, error, timeout
        else:
            del props["org_id"]  # nobody to bill
        bad["properties"] = props
        bad["event_id"] = f"req_bad_{rng.getrandbits(48):012x}{k:06x}"
        events.insert(rng.randrange(len(events) + 1), bad)
    return UsageTraffic(events, distinct, n_dups, n_bad)
