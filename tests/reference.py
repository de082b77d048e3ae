"""Independent KPI computation in plain Python over the events a test sent.

Deliberately shares no code with ``gristmill.metrics``: it reads the native events as dicts,
applies the preset rule from the docs, and computes with integers and Decimal.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo


def preset_start(days: int, tz: str, now: datetime) -> datetime:
    z = ZoneInfo(tz)
    today = now.astimezone(z).date()
    first = today - timedelta(days=days - 1)
    return datetime(first.year, first.month, first.day, tzinfo=z).astimezone(UTC)


def when(ev: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(ev["occurred_at"]).astimezone(UTC)


def ratio(num: int, den: int, places: int = 2) -> float | None:
    if not den:
        return None
    q = (Decimal(num) / Decimal(den)).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)
    return float(q)


def marketplace_kpis(events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = defaultdict(int)
    buyers: set[str] = set()
    for ev in events:
        p, t = ev["properties"], ev["event_type"]
        if t == "order_created":
            out["orders"] += 1
            out["gmv_cents"] += p["amount_cents"]
            buyers.add(p["store_id"])
        elif t == "order_paid":
            out["revenue_cents"] += p["amount_cents"]
        elif t == "cash_collected":
            out["cash_collected_cents"] += p["amount_cents"]
        elif t == "payout_completed":
            out["payouts_completed"] += 1
            out["payouts_completed_cents"] += p["amount_cents"]
    result = {
        k: out[k]
        for k in (
            "orders",
            "gmv_cents",
            "revenue_cents",
            "cash_collected_cents",
            "payouts_completed",
            "payouts_completed_cents",
        )
    }
    result["aov_cents"] = ratio(result["gmv_cents"], result["orders"])
    result["buyers"] = len(buyers)
    return result


def select(
    events: Iterable[dict[str, Any]], *, start: datetime, end: datetime, vendor: str | None = None
) -> list[dict[str, Any]]:
    return [
        e
        for e in events
        if start <= when(e) < end
        and (vendor is None or e["properties"].get("vendor_store_id") == vendor)
    ]


def daily(events: Iterable[dict[str, Any]], tz: str) -> dict[str, dict[str, Any]]:
    z = ZoneInfo(tz)
    by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_day[when(e).astimezone(z).date().isoformat()].append(e)
    return {d: marketplace_kpis(evs) for d, evs in by_day.items()}
