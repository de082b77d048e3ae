"""The provisioning plan: what ``gristmill provision --plan FILE`` writes for a target engine.

One JSON document a platform team can review or feed to their own tooling (seed 002 asks for
exactly this): per pack and table the columns with the target's types, partitioning,
clustering, retention (the longest retention of the event categories routed to the table:
expiring a partition earlier would drop events another category must keep), which event
types land there and which log stream feeds it; then the statements ``--apply`` would run.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from gristmill import __version__
from gristmill.config import Settings
from gristmill.pack.models import Pack
from gristmill.sql.types import sql_type
from gristmill.warehouse.registry import capabilities, dialect

PLAN_VERSION = 1


def table_retention(pack: Pack, table: str) -> timedelta | None:
    """The longest retention among the categories of the event types routed to ``table``."""
    spans = [
        pack.spec.categories[e.category].retention
        for e in pack.spec.event_types.values()
        if e.table == table
    ]
    return max(spans) if spans else None


def log_stream(settings: Settings, pack: Pack) -> dict[str, Any]:
    """Where a pack's accepted events wait for the loader."""
    kind: str = settings.log.type
    info: dict[str, Any] = {"log": kind, "stream": f"gristmill.{pack.name}"}
    if kind == "sqlite":
        info.update(path=str(settings.log_path), stream="events")
    return info


def provisioning_plan(
    target: str, packs: Sequence[Pack], settings: Settings, statements: Sequence[str]
) -> dict[str, Any]:
    d = dialect(target)
    caps = capabilities(target)
    out_packs = []
    for pack in packs:
        tables = []
        for name, spec in pack.spec.tables.items():
            retention = table_retention(pack, name)
            tables.append(
                {
                    "name": name,
                    "dataset": pack.dataset,
                    "columns": [
                        {
                            "name": c.name,
                            "type": sql_type(c.type, d).sql(dialect=d),
                            "promoted": c.promoted,
                        }
                        for c in pack.columns(name)
                    ],
                    "partitioning": {
                        "column": spec.partition_by.column,
                        "granularity": spec.partition_by.granularity,
                        "native": caps.native_partitioning,
                    },
                    "clustering": {"columns": spec.cluster_by, "native": caps.native_clustering},
                    "retention_days": retention.days if retention is not None else None,
                    "event_types": sorted(
                        t for t, e in pack.spec.event_types.items() if e.table == name
                    ),
                    "fed_from": log_stream(settings, pack),
                }
            )
        out_packs.append(
            {
                "pack": pack.name,
                "fingerprint": pack.fingerprint,
                "dataset": pack.dataset,
                "dedupe": {
                    "scope": pack.spec.dedupe.scope,
                    "window_days": pack.spec.dedupe.window.total_seconds() / 86_400,
                },
                "tables": tables,
                "rollups": [
                    {
                        "name": n,
                        "table": r.table,
                        "grain": r.grain,
                        "dimensions": r.dimensions,
                        "metrics": r.metrics,
                    }
                    for n, r in pack.spec.rollups.items()
                ],
            }
        )
    return {
        "plan_version": PLAN_VERSION,
        "gristmill": __version__,
        "generated_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "target": target,
        "dialect": d,
        "packs": out_packs,
        "statements": list(statements),
    }
