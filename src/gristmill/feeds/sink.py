"""Staging tables and the transform into fact rows, as sqlglot expressions for any warehouse.

Staged rows live in the warehouse beside the facts (``<dataset>.<staging_table>``), so the
transform is one ``INSERT … SELECT`` computed by the engine in exact integer arithmetic
(money is integer cents), preceded by a delete of the feed's earlier facts in the same
transaction: a rerun replaces, never duplicates (lineage column ``data_feed_id``). Feed
facts skip the event dedupe and ledger on purpose: a feed has its own accounting
(``rows_in = accepted + rejected``) and its own idempotency (replace by feed).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import pyarrow as pa
from sqlglot import exp

from gristmill.feeds.template import Feed
from gristmill.pack.models import ColumnType
from gristmill.sql import ddl
from gristmill.warehouse.base import Warehouse

STAGE_KEYS: dict[str, ColumnType] = {
    "data_feed_id": ColumnType.INT64,
    "line": ColumnType.INT64,
}

ARROW: dict[ColumnType, pa.DataType] = {
    ColumnType.STRING: pa.string(),
    ColumnType.INT64: pa.int64(),
    ColumnType.DATE: pa.date32(),
    ColumnType.FLOAT64: pa.float64(),
}

FEED_SOURCE = "feed"


def _ph(name: str) -> exp.Placeholder:
    return exp.Placeholder(this=name)


def _col(name: str) -> exp.Column:
    return exp.column(name, quoted=True)


def _eq(name: str, param: str) -> exp.Expr:
    return exp.EQ(this=_col(name), expression=_ph(param))


class _Bulk(Protocol):
    def insert_arrow(self, table: exp.Table, rows: pa.Table) -> int: ...


class _Atomic(Protocol):
    def execute_all(self, stmts: Sequence[tuple[exp.Expr, dict[str, Any]]]) -> list[int]: ...


@dataclass(frozen=True)
class FeedTables:
    feed: Feed
    dialect: str

    @property
    def staging(self) -> exp.Table:
        return ddl.table_ref(self.feed.pack.dataset, self.feed.staging_table)

    @property
    def fact(self) -> exp.Table:
        assert self.feed.spec.into is not None
        return ddl.table_ref(self.feed.pack.dataset, self.feed.spec.into.table)

    def stage_columns(self) -> dict[str, ColumnType]:
        return {
            **STAGE_KEYS,
            self.feed.spec.tenant: ColumnType.STRING,
            **self.feed.staged_columns(),
        }

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([(c, ARROW[t]) for c, t in self.stage_columns().items()])

    def ddl(self) -> list[exp.Expr]:
        cols = [
            ddl.column_def(c, ddl.data_type(t, self.dialect))
            for c, t in self.stage_columns().items()
        ]
        return [ddl.create_schema(self.feed.pack.dataset), ddl.create_table(self.staging, cols)]

    def delete_staged(self) -> exp.Expr:
        return exp.delete(self.staging).where(_eq("data_feed_id", "feed"))

    def delete_staged_line(self) -> exp.Expr:
        """One staged row of the feed (a trailing summary row found at the end of a commit)."""
        return exp.delete(self.staging).where(
            exp.and_(_eq("data_feed_id", "feed"), _eq("line", "line"))
        )

    def extent(self) -> exp.Expr:
        """First and last fact day and row count of one tenant (``:tenant``)."""
        occurred = _col("occurred_at")
        return (
            exp.select(
                exp.Min(this=occurred).as_("first"),
                exp.Max(this=occurred).as_("last"),
                exp.Count(this=exp.Star()).as_("n"),
            )
            .from_(self.fact)
            .where(_eq(self.feed.spec.tenant, "tenant"))
        )

    def delete_facts(self) -> exp.Expr:
        return exp.delete(self.fact).where(_eq("data_feed_id", "feed"))

    def count_staged(self) -> exp.Expr:
        return (
            exp.select(exp.Count(this=exp.Star()).as_("n"))
            .from_(self.staging)
            .where(_eq("data_feed_id", "feed"))
        )

    def staged_rows(self) -> exp.Expr:
        cols = [_col(c) for c in self.stage_columns()]
        return (
            exp.select(*cols)
            .from_(self.staging)
            .where(_eq("data_feed_id", "feed"))
            .order_by(_col("line"))
        )

    def missing_costs(self) -> exp.Expr:
        """Distinct products of the feed with no known cost price."""
        return (
            exp.select(exp.Count(this=exp.Distinct(expressions=[_col("product_name")])).as_("n"))
            .from_(self.staging)
            .where(
                exp.and_(
                    _eq("data_feed_id", "feed"),
                    exp.Is(this=_col("unit_cost"), expression=exp.Null()),
                )
            )
        )

    def insert_facts(self) -> exp.Expr:
        """``INSERT INTO fact (envelope…, columns…) SELECT … FROM staging WHERE feed``."""
        feed, into = self.feed, self.feed.spec.into
        assert into is not None
        types = {c.name: c.type for c in feed.pack.columns(into.table)}

        def cast(e: exp.Expr, col: str) -> exp.Expr:
            return exp.cast(e, ddl.data_type(types[col], self.dialect))

        event_id = exp.Concat(
            expressions=[
                exp.Literal.string(f"{FEED_SOURCE}-"),
                exp.cast(_col("data_feed_id"), ddl.data_type(ColumnType.STRING, self.dialect)),
                exp.Literal.string("-"),
                exp.cast(_col("line"), ddl.data_type(ColumnType.STRING, self.dialect)),
            ],
            safe=True,
        )
        midnight = exp.AtTimeZone(
            this=exp.cast(_col(into.occurred_at), exp.DataType.build("TIMESTAMP")),
            zone=exp.Literal.string("UTC"),
        )
        values: dict[str, exp.Expr] = {
            "event_id": event_id,
            "event_type": exp.Literal.string(into.event_type),
            "schema_version": exp.Literal.number(
                max(feed.pack.spec.event_types[into.event_type].versions)
            ),
            "occurred_at": midnight,
            "received_at": _ph("now"),
            "loaded_at": _ph("now"),
            "source": exp.Literal.string(FEED_SOURCE),
            "properties": exp.Literal.string("{}"),
            "context": exp.Literal.string("{}"),
            feed.spec.tenant: _col(feed.spec.tenant),
            "data_feed_id": _col("data_feed_id"),
        }
        if into.order_id is not None and "order_id" in types:
            values["order_id"] = exp.Coalesce(
                this=_col(into.order_id), expressions=[event_id.copy()]
            )
        for col, tree in feed.expressions.items():
            values[col] = tree.copy()
        select = exp.select(*[cast(v, c).as_(c) for c, v in values.items()]).from_(self.staging)
        select = select.where(_eq("data_feed_id", "feed"))
        return exp.insert(
            select, self.fact, columns=[exp.to_identifier(c, quoted=True) for c in values]
        )

    def staged_days(self) -> exp.Expr:
        """Distinct fact days of the feed (partitioned engines create partitions first)."""
        into = self.feed.spec.into
        assert into is not None
        return (
            exp.select(_col(into.occurred_at).as_("d"))
            .distinct()
            .from_(self.staging)
            .where(_eq("data_feed_id", "feed"))
        )

    def totals(self, sums: Sequence[str]) -> exp.Expr:
        parts: list[exp.Expr] = [exp.Count(this=exp.Star()).as_("records")]
        for c in sums:
            parts.append(exp.Sum(this=_col(c)).as_(c))
        return exp.select(*parts).from_(self.fact).where(_eq("data_feed_id", "feed"))


def chunks(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for r in rows:
        batch.append(r)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def insert_rows(wh: Warehouse, table: exp.Table, rows: pa.Table) -> int:
    """Append rows by column name: the engine's Arrow path when it has one, else bound
    multi-row ``INSERT … VALUES`` in slices (slower, but correct on any engine)."""
    bulk = getattr(wh, "insert_arrow", None)
    if bulk is not None:
        n: int = bulk(table, rows)
        return n
    names = rows.column_names
    step = 500
    for off in range(0, rows.num_rows, step):
        part = rows.slice(off, step).to_pylist()
        params: dict[str, Any] = {}
        tuples = []
        for i, r in enumerate(part):
            keys = []
            for j, n in enumerate(names):
                k = f"p{i}_{j}"
                params[k] = r[n]
                keys.append(_ph(k))
            tuples.append(exp.Tuple(expressions=keys))
        stmt = exp.insert(
            exp.Values(expressions=tuples),
            table,
            columns=[exp.to_identifier(n, quoted=True) for n in names],
        )
        wh.execute(stmt, params)
    return int(rows.num_rows)


def now_param(t: datetime) -> dict[str, Any]:
    return {"now": t}
