"""Recompute stored spend after the price book changed (``gristmill reprice``).

Spend is written at collection from the price book in force then. When the book is
corrected — a price that was wrong, a model added after its calls were loaded (they were
unpriced) — the stored figures are restated: every row in the range is priced again with the
same function the collector uses (:meth:`PriceBook.spend_micros`), rows whose spend changed
are updated, and the rollup buckets they feed are recomputed from rows, so dashboards,
exports and the raw table agree again. The run is audited with the book's digest, the rows
changed and the spend before and after: a restatement is visible, never silent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlglot import exp

from gristmill.core.clock import from_datetime
from gristmill.governance.erasure import touched_buckets
from gristmill.pack.models import Pack
from gristmill.rollup.spec import recompute
from gristmill.sql.ddl import table_ref
from gristmill.warehouse.base import Warehouse
from gristmill.warehouse.common import in_one_transaction

CHUNK = 500
"""Rows per UPDATE statement (each row's key is bound, never inlined)."""


@dataclass
class RepriceReport:
    pack: str
    book: str
    """Digest of the price book the rows were priced with."""
    dry_run: bool
    since: str | None
    until: str | None
    rows_scanned: int = 0
    rows_changed: int = 0
    newly_priced: int = 0
    newly_unpriced: int = 0
    spend_before: int = 0
    spend_after: int = 0
    buckets_recomputed: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pack": self.pack,
            "book": self.book,
            "dry_run": self.dry_run,
            "since": self.since,
            "until": self.until,
            "rows_scanned": self.rows_scanned,
            "rows_changed": self.rows_changed,
            "newly_priced": self.newly_priced,
            "newly_unpriced": self.newly_unpriced,
            "spend_before_micros": self.spend_before,
            "spend_after_micros": self.spend_after,
            "buckets_recomputed": self.buckets_recomputed,
        }


def _range(
    since: datetime | None, until: datetime | None
) -> tuple[exp.Expr | None, dict[str, Any]]:
    conds: list[exp.Expr] = []
    params: dict[str, Any] = {}
    occurred = exp.column("occurred_at", quoted=True)
    if since is not None:
        params["since"] = since
        conds.append(exp.GTE(this=occurred.copy(), expression=exp.Placeholder(this="since")))
    if until is not None:
        params["until"] = until
        conds.append(exp.LT(this=occurred.copy(), expression=exp.Placeholder(this="until")))
    return (exp.and_(*conds) if conds else None), params


def _update(
    pack: Pack, table: str, column: str, value: int | None, rows: Sequence[Mapping[str, Any]]
) -> tuple[exp.Expr, dict[str, Any]]:
    params: dict[str, Any] = {"v": value}
    keys = []
    for i, r in enumerate(rows):
        params[f"e{i}"], params[f"s{i}"], params[f"t{i}"] = (
            r["event_id"],
            r["source"],
            r["event_type"],
        )
        keys.append(
            exp.and_(
                exp.column("event_id", quoted=True).eq(exp.Placeholder(this=f"e{i}")),
                exp.column("source", quoted=True).eq(exp.Placeholder(this=f"s{i}")),
                exp.column("event_type", quoted=True).eq(exp.Placeholder(this=f"t{i}")),
            )
        )
    new: exp.Expr = exp.Null() if value is None else exp.Placeholder(this="v")
    where = exp.or_(*keys)
    return exp.update(table_ref(pack.dataset, table), {column: new}, where=where), params


def reprice(
    wh: Warehouse,
    pack: Pack,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> RepriceReport:
    """Price every row of the pack's priced tables in ``[since, until)`` again."""
    book, pricing = pack.price_book, pack.spec.enrichment.pricing
    if book is None or pricing is None:
        raise ValueError(f"pack {pack.name!r} has no price book (enrichment.pricing)")
    report = RepriceReport(
        pack.name,
        book.digest,
        dry_run,
        None if since is None else since.isoformat(),
        None if until is None else until.isoformat(),
    )
    needed = {*pricing.match, *pricing.quantities.values()}
    for table, spec in pack.spec.tables.items():
        if pricing.column not in spec.columns:
            continue
        rollup_dims = {
            d for r in pack.spec.rollups.values() if r.table == table for d in r.dimensions
        }
        cols = ["event_id", "source", "event_type", "occurred_at", pricing.column]
        cols += sorted((needed | rollup_dims) - set(cols))
        where, params = _range(since, until)
        q = exp.select(*(exp.column(c, quoted=True) for c in cols)).from_(
            table_ref(pack.dataset, table)
        )
        if where is not None:
            q = q.where(where)
        rows = wh.query(q, params).to_pylist()
        report.rows_scanned += len(rows)
        changed: dict[int | None, list[dict[str, Any]]] = {}
        for i, r in enumerate(rows):
            old = r[pricing.column]
            new = book.spend_micros(r, from_datetime(r["occurred_at"]))
            report.spend_before += old or 0
            report.spend_after += new or 0
            if new != old:
                changed.setdefault(new, []).append(r)
                report.newly_priced += old is None
                report.newly_unpriced += new is None
            if progress is not None and i % 10_000 == 0:
                progress(i, len(rows))
        touched_rows = [r for group in changed.values() for r in group]
        report.rows_changed += len(touched_rows)
        if dry_run or not touched_rows:
            continue
        stmts = [
            _update(pack, table, pricing.column, value, group[i : i + CHUNK])
            for value, group in changed.items()
            for i in range(0, len(group), CHUNK)
        ]
        for name, keys in touched_buckets(pack, table, touched_rows).items():
            r = pack.spec.rollups[name]
            if not _reads(pack, r.metrics, pricing.column):
                continue  # this rollup does not read spend
            by_bucket: dict[Any, list[tuple[Any, ...]]] = {}
            for key in keys:
                by_bucket.setdefault(key[0], []).append(key)
            for group in by_bucket.values():
                stmts += recompute(pack, name, r, group, wh.dialect)
            report.buckets_recomputed[name] = len(keys)
        in_one_transaction(wh, stmts)
    return report


def _reads(pack: Pack, metrics: Sequence[str], column: str) -> bool:
    """Whether any of ``metrics`` aggregates or filters on ``column``."""
    specs = [pack.spec.metrics[m] for m in metrics]
    return any(m.column == column or column in m.filter for m in specs)
