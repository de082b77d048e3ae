"""Accumulate a commit's rows: accepted ones into staging batches, rejected ones (line,
reasons, original fields) into the reject store, counting both so ``rows_in = accepted +
rejected``. Memory is one staging batch plus one block of rejects, whatever the file size.

Products resolve here for both lanes: exact, or a fuzzy match the user confirmed; any other
name is new (created with ``auto_create``, else the row is rejected saying why). Column sums
of the accepted rows and the last few rows of the file are kept so that :meth:`finish` can
find trailing summary rows (:class:`~gristmill.feeds.summary.SumRule`) whichever lane staged
them, and take them back out of staging as ``summary_row`` rejects.

The fast lane's batches are written by one background thread, one batch at a time, while the
lane parses and checks the next block: both halves release the GIL (DuckDB's insert, Arrow's
kernels), so on two cores the staging write hides behind the parse (0.75 s of a 1M-row
commit). At most one write is in flight, so memory stays two blocks; every other write,
delete or count waits for it first (:meth:`Stager.settle`), and its error is raised there."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from gristmill.feeds.products import NO_MATCH, Match, Matcher
from gristmill.feeds.rows import Row
from gristmill.feeds.sink import FeedTables, insert_rows
from gristmill.feeds.store import FeedStore, Product, Upload, name_key
from gristmill.feeds.summary import SUM_REASON, SumRule, Sums, TailRow
from gristmill.feeds.template import Feed
from gristmill.warehouse.base import Warehouse
from gristmill.warehouse.common import in_one_transaction

MAX_ROW_ERRORS = 100


class Stager:
    def __init__(
        self,
        feed: Feed,
        tables: FeedTables,
        store: FeedStore,
        wh: Warehouse,
        up: Upload,
        feed_id: int,
        *,
        auto_create: bool,
        batch_rows: int,
        confirm_merges: Collection[str] = (),
        confirm_all_merges: bool = False,
    ) -> None:
        self.feed, self.tables, self.store, self.wh = feed, tables, store, wh
        self.up, self.feed_id = up, feed_id
        self.auto_create = auto_create
        self.batch_rows = batch_rows
        self.confirmed = {name_key(n) for n in confirm_merges}
        self.confirm_all = confirm_all_merges
        self.schema = tables.arrow_schema()
        self.matcher = self._matcher()
        self.created: dict[str, int] = {}
        self.merged: dict[str, int] = {}
        """Confirmed fuzzy merges: name in the file -> product id."""
        self.rule = SumRule(feed.sum_columns, feed.spec.summary_rows.amount)
        self._writer: threading.Thread | None = None
        self._write_error: BaseException | None = None
        self.reset()

    def reset(self) -> None:
        """Forget everything staged so far (the fast lane handing over to the row path)."""
        self.accepted = self.rejected = self.summary_rows = 0
        self.errors: list[dict[str, Any]] = []
        self._batch: list[dict[str, Any]] = []
        self._bad: list[tuple[int, list[str], list[str]]] = []
        self.sums = Sums()
        self._tail: list[TailRow] = []
        self._carry: pa.Table | None = None
        """Fast-lane rows short of a whole storage unit, written with the next ones."""

    def _matcher(self) -> Matcher | None:
        lookup = self.feed.spec.lookup
        if lookup is None:
            return None
        return Matcher(self.store.products(self.up.business_id), lookup.threshold)

    def match_name(self, name: str | None) -> Match:
        if self.matcher is None:
            return NO_MATCH
        return self.matcher.match(name) if name else NO_MATCH

    def _takes(self, name: str, m: Match) -> Product | None:
        """The product a name loads into: exact, or a fuzzy match the user confirmed."""
        if m.status == "fuzzy" and not (self.confirm_all or name_key(name) in self.confirmed):
            return None
        if m.status == "fuzzy" and m.product is not None:
            self.merged[name] = m.product.id
        return m.product

    def resolve_many(self, names: list[str | None]) -> list[Product | None]:
        """Each name's product, creating the new ones at once when ``auto_create``."""
        out = [self._takes(n, self.match_name(n)) if n else None for n in names]
        if self.auto_create:
            missing = list(dict.fromkeys(n for n, p in zip(names, out, strict=True) if n and not p))
            if missing:
                self.create(missing)
                out = [self._takes(n, self.match_name(n)) if n else None for n in names]
        return out

    def create(self, names: Iterable[str]) -> None:
        """Create products (the lookup's entities); the matcher learns them as exact names
        only, so a later new name of this file is never fuzzily merged into them."""
        todo = [{"name": n} for n in names]
        if todo and self.matcher is not None:
            made = self.store.create_products(self.up.business_id, todo)
            self.created.update(made)
            ids = set(made.values())
            fresh = [p for p in self.store.products(self.up.business_id) if p.id in ids]
            self.matcher.add_exact(fresh)

    def unknown(self, name: str) -> str:
        lookup = self.feed.spec.lookup
        assert lookup is not None
        m = self.match_name(name)
        if m.status == "fuzzy" and m.product is not None and self.matcher is not None:
            return (
                f"{lookup.column}: unknown product {name[:80]!r}, close to "
                f"{m.product.name[:80]!r} ({self.matcher.rule(m)}): confirm the merge "
                "(confirm_merges), create it, or commit with auto_create_products"
            )
        return (
            f"{lookup.column}: unknown product {name[:80]!r} (create it, or "
            "commit with auto_create_products)"
        )

    # -- rows one by one (the general path) ---------------------------------------------------
    def add(self, row: Row) -> None:
        lookup = self.feed.spec.lookup
        product: Product | None = None
        for col in row.readings:  # never stage a date nobody decided (the commit asks first)
            row.issues.append(f"{col}: ambiguous date (day-first or month-first?)")
        if row.valid and lookup is not None:
            name = row.normalized.get(lookup.column)
            product = self.resolve_many([name])[0]
            if product is None:
                row.issues.append(self.unknown(str(name)))
        self._remember(row)
        if not row.valid:
            self.summary_rows += row.summary
            self.reject(row.line, row.issues, row.raw)
            return
        self.accepted += 1
        self.sums.add(self._sum_values(row.normalized), self.rule.amount)
        rec = dict(row.normalized)
        rec.update(data_feed_id=self.feed_id, line=row.line)
        rec[self.feed.spec.tenant] = self.up.business_id
        if product is not None:
            rec.update(
                product_id=product.id,
                product_name=product.name,
                unit_cost=product.cost_price_cents,
            )
        self._batch.append(rec)
        if len(self._batch) >= self.batch_rows:
            self.flush()

    def reject(self, line: int, issues: list[str], raw: list[str]) -> None:
        self.rejected += 1
        self._bad.append((line, issues, raw))
        if len(self.errors) < MAX_ROW_ERRORS:
            self.errors.append({"line": line, "errors": issues})
        if len(self._bad) >= 1000:
            self.store.add_rejects(self.feed_id, self._bad)
            self._bad = []

    # -- whole Arrow batches (the fast lane) ------------------------------------------------
    def add_table(self, table: pa.Table) -> None:
        """Accepted rows already in the staging schema; written in the background, in whole
        storage units of the engine (``caps.append_rows``): the rest waits for the next
        table or :meth:`flush`, so the checkpoint does not write these rows a second time."""
        if table.num_rows:
            self.settle()
            rows = table.select(self.schema.names)
            if self._carry is not None:
                rows = pa.concat_tables([self._carry, rows])
            unit = self.wh.caps.append_rows
            whole = rows.num_rows - rows.num_rows % unit if unit else rows.num_rows
            self._carry = rows.slice(whole) if whole < rows.num_rows else None
            if whole:
                self._writer = threading.Thread(
                    target=self._write,
                    args=(rows.slice(0, whole),),
                    name="gm-feed-stage",
                    daemon=True,
                )
                self._writer.start()
            self.accepted += table.num_rows
            s = self.sums
            s.count += table.num_rows
            for c in self.rule.columns:
                s.columns[c] = s.columns.get(c, 0) + int(pc.sum(table.column(c)).as_py() or 0)
            if self.rule.amount is not None:
                q, p = (table.column(c) for c in self.rule.amount)
                s.amount += int(pc.sum(pc.multiply(q, p)).as_py() or 0)

    def _write(self, rows: pa.Table) -> None:
        try:
            insert_rows(self.wh, self.tables.staging, rows)
        except BaseException as exc:  # raised in the committing thread by settle()
            self._write_error = exc

    def settle(self) -> None:
        """Wait for the batch being written; raise its error. Called before any other write
        so no insert can land after a delete or a count it should have preceded."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        if self._write_error is not None:
            exc, self._write_error = self._write_error, None
            raise exc

    def abandon(self) -> None:
        """Wait for the batch being written and forget its error: the commit failed or the
        lane gave up, and what was staged is about to be dropped or marked failed."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        self._write_error = None

    # -- trailing summary rows ----------------------------------------------------------------
    def _sum_values(self, norm: dict[str, Any]) -> dict[str, int | None]:
        return {c: norm.get(c) for c in self.rule.columns}

    def _remember(self, row: Row, accepted: bool | None = None) -> None:
        """Keep the row if it is among the last ``rule.tail`` lines seen so far."""
        tail = self._tail
        if len(tail) >= self.rule.tail and row.line < tail[0].line:
            return
        required = [c for c in self.feed.required if c not in self.rule.columns]
        tail.append(
            TailRow(
                row.line,
                self._sum_values(row.normalized),
                row.valid if accepted is None else accepted,
                row.summary,
                any(row.normalized.get(c) is None for c in required),
                row.raw,
            )
        )
        if len(tail) > 1 and tail[-1].line < tail[-2].line:  # the fast lane's order
            tail.sort(key=lambda r: r.line)
        del tail[: max(0, len(tail) - self.rule.tail)]

    def remember_fast(self, row: Row) -> None:
        """A row the fast lane staged (re-checked so the tail has its values)."""
        self._remember(row, accepted=True)

    def _take_back_summaries(self) -> None:
        before = Sums(dict(self.sums.columns), self.sums.count, self.sums.amount)
        for r in self._tail:
            if r.accepted:
                before.minus(r.values, self.rule.amount)
        lines = set(self.rule.trailing(before, self._tail))
        for r in self._tail:
            if r.line not in lines:
                continue
            self.summary_rows += 1
            if r.accepted:
                where = {"feed": self.feed_id, "line": r.line}
                in_one_transaction(self.wh, [(self.tables.delete_staged_line(), where)])
                self.accepted -= 1
                self.sums.minus(r.values, self.rule.amount)
                self.reject(r.line, [SUM_REASON], r.raw)
            else:
                self._bad = [b for b in self._bad if b[0] != r.line]
                self.store.delete_rejects(self.feed_id, r.line)
                self.errors = [e for e in self.errors if e["line"] != r.line]
                self.rejected -= 1
                self.reject(r.line, [SUM_REASON], r.raw)

    def flush(self) -> None:
        self.settle()
        if self._carry is not None:
            insert_rows(self.wh, self.tables.staging, self._carry)
            self._carry = None
        if self._batch:
            rows = pa.Table.from_pylist(self._batch, self.schema)
            insert_rows(self.wh, self.tables.staging, rows)
            self._batch = []

    def finish(self) -> None:
        self.flush()
        self._take_back_summaries()
        self.store.add_rejects(self.feed_id, self._bad)
        self._bad = []

    def discard_staged(self) -> None:
        """Drop what this commit staged and rejected so far (before the row path restarts)."""
        self.abandon()
        in_one_transaction(self.wh, [(self.tables.delete_staged(), {"feed": self.feed_id})])
        self.store.delete_rejects(self.feed_id)
        self.reset()
