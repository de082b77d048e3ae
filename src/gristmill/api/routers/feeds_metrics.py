"""Sales KPIs at the routes the sales-tracker seed names (``/dashboard/metrics/…``).

Thin on purpose: every number comes from the pack's metrics through the metric layer (so it
runs on every warehouse, scoped by the caller's role), and only the seed's parameter names
are translated here: ``range=last_7_days|last_30_days|this_quarter|custom`` (+ ``start``,
``end``), ``group_by=day|week|month``, ``product_id``. Percentages and averages are derived
from the exact integer sums with Decimal, never from floats.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from starlette.responses import JSONResponse

from gristmill.api.deps import PrincipalDep, RuntimeDep
from gristmill.api.query import metric_query
from gristmill.auth.permissions import OPERATOR, Principal
from gristmill.core.errors import Problem, forbidden
from gristmill.core.permissions import Permission
from gristmill.metrics.service import run
from gristmill.metrics.timerange import (
    TimeRange,
    explicit_range,
    local_midnight,
    preset_range,
    utc_now,
    zone,
)
from gristmill.pack.models import Pack
from gristmill.runtime import Runtime

router = APIRouter(prefix="/dashboard/metrics", tags=["feeds"])

PACK = "sales_feeds"
SUMS = ("sales_cents", "cogs_cents", "margin_cents", "discount_cents", "units", "lines")
RangeName = Literal["last_7_days", "last_30_days", "this_quarter", "custom"]
CENT = Decimal("0.01")


def _pack(rt: Runtime, p: Principal) -> Pack:
    pack = rt.packs.get(PACK)
    if pack is None:
        raise Problem(404, "not-found", "Not found", f"pack {PACK!r} is not served")
    if p.role != OPERATOR and p.pack != PACK:
        raise forbidden(f"this key is for pack {p.pack!r}")
    if not rt.roles.allows(p, Permission.METRICS_READ):
        raise forbidden(f"role {p.role!r} lacks permission 'metrics:read'")
    return pack


def date_range(name: str, start: date | None, end: date | None, tz: str) -> TimeRange:
    """The seed's named ranges in the caller's time zone; ``custom`` days are inclusive."""
    z = zone(tz)
    now = utc_now()
    if name == "custom":
        if start is None or end is None:
            raise Problem(400, "invalid-range", "Invalid range", "custom needs start and end")
        return explicit_range(
            local_midnight(start, z), local_midnight(end + timedelta(days=1), z), z
        )
    if start is not None or end is not None:
        raise Problem(400, "invalid-range", "Invalid range", "start/end go with range=custom")
    if name == "this_quarter":
        today = now.astimezone(z).date()
        first = date(today.year, 3 * ((today.month - 1) // 3) + 1, 1)
        return explicit_range(datetime.combine(first, time(0), tzinfo=z), now, z)
    return preset_range({"last_7_days": "7d", "last_30_days": "30d"}[name], z, now)


def _filters(p: Principal, product_id: int | None, business_id: str | None) -> list[str]:
    out = [] if product_id is None else [f"product_id:eq:{product_id}"]
    if business_id is not None:
        if p.role != OPERATOR and str(p.claims.get("business_id")) != business_id:
            raise Problem(404, "not-found", "Not found", f"no business_id {business_id[:64]!r}")
        out.append(f"business_id:eq:{business_id}")
    return out


def money(cents: Any) -> float:
    return float(Decimal(int(cents or 0)) / 100)


def percent(part: Any, whole: Any) -> float | None:
    if not whole:
        return None
    return float(
        (Decimal(int(part or 0)) * 100 / Decimal(int(whole))).quantize(CENT, ROUND_HALF_UP)
    )


def figures(row: dict[str, Any]) -> dict[str, Any]:
    """Money in currency units and in cents, margin % and average order value, from sums."""
    sales, orders = int(row.get("sales_cents") or 0), int(row.get("orders") or 0)
    aov = (Decimal(sales) / orders).quantize(Decimal(1), ROUND_HALF_UP) if orders else None
    out: dict[str, Any] = {
        "total_sales": money(sales),
        "cogs": money(row.get("cogs_cents")),
        "gross_margin": money(row.get("margin_cents")),
        "gross_margin_percent": percent(row.get("margin_cents"), sales),
        "discounts": money(row.get("discount_cents")),
        "units": int(row.get("units") or 0),
        "lines": int(row.get("lines") or 0),
    }
    if "orders" in row:
        out["orders"] = orders
        out["average_order_value"] = None if aov is None else money(int(aov))
    out["cents"] = {k: int(row.get(k) or 0) for k in ("sales_cents", "cogs_cents", "margin_cents")}
    return out


def _query(
    rt: Runtime,
    p: Principal,
    metrics: tuple[str, ...],
    rng: TimeRange,
    *,
    grain: str | None = None,
    group_by: tuple[str, ...] = (),
    product_id: int | None,
    business_id: str | None,
) -> list[dict[str, Any]]:
    pack = _pack(rt, p)
    q = metric_query(
        rt,
        p,
        pack,
        metrics=metrics,
        rng=rng,
        grain=grain,
        group_by=group_by,
        filters=_filters(p, product_id, business_id),
    )
    return run(rt.warehouse, q).rows


RangeQ = Annotated[RangeName, Query(alias="range")]


@router.get("/kpi")
def kpi(
    rt: RuntimeDep,
    p: PrincipalDep,
    range_: RangeQ = "last_30_days",
    start: date | None = None,
    end: date | None = None,
    product_id: int | None = None,
    business_id: str | None = None,
    tz: str = "UTC",
) -> JSONResponse:
    """Totals for the summary cards: sales, COGS, margin, margin %, average order value."""
    rng = date_range(range_, start, end, tz)
    rows = _query(rt, p, (*SUMS, "orders"), rng, product_id=product_id, business_id=business_id)
    body = {"success": True, "range": rng.as_dict(), "kpis": figures(rows[0] if rows else {})}
    return JSONResponse(body)


@router.get("/top-products")
def top_products(
    rt: RuntimeDep,
    p: PrincipalDep,
    range_: RangeQ = "last_30_days",
    start: date | None = None,
    end: date | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    business_id: str | None = None,
    tz: str = "UTC",
) -> JSONResponse:
    """Products by gross revenue, for the bar chart."""
    rng = date_range(range_, start, end, tz)
    rows = _query(
        rt,
        p,
        SUMS,
        rng,
        group_by=("product_id", "product_name"),
        product_id=None,
        business_id=business_id,
    )
    rows.sort(key=lambda r: (-int(r.get("sales_cents") or 0), str(r.get("product_name"))))
    products = [
        {"product_id": r["product_id"], "product_name": r["product_name"], **figures(r)}
        for r in rows[:limit]
    ]
    return JSONResponse({"success": True, "range": rng.as_dict(), "products": products})


@router.get("/trend")
def trend(
    rt: RuntimeDep,
    p: PrincipalDep,
    range_: RangeQ = "last_30_days",
    group_by: Literal["day", "week", "month"] = "day",
    start: date | None = None,
    end: date | None = None,
    product_id: int | None = None,
    business_id: str | None = None,
    tz: str = "UTC",
) -> JSONResponse:
    """A point per day, week or month (empty ones zero), for the line chart."""
    rng = date_range(range_, start, end, tz)
    rows = _query(rt, p, SUMS, rng, grain=group_by, product_id=product_id, business_id=business_id)
    points = [{"bucket": r["bucket"], **figures(r)} for r in rows]
    body = {"success": True, "range": rng.as_dict(), "group_by": group_by, "points": points}
    return JSONResponse(body)


@router.get("/extent")
def extent(
    rt: RuntimeDep, p: PrincipalDep, business_id: str | None = None, tz: str = "UTC"
) -> JSONResponse:
    """The days the caller's sales cover (first, last, rows): the workbench's default custom
    range. ``first``/``last`` are null when there is no data."""
    pack = _pack(rt, p)
    feed = next((f for f in rt.feeds.feeds.get(PACK, {}).values() if f.spec.into is not None), None)
    if feed is None:
        raise Problem(404, "not-found", "Not found", f"pack {pack.name!r} loads no facts")
    tenant_col = feed.spec.tenant
    if p.role == OPERATOR:
        if business_id is None:
            raise Problem(422, "missing-tenant", "Missing tenant", f"give {tenant_col}")
        tenant = business_id
    else:
        own = p.claims.get(tenant_col)
        if own is None or (business_id is not None and business_id != str(own)):
            raise Problem(404, "not-found", "Not found", f"no {tenant_col} here")
        tenant = str(own)
    row = rt.warehouse.query(rt.feeds.tables(feed).extent(), {"tenant": tenant}).to_pylist()[0]
    z = zone(tz)

    def day(t: Any) -> str | None:
        if t is None:
            return None
        if isinstance(t, datetime):
            aware = t if t.tzinfo else t.replace(tzinfo=UTC)
            return aware.astimezone(z).date().isoformat()
        return str(t)[:10]

    body: dict[str, Any] = {"success": True, "first": day(row["first"]), "last": day(row["last"])}
    body["rows"] = int(row["n"] or 0)
    return JSONResponse(body)
