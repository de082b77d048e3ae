"""Accumulate a commit's rows: accepted ones into staging batches, rejected ones (line,
reasons, original fields) into the reject store, counting both so ``rows_in = accepted +
rejected``. Memory is one staging batch plus one block of rejects, whatever the file size."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from gristmill.feeds.products import NO_MATCH, Match, Matcher
from gristmill.feeds.rows import Row
from gristmill.feeds.sink import FeedTables, execute_all, insert_rows
from gristmill.feeds.store import FeedStore, Upload
from gristmill.feeds.template import Feed
from gristmill.warehouse.base import Warehouse

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
    ) -> None:
        self.feed, self.tables, self.store, self.wh = feed, tables, store, wh
        self.up, self.feed_id = up, feed_id
        self.auto_create = auto_create
        self.batch_rows = batch_rows
        self.schema = tables.arrow_schema()
        self.matcher = self._matcher()
        self.created: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        """Forget everything staged so far (the fast lane handing over to the row path)."""
        self.accepted = self.rejected = 0
        self.errors: list[dict[str, Any]] = []
        self._batch: list[dict[str, Any]] = []
        self._bad: list[tuple[int, list[str], list[str]]] = []

    def _matcher(self) -> Matcher | None:
        lookup = self.feed.spec.lookup
        if lookup is None:
            return None
        return Matcher(self.store.products(self.up.business_id), lookup.threshold)

    def match_name(self, name: str | None) -> Match:
        if self.matcher is None:
            return NO_MATCH
        return self.matcher.match(name) if name else NO_MATCH

    def create(self, names: Iterable[str]) -> None:
        """Create products (the lookup's entities) and refresh the matcher."""
        todo = [{"name": n} for n in names]
        if todo:
            self.created.update(self.store.create_products(self.up.business_id, todo))
            self.matcher = self._matcher()

    # -- rows one by one (the general path) ---------------------------------------------------
    def add(self, row: Row) -> None:
        lookup = self.feed.spec.lookup
        match: Match | None = None
        if row.valid and lookup is not None:
            name = row.normalized.get(lookup.column)
            match = self.match_name(name)
            if match.product is None and self.auto_create and name:
                self.create([str(name)])
                match = self.match_name(name)
            if match.product is None:
                row.issues.append(
                    f"{lookup.column}: unknown product {str(name)[:80]!r} (create it, or "
                    "commit with auto_create_products)"
                )
        if not row.valid:
            self.reject(row.line, row.issues, row.raw)
            return
        self.accepted += 1
        rec = dict(row.normalized)
        rec.update(data_feed_id=self.feed_id, line=row.line)
        rec[self.feed.spec.tenant] = self.up.business_id
        if match is not None and match.product is not None:
            rec.update(
                product_id=match.product.id,
                product_name=match.product.name,
                unit_cost=match.product.cost_price_cents,
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
        """Accepted rows already in the staging schema."""
        if table.num_rows:
            insert_rows(self.wh, self.tables.staging, table.select(self.schema.names))
            self.accepted += table.num_rows

    def flush(self) -> None:
        if self._batch:
            rows = pa.Table.from_pylist(self._batch, self.schema)
            insert_rows(self.wh, self.tables.staging, rows)
            self._batch = []

    def finish(self) -> None:
        self.flush()
        self.store.add_rejects(self.feed_id, self._bad)
        self._bad = []

    def discard_staged(self) -> None:
        """Drop what this commit staged and rejected so far (before the row path restarts)."""
        execute_all(self.wh, [(self.tables.delete_staged(), {"feed": self.feed_id})])
        self.store.delete_rejects(self.feed_id)
        self.reset()
