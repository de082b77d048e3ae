"""Retention enforcement: rows past their category's retention leave every warehouse.

Per pack table, each category's cutoff is ``now - retention``. Where the engine partitions
tables by event time (PostgreSQL child tables, ClickHouse partitions), a partition whose
whole range lies before the *earliest* cutoff of the table's categories holds only expired
rows and is dropped — a catalogue change, no row scan. What remains past a cutoff is deleted
by category (``event_type IN (…) AND occurred_at < cutoff``), which is also the whole method
on engines without partitions (DuckDB) or with their own expiry (BigQuery partition
expiration is set at provisioning; the delete catches what it has not yet expired).

Rollup buckets outlive raw rows by default: they hold counts and sums, no personal data. A
pack with ``governance.aggregates_outlive_raw: false`` loses buckets older than its table's
longest retention too. Quarantined items expire after ``quarantine_retention_days``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlglot import exp

from gristmill.pack.models import Pack
from gristmill.rollup.spec import rollup_table
from gristmill.sql.ddl import table_ref
from gristmill.sql.system import QUARANTINE
from gristmill.warehouse.base import PartitionedWarehouse, Warehouse


@dataclass(slots=True)
class RetentionReport:
    dry_run: bool
    now: datetime
    actions: list[dict[str, Any]] = field(default_factory=list)
    partitions_dropped: list[dict[str, Any]] = field(default_factory=list)
    exports_expired: int = 0
    """Export jobs (files and rows) past ``exports.retention``."""

    @property
    def rows(self) -> int:
        return sum(int(a["rows"]) for a in self.actions)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "now": self.now.isoformat(),
            "rows": self.rows,
            "actions": self.actions,
            "partitions_dropped": self.partitions_dropped,
            "exports_expired": self.exports_expired,
        }


def _ph(name: str) -> exp.Placeholder:
    return exp.Placeholder(this=name)


def _count(wh: Warehouse, table: exp.Table, where: exp.Expr, params: dict[str, Any]) -> int:
    q = exp.select(exp.alias_(exp.func("count", exp.Star()), "n")).from_(table).where(where)
    return int(wh.query(q, params).column("n")[0].as_py() or 0)


def categories_of(pack: Pack, table: str) -> dict[str, list[str]]:
    """category -> the event types of ``table`` in it."""
    out: dict[str, list[str]] = {}
    for name, et in pack.spec.event_types.items():
        if et.table == table:
            out.setdefault(et.category, []).append(name)
    return out


def _drop_partitions(
    wh: Warehouse, pack: Pack, table: str, before: datetime, report: RetentionReport
) -> datetime | None:
    """Drop the partitions wholly before ``before``; returns the end of the last one (rows
    before it are gone, or on a dry run, counted already)."""
    if not (wh.caps.native_partitioning and isinstance(wh, PartitionedWarehouse)):
        return None
    ref = table_ref(pack.dataset, table)
    expired = [p for p in wh.partitions(pack, table) if p.end <= before]
    where = exp.and_(
        exp.GTE(this=exp.column("occurred_at", quoted=True), expression=_ph("lo")),
        exp.LT(this=exp.column("occurred_at", quoted=True), expression=_ph("hi")),
    )
    for part in expired:
        rows = (
            part.rows
            if part.rows is not None
            else _count(wh, ref, where, {"lo": part.start, "hi": part.end})
        )
        report.partitions_dropped.append(
            {
                "table": f"{pack.dataset}.{table}",
                "partition": part.name,
                "start": part.start.isoformat(),
                "end": part.end.isoformat(),
                "rows": rows,
            }
        )
    if expired:
        if not report.dry_run:
            wh.drop_partitions(pack, table, expired)
        report.actions.append(
            {
                "table": f"{pack.dataset}.{table}",
                "category": "*",
                "method": "drop_partitions",
                "cutoff": before.isoformat(),
                "partitions": len(expired),
                "rows": sum(int(p["rows"]) for p in report.partitions_dropped[-len(expired) :]),
            }
        )
    return max((p.end for p in expired), default=None)


def _delete_expired(
    wh: Warehouse, pack: Pack, table: str, report: RetentionReport
) -> datetime | None:
    """Per category: delete (or count, on a dry run) rows past the cutoff. Returns the
    table's earliest cutoff (the one its longest retention gives)."""
    cats = categories_of(pack, table)
    if not cats:
        return None
    cutoffs = {c: report.now - pack.spec.categories[c].retention for c in cats}
    earliest = min(cutoffs.values())
    floor = _drop_partitions(wh, pack, table, earliest, report)
    ref = table_ref(pack.dataset, table)
    for cat, types in sorted(cats.items()):
        params: dict[str, Any] = {"cutoff": cutoffs[cat]}
        names = []
        for i, t in enumerate(sorted(types)):
            params[f"t{i}"] = t
            names.append(_ph(f"t{i}"))
        where = exp.and_(
            exp.In(this=exp.column("event_type", quoted=True), expressions=names),
            exp.LT(this=exp.column("occurred_at", quoted=True), expression=_ph("cutoff")),
        )
        if floor is not None:  # what the partition drops took (or, dry, will take)
            params["floor"] = floor
            where = exp.and_(
                where,
                exp.GTE(this=exp.column("occurred_at", quoted=True), expression=_ph("floor")),
            )
        rows = _count(wh, ref, where, params)
        if rows and not report.dry_run:
            wh.execute(exp.delete(ref).where(where), params)
        report.actions.append(
            {
                "table": f"{pack.dataset}.{table}",
                "category": cat,
                "method": "delete",
                "cutoff": cutoffs[cat].isoformat(),
                "rows": rows,
            }
        )
    return earliest


