"""Every SQL text Gristmill sends for a pack, per dialect: the provisioning DDL, the system
statements, each table's load and maintenance statements, every metric (raw and through its
rollup, with and without grains, group-bys, filters and a tenant scope), every view's queries
and the event listing. ``tests/unit/test_golden_sql.py`` compares them with the files under
``tests/golden/<dialect>/``; ``GRISTMILL_UPDATE_GOLDEN=1`` rewrites those files.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
from sqlglot import exp

from gristmill.config import Settings
from gristmill.load.quarantine import QuarantineFilter, count_quarantine, list_quarantine
from gristmill.load.trace import trace_event
from gristmill.metrics.events import list_events
from gristmill.metrics.model import Condition, MetricQuery
from gristmill.metrics.planner import plan
from gristmill.metrics.timerange import TimeRange, preset_range
from gristmill.pack.models import Pack
from gristmill.rollup.maintain import after_insert, analytics_ddl
from gristmill.rollup.spec import full_rebuild
from gristmill.warehouse.common import SystemSQL, ledger_snapshot
from gristmill.warehouse.registry import capabilities, render_ddl

NOW = datetime(2026, 3, 14, 15, 37, 12, tzinfo=UTC)
"""A fixed 'now': the texts do not depend on it, their bound values do."""


def _load_sql(dialect: str) -> Any:
    """The engine's statement renderer and load statements (engine-local modules)."""
    if dialect == "bigquery":
        from gristmill.warehouse.bigquery import sql as bq

        return bq.Naming().sql, bq.LoadStatements
    if dialect == "redshift":
        from gristmill.warehouse.redshift import sql as rs

        return rs.sql, rs.LoadStatements
    from gristmill.warehouse.snowflake import sql as sf

    return sf.sql, sf.LoadStatements


def statements(pack: Pack, dialect: str, settings: Settings) -> Iterator[tuple[str, str]]:
    """(file name, SQL text) pairs; a file holds one or more statements."""
    extra = analytics_ddl([pack], dialect, capabilities(dialect))
    yield "ddl", ";\n".join(render_ddl(dialect, [pack], settings, extra))
    system = SystemSQL.build(dialect)
    texts = [getattr(system, f) for f in system.__dataclass_fields__]
    ledger = ledger_snapshot(dialect)
    if dialect == "redshift":  # re-rendered by the engine (JSON_PARSE, quoting)
        from gristmill.warehouse.redshift import sql as rs

        texts = [getattr(rs.SYSTEM, f) for f in rs.SYSTEM.__dataclass_fields__]
        ledger = rs.LEDGER
    yield "system", ";\n".join([*texts, ledger])
    render_stmt, load = _load_sql(dialect)
    steps = after_insert({pack.name: pack}, dialect)
    for table in pack.spec.tables:
        st = load.build(pack, table)
        # In the clients' order: steps that read the key table as it was go before remember.
        early, late = st.split(steps[(pack.name, table)])
        out = [render_stmt(s) for s in (st.count_fresh, st.insert_fresh)]
        for group in (early, (st.remember,), late):
            for after in group:
                if isinstance(after, exp.Expr):
                    out.append(render_stmt(after))
                    continue
                out += [render_stmt(s) for s in after.prepare]
                if after.bounds is not None:
                    out.append(render_stmt(after.bounds))
                out += [render_stmt(s) for s in after.statements]
        yield f"load_{table}", ";\n".join(out)
    for name, r in pack.spec.rollups.items():
        yield (
            f"rebuild_{name}",
            ";\n".join(render_stmt(s) for s in full_rebuild(pack, name, r, dialect)),
        )
    yield from _metric_queries(pack, dialect)
    yield "events", _events(pack, render_stmt)
    yield "operations", _operations(pack, render_stmt)


def _queries(
    pack: Pack,
    metrics: tuple[str, ...],
    rng: TimeRange,
    grain: str | None = None,
    group_by: tuple[str, ...] = (),
    filters: tuple[Condition, ...] = (),
    scope: tuple[Condition, ...] = (),
) -> MetricQuery:
    return MetricQuery(pack, metrics, rng, grain, group_by, filters, scope)


