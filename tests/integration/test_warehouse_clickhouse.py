"""The warehouse conformance suite on ClickHouse in process (chdb), plus what only this engine
needs proved: the MergeTree layout, and that a load which died half-way is compensated, not
doubled, when its batch comes again. With ``CLICKHOUSE_URL`` set, the suite also runs against
that server through clickhouse-connect (the same code, another connection)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlglot import exp

from gristmill.core.clock import parse_rfc3339_us
from gristmill.core.envelope import Envelope
from gristmill.pack.models import Pack
from gristmill.rollup.maintain import after_insert, provision_analytics
from gristmill.rollup.spec import full_rebuild
from gristmill.sql.ddl import table_ref
from gristmill.warehouse.base import LoadBatch, Warehouse
from gristmill.warehouse.clickhouse.client import ClickHouseWarehouse
from gristmill.warehouse.clickhouse.connection import ChdbConnection, ServerConnection
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
