"""The warehouse conformance suite on PostgreSQL, plus PostgreSQL-specific checks
(partitions created on demand, the cluster index, concurrent loaders on one key)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlglot import exp

from gristmill.pack.models import Pack
from gristmill.sql.ddl import table_ref
from gristmill.warehouse.base import Warehouse
from gristmill.warehouse.postgres.client import PostgresWarehouse
from tests.integration.warehouse_conformance import Conformance, batch_of, envelope, frame
from tests.pg import scratch_database

pytestmark = pytest.mark.postgres


class TestPostgres(Conformance):
    @pytest.fixture
    def warehouse(self, pack: Pack) -> Iterator[Warehouse]:
        with scratch_database() as dsn:
            wh = PostgresWarehouse(dsn)
            wh.provision([pack], apply=True)
            yield wh
            wh.close()

    def test_partition_for_an_old_day_is_created_on_demand(
        self, warehouse: Warehouse, pack: Pack
    ) -> None:
        old = envelope("old")
        old.occurred_at = int(datetime(2020, 2, 29, 12, tzinfo=UTC).timestamp() * 1_000_000)
        res = warehouse.commit_load(batch_of(pack, frame("web", old)))
        assert res.total_loaded == 1
        parts = warehouse.query_sql(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'marketplace_events'"
        ).column("relname")
        assert "marketplace_events_p20200229" in parts.to_pylist()
        assert len(parts) >= 8  # provisioned ahead: yesterday, today and the next 7 days

    def test_cluster_keys_are_indexed(self, warehouse: Warehouse, pack: Pack) -> None:
        idx = warehouse.query_sql(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'marketplace' "
            "AND indexname = 'marketplace_events_cluster'"
        ).to_pylist()
        assert idx
        assert "(vendor_store_id, store_id, event_type)" in idx[0]["indexdef"]

    def test_concurrent_loaders_load_a_key_once(self, pack: Pack) -> None:
        """Two writers (two processes' worth of connections) race the same events: the key
        table's primary key makes one of them see the other's keys."""
        with scratch_database() as dsn:
            first = PostgresWarehouse(dsn)
            first.provision([pack], apply=True)
            second = PostgresWarehouse(dsn)
            results = []
            barrier = threading.Barrier(2)

            def load(wh: PostgresWarehouse) -> None:
                b = batch_of(pack, frame("web", *(envelope(f"e{i}") for i in range(200))))
                barrier.wait()
                results.append(wh.commit_load(b))

            threads = [threading.Thread(target=load, args=(w,)) for w in (first, second)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(r.total_loaded for r in results) == [0, 200]
            n = first.query(
                exp.select(exp.func("count", exp.Star()).as_("n")).from_(
                    table_ref(pack.dataset, "marketplace_events")
                )
            ).to_pylist()
            assert n == [{"n": 200}]
            first.close()
            second.close()