def _metric_queries(pack: Pack, dialect: str) -> Iterator[tuple[str, str]]:
    utc, kolkata = ZoneInfo("UTC"), ZoneInfo("Asia/Kolkata")
    ninety = preset_range("90d", utc, NOW)
    cases: list[tuple[str, MetricQuery]] = []
    for name in pack.spec.metrics:
        cases.append((f"metric_{name}", _queries(pack, (name,), ninety)))
    by_table: dict[str, list[str]] = {}
    for name, m in pack.spec.metrics.items():
        if m.table is not None:
            by_table.setdefault(m.table, []).append(name)
    for table, names in by_table.items():
        dims = pack.spec.tables[table].dimensions
        for grain in ("day", "week", "month"):
            cases.append((f"{table}_{grain}", _queries(pack, tuple(names), ninety, grain)))
        cases.append(
            (f"{table}_by_{dims[0]}", _queries(pack, tuple(names), ninety, None, tuple(dims[:1])))
        )
        hour = TimeRange(
            datetime(2026, 3, 10, 5, 17, tzinfo=UTC),
            datetime(2026, 3, 12, 13, 0, tzinfo=UTC),
            kolkata,
        )
        cases.append((f"{table}_hour_kolkata", _queries(pack, tuple(names), hour, "hour")))
        cases.append(
            (
                f"{table}_filtered",
                _queries(
                    pack,
                    tuple(names),
                    ninety,
                    "day",
                    filters=(Condition("event_type", "in", ("a", "b")),),
                    scope=(Condition("vendor_store_id", "eq", "store-1"),),
                ),
            )
        )
    for name, view in pack.spec.views.items():
        scope = tuple(
            Condition(col, "eq", "store-1")
            for role in view.roles
            for col in pack.spec.roles[role].scope
        )
        rng = preset_range(view.default_preset or "30d", utc, NOW)
        if view.series is not None:
            series = _queries(pack, tuple(view.series.metrics), rng, view.series.grain, scope=scope)
            cases.append((f"view_{name}_series", series))
        cases.append((f"view_{name}_kpis", _queries(pack, tuple(view.kpis), rng, scope=scope)))
    for file, q in cases:
        texts = [p.sql for p in plan(q, dialect)]
        yield file, ";\n".join(texts)


def _events(pack: Pack, render_stmt: Any) -> str:
    seen: list[exp.Expr] = []

    def capture(query: exp.Expr, params: dict[str, Any]) -> pa.Table:
        seen.append(query)
        # Only the texts are kept: no rows for the page, a zero for the count.
        return pa.table({"n": [0]}) if len(seen) == 2 else pa.table({})

    list_events(
        capture,
        pack,
        event_types=[],
        start=datetime(2026, 3, 1, tzinfo=UTC),
        end=NOW,
        limit=50,
        cursor=None,
        scope=(Condition("vendor_store_id", "eq", "store-1"),),
    )
    return ";\n".join(render_stmt(q) for q in seen)


class _Recorder:
    """Keeps the statements the shared operations code sends a warehouse (no rows back)."""

    def __init__(self) -> None:
        self.seen: list[exp.Expr] = []

    def query(self, query: exp.Expr, params: dict[str, Any] | None = None) -> pa.Table:
        self.seen.append(query)
        return pa.table({})


def _operations(pack: Pack, render_stmt: Any) -> str:
    """Event trace, quarantine listing and counts: what the ops endpoints and CLI send."""
    rec = _Recorder()
    trace_event(rec, {pack.name: pack}, "evt-1")  # type: ignore[arg-type]
    f = QuarantineFilter(pack=pack.name, reason="schema_violation", ids=("q1", "q2"))
    list_quarantine(rec, f, limit=50, after="q0", with_raw=True)  # type: ignore[arg-type]
    count_quarantine(rec, QuarantineFilter(pack=pack.name))  # type: ignore[arg-type]
    return ";\n".join(render_stmt(q) for q in rec.seen)
