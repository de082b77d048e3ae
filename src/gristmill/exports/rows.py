"""SQL of a rows export: count, read in keyset chunks, and totals, all over one WHERE.

The WHERE is the window (``occurred_at`` in ``[start, end)``), the caller's scope and
filters, and the **cut**: ``loaded_at <= watermark``. Rows loaded after the export was asked
for are outside it, so reading the same job again — after a crash, on another attempt — reads
exactly the same rows. The order is the envelope key (``occurred_at, event_id, source,
event_type, loaded_at``: unique, since one batch never loads a (scope, event id) twice), so
the bytes are the same too. Identifiers come from the pack (allowlisted at load); every value
is a bound parameter.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlglot import exp

from gristmill.core.clock import to_datetime
from gristmill.exports.csvout import cell, json_cell
from gristmill.metrics.compile import Params, condition
from gristmill.metrics.model import Condition
from gristmill.pack.exports import RowsExportSpec
from gristmill.pack.models import ColumnType, Pack, TableColumn
from gristmill.sql.ddl import table_ref
from gristmill.warehouse.base import Warehouse

KEY = ("occurred_at", "event_id", "source", "event_type", "loaded_at")


def export_columns(pack: Pack, spec: RowsExportSpec) -> list[TableColumn]:
    """The declared columns, or every non-JSON column in table order."""
    cols = {c.name: c for c in pack.columns(spec.table)}
    if spec.columns:
        return [cols[c] for c in spec.columns]
    return [c for c in cols.values() if c.type is not ColumnType.JSON]


def total_columns(cols: Sequence[TableColumn]) -> list[str]:
    """Integer columns the pack declares (amounts, counts): the manifest sums them. Envelope
    integers (``schema_version``) are versions, not quantities."""
    return [c.name for c in cols if c.promoted and c.type is ColumnType.INT64]


@dataclass(frozen=True)
class RowsSlice:
    """One export's rows: table, window, conditions and the cut."""

    pack: Pack
    table: str
    start: datetime
    end: datetime
    cut_us: int | None
    """Newest load time included; None: nothing was loaded yet, the slice is empty."""
    conditions: tuple[Condition, ...]

    def where(self, params: Params) -> exp.Expr:
        if self.cut_us is None:
            return exp.false()
        conds: list[exp.Expr] = [
            exp.GTE(
                this=exp.column("occurred_at", quoted=True), expression=params.bind(self.start)
            ),
            exp.LT(this=exp.column("occurred_at", quoted=True), expression=params.bind(self.end)),
            exp.LTE(
                this=exp.column("loaded_at", quoted=True),
                expression=params.bind(to_datetime(self.cut_us)),
            ),
        ]
        conds += [condition(c, params) for c in self.conditions]
        return exp.and_(*conds)

    @property
    def ref(self) -> exp.Table:
        return table_ref(self.pack.dataset, self.table)


def count(wh: Warehouse, s: RowsSlice) -> int:
    params = Params()
    q = (
        exp.select(exp.alias_(exp.func("count", exp.Star()), "n"))
        .from_(s.ref)
        .where(s.where(params))
    )
    return int(wh.query(q, params.values).to_pylist()[0]["n"])


def sums(wh: Warehouse, s: RowsSlice, columns: Sequence[str]) -> tuple[int, dict[str, int]]:
    """Row count and exact integer sums over the slice, straight from the warehouse."""
    params = Params()
    sel: list[exp.Expr] = [exp.alias_(exp.func("count", exp.Star()), "n")]
    sel += [
        exp.alias_(exp.func("sum", exp.column(c, quoted=True)), f"s{i}")
        for i, c in enumerate(columns)
    ]
    row = wh.query(exp.select(*sel).from_(s.ref).where(s.where(params)), params.values)
    r = row.to_pylist()[0]
    return int(r["n"]), {c: int(r[f"s{i}"] or 0) for i, c in enumerate(columns)}


def _after(values: Sequence[Any], params: Params) -> exp.Expr:
    """Rows strictly after ``values`` in KEY order (lexicographic, ascending)."""
    out: exp.Expr | None = None
    for col, value in reversed(list(zip(KEY, values, strict=True))):
        c = exp.column(col, quoted=True)
        gt = exp.GT(this=c, expression=params.bind(value))
        out = (
            gt
            if out is None
            else exp.or_(gt, exp.and_(exp.EQ(this=c, expression=params.bind(value)), out))
        )
    assert out is not None
    return out


def chunks(
    wh: Warehouse, s: RowsSlice, cols: Sequence[TableColumn], size: int
) -> Iterator[list[list[str]]]:
    """The slice's rows as formatted CSV cells, ``size`` rows at a time, in KEY order.

    Keyset pages, not OFFSET: each page is an index-friendly range read, and memory holds
    one page."""
    names = [c.name for c in cols]
    fmt = [json_cell if c.type is ColumnType.JSON else cell for c in cols]
    last: list[Any] | None = None
    while True:
        params = Params()
        where = s.where(params)
        if last is not None:
            where = exp.and_(where, _after(last, params))
        q = (
            exp.select(
                *[exp.alias_(exp.column(n, quoted=True), f"c{i}") for i, n in enumerate(names)],
                *[exp.alias_(exp.column(k, quoted=True), f"k{i}") for i, k in enumerate(KEY)],
            )
            .from_(s.ref)
            .where(where)
            .order_by(*[exp.Ordered(this=exp.column(k, quoted=True)) for k in KEY])
            .limit(size)
        )
        rows = wh.query(q, params.values).to_pylist()
        if not rows:
            return
        yield [[f(r[f"c{i}"]) for i, f in enumerate(fmt)] for r in rows]
        if len(rows) < size:
            return
        last = [rows[-1][f"k{i}"] for i in range(len(KEY))]
