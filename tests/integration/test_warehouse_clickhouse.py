"""The warehouse conformance suite on ClickHouse in process (chdb), plus what only this engine
needs proved: the MergeTree layout, and that a load which died half-way is compensated, not
doubled, when its batch comes again. With ``CLICKHOUSE_URL`` set, the suite also runs against
that server through clickhouse-connect (the same code, another connection)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlglot import exp

from gristmill.core.clock import parse_rfc3339_us
from gristmill.core.envelope import Envelope
from gristmill.pack.models import Pack
from gristmill.rollup.delta import PART
from gristmill.rollup.maintain import after_insert, provision_analytics
from gristmill.rollup.spec import full_rebuild, rollup_table
from gristmill.sql.ddl import table_ref
from gristmill.warehouse.base import LoadBatch, Warehouse
from gristmill.warehouse.clickhouse.client import ClickHouseWarehouse, rewrite_marker
from gristmill.warehouse.clickhouse.connection import ChdbConnection, ServerConnection
from gristmill.warehouse.clickhouse.sql import BATCH_COLUMN
from tests.integration.warehouse_conformance import (
    Conformance,
    batch_of,
    build_batch_with_after,
    envelope,
    frame,
    rollup_rows,
)

pytestmark = pytest.mark.clickhouse


def count(wh: Warehouse, pack: Pack, table: str = "marketplace_events") -> int:
    q = exp.select(exp.func("count", exp.Star()).as_("n")).from_(table_ref(pack.dataset, table))
    return int(wh.query(q).to_pylist()[0]["n"])


class TestChdb(Conformance):
    @pytest.fixture
    def warehouse(self, pack: Pack, tmp_path: Path) -> Iterator[Warehouse]:
        wh = ClickHouseWarehouse(ChdbConnection(tmp_path / "chdb"))
        wh.provision([pack], apply=True)
        yield wh
        wh.close()

    def test_tables_are_partitioned_and_ordered_by_the_pack(
        self, warehouse: Warehouse, pack: Pack
    ) -> None:
        row = warehouse.query_sql(
            "SELECT engine, partition_key, sorting_key FROM system.tables "
            "WHERE database = 'marketplace' AND name = 'marketplace_events'"
        ).to_pylist()
        assert row == [
            {
                "engine": "MergeTree",
                "partition_key": "toDate(occurred_at)",
                "sorting_key": "vendor_store_id, store_id, event_type, occurred_at",
            }
        ]

    def test_a_load_that_died_half_way_is_compensated_on_retry(
        self, warehouse: Warehouse, pack: Pack
    ) -> None:
        """Simulate a crash after rows and keys were written but before the ledger row: the
        retry removes the leftovers by batch id and loads the batch exactly once."""
        assert isinstance(warehouse, ClickHouseWarehouse)
        b = batch_of(pack, frame("web", envelope("a"), envelope("b")))
        ledger_insert = warehouse._conn.insert_arrow
        calls: list[str] = []

        def dying(table: str, data: object) -> None:
            calls.append(table)
            if table == '"_gristmill"."loads"':
                raise RuntimeError("crash before the commit point")
            ledger_insert(table, data)  # type: ignore[arg-type]

        warehouse._conn.insert_arrow = dying  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            warehouse.commit_load(b)
        warehouse._conn.insert_arrow = ledger_insert  # type: ignore[method-assign]
        assert count(warehouse, pack) == 2  # visible before the commit point ...
        assert warehouse.ledger("log-test", "loader").loaded == {}  # ... but not committed
        again = warehouse.commit_load(b)
        assert again.loaded == {("marketplace", "web"): 2}
        assert again.duplicates == {("marketplace", "web"): 0}
        assert count(warehouse, pack) == 2
        assert count(warehouse, pack, "_gm_dedupe") == 2
        assert warehouse.commit_load(b).replayed

    def test_the_ledger_is_the_commit_point_for_the_offset(
        self, warehouse: Warehouse, pack: Pack
    ) -> None:
        """A crash between the ledger and the offset: the replay writes the offset."""
        assert isinstance(warehouse, ClickHouseWarehouse)
        b: LoadBatch = batch_of(pack, frame("web", envelope("a")))
        real = warehouse._write_offset

        def lost(batch: LoadBatch) -> None:
            raise RuntimeError("crash after the ledger")

        warehouse._write_offset = lost  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            warehouse.commit_load(b)
        warehouse._write_offset = real  # type: ignore[method-assign]
        assert warehouse.stored_offset("log-test", "loader") == 0
        assert warehouse.commit_load(b).replayed
        assert warehouse.stored_offset("log-test", "loader") == b.last_offset
        assert count(warehouse, pack) == 1

    def test_a_rollup_bucket_with_a_null_dimension_is_replaced_not_doubled(
        self, warehouse: Warehouse, pack: Pack
    ) -> None:
        """The refresh keys buckets by a NULL-safe set lookup: a late event in a bucket whose
        dimension is NULL replaces that bucket's row, as the rebuild from rows says."""
        provision_analytics(warehouse, [pack])
        after = after_insert({pack.name: pack}, warehouse.dialect)

        def load(*events: Envelope) -> None:
            b = batch_of(pack, frame("web", *events))
            warehouse.commit_load(build_batch_with_after(b, pack, after))

        def at(eid: str, amount: int) -> Envelope:
            e = envelope(eid, amount)
            e.occurred_at = parse_rfc3339_us("2026-11-01T10:05:00Z")
            e.promoted = [f"o-{eid}", "s1", None, amount]
            return e

        load(at("a", 100))
        load(at("b", 20))  # late, same hour, same NULL vendor
        rows = rollup_rows(warehouse, pack, "marketplace_hourly")
        assert len(rows) == 1
        r = pack.spec.rollups["marketplace_hourly"]
        for stmt in full_rebuild(pack, "marketplace_hourly", r, warehouse.dialect):
            warehouse.execute(stmt)
        assert rollup_rows(warehouse, pack, "marketplace_hourly") == rows
        assert rows[0][1] is None
        assert rows[0][2] == 2  # orders__n

    def _loads(self, warehouse: ClickHouseWarehouse, pack: Pack, mode: str = "auto") -> Any:
        provision_analytics(warehouse, [pack])
        after = after_insert({pack.name: pack}, warehouse.dialect, mode)

        def load(*events: Envelope) -> None:
            b = batch_of(pack, frame("web", *events))
            warehouse.commit_load(build_batch_with_after(b, pack, after))

        return load

    @staticmethod
    def _at(eid: str, when: str, vendor: str | None, amount: int, buyer: str = "s1") -> Envelope:
        e = envelope(eid, amount, vendor=vendor or "v1")
        e.occurred_at = parse_rfc3339_us(when)
        e.promoted = [f"o-{eid}", buyer, vendor, amount]
        return e

    def _rebuilt(self, warehouse: Warehouse, pack: Pack) -> list[tuple[Any, ...]]:
        r = pack.spec.rollups["marketplace_hourly"]
        for stmt in full_rebuild(pack, "marketplace_hourly", r, warehouse.dialect):
            warehouse.execute(stmt)
        return rollup_rows(warehouse, pack, "marketplace_hourly")

    def _parts(self, warehouse: Warehouse, pack: Pack) -> dict[str, int]:
        ref = rollup_table(pack, "marketplace_hourly")
        q = (
            exp.select(exp.column(PART), exp.func("count", exp.Star()).as_("n"))
            .from_(ref)
            .group_by(exp.column(PART))
        )
        return {str(r[PART]): int(r["n"]) for r in warehouse.query(q).to_pylist()}

    def test_rollups_are_kept_as_parts_and_compaction_folds_them(
        self, warehouse: Warehouse, pack: Pack
    ) -> None:
        """Each load appends its batch's delta as a part of its own (no read of stored rows);
        compaction folds committed parts into one row per key, month by month, and the
        numbers stay those of a rebuild from rows."""
        assert isinstance(warehouse, ClickHouseWarehouse)
        load = self._loads(warehouse, pack)
        at = self._at
        load(at("a", "2026-11-01T10:05:00Z", "v1", 100), at("b", "2026-10-31T23:00:00Z", "v2", 7))
        load(
            at("c", "2026-11-01T10:30:00Z", "v1", 300, buyer="s2"),
            at("a", "2026-11-01T10:05:00Z", "v1", 100),
        )
        load(at("d", "2026-11-01T10:59:59Z", None, 50, buyer="s3"))
        parts = self._parts(warehouse, pack)
        assert "" not in parts
        assert len(parts) == 3
        before = rollup_rows(warehouse, pack, "marketplace_hourly")
        assert warehouse.compact_rollups() == 2  # October and November
        assert self._parts(warehouse, pack) == {"": 3}  # (10h, v1), (10h, NULL), (23h, v2)
        assert rollup_rows(warehouse, pack, "marketplace_hourly") == before
        assert warehouse.compact_rollups() == 0
        load(at("e", "2026-11-01T10:10:00Z", "v1", 1, buyer="s1"))  # a part on a folded key
        after = rollup_rows(warehouse, pack, "marketplace_hourly")
        assert self._rebuilt(warehouse, pack) == after
        v1 = next(r for r in after if r[1] == "v1")
        assert v1[2] == 3
        assert v1[3] == 401

    def test_an_update_that_died_between_its_insert_and_its_delete_is_finished_by_its_retry(
        self, warehouse: Warehouse, pack: Pack
    ) -> None:
        """ClickHouse rewrites an UPDATE as an insert of the new rows and a delete of the old.
        A process killed in between leaves both; the same statement run again (an erasure
        resumed after a restart) copies only rows not copied yet, then deletes the old: one
        row per event, with the new value, not two."""
        assert isinstance(warehouse, ClickHouseWarehouse)
        warehouse.commit_load(batch_of(pack, frame("web", envelope("a"), envelope("b"))))
        table = table_ref(pack.dataset, "marketplace_events")
        a = exp.column("event_id").eq(exp.Placeholder(this="e"))
        stmt = exp.update(table.copy(), {"amount_cents": exp.Placeholder(this="v")}, where=a)
        params = {"e": "a", "v": 250}
        # The first try's insert, as _rewrite makes it, and no delete: the kill.
        marker = rewrite_marker(stmt, params)
        cols = list(warehouse.columns_of(table))
        picked = ", ".join(
            "{v:Int64}" if c == "amount_cents" else "{m:String}" if c == BATCH_COLUMN else c
            for c in cols
        )
        warehouse.query_sql(
            f"INSERT INTO marketplace.marketplace_events ({', '.join(cols)}) "
            f"SELECT {picked} FROM marketplace.marketplace_events WHERE event_id = 'a'",
            {"v": 250, "m": marker},
        )
        assert sorted(r["amount_cents"] for r in self.rows(warehouse, pack)) == [100, 100, 250]
        assert warehouse.execute(stmt, params) == 2  # the original and the copy match
        got = sorted((r["event_id"], r["amount_cents"]) for r in self.rows(warehouse, pack))
        assert got == [("a", 250), ("b", 100)]

    def test_compaction_keeps_the_part_of_a_batch_that_died_and_its_retry_removes_it(
        self, warehouse: Warehouse, pack: Pack
    ) -> None:
        assert isinstance(warehouse, ClickHouseWarehouse)
        load = self._loads(warehouse, pack)
        at = self._at
        load(at("a", "2026-11-01T10:05:00Z", "v1", 100))
        after = after_insert({pack.name: pack}, warehouse.dialect)
        dead = build_batch_with_after(
            batch_of(pack, frame("web", at("b", "2026-11-01T10:06:00Z", "v1", 5))), pack, after
        )
        real = warehouse._conn.insert_arrow

        def dying(table: str, data: Any) -> None:
            if table == '"_gristmill"."loads"':
                raise RuntimeError("crash before the commit point")
            real(table, data)

        warehouse._conn.insert_arrow = dying  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            warehouse.commit_load(dead)
        warehouse._conn.insert_arrow = real  # type: ignore[method-assign]
        assert warehouse.compact_rollups() == 1
        assert self._parts(warehouse, pack) == {"": 1, dead.batch_id: 1}  # not committed: kept
        warehouse.commit_load(dead)  # the retry removes its old part and writes it again
        assert self._parts(warehouse, pack) == {"": 1, dead.batch_id: 1}
        rows = rollup_rows(warehouse, pack, "marketplace_hourly")
        assert rows[0][2] == 2
        assert rows[0][3] == 105
        assert self._rebuilt(warehouse, pack) == rows

    def test_a_compaction_that_dies_before_the_swap_changes_nothing(
        self, warehouse: Warehouse, pack: Pack
    ) -> None:
        """The partition's new content is built aside and swapped in by one REPLACE
        PARTITION: dying before it leaves the parts as they were, and the next run works."""
        assert isinstance(warehouse, ClickHouseWarehouse)
        load = self._loads(warehouse, pack)
        at = self._at
        load(at("a", "2026-11-01T10:05:00Z", "v1", 100))
        load(at("b", "2026-11-01T10:06:00Z", "v1", 5))
        before = rollup_rows(warehouse, pack, "marketplace_hourly")
        parts = self._parts(warehouse, pack)
        real = warehouse._conn.command

        def dying(sql_text: str, params: Any = None) -> None:
            if "REPLACE PARTITION" in sql_text:
                raise RuntimeError("crash before the swap")
            real(sql_text, params)

        warehouse._conn.command = dying  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            warehouse.compact_rollups()
        warehouse._conn.command = real  # type: ignore[method-assign]
        assert self._parts(warehouse, pack) == parts
        assert rollup_rows(warehouse, pack, "marketplace_hourly") == before
        assert warehouse.compact_rollups() == 1
        assert rollup_rows(warehouse, pack, "marketplace_hourly") == before
        tables = warehouse.query_sql(
            "SELECT name FROM system.tables WHERE database = 'marketplace' "
            "AND name LIKE '%gm_compact%'"
        )
        assert tables.num_rows == 0

    def test_recompute_after_delta_replaces_the_parts_of_a_touched_key(
        self, warehouse: Warehouse, pack: Pack
    ) -> None:
        """``rollup_mode`` switched to recompute over parts a delta loader left: the touched
        key's parts go with its old row, so nothing is counted twice."""
        assert isinstance(warehouse, ClickHouseWarehouse)
        at = self._at
        self._loads(warehouse, pack)(at("a", "2026-11-01T10:05:00Z", "v1", 100))
        recompute = self._loads(warehouse, pack, "recompute")
        recompute(at("b", "2026-11-01T10:06:00Z", "v1", 5))
        rows = rollup_rows(warehouse, pack, "marketplace_hourly")
        assert rows[0][2] == 2
        assert rows[0][3] == 105
        assert self._parts(warehouse, pack) == {"": 1}
        assert self._rebuilt(warehouse, pack) == rows


@pytest.mark.skipif(not os.environ.get("CLICKHOUSE_URL"), reason="CLICKHOUSE_URL is not set")
class TestServer(Conformance):
    @pytest.fixture
    def warehouse(self, pack: Pack) -> Iterator[Warehouse]:
        wh = ClickHouseWarehouse(ServerConnection(os.environ["CLICKHOUSE_URL"]))
        for db in ("_gristmill", pack.dataset):
            wh.execute(
                exp.Drop(this=exp.to_identifier(db, quoted=True), kind="DATABASE", exists=True)
            )
        wh.provision([pack], apply=True)
        yield wh
        wh.close()