def _expire_rollups(
    wh: Warehouse, pack: Pack, table: str, before: datetime, report: RetentionReport
) -> None:
    for name, r in pack.spec.rollups.items():
        if r.table != table:
            continue
        ref = rollup_table(pack, name)
        where = exp.LT(this=exp.column("bucket"), expression=_ph("cutoff"))
        rows = _count(wh, ref, where, {"cutoff": before})
        if rows and not report.dry_run:
            wh.execute(exp.delete(ref).where(where), {"cutoff": before})
        report.actions.append(
            {
                "table": f"{pack.dataset}.{ref.name}",
                "category": "*",
                "method": "delete_buckets",
                "cutoff": before.isoformat(),
                "rows": rows,
            }
        )


def enforce(
    wh: Warehouse,
    packs: Mapping[str, Pack],
    now: datetime,
    *,
    quarantine_days: int,
    dry_run: bool = False,
) -> RetentionReport:
    """One retention run over every pack table, the rollups that expire with them, and the
    quarantine. A dry run counts the same rows and lists the same partitions, and changes
    nothing."""
    report = RetentionReport(dry_run, now)
    for pack in packs.values():
        for table in pack.spec.tables:
            earliest = _delete_expired(wh, pack, table, report)
            if earliest is not None and not pack.spec.governance.aggregates_outlive_raw:
                _expire_rollups(wh, pack, table, earliest, report)
    cutoff = now - timedelta(days=quarantine_days)
    where = exp.LT(this=exp.column("received_at"), expression=_ph("cutoff"))
    rows = _count(wh, QUARANTINE, where, {"cutoff": cutoff})
    if rows and not dry_run:
        wh.execute(exp.delete(QUARANTINE).where(where), {"cutoff": cutoff})
    report.actions.append(
        {
            "table": "_gristmill.quarantine",
            "category": "*",
            "method": "delete",
            "cutoff": cutoff.isoformat(),
            "rows": rows,
        }
    )
    return report


def status(wh: Warehouse, packs: Mapping[str, Pack], now: datetime) -> list[dict[str, Any]]:
    """Per pack table and category: the retention, today's cutoff, the oldest row kept and
    how many rows the next run removes (what the dashboard shows)."""
    out: list[dict[str, Any]] = []
    for pack in packs.values():
        for table in pack.spec.tables:
            ref = table_ref(pack.dataset, table)
            for cat, types in sorted(categories_of(pack, table).items()):
                retention = pack.spec.categories[cat].retention
                cutoff = now - retention
                params: dict[str, Any] = {f"t{i}": t for i, t in enumerate(sorted(types))}
                params["cutoff"] = cutoff
                of_cat = exp.In(
                    this=exp.column("event_type", quoted=True),
                    expressions=[_ph(f"t{i}") for i in range(len(types))],
                )
                past = exp.func(
                    "sum",
                    exp.Case(
                        ifs=[
                            exp.If(
                                this=exp.LT(
                                    this=exp.column("occurred_at", quoted=True),
                                    expression=_ph("cutoff"),
                                ),
                                true=exp.Literal.number(1),
                            )
                        ],
                        default=exp.Literal.number(0),
                    ),
                )
                q = (
                    exp.select(
                        exp.alias_(exp.Min(this=exp.column("occurred_at", quoted=True)), "oldest"),
                        exp.alias_(exp.func("count", exp.Star()), "n"),
                        exp.alias_(past, "past"),
                    )
                    .from_(ref)
                    .where(of_cat)
                )
                row = wh.query(q, params).to_pylist()[0]
                oldest = row["oldest"]
                out.append(
                    {
                        "pack": pack.name,
                        "table": f"{pack.dataset}.{table}",
                        "category": cat,
                        "retention_days": retention.days,
                        "cutoff": cutoff.isoformat(),
                        "rows": int(row["n"] or 0),
                        "oldest_kept": None if oldest is None else oldest.isoformat(),
                        "rows_past_cutoff": int(row["past"] or 0),
                    }
                )
    return out
