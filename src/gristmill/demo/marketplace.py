"""Realistic marketplace traffic (seed 000): orders, payments, cash, payouts and ads.

Deterministic for a seed. Volume grows over the period, dips at weekends and follows
business hours; vendors and buyers follow a Zipf-like popularity, order values a log-normal.
A small share of events is re-sent (duplicates) and a small share is broken in the ways real
clients break them (wrong types, missing fields, unknown types, bad timestamps).
"""

from __future__ import annotations

import math
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gristmill.core.clock import MICROS, from_datetime, iso

HOUR_WEIGHTS = [1, 1, 1, 1, 1, 2, 4, 8, 12, 14, 14, 13, 11, 12, 13, 12, 10, 8, 6, 4, 3, 2, 2, 1]
PLACEMENTS = ["search", "category", "home", "product_page"]
PAYMENT_METHODS = ["card", "ach", "account", "cash"]


@dataclass
class DemoConfig:
    events: int = 250_000
    days: int = 90
    vendors: int = 36
    buyers: int = 180
    seed: int = 7
    duplicate_rate: float = 0.01
    invalid_rate: float = 0.004
    end: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class DemoTraffic:
    """Events to send, with the expected outcome for checking."""

    events: list[dict[str, Any]]
    sources: list[str]
    """Source of each event, same order as ``events``."""
    valid_ids: set[tuple[str, str]]
    """(source, event_id) of every distinct valid event."""
    invalid: int
    duplicates: int


def _zipf_weights(n: int, s: float = 1.1) -> list[float]:
    return [1 / (i + 1) ** s for i in range(n)]


