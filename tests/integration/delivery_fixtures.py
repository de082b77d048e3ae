"""Shared by the delivery-pack tests: traffic loaded into a runtime, and independent plain
Python computations of what the lifecycle and track views must answer (no SQL, no engine
code: pairing, percentiles with linear interpolation, haversine written again here)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from gristmill.runtime import Runtime

STEPS = {  # the pack's steps, restated
    "created": ("created", None),
    "accepted": ("request_accepted", None),
    "picked_up": ("delivery_status_changed", "picked_up"),
    "delivered": ("delivery_status_changed", "delivered"),
    "failed": ("delivery_status_changed", "failed"),
    "cancelled": ("delivery_status_changed", "cancelled"),
}
DURATIONS = {
    "to_accept": ("created", "accepted"),
    "to_deliver": ("created", "delivered"),
    "accept_to_deliver": ("accepted", "delivered"),
}
SLA = {"to_accept": 900.0, "to_deliver": 3 * 3600.0}
MAX_SPAN = timedelta(days=2)


def send(rt: Runtime, events: list[dict[str, Any]], source: str = "api", batch: int = 1000) -> None:
    for i in range(0, len(events), batch):
        p = rt.collector.prepare(
            pack="delivery",
            source=source,
            dialect="native",
            raw=orjson.dumps(events[i : i + batch]),
        )
        rt.collector.submit_sync(p)
    rt.loader.drain()


def ts(e: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00")).astimezone(UTC)


def unique(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for e in events:
        seen.setdefault(e["event_id"], e)
    return list(seen.values())


def percentile(values: list[float], p: float) -> float | None:
    """percentile_cont: linear interpolation between closest ranks."""
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def orders(
    events: Iterable[dict[str, Any]], branch: str | None = None
) -> dict[str, dict[str, Any]]:
    """order -> {step: first time, branch_id} from unique events (of ``branch`` only)."""
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    for e in unique(events):
        p = e["properties"]
        if "order_id" not in p or e["event_type"] == "location_updated":
            continue
        if branch is not None and p.get("branch_id") != branch:
            continue
        for step, (et, status) in STEPS.items():
            if e["event_type"] == et and (status is None or p.get("status") == status):
                o = out[p["order_id"]]
                t = ts(e)
                if step not in o or t < o[step]:
                    o[step] = t
                    if step == "created":
                        o["branch_id"] = p["branch_id"]
    return out


def expected_lifecycle(
    events: Iterable[dict[str, Any]],
    start: datetime,
    end: datetime,
    tz: str,
    branch: str | None = None,
) -> dict[tuple[str, str], dict[str, Any]]:
    """(local day of creation, branch) -> figures, plus ("*", branch) totals per branch."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    window = [e for e in events if start <= ts(e) < end + MAX_SPAN]  # the rows the view reads
    for o in orders(window, branch).values():
        c = o.get("created")
        if c is None or not start <= c < end:
            continue
        day = c.astimezone(ZoneInfo(tz)).date().isoformat()
        groups[(day, o["branch_id"])].append(o)
        groups[("*", o["branch_id"])].append(o)
    out = {}
    for key, os_ in groups.items():
        fig: dict[str, Any] = {"entities": len(os_)}
        fig["reached"] = {s: sum(1 for o in os_ if s in o) for s in STEPS}
        status: dict[str, int] = dict.fromkeys(STEPS, 0)
        for o in os_:
            reached = [(o[s], i, s) for i, s in enumerate(STEPS) if s in o]
            status[max(reached)[2]] += 1
        fig["by_status"] = status
        durs = {}
        for name, (a, b) in DURATIONS.items():
            vals = [
                (o[b] - o[a]).total_seconds() for o in os_ if a in o and b in o and o[b] >= o[a]
            ]
            d: dict[str, Any] = {
                "n": len(vals),
                "p50_s": percentile(vals, 0.5),
                "p95_s": percentile(vals, 0.95),
            }
            if name in SLA:
                d["on_time"] = sum(1 for v in vals if v <= SLA[name])
            durs[name] = d
        fig["durations"] = durs
        out[key] = fig
    return out


def haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    r = 6371.0088
    f1, f2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((f2 - f1) / 2) ** 2
        + math.cos(f1) * math.cos(f2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * r * math.asin(min(1.0, math.sqrt(a)))


def expected_tracks(
    events: Iterable[dict[str, Any]],
    start: datetime,
    end: datetime,
    gap_s: float = 3600,
    max_kmh: float = 200,
) -> dict[str, dict[str, Any]]:
    """driver -> {pings, km, shifts, last_at}: pings ordered by occurred_at then event_id."""
    pings: dict[str, list[tuple[datetime, str, float, float]]] = defaultdict(list)
    for e in unique(events):
        if e["event_type"] != "location_updated" or not start <= ts(e) < end:
            continue
        p = e["properties"]
        pings[p["driver_id"]].append((ts(e), e["event_id"], p["lat"], p["lon"]))
    out = {}
    for d, ps in pings.items():
        ps.sort()
        km, shifts = 0.0, 1
        for (t0, _, la0, lo0), (t1, _, la1, lo1) in pairwise(ps):
            dt = (t1 - t0).total_seconds()
            if dt > gap_s:
                shifts += 1
                continue
            step = haversine(la0, lo0, la1, lo1)
            if step <= max_kmh / 3600 * dt:
                km += step
        out[d] = {"pings": len(ps), "km": km, "shifts": shifts, "last_at": ps[-1][0]}
    return out
