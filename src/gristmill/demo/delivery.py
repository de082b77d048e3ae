"""Realistic laundry-delivery traffic (seed 002): branches, orders moving through their
states, drivers pinging along their routes, command-center outreach.

Deterministic for a seed. Each branch has a depot and drivers; an order is created, accepted
minutes later (sometimes never), picked up and delivered (or fails / is cancelled) by one of
the branch's drivers. A driver's shift is a loop of legs depot -> customer -> depot with a
ping every ``ping_s`` seconds along straight segments (plus GPS noise and the odd jump).
Delivery is realistic too: ``events`` is shuffled in chunks (a late event arrives after
later ones), a share is sent twice with the same ``event_id`` (a retry), and a few lifecycle
events are re-emitted under a new id (a producer that emits twice): ``distinct`` holds what
a correct store keeps (one per ``event_id``).
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gristmill.core.clock import from_datetime, iso

# Branch depots (lat, lon) around London and Manchester; the pack's zone is Europe/London.
DEPOTS = [
    (51.5145, -0.0960),
    (51.4613, -0.1156),
    (51.5560, -0.2796),
    (51.5072, 0.0220),
    (53.4794, -2.2453),
    (53.4308, -2.1790),
]
TEMPLATES = ["welcome_back", "pickup_reminder", "loyalty_offer", "late_apology"]
CHANNELS = ["sms", "email", "call", "push"]
CONVERT = {
    "welcome_back": 0.25,
    "pickup_reminder": 0.45,
    "loyalty_offer": 0.15,
    "late_apology": 0.3,
}


@dataclass
class DeliveryConfig:
    days: int = 2
    branches: int = 4
    drivers_per_branch: int = 4
    orders_per_branch_day: int = 40
    ping_s: int = 30
    outreach_per_branch_day: int = 30
    end: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))
    seed: int = 7
    duplicate_rate: float = 0.03
    reemit_rate: float = 0.01
    shuffle_window: int = 50
    """Events are shuffled inside windows of this many (out-of-order arrival)."""
    stale_drivers: int = 1
    """Drivers (the last of the first branches) that stop pinging 40 minutes before ``end``."""


@dataclass
class DeliveryTraffic:
    events: list[dict[str, Any]]
    """In arrival order: shuffled, with duplicates and re-emissions."""
    distinct: list[dict[str, Any]]
    """One per event_id."""
    branches: list[str]
    drivers: dict[str, str]
    """driver -> branch."""


def _ev(event_type: str, at: datetime, props: dict[str, Any], rnd: random.Random) -> dict[str, Any]:
    return {
        "event_id": str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
        "event_type": event_type,
        "occurred_at": iso(from_datetime(at)),
        "properties": props,
        "context": {"app": "laundry-api", "request_id": f"req_{rnd.getrandbits(40):x}"},
    }


def _point(depot: tuple[float, float], rnd: random.Random, km: float) -> tuple[float, float]:
    """A customer address within ``km`` of the depot."""
    r = km * math.sqrt(rnd.random()) / 111.0
    a = rnd.random() * 2 * math.pi
    return depot[0] + r * math.cos(a), depot[1] + r * math.sin(a) / math.cos(math.radians(depot[0]))


def generate_delivery(cfg: DeliveryConfig) -> DeliveryTraffic:
    rnd = random.Random(cfg.seed)  # noqa: S311 - reproducible demo data, not secrets
    start = cfg.end - timedelta(days=cfg.days)
    out: list[dict[str, Any]] = []
    branches = [f"br_{i:02d}" for i in range(cfg.branches)]
    drivers: dict[str, str] = {}
    for bi, branch in enumerate(branches):
        depot = DEPOTS[bi % len(DEPOTS)]
        names = [f"drv_{bi:02d}_{j}" for j in range(cfg.drivers_per_branch)]
        for d in names:
            drivers[d] = branch
        # Orders: created during the day, accepted within minutes, delivered within hours.
        for n in range(cfg.orders_per_branch_day * cfg.days):
            created = start + timedelta(seconds=rnd.uniform(0, cfg.days * 86400 - 6 * 3600))
            order = f"ord_{bi:02d}_{n:05d}"
            customer = f"cus_{rnd.randrange(500):04d}"
            base = {"order_id": order, "branch_id": branch, "customer_id": customer}
            out.append(
                _ev(
                    "created",
                    created,
                    {
                        **base,
                        "actor_id": customer,
                        "actor_type": "customer",
                        "total_cents": rnd.randrange(900, 6000),
                    },
                    rnd,
                )
            )
            if rnd.random() < 0.05:
                continue  # never accepted
            driver = rnd.choice(names)
            accepted = created + timedelta(seconds=rnd.lognormvariate(math.log(420), 0.6))
            staff = {"actor_id": f"staff_{bi}", "actor_type": "staff"}
            out.append(
                _ev("request_accepted", accepted, {**base, "driver_id": driver, **staff}, rnd)
            )
            if rnd.random() < 0.04:
                out.append(
                    _ev(
                        "delivery_status_changed",
                        accepted + timedelta(minutes=5),
                        {**base, "status": "cancelled", **staff},
                        rnd,
                    )
                )
                continue
            picked = accepted + timedelta(seconds=rnd.lognormvariate(math.log(1500), 0.4))
            who = {"driver_id": driver, "actor_id": driver, "actor_type": "driver"}
            out.append(
                _ev("delivery_status_changed", picked, {**base, "status": "picked_up", **who}, rnd)
            )
            done = picked + timedelta(seconds=rnd.lognormvariate(math.log(4200), 0.5))
            status = "failed" if rnd.random() < 0.05 else "delivered"
            out.append(_ev("delivery_status_changed", done, {**base, "status": status, **who}, rnd))
        # Drivers: a shift of legs, pinging every ping_s seconds.
        for j, d in enumerate(names):
            stale = bi < cfg.stale_drivers and j == len(names) - 1
            for day in range(cfg.days):
                shift_start = start + timedelta(days=day, hours=8 + rnd.uniform(0, 1))
                shift_end = shift_start + timedelta(hours=8)
                if day == cfg.days - 1:
                    shift_end = cfg.end - timedelta(minutes=40 if stale else 0)
                t = shift_start
                here = depot
                while t < shift_end:
                    there = _point(depot, rnd, 6.0) if here == depot else depot
                    steps = rnd.randint(20, 60)
                    for k in range(1, steps + 1):
                        if t >= shift_end:
                            break
                        f = k / steps
                        lat = here[0] + (there[0] - here[0]) * f + rnd.gauss(0, 0.00005)
                        lon = here[1] + (there[1] - here[1]) * f + rnd.gauss(0, 0.00005)
                        if rnd.random() < 0.002:
                            lat += 0.5  # a GPS jump
                        props = {
                            "driver_id": d,
                            "branch_id": branch,
                            "lat": round(lat, 6),
                            "lon": round(lon, 6),
                            "accuracy_m": round(rnd.uniform(3, 25), 1),
                            "actor_id": d,
                            "actor_type": "driver",
                        }
                        out.append(_ev("location_updated", t, props, rnd))
                        t += timedelta(seconds=cfg.ping_s)
                    here = there
        # Outreach: attempts, most completed with an outcome; plan updates.
        for n in range(cfg.outreach_per_branch_day * cfg.days):
            at = start + timedelta(seconds=rnd.uniform(0, cfg.days * 86400 - 3600))
            tpl = rnd.choice(TEMPLATES)
            common = {
                "campaign_id": f"cmp_{tpl}",
                "branch_id": branch,
                "customer_id": f"cus_{rnd.randrange(500):04d}",
                "template_key": tpl,
                "channel": rnd.choice(CHANNELS),
                "actor_id": f"cc_{n % 3}",
                "actor_type": "staff",
            }
            out.append(_ev("outreach_attempted", at, common, rnd))
            if rnd.random() < 0.8:
                outcome = (
                    "converted"
                    if rnd.random() < CONVERT[tpl]
                    else rnd.choice(["declined", "no_answer", "opted_out"])
                )
                out.append(
                    _ev(
                        "outreach_completed",
                        at + timedelta(minutes=rnd.uniform(1, 90)),
                        {**common, "outcome": outcome},
                        rnd,
                    )
                )
            if n % 10 == 0:
                out.append(
                    _ev(
                        "plan_updated",
                        at,
                        {
                            "branch_id": branch,
                            "plan_id": f"plan_{n}",
                            "template_key": tpl,
                            "customer_id": common["customer_id"],
                            "actor_id": "cc_lead",
                            "actor_type": "staff",
                        },
                        rnd,
                    )
                )
    out.sort(key=lambda e: e["occurred_at"])
    distinct = list(out)
    # Re-emissions: a lifecycle event sent again later under a new id (pairing takes the first).
    for e in list(out):
        if e["event_type"] != "location_updated" and rnd.random() < cfg.reemit_rate:
            again = dict(e, event_id=str(uuid.UUID(int=rnd.getrandbits(128), version=4)))
            t = datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00"))
            again["occurred_at"] = iso(from_datetime(min(t + timedelta(minutes=3), cfg.end)))
            distinct.append(again)
    arrival = list(distinct)
    arrival += [e for e in distinct if rnd.random() < cfg.duplicate_rate]
    arrival.sort(key=lambda e: e["occurred_at"])
    w = max(1, cfg.shuffle_window)
    for i in range(0, len(arrival), w):
        chunk = arrival[i : i + w]
        rnd.shuffle(chunk)
        arrival[i : i + w] = chunk
    return DeliveryTraffic(arrival, distinct, branches, drivers)
