"""Where is my event? Look an event id up in the pack tables and in quarantine.

Answers the operator's first question after "the dashboard is missing an order": was it
loaded (when, into which table, from which source), quarantined (why), or not seen yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlglot import exp

from gristmill.core.clock import from_datetime, iso
from gristmill.pack.models import Pack
from gristmill.sql.ddl import table_ref
from gristmill.sql.system import QUARANTINE
from gristmill.warehouse.base import Warehouse


def trace_event(wh: Warehouse, packs: Mapping[str, Pack], event_id: str) -> dict[str, Any]:
    params = {"id": event_id}
    selects = []
    for pack in packs.values():
        for table in pack.spec.tables:
            selects.append(
                exp.select(
                    exp.alias_(exp.Literal.string(pack.name), "pack"),
                    exp.alias_(exp.Literal.string(table), "table"),
                    "source",
                    "event_type",
                    "occurred_at",
                    "received_at",
                    "loaded_at",
                )
                .from_(table_ref(pack.dataset, table))
                .where(exp.column("event_id").eq(exp.Placeholder(this="id")))
            )
    loaded: list[dict[str, Any]] = []
    if selects:
        union: exp.Query = selects[0]
        for s in selects[1:]:
            union = exp.union(union, s, distinct=False)
        loaded = wh.query(union, params).to_pylist()
    names = list(packs)
    in_packs = exp.column("pack").isin(*[exp.Placeholder(this=f"k{i}") for i in range(len(names))])
    quarantined: list[dict[str, Any]] = (
        wh.query(
            exp.select(
                "quarantine_id", "pack", "source", "reason", "detail", "received_at", "replayed_at"
            )
            .from_(QUARANTINE)
            .where(exp.column("event_id").eq(exp.Placeholder(this="id")))
            .where(in_packs),
            {**params, **{f"k{i}": n for i, n in enumerate(names)}},
        ).to_pylist()
        if names
        else []
    )
    for row in (*loaded, *quarantined):
        for k, v in row.items():
            if hasattr(v, "tzinfo"):
                row[k] = iso(from_datetime(v))
    status = "loaded" if loaded else "quarantined" if quarantined else "not_found"
    return {"event_id": event_id, "status": status, "loaded": loaded, "quarantined": quarantined}
