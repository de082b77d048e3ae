"""The warehouse contract as tests, written once; each engine subclasses :class:`Conformance`
and provides ``warehouse`` (a fresh, provisioned instance)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import pytest
from sqlglot import exp

from gristmill.collect.pipeline import frame_layout
from gristmill.core.clock import now_us, parse_rfc3339_us
from gristmill.core.envelope import Envelope, Frame, Reject, encode_frame
from gristmill.load.batch import build_batch
from gristmill.log.base import LogEntry, LogRecord
from gristmill.metrics.compile import COMPONENTS
from gristmill.pack.loader import load_pack
from gristmill.pack.models import Pack
from gristmill.rollup.delta import merged
from gristmill.rollup.maintain import after_insert, provision_analytics
from gristmill.rollup.spec import full_rebuild
from gristmill.sql.ddl import table_ref
from gristmill.warehouse.base import AfterInsert, LoadBatch, TableRows, Warehouse
from tests.conftest import PACKS

_offsets = itertools.count(1)


def envelope(
    event_id: str, amount: int = 100, event_type: str = "order_created", vendor: str = "v1"
) -> Envelope:
    props = {
        "order_id": f"o-{event_id}",
        "store_id": "s1",
        "vendor_store_id": vendor,
        "amount_cents": amount,
    }
    return Envelope(
        event_id=event_id,
        event_type=event_type,
        schema_version=1,
        occurred_at=parse_rfc3339_us("2026-11-01T10:00:00Z"),
        properties=orjson.dumps(props),
        promoted=[f"o-{event_id}", "s1", vendor, amount],
        entity_type="order",
        entity_id=f"o-{event_id}",
        context=b'{"ip": "127.0.0.1"}',
    )


def batch_of(pack: Pack, *frames: Frame, log_id: str = "log-test") -> LoadBatch:
    entries = []
    layout = frame_layout(pack)
    for f in frames:
        body = encode_frame(f, layout)
        entries.append(
            LogEntry(next(_offsets), LogRecord(f.pack, f.source, f.count, f.received_at, body))
        )
    return build_batch(entries, {pack.name: pack}, log_id=log_id, group="loader")


def frame(source: str, *events: Envelope, rejects: list[Reject] | None = None) -> Frame:
    return Frame("marketplace", source, now_us(), list(events), rejects or [])


class Conformance:
    @pytest.fixture
    def pack(self) -> Pack:
        return load_pack(PACKS / "marketplace")

    @pytest.fixture
    def warehouse(self, pack: Pack) -> Iterator[Warehouse]:
        raise NotImplementedError

    def rows(
        self, wh: Warehouse, pack: Pack, table: str = "marketplace_events"
    ) -> list[dict[str, Any]]:
        q = exp.select("*").from_(table_ref(pack.dataset, table)).order_by("event_id")
        return list(wh.query(q).to_pylist())

    def test_provision_is_idempotent_and_ready(self, warehouse: Warehouse, pack: Pack) -> None:
        warehouse.provision([pack], apply=True)
        warehouse.provision([pack], apply=True)
        assert warehouse.check_ready([pack]).ok

    def test_query_returns_what_was_appended(self, warehouse: Warehouse, pack: Pack) -> None:
        res = warehouse.commit_load(batch_of(pack, frame("web", envelope("a", 1234))))
        assert res.loaded == {("marketplace", "web"): 1}
        (row,) = self.rows(warehouse, pack)
        assert row["event_id"] == "a"
        assert row["amount_cents"] == 1234
        assert row["vendor_store_id"] == "v1"
        assert row["entity_id"] == "o-a"
        assert row["source"] == "web"
        assert row["occurred_at"].isoformat() == "2026-11-01T10:00:00+00:00"
        assert row["loaded_at"] is not None

    def test_same_batch_twice_is_a_no_op(self, warehouse: Warehouse, pack: Pack) -> None:
        b = batch_of(pack, frame("web", envelope("a"), envelope("b")))
        first = warehouse.commit_load(b)
        again = warehouse.commit_load(b)
        assert first.total_loaded == 2
        assert again.replayed
        assert again.total_loaded == 0
        assert len(self.rows(warehouse, pack)) == 2

    def test_dedupe_holds_across_batches(self, warehouse: Warehouse, pack: Pack) -> None:
        warehouse.commit_load(batch_of(pack, frame("web", envelope("a"), envelope("b"))))
        res = warehouse.commit_load(batch_of(pack, frame("web", envelope("b"), envelope("c"))))
        assert res.loaded == {("marketplace", "web"): 1}
        assert res.duplicates == {("marketplace", "web"): 1}
        assert [r["event_id"] for r in self.rows(warehouse, pack)] == ["a", "b", "c"]

    def test_duplicates_inside_one_batch(self, warehouse: Warehouse, pack: Pack) -> None:
        res = warehouse.commit_load(
            batch_of(pack, frame("web", envelope("a"), envelope("a")), frame("web", envelope("a")))
        )
        assert res.loaded == {("marketplace", "web"): 1}
        assert res.duplicates == {("marketplace", "web"): 2}

    def test_same_event_id_in_two_scopes_loads_twice(
        self, warehouse: Warehouse, pack: Pack
    ) -> None:
        warehouse.commit_load(batch_of(pack, frame("web", envelope("a"))))
        res = warehouse.commit_load(batch_of(pack, frame("outbox", envelope("a"))))
        assert res.loaded == {("marketplace", "outbox"): 1}
        assert sorted(r["source"] for r in self.rows(warehouse, pack)) == ["outbox", "web"]

    def test_quarantine_rows_keep_original_bytes(self, warehouse: Warehouse, pack: Pack) -> None:
        rej = Reject(index=0, reason="schema_violation", detail="bad", raw=b'{"x": "\xff"}')
        res = warehouse.commit_load(batch_of(pack, frame("web", rejects=[rej])))
        assert res.quarantined == {("marketplace", "web"): 1}
        q = warehouse.query(
            exp.select("reason", "raw").from_(table_ref("_gristmill", "quarantine"))
        )
        assert q.to_pylist() == [{"reason": "schema_violation", "raw": b'{"x": "\xff"}'}]

    def test_offset_and_ledger_are_stored_with_the_load(
        self, warehouse: Warehouse, pack: Pack
    ) -> None:
        b = batch_of(pack, frame("web", envelope("a"), envelope("a")))
        warehouse.commit_load(b)
        assert warehouse.stored_offset("log-test", "loader") == b.last_offset
        ledger = warehouse.ledger("log-test", "loader")
        assert ledger.loaded == {("marketplace", "web"): 1}
        assert ledger.duplicates == {("marketplace", "web"): 1}
        assert warehouse.ledger("other-log", "loader").loaded == {}

    def test_delete(self, warehouse: Warehouse, pack: Pack) -> None:
        warehouse.commit_load(
            batch_of(pack, frame("web", envelope("a", vendor="v1"), envelope("b", vendor="v2")))
        )
        n = warehouse.delete(
            table_ref(pack.dataset, "marketplace_events"),
            exp.column("vendor_store_id").eq(exp.Literal.string("v1")),
        )
        assert n == 1
        assert [r["event_id"] for r in self.rows(warehouse, pack)] == ["b"]

    def test_a_row_updated_twice_takes_both_updates(self, warehouse: Warehouse, pack: Pack) -> None:
        """Two reprices and then a change of a clustering column of the same row (as an
        erasure after a reprice): each UPDATE reaches what an earlier one rewrote, where
        ClickHouse rewrites rows as an insert and a delete."""
        warehouse.commit_load(batch_of(pack, frame("web", envelope("a"), envelope("b"))))
        table = table_ref(pack.dataset, "marketplace_events")
        a = exp.column("event_id").eq(exp.Placeholder(this="e"))
        for cents in (250, 375):
            stmt = exp.update(table.copy(), {"amount_cents": exp.Placeholder(this="v")}, where=a)
            assert warehouse.execute(stmt, {"e": "a", "v": cents}) == 1
        vendor = exp.update(table, {"vendor_store_id": exp.Literal.string("v9")}, where=a)
        assert warehouse.execute(vendor, {"e": "a"}) == 1
        got = {
            r["event_id"]: (r["amount_cents"], r["vendor_store_id"])
            for r in self.rows(warehouse, pack)
        }
        assert got == {"a": (375, "v9"), "b": (100, "v1")}
        assert len(self.rows(warehouse, pack)) == 2

    def test_redelivery_after_the_window_loads_again(
        self, warehouse: Warehouse, pack: Pack
    ) -> None:
        warehouse.commit_load(batch_of(pack, frame("web", envelope("a"))))
        window_us = int(pack.spec.dedupe.window.total_seconds() * 1_000_000)
        assert warehouse.prune_dedupe(pack, now_us()) == 0
        assert warehouse.prune_dedupe(pack, now_us() + window_us + 1_000_000) == 1
        res = warehouse.commit_load(batch_of(pack, frame("web", envelope("a"))))
        assert res.loaded == {("marketplace", "web"): 1}

    def test_readiness_names_what_is_missing(self, warehouse: Warehouse, pack: Pack) -> None:
        warehouse.execute(exp.Drop(tables=[table_ref(pack.dataset, "ad_events")], kind="TABLE"))
        r = warehouse.check_ready([pack])
        assert not r.ok
        assert r.problems == ("missing table marketplace.ad_events",)

    def test_rollups_stay_exact_after_late_and_duplicate_events(
        self, warehouse: Warehouse, pack: Pack
    ) -> None:
        """The incremental refresh inside each load equals a rebuild from all rows."""
        provision_analytics(warehouse, [pack])
        after = after_insert({pack.name: pack}, warehouse.dialect)

        def load(*events: Envelope) -> None:
            b = batch_of(pack, frame("web", *events))
            warehouse.commit_load(build_batch_with_after(b, pack, after))

        def at(eid: str, when: str, vendor: str, amount: int, buyer: str = "s1") -> Envelope:
            e = envelope(eid, amount, vendor=vendor)
            e.occurred_at = parse_rfc3339_us(when)
            e.promoted = [f"o-{eid}", buyer, vendor, amount]
            return e

        load(at("a", "2026-11-01T10:05:00Z", "v1", 100), at("b", "2026-11-01T11:00:00Z", "v2", 7))
        load(at("c", "2026-11-02T09:00:00Z", "v1", 300, buyer="s2"))
        # late (an hour already rolled up), a duplicate, and a new buyer in an old bucket
        load(
            at("d", "2026-11-01T10:59:59Z", "v1", 50, buyer="s3"),
            at("a", "2026-11-01T10:05:00Z", "v1", 100),
        )
        r = pack.spec.rollups["marketplace_hourly"]
        incremental = rollup_rows(warehouse, pack, "marketplace_hourly")
        assert len(incremental) == 3
        for stmt in full_rebuild(pack, "marketplace_hourly", r, warehouse.dialect):
            warehouse.execute(stmt)
        assert rollup_rows(warehouse, pack, "marketplace_hourly") == incremental
        ten = next(row for row in incremental if row[0].hour == 10 and row[1] == "v1")
        names = ["bucket", *r.dimensions] + [
            f"{m}__{c}" for m in r.metrics for c in COMPONENTS[pack.spec.metrics[m].type]
        ]
        got = dict(zip(names, ten, strict=True))
        assert got["orders__n"] == 2
        assert got["gmv_cents__sum"] == 150
        assert got["buyers__set"] == ["s1", "s3"]
        assert got["largest_order_cents__max"] == 100


def build_batch_with_after(
    b: LoadBatch, pack: Pack, after: Mapping[tuple[str, str], tuple[AfterInsert, ...]]
) -> LoadBatch:
    b.tables = [
        TableRows(t.pack, t.table, t.rows, after.get((pack.name, t.table), ())) for t in b.tables
    ]
    return b


def rollup_rows(wh: Warehouse, pack: Pack, name: str) -> list[tuple[Any, ...]]:
    rows = wh.query(merged(pack, name, wh.dialect)).to_pylist()
    out = [tuple(sorted(v) if isinstance(v, list) else v for v in r.values()) for r in rows]
    return sorted(out, key=repr)
