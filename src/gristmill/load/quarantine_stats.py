"""Per-source quarantine rates over a trailing window, and the reasons seen last.

A Segment client always gets 200 (the protocol wants it), so a source whose events all land
in quarantine looks healthy from the client's side; this is where an operator sees it. The
counts come from the load ledger (``accepted`` = loaded + duplicates, ``quarantined``) by
commit time, the reasons from the quarantine rows themselves (a body re-sent N times is one
row counted N times, see ``resends``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlglot import exp

from gristmill.core.clock import from_datetime, iso
from gristmill.sql.system import LOADS, QUARANTINE
from gristmill.warehouse.base import Warehouse

LAST_REASONS = 5


def _since(col: str) -> exp.Expr:
    return exp.GTE(this=exp.column(col, quoted=True), expression=exp.Placeholder(this="since"))


def _sendings() -> exp.Expr:
    """A row's sendings: ``resends`` (NULL on rows from before it was counted, 0 where an
    engine filled the added column with its default)."""
    return exp.Greatest(
        this=exp.Coalesce(this=exp.column("resends"), expressions=[exp.Literal.number(1)]),
        expressions=[exp.Literal.number(1)],
    )


def _pack_cond(pack: str | None, params: dict[str, Any]) -> list[exp.Expr]:
    if pack is None:
        return []
    params["pack"] = pack
    return [exp.column("pack").eq(exp.Placeholder(this="pack"))]


def source_quarantine(
    wh: Warehouse, window: timedelta, now: datetime, pack: str | None = None
) -> list[dict[str, Any]]:
    """``[{pack, source, accepted, quarantined, quarantine_rate, last_reasons}]`` over the
    window ending at ``now``; sources with no load in the window are left out."""
    params: dict[str, Any] = {"since": now - window}
    conds = [_since("committed_at"), *_pack_cond(pack, params)]
    ledger = (
        exp.select(
            "pack",
            "source",
            exp.alias_(
                exp.func(
                    "sum", exp.Add(this=exp.column("loaded"), expression=exp.column("duplicates"))
                ),
                "accepted",
            ),
            exp.alias_(exp.func("sum", exp.column("quarantined")), "quarantined"),
        )
        .from_(LOADS)
        .where(exp.and_(*conds))
        .group_by("pack", "source")
    )
    q_params: dict[str, Any] = {"since": now - window}
    q_conds = [_since("quarantined_at"), *_pack_cond(pack, q_params)]
    reasons = (
        exp.select(
            "pack",
            "source",
            "reason",
            exp.alias_(exp.func("max", exp.column("quarantined_at")), "at"),
            exp.alias_(exp.func("sum", _sendings()), "n"),
        )
        .from_(QUARANTINE)
        .where(exp.and_(*q_conds))
        .group_by("pack", "source", "reason")
    )
    last: dict[tuple[str, str], list[tuple[datetime, str, int]]] = {}
    for r in wh.query(reasons, q_params).to_pylist():
        last.setdefault((r["pack"], r["source"]), []).append((r["at"], r["reason"], int(r["n"])))
    out: list[dict[str, Any]] = []
    for r in sorted(wh.query(ledger, params).to_pylist(), key=lambda r: (r["pack"], r["source"])):
        accepted, quarantined = int(r["accepted"] or 0), int(r["quarantined"] or 0)
        total = accepted + quarantined
        seen = sorted(last.get((r["pack"], r["source"]), []), key=lambda t: t[0], reverse=True)
        out.append(
            {
                "pack": r["pack"],
                "source": r["source"],
                "accepted": accepted,
                "quarantined": quarantined,
                "quarantine_rate": round(quarantined / total, 6) if total else 0.0,
                "last_reasons": [
                    {"reason": reason, "at": iso(from_datetime(at)), "count": n}
                    for at, reason, n in seen[:LAST_REASONS]
                ],
            }
        )
    return out
