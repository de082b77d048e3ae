"""Shared by the governance tests: platform events of a few users, spread in time, and the
independent checks (plain SQL over the tables, a byte scan of the files)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlglot import exp

from gristmill.core.clock import from_datetime, iso
from gristmill.runtime import Runtime
from gristmill.sql.ddl import table_ref

SUBJECT = "user-erase-me"
EMAIL = "erase.me@example.org"
OTHERS = ("user-a", "user-b", "user-c")


def platform_event(
    event_type: str,
    user: str | None,
    when: datetime,
    n: int,
    *,
    props: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "event_id": f"{event_type}-{user}-{n}",
        "event_type": event_type,
        "occurred_at": iso(from_datetime(when)),
        "properties": props or {},
    }
    if user is not None:
        ev["user_id"] = user
    if context is not None:
        ev["context"] = context
    return ev


def users_events(
    base: datetime, users: tuple[str, ...] = (SUBJECT, *OTHERS)
) -> list[dict[str, Any]]:
    """Every user logs in, registers (email) and creates a project in the same hours."""
    out = []
    for i, u in enumerate(users):
        for h in range(3):
            t = base + timedelta(hours=h, minutes=i)
            out.append(
                platform_event(
                    "user.login",
                    u,
                    t,
                    h,
                    props={"login_method": "github"},
                    context={"ip": "203.0.113.9", "user_agent": "Mozilla/5.0 test"},
                )
            )
            out.append(
                platform_event(
                    "project.created",
                    u,
                    t + timedelta(minutes=5),
                    h,
                    props={"project_id": f"p-{u}-{h}", "title": "Shop", "budget": 5000},
                )
            )
        email = EMAIL if u == SUBJECT else f"{u}@example.org"
        out.append(
            platform_event(
                "user.registered",
                u,
                base,
                0,
                props={"login_method": "email", "email": email, "phone": "+1 555 0100"},
            )
        )
    return out


def send(rt: Runtime, events: list[dict[str, Any]], *, drain: bool = True) -> dict[str, Any]:
    p = rt.collector.prepare(
        pack="platform", source="web", dialect="native", raw=orjson.dumps(events)
    )
    rt.collector.submit_sync(p)
    if drain:
        rt.loader.drain()
    assert p.outcome is not None
    return {"accepted": p.outcome.accepted, "suppressed": p.frame.suppressed}


def rows_of(rt: Runtime, user: str) -> int:
    """Plain SQL, independent of the erasure code."""
    t = table_ref("platform", "platform_events")
    q = (
        exp.select(exp.func("count", exp.Star()).as_("n"))
        .from_(t)
        .where(exp.column("user_id").eq(exp.Placeholder(this="u")))
    )
    return int(rt.warehouse.query(q, {"u": user}).column("n")[0].as_py())


def unique_users(rt: Runtime, start: datetime, end: datetime) -> int:
    t = table_ref("platform", "platform_events")
    q = (
        exp.select(exp.func("count", exp.Distinct(expressions=[exp.column("user_id")])).as_("n"))
        .from_(t)
        .where(
            exp.column("occurred_at").between(exp.Placeholder(this="a"), exp.Placeholder(this="b"))
        )
    )
    return int(rt.warehouse.query(q, {"a": start, "b": end}).column("n")[0].as_py())


def files_containing(root: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for f in root.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            hits += [f"{f.name}:{n.decode()}" for n in needles if n in data]
    return hits


BASE = datetime(2026, 11, 20, 10, tzinfo=UTC)
