"""Freshness: per table and per tenant scope, the newest event time and the newest load.

Kept in ``_gristmill.freshness`` by an upsert inside each load transaction, so it is never
ahead of or behind the rows. A response's ``freshness.as_of`` is the pipeline's completeness
watermark: every event received before it is queryable (the receive time of the oldest event
still in the log, or the time of the answer when none is); ``lag_seconds`` is now minus as_of.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlglot import exp

from gristmill.core.clock import MICROS, from_datetime, iso, now_us, to_datetime
from gristmill.pack.analytics import ViewSpec
from gristmill.pack.models import Pack, RoleSpec
from gristmill.sql.ddl import column_def, create_table, table_ref
from gristmill.sql.system import SYSTEM_SCHEMA
from gristmill.sql.types import Logical, sql_type
from gristmill.warehouse.base import AfterInsert, Warehouse

FRESHNESS = table_ref(SYSTEM_SCHEMA, "freshness")
ALL = "*"
KEY = ("pack", "tbl", "scope_column", "scope_value")


def freshness_ddl(dialect: str = "duckdb") -> exp.Create:
    cols = [column_def(c, sql_type(Logical.TEXT, dialect), not_null=True) for c in KEY]
    cols += [
        column_def("newest_occurred_at", sql_type(Logical.TIMESTAMP, dialect)),
        column_def("newest_loaded_at", sql_type(Logical.TIMESTAMP, dialect)),
    ]
    create = create_table(FRESHNESS, cols)
    schema = create.this
    schema.append(
        "expressions", exp.PrimaryKey(expressions=[exp.to_identifier(c, quoted=True) for c in KEY])
    )
    return create


def scope_columns(pack: Pack, table: str) -> list[str]:
    """Tenant columns of a table: those any role or view scopes by."""
    cols = {c.name for c in pack.columns(table)}
    scoped: list[str] = []
    specs: list[RoleSpec | ViewSpec] = [*pack.spec.roles.values(), *pack.spec.views.values()]
    for spec in specs:
        for col in spec.scope:
            if col in cols and col not in scoped:
                scoped.append(col)
    return scoped


NAMES = (*KEY, "newest_occurred_at", "newest_loaded_at")


def _newest(pack: Pack, table: str, column: str | None) -> exp.Select:
    """The batch's newest ``occurred_at``: for the table (``column`` None) or per value of a
    tenant column."""
    value: exp.Expr = (
        exp.Literal.string(ALL)
        if column is None
        else exp.Cast(this=exp.column(column, quoted=True), to=exp.DataType.build("VARCHAR"))
    )
    values = (
        exp.Literal.string(pack.name),
        exp.Literal.string(table),
        exp.Literal.string(column or ALL),
        value,
        exp.Max(this=exp.column("occurred_at", quoted=True)),
        exp.CurrentTimestamp(),
    )
    # Named as stored: ClickHouse names an unnamed literal by its text, and a union whose
    # branches hold two ``'*'`` columns of different types is refused.
    select = exp.select(
        *(exp.alias_(v, n, quoted=True) for v, n in zip(values, NAMES, strict=True))
    ).from_("_gm_batch")
    if column is not None:
        select = select.where(
            exp.Not(this=exp.Is(this=exp.column(column, quoted=True), expression=exp.Null()))
        )
        select = select.group_by(exp.column(column, quoted=True))
    return select


def _upsert(pack: Pack, table: str) -> exp.Expr:
    """One statement for the table's row and every tenant's: each is a statement's fixed
    cost inside every load transaction. The rows' keys differ (scope column, then value), so
    no row is touched twice by one ``ON CONFLICT``."""
    selects = [_newest(pack, table, c) for c in (None, *scope_columns(pack, table))]
    rows: exp.Query = selects[0]
    for more in selects[1:]:
        rows = exp.union(rows, more, distinct=False)
    ins = exp.insert(rows, FRESHNESS, columns=[exp.to_identifier(n, quoted=True) for n in NAMES])
    ins.set(
        "conflict",
        exp.OnConflict(
            conflict_keys=[exp.Ordered(this=exp.column(c, quoted=True)) for c in KEY],
            action=exp.var("DO UPDATE"),
            expressions=[
                exp.EQ(
                    this=exp.column("newest_occurred_at", quoted=True),
                    expression=exp.Greatest(
                        this=exp.column("newest_occurred_at", table="freshness", quoted=True),
                        expressions=[
                            exp.column("newest_occurred_at", table="excluded", quoted=True)
                        ],
                    ),
                ),
                exp.EQ(
                    this=exp.column("newest_loaded_at", quoted=True),
                    expression=exp.column("newest_loaded_at", table="excluded", quoted=True),
                ),
            ],
        ),
    )
    return ins


def freshness_refresh(pack: Pack, table: str) -> AfterInsert:
    return AfterInsert(statements=(_upsert(pack, table),))


@dataclass(frozen=True, slots=True)
class Watermark:
    as_of: datetime
    lag_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat().replace("+00:00", "Z"),
            "lag_seconds": round(self.lag_seconds, 3),
        }


def watermark(oldest_pending_received_at: int | None) -> Watermark:
    now = now_us()
    as_of = now if oldest_pending_received_at is None else min(now, oldest_pending_received_at)
    return Watermark(to_datetime(as_of).astimezone(UTC), (now - as_of) / MICROS)


def list_freshness(
    wh: Warehouse, packs: Sequence[str], scope: Mapping[str, Any] | None, wm: Watermark
) -> list[dict[str, Any]]:
    """Rows of the freshness table for the caller: unscoped callers see the table-wide rows;
    scoped callers only the rows of their own tenant values."""
    q = exp.select(
        "pack", "tbl", "scope_column", "scope_value", "newest_occurred_at", "newest_loaded_at"
    ).from_(FRESHNESS)
    params: dict[str, Any] = {}
    conds: list[exp.Expr] = [
        exp.In(
            this=exp.column("pack"),
            expressions=[exp.Placeholder(this=f"k{i}") for i in range(len(packs))],
        )
    ]
    params.update({f"k{i}": p for i, p in enumerate(packs)})
    if scope:
        alts = []
        for i, (col, value) in enumerate(scope.items()):
            alts.append(
                exp.and_(
                    exp.EQ(
                        this=exp.column("scope_column"), expression=exp.Placeholder(this=f"c{i}")
                    ),
                    exp.EQ(
                        this=exp.column("scope_value"), expression=exp.Placeholder(this=f"v{i}")
                    ),
                )
            )
            params[f"c{i}"] = col
            params[f"v{i}"] = str(value)
        conds.append(exp.or_(*alts))
    else:
        conds.append(exp.EQ(this=exp.column("scope_column"), expression=exp.Literal.string(ALL)))
    rows = wh.query(
        q.where(exp.and_(*conds)).order_by("pack", "tbl", "scope_value"), params
    ).to_pylist()
    out = []
    for r in rows:
        out.append(
            {
                "pack": r["pack"],
                "table": r["tbl"],
                "scope": None
                if r["scope_column"] == ALL
                else {r["scope_column"]: r["scope_value"]},
                "newest_occurred_at": _iso(r["newest_occurred_at"]),
                "newest_loaded_at": _iso(r["newest_loaded_at"]),
                "rollup_watermark": _iso(r["newest_loaded_at"]),
                **wm.as_dict(),
            }
        )
    return out


def _iso(v: datetime | None) -> str | None:
    return None if v is None else iso(from_datetime(v))
