"""Builders of native events for tests."""

from __future__ import annotations

import itertools
from typing import Any

_n = itertools.count()


def order(
    event_type: str = "order_created",
    *,
    vendor: str = "v1",
    buyer: str = "s1",
    amount: int = 1000,
    occurred_at: str = "2026-11-01T10:00:00Z",
    event_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    n = next(_n)
    ev: dict[str, Any] = {
        "event_id": event_id or f"evt-{n}",
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": occurred_at,
        "properties": {
            "order_id": f"o-{n}",
            "store_id": buyer,
            "vendor_store_id": vendor,
            "amount_cents": amount,
        },
    }
    ev.update(extra)
    return ev


def ad(
    event_type: str = "ad_impression",
    *,
    vendor: str = "v1",
    cost: int = 2,
    event_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    n = next(_n)
    ev: dict[str, Any] = {
        "event_id": event_id or f"ad-{n}",
        "event_type": event_type,
        "occurred_at": "2026-11-01T11:00:00Z",
        "properties": {
            "ad_id": "ad1",
            "campaign_id": "c1",
            "vendor_store_id": vendor,
            "store_id": "s1",
            "placement": "search",
            "cost_cents": cost,
        },
    }
    ev.update(extra)
    return ev