def generate(cfg: DemoConfig) -> DemoTraffic:
    rng = random.Random(cfg.seed)  # noqa: S311 - reproducible demo data, not secrets
    vendors = [f"vnd_{i:03d}" for i in range(cfg.vendors)]
    buyers = [f"str_{i:04d}" for i in range(cfg.buyers)]
    v_weights = _zipf_weights(cfg.vendors)
    b_weights = _zipf_weights(cfg.buyers, 0.8)
    price_scale = {v: rng.uniform(0.6, 1.8) for v in vendors}
    start = (cfg.end - timedelta(days=cfg.days)).replace(minute=0, second=0, microsecond=0)
    day_weights = []
    for d in range(cfg.days):
        day = start + timedelta(days=d)
        growth = 0.6 + 0.4 * d / max(1, cfg.days - 1)
        weekend = 0.55 if day.weekday() >= 5 else 1.0
        day_weights.append(growth * weekend)
    end_us = from_datetime(cfg.end)

    def when() -> int:
        d = rng.choices(range(cfg.days), day_weights)[0]
        h = rng.choices(range(24), HOUR_WEIGHTS)[0]
        t = start + timedelta(days=d, hours=h, seconds=rng.randrange(3600))
        return min(from_datetime(t), end_us - MICROS)

    def eid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    out: list[tuple[int, str, dict[str, Any]]] = []

    def emit(ts: int, source: str, event_type: str, props: dict[str, Any], **extra: Any) -> None:
        ev = {
            "event_id": eid(),
            "event_type": event_type,
            "occurred_at": iso(ts),
            "schema_version": 1,
            "properties": props,
            **extra,
        }
        out.append((ts, source, ev))

    orders = int(cfg.events * 0.222)
    paid_by_vendor_week: dict[tuple[str, int], list[int]] = defaultdict(list)
    for n in range(orders):
        ts = when()
        vendor = rng.choices(vendors, v_weights)[0]
        buyer = rng.choices(buyers, b_weights)[0]
        amount = int(rng.lognormvariate(math.log(45_000), 0.7) * price_scale[vendor])
        base = {
            "order_id": f"ord_{n:07d}",
            "store_id": buyer,
            "vendor_store_id": vendor,
            "amount_cents": amount,
        }
        user = f"usr_{buyer}_{rng.randrange(3)}"
        emit(ts, "backend", "order_created", base, user_id=user)
        if rng.random() < 0.86:
            paid_at = ts + int(rng.expovariate(1 / 7200) * MICROS)
            method = rng.choices(PAYMENT_METHODS, [5, 3, 2, 3])[0]
            if paid_at < end_us:
                emit(
                    paid_at,
                    "backend",
                    "order_paid",
                    {**base, "payment_method": method},
                    user_id=user,
                )
                week = (paid_at - from_datetime(start)) // (7 * 86400 * MICROS)
                paid_by_vendor_week[(vendor, int(week))].append(amount)
                if method == "cash" or rng.random() < 0.25:
                    cash_at = paid_at + int(rng.uniform(3600, 86400 * 2) * MICROS)
                    if cash_at < end_us:
                        emit(
                            cash_at,
                            "backend",
                            "cash_collected",
                            {**base, "driver_id": f"drv_{rng.randrange(40):02d}"},
                        )
    for (vendor, week), amounts in sorted(paid_by_vendor_week.items()):
        pay_at = from_datetime(start) + (week + 1) * 7 * 86400 * MICROS + 10 * 3600 * MICROS
        if pay_at < end_us:
            emit(
                pay_at,
                "backend",
                "payout_completed",
                {
                    "payout_id": f"pay_{vendor}_{week:02d}",
                    "vendor_store_id": vendor,
                    "amount_cents": int(sum(amounts) * 0.9),
                    "order_count": len(amounts),
                },
            )
    remaining = max(0, cfg.events - len(out))
    campaigns = {v: [f"cmp_{v}_{k}" for k in range(rng.randint(1, 4))] for v in vendors}
    for _ in range(remaining):
        ts = when()
        vendor = rng.choices(vendors, v_weights)[0]
        campaign = rng.choice(campaigns[vendor])
        kind = "ad_click" if rng.random() < 0.035 else "ad_impression"
        emit(
            ts,
            "adserver",
            kind,
            {
                "ad_id": f"ad_{campaign}_{rng.randrange(3)}",
                "campaign_id": campaign,
                "vendor_store_id": vendor,
                "store_id": rng.choices(buyers, b_weights)[0],
                "placement": rng.choice(PLACEMENTS),
                "cost_cents": rng.randint(30, 250) if kind == "ad_click" else rng.randint(0, 3),
            },
            session_id=f"ses_{rng.getrandbits(40):010x}",
        )
    out.sort(key=lambda t: t[0])

    events = [ev for _, _, ev in out]
    sources = [src for _, src, _ in out]
    valid_ids = {(s, e["event_id"]) for s, e in zip(sources, events, strict=True)}
    # Break some events the ways clients do; they replace valid ones.
    invalid = 0
    for i in rng.sample(range(len(events)), int(len(events) * cfg.invalid_rate)):
        ev = dict(events[i])
        valid_ids.discard((sources[i], ev["event_id"]))
        ev["event_id"] = eid()
        breakage = i % 5
        if breakage == 0:
            ev["properties"] = (
                {**ev["properties"], "amount_cents": "12.50"}
                if "amount_cents" in ev["properties"]
                else {**ev["properties"], "cost_cents": -1}
            )
        elif breakage == 1:
            ev["properties"] = {
                k: v for k, v in ev["properties"].items() if k not in ("vendor_store_id",)
            }
        elif breakage == 2:
            ev["event_type"] = "order_refunded"
        elif breakage == 3:
            ev["occurred_at"] = "yesterday afternoon"
        else:
            del ev["event_id"]
        events[i] = ev
        invalid += 1
    # Re-send some events later in the stream (client retries, outbox re-deliveries).
    dups = int(len(events) * cfg.duplicate_rate)
    for _ in range(dups):
        i = rng.randrange(len(events))
        j = min(len(events), i + rng.randint(1, 5000))
        events.insert(j, events[i])
        sources.insert(j, sources[i])
    return DemoTraffic(events, sources, valid_ids, invalid, dups)
