"""The transform job: staged rows -> fact rows, with the seed's status lifecycle.

``queued -> transforming -> transformed | failed``, each step persisted with the structured
``summary`` (stage, UTC timestamps, metrics, issues, error with code/message/trace_id).
One worker thread runs queued feeds in order; the warehouse write is one transaction that
first deletes the feed's earlier facts, so running a feed twice leaves one copy. Staging rows
are purged only after success, so a failure before the load leaves them for inspection and
a retry.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, time
from decimal import Decimal
from typing import Any

import pyarrow as pa

from gristmill.feeds.sink import FeedTables
from gristmill.feeds.store import FeedStore, utcnow
from gristmill.feeds.template import Feed
from gristmill.warehouse.base import Warehouse
from gristmill.warehouse.common import in_one_transaction

log = logging.getLogger(__name__)

TERMINAL = frozenset({"transformed", "failed"})
CLAIMABLE = ("queued", "failed")


def iso_z(t: datetime) -> str:
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


def _money(cents: Any) -> float:
    return float(Decimal(int(cents or 0)) / 100)


class TransformError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Transformer:
    def __init__(
        self,
        store: FeedStore,
        warehouse: Warehouse,
        feed_of: Callable[[str, str], Feed],
        tables_of: Callable[[Feed], FeedTables],
    ) -> None:
        self.store = store
        self.wh = warehouse
        self.feed_of = feed_of
        self.tables_of = tables_of
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- the worker -----------------------------------------------------------------------
    def enqueue(self, feed_id: int) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="gristmill-feeds", daemon=True
                )
                self._thread.start()
        self._queue.put(feed_id)

    def requeue(self, feed_id: int) -> None:
        """Queue a failed feed again; its status says ``queued`` before this returns, so a
        poller never mistakes the old failure for the new run's outcome."""
        row = self.store.get_feed(feed_id)
        if row is None:
            raise KeyError(feed_id)
        summary = {k: v for k, v in row["summary"].items() if k not in ("error", "stage")}
        summary.update(stage="queued", queued_at=iso_z(utcnow()))
        self.store.update_feed(feed_id, status="queued", summary=summary)
        self.enqueue(feed_id)

    def _work(self) -> None:
        while (feed_id := self._queue.get()) is not None:
            try:
                self.run(feed_id)
            except Exception:  # run() records failures; this keeps the worker alive
                log.exception("feed %s: transform crashed", feed_id)

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=30)

    # -- one feed ---------------------------------------------------------------------------
    def run(self, feed_id: int) -> str:
        """Transform one feed; returns its final status. Safe to call again for a feed:
        a transformed feed is left alone, a failed or interrupted one is retried."""
        row = self.store.get_feed(feed_id)
        if row is None:
            raise KeyError(feed_id)
        if row["status"] == "transformed":
            return "transformed"
        summary: dict[str, Any] = dict(row["summary"])
        summary.pop("error", None)
        summary.update(stage="transforming", transform_started_at=iso_z(utcnow()))
        summary.setdefault("queued_at", summary["transform_started_at"])
        if not self.store.claim(feed_id, CLAIMABLE, summary):
            return str(row["status"])  # another run has it (or it is still being committed)
        try:
            feed = self.feed_of(row["pack"], row["data_type"])
            tables = self.tables_of(feed)
            params = {"feed": feed_id}
            staged = self.wh.query(tables.count_staged(), params).to_pylist()[0]["n"]
            if not staged:
                raise TransformError(
                    "no_staged_rows",
                    "no staged rows for this feed (already purged after a load?); "
                    "commit the file again",
                )
            if feed.spec.into is not None:
                metrics, issues = self._load_facts(feed, tables, feed_id)
            else:
                metrics, issues = self._apply_updates(feed, tables, feed_id, row["business_id"])
            in_one_transaction(self.wh, [(tables.delete_staged(), params)])
        except Exception as e:
            code = e.code if isinstance(e, TransformError) else "transform_failed"
            trace = uuid.uuid4().hex
            log.exception("feed %s: transform failed (trace %s)", feed_id, trace)
            summary.update(
                stage="failed",
                transform_finished_at=iso_z(utcnow()),
                error={"code": code, "message": str(e)[:500], "trace_id": trace},
            )
            self.store.update_feed(feed_id, status="failed", summary=summary)
            return "failed"
        # What the commit noted (summary rows not loaded, confirmed merges) leads the issues.
        noted: list[dict[str, Any]] = summary.pop("commit_issues", [])
        summary.update(
            stage="transformed",
            transform_finished_at=iso_z(utcnow()),
            metrics=metrics,
            issues=[*noted, *issues],
            error=None,
        )
        self.store.update_feed(feed_id, status="transformed", summary=summary)
        return "transformed"

    def _load_facts(
        self, feed: Feed, tables: FeedTables, feed_id: int
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        into = feed.spec.into
        assert into is not None
        params: dict[str, Any] = {"feed": feed_id}
        self.load(tables, feed_id)
        got = self.wh.query(tables.totals(into.totals), params).to_pylist()[0]
        metrics: dict[str, Any] = {"records": int(got["records"])}
        for col in into.totals:
            key = col.removesuffix("_cents")
            metrics[key] = _money(got[col])
            metrics[f"{key}_cents"] = int(got[col] or 0)
        rev, margin = got.get("gross_revenue_cents"), got.get("gross_margin_amount_cents")
        if rev is not None and margin is not None:
            metrics["gross_margin_percent"] = (
                round(float(Decimal(int(margin)) * 100 / Decimal(int(rev))), 2) if rev else None
            )
        issues: list[dict[str, Any]] = []
        if feed.spec.lookup is not None:
            n = int(self.wh.query(tables.missing_costs(), params).to_pylist()[0]["n"])
            if n:
                issues.append(
                    {
                        "type": "warning",
                        "code": "missing_product_cost",
                        "message": f"{n} products had no cost price; COGS assumed 0.",
                        "count": n,
                    }
                )
        return metrics, issues

    def load(self, tables: FeedTables, feed_id: int) -> None:
        """Replace the feed's facts by its staged rows, in one transaction where the engine
        has them: rerunning it leaves exactly one copy."""
        params: dict[str, Any] = {"feed": feed_id}
        self._partitions(tables, feed_id)
        in_one_transaction(
            self.wh,
            [
                (tables.delete_facts(), params),
                (tables.insert_facts(), {**params, "now": utcnow()}),
            ],
        )

    def _partitions(self, tables: FeedTables, feed_id: int) -> None:
        """Engines that partition by time need the partitions before the insert (the event
        loader creates them on demand; the transform writes outside it)."""
        ensure = getattr(self.wh, "ensure_partitions", None)
        if not self.wh.caps.native_partitioning or ensure is None:
            return
        into = tables.feed.spec.into
        assert into is not None
        days = self.wh.query(tables.staged_days(), {"feed": feed_id}).column("d").to_pylist()
        times = [datetime.combine(d, time(0), tzinfo=UTC) for d in days if d is not None]
        ensure(tables.feed.pack, into.table, pa.array(times, pa.timestamp("us", tz="UTC")))

    def _apply_updates(
        self, feed: Feed, tables: FeedTables, feed_id: int, business_id: str
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        rows = self.wh.query(tables.staged_rows(), {"feed": feed_id}).to_pylist()
        updated = 0
        for r in rows:
            if r.get("product_id") is None:
                continue
            for field, col in feed.spec.updates.items():
                if r.get(col) is not None:
                    self.store.set_cost(business_id, int(r["product_id"]), field, int(r[col]))
            updated += 1
        return {"records": len(rows), "products_updated": updated}, []
