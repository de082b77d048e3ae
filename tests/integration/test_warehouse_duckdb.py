"""The warehouse conformance suite on DuckDB, plus DuckDB-specific checks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlglot import exp

from gristmill.pack.models import Pack
from gristmill.sql.ddl import table_ref
from gristmill.warehouse.base import Warehouse
from gristmill.warehouse.duckdb.client import DuckDBWarehouse
from tests.integration.warehouse_conformance import Conformance


class TestDuckDB(Conformance):
    @pytest.fixture
    def warehouse(self, pack: Pack, tmp_path: Path) -> Iterator[Warehouse]:
        wh = DuckDBWarehouse(tmp_path / "wh.duckdb")
        wh.provision([pack], apply=True)
        yield wh
        wh.close()

    def test_missing_column_is_named_and_added_back(self, warehouse: Warehouse, pack: Pack) -> None:
        ref = table_ref(pack.dataset, "ad_events")
        warehouse.execute(
            exp.Alter(
                this=ref,
                kind="TABLE",
                actions=[exp.Drop(tables=[exp.column("placement", quoted=True)], kind="COLUMN")],
            )
        )
        r = warehouse.check_ready([pack])
        assert r.problems == ("missing column marketplace.ad_events.placement",)
        added = warehouse.provision([pack], apply=True)
        assert any("ADD COLUMN" in s and "placement" in s for s in added)
        assert warehouse.check_ready([pack]).ok
