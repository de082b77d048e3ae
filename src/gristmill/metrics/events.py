"""Raw event listing across a pack's tables, newest first, with keyset pagination."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlglot import exp

from gristmill.core.clock import from_datetime, iso, to_datetime
from gristmill.core.errors import Problem
from gristmill.metrics.compile import Params, condition
from gristmill.metrics.model import Condition
from gristmill.pack.models import Pack
from gristmill.sql.ddl import table_ref

COLUMNS = (
    "event_id",
    "event_type",
    "schema_version",
    "occurred_at",
    "received_at",
    "loaded_at",
    "source",
    "user_id",
    "anonymous_id",
    "session_id",
    "entity_type",
    "entity_id",
    "properties",
    "context",
)
MAX_LIMIT = 1000


@dataclass(frozen=True)
class EventPage:
    items: list[dict[str, Any]]
    next_cursor: str | None
    total: int


KEYSET = ("occurred_at", "event_id", "source", "_table", "loaded_at")
"""Newest first; the table and load time break ties (an event re-delivered after the dedupe
window, or one id in two tables) so no row is skipped at a page boundary."""


def encode_cursor(row: dict[str, Any]) -> str:
    values = [from_datetime(v) if isinstance(v, datetime) else v for v in (row[k] for k in KEYSET)]
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(text: str) -> list[Any]:
    try:
        occ, eid, src, tbl, loaded = orjson.loads(
            base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        )
        if not (
            isinstance(occ, int)
            and isinstance(loaded, int)
            and all(isinstance(v, str) for v in (eid, src, tbl))
        ):
            raise ValueError
        return [to_datetime(occ), eid, src, tbl, to_datetime(loaded)]
    except (ValueError, OverflowError, TypeError, orjson.JSONDecodeError):
        raise Problem(
            400, "invalid-cursor", "Invalid cursor", "the cursor is not one this API returned"
        ) from None


def _before(values: list[Any], params: Params) -> exp.Expr:
    """Rows strictly after the cursor in newest-first order (lexicographic on KEYSET)."""
    out: exp.Expr | None = None
    for col, value in reversed(list(zip(KEYSET, values, strict=True))):
        lt = exp.LT(this=exp.column(col), expression=params.bind(value))
        out = (
            lt
            if out is None
            else exp.or_(
                lt, exp.and_(exp.EQ(this=exp.column(col), expression=params.bind(value)), out)
            )
        )
    assert out is not None
    return out


def tables_for(
    pack: Pack,
    event_types: Sequence[str],
    scope: Sequence[Condition],
    columns: Sequence[str] = (),
) -> list[str]:
    """Tables holding the requested event types; a scoped caller only sees tables carrying
    every scope column (a table without the tenant column cannot be limited, so it is out),
    and a filter on ``columns`` only reads tables that have them (no row of another table
    could match it)."""
    wanted = set(event_types) or set(pack.spec.event_types)
    out = []
    for table in pack.spec.tables:
        if not any(
            et.table == table and name in wanted for name, et in pack.spec.event_types.items()
        ):
            continue
        cols = {c.name for c in pack.columns(table)}
        if all(c.column in cols for c in scope) and all(c in cols for c in columns):
            out.append(table)
    return out


def list_events(
    run: Any,
    pack: Pack,
    *,
    event_types: Sequence[str],
    start: datetime,
    end: datetime,
    limit: int,
    cursor: str | None,
    scope: Sequence[Condition],
    filters: Sequence[Condition] = (),
) -> EventPage:
    unknown = [e for e in event_types if e not in pack.spec.event_types]
    if unknown:
        raise Problem(
            400,
            "invalid-event-type",
            "Unknown event type",
            f"{unknown[0][:64]!r} is not an event type of {pack.name!r}",
        )
    if not 1 <= limit <= MAX_LIMIT:
        raise Problem(400, "invalid-limit", "Invalid limit", f"limit is 1..{MAX_LIMIT}")
    tables = tables_for(pack, event_types, scope, [c.column for c in filters])
    if not tables:
        return EventPage([], None, 0)
    params = Params()
    base: list[exp.Expr] = [
        exp.GTE(this=exp.column("occurred_at"), expression=params.bind(start)),
        exp.LT(this=exp.column("occurred_at"), expression=params.bind(end)),
        *[condition(c, params) for c in (*scope, *filters)],
    ]
    if event_types:
        base.append(
            exp.In(this=exp.column("event_type"), expressions=[params.bind(e) for e in event_types])
        )
    union: exp.Query | None = None
    for t in tables:
        sel = (
            exp.select(
                *[exp.column(c, quoted=True) for c in COLUMNS],
                exp.alias_(exp.Literal.string(t), "_table"),
            )
            .from_(table_ref(pack.dataset, t))
            .where(exp.and_(*base))
        )
        union = sel if union is None else exp.union(union, sel, distinct=False)
    assert union is not None
    total_q = exp.select(exp.alias_(exp.func("count", exp.Star()), "n")).from_(union.subquery("a"))
    total_params = dict(params.values)  # before the cursor adds its own
    page = exp.select("*").from_(union.subquery("a"))
    if cursor:
        page = page.where(_before(decode_cursor(cursor), params))
    page = page.order_by(*[exp.Ordered(this=exp.column(k), desc=True) for k in KEYSET]).limit(
        limit + 1
    )
    rows = run(page, params.values).to_pylist()
    total = int(run(total_q, total_params).to_pylist()[0]["n"])
    more = len(rows) > limit
    rows = rows[:limit]
    items = []
    for r in rows:
        item = {k: v for k, v in r.items() if k != "_table"}
        for k in ("occurred_at", "received_at", "loaded_at"):
            item[k] = iso(from_datetime(r[k]))
        for k in ("properties", "context"):
            item[k] = orjson.loads(r[k]) if r[k] is not None else None
        items.append(item)
    nxt = encode_cursor(rows[-1]) if more else None
    return EventPage(items, nxt, total)
