"""Sales KPIs against an independent computation: plain Python Decimal over the CSV rows.

The file is generated with dates relative to today, loaded through preview -> commit ->
transform, and every range, the trend and the top products are compared to the cent.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest

from tests.integration.feeds_fixtures import Feeds, feeds_fixture  # noqa: F401

COST = {"Latte": Decimal("1.20"), "Mocha": Decimal("1.55"), "Bagel": None, "Tea": Decimal("0.40")}


def generate(seed: int, days: int = 120) -> tuple[bytes, list[dict[str, Any]]]:
    """A sales file (decimal-comma semicolon style on purpose) and its rows as sent."""
    rng = random.Random(seed)
    today = datetime.now(UTC).date()
    rows: list[dict[str, Any]] = []
    lines = ["Date;Product;Qty;Unit Price;Discount;Order"]
    for i in range(400):
        day = today - timedelta(days=rng.randrange(days))
        name = rng.choice(list(COST))
        qty = rng.randint(1, 6)
        price = Decimal(rng.randint(150, 2500)) / 100
        disc = Decimal(rng.choice([0, 0, 0, 25, 50])) / 100
        order = f"o-{i // 2}" if i % 3 else ""
        rows.append(
            {
                "day": day,
                "name": name,
                "qty": qty,
                "price": price,
                "disc": disc,
                "order": order or f"line-{i}",
            }
        )
        price_s = f"{price:.2f}".replace(".", ",")
        disc_s = f"{disc:.2f}".replace(".", ",") if disc else ""
        lines.append(f"{day.strftime('%d.%m.%Y')};{name};{qty};{price_s} €;{disc_s};{order}")
    lines.insert(50, "31.02.2025;Latte;1;1,00;;")  # rejected: not a calendar date
    return ("\r\n".join(lines) + "\r\n").encode("utf-8"), rows


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    sales = sum((r["qty"] * r["price"] for r in rows), Decimal(0))
    cogs = sum((r["qty"] * (COST[r["name"]] or 0) for r in rows), Decimal(0))
    disc = sum((r["disc"] for r in rows), Decimal(0))
    margin = sales - cogs - disc
    orders = len({r["order"] for r in rows})
    out: dict[str, Any] = {
        "total_sales": float(sales),
        "cogs": float(cogs),
        "gross_margin": float(margin),
        "gross_margin_percent": float(
            (margin * 100 / sales).quantize(Decimal("0.01"), ROUND_HALF_UP)
        )
        if sales
        else None,
        "discounts": float(disc),
        "units": sum(r["qty"] for r in rows),
        "lines": len(rows),
    }
    if orders:
        out["orders"] = orders
        out["average_order_value"] = float(
            (sales / orders).quantize(Decimal("0.01"), ROUND_HALF_UP)
        )
    return out


def within(rows: list[dict[str, Any]], start: date, end: date) -> list[dict[str, Any]]:
    return [r for r in rows if start <= r["day"] <= end]


@pytest.fixture
def loaded(feeds: Feeds) -> tuple[Feeds, list[dict[str, Any]]]:
    feeds.products("b1", ["Latte"], cost_price="1.20")
    feeds.products("b1", ["Mocha"], cost_price="1.55")
    feeds.products("b1", ["Tea"], cost_price="0.40")
    content, rows = generate(7)
    token = feeds.preview("b1", "sales.csv", content).json()["upload_token"]
    r = feeds.commit("b1", token, auto_create_products=True, allow_invalid=True)
    assert r.status_code == 202, r.text
    assert (r.json()["record_count"], r.json()["rejected"]) == (400, 1)
    assert feeds.wait("b1", r.json()["feed_id"])["status"] == "transformed"
    # Another business's sales must never show up in b1's numbers.
    other, _ = generate(8)
    token = feeds.preview("b2", "other.csv", other).json()["upload_token"]
    r2 = feeds.commit("b2", token, auto_create_products=True, allow_invalid=True)
    assert feeds.wait("b2", r2.json()["feed_id"])["status"] == "transformed"
    return feeds, rows


def kpis(f: Feeds, who: str, query: str) -> dict[str, Any]:
    r = f.client.get(f"/dashboard/metrics/kpi?{query}", headers=f.h(who))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()["kpis"]
    body.pop("cents")
    return body


def test_ranges_match_reference(loaded: tuple[Feeds, list[dict[str, Any]]]) -> None:
    f, rows = loaded
    today = datetime.now(UTC).date()
    q_start = date(today.year, 3 * ((today.month - 1) // 3) + 1, 1)
    cases = {
        "range=last_7_days": (today - timedelta(days=6), today),
        "range=last_30_days": (today - timedelta(days=29), today),
        "range=this_quarter": (q_start, today),
        f"range=custom&start={today - timedelta(days=90)}&end={today - timedelta(days=45)}": (
            today - timedelta(days=90),
            today - timedelta(days=45),
        ),
    }
    for query, (start, end) in cases.items():
        assert kpis(f, "b1", query) == totals(within(rows, start, end)), query


def test_product_filter_trend_and_top(loaded: tuple[Feeds, list[dict[str, Any]]]) -> None:
    f, rows = loaded
    today = datetime.now(UTC).date()
    month = within(rows, today - timedelta(days=29), today)
    top = f.client.get(
        "/dashboard/metrics/top-products?range=last_30_days", headers=f.h("b1")
    ).json()
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in month:
        by_name[r["name"]].append(r)
    want = sorted(by_name, key=lambda n: -totals(by_name[n])["total_sales"])
    assert [p["product_name"] for p in top["products"]] == want
    for p in top["products"]:
        got = {k: v for k, v in p.items() if k not in ("product_id", "product_name", "cents")}
        ref = totals(by_name[p["product_name"]])
        ref.pop("orders")
        ref.pop("average_order_value")
        assert got == ref, p["product_name"]
    latte = next(p["product_id"] for p in top["products"] if p["product_name"] == "Latte")
    assert kpis(f, "b1", f"range=last_30_days&product_id={latte}") == totals(by_name["Latte"])
    trend = f.client.get(
        "/dashboard/metrics/trend?range=last_7_days&group_by=day", headers=f.h("b1")
    ).json()
    assert len(trend["points"]) == 7
    for p in trend["points"]:
        day = date.fromisoformat(p["bucket"][:10])
        assert p["total_sales"] == totals(within(rows, day, day))["total_sales"], day
    months = f.client.get(
        "/dashboard/metrics/trend?range=this_quarter&group_by=month", headers=f.h("b1")
    ).json()["points"]
    assert sum(Decimal(str(p["total_sales"])) for p in months) == Decimal(
        str(kpis(f, "b1", "range=this_quarter")["total_sales"])
    )


def test_scoping(loaded: tuple[Feeds, list[dict[str, Any]]]) -> None:
    f, _ = loaded
    assert (
        f.client.get("/dashboard/metrics/kpi?business_id=2", headers=f.h("b1")).status_code == 404
    )
    mine = kpis(f, "b1", "range=last_30_days")
    ops = kpis(f, "ops", "range=last_30_days&business_id=1")
    assert ops == mine
    assert kpis(f, "b2", "range=last_30_days") != mine
    assert f.client.get("/dashboard/metrics/kpi?range=custom", headers=f.h("b1")).status_code == 400
    assert (
        f.client.get("/dashboard/metrics/kpi?range=forever", headers=f.h("b1")).status_code == 422
    )
    assert f.client.get("/dashboard/metrics/kpi").status_code == 401
