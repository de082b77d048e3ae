"""The warehouse conformance suite on DuckDB, plus DuckDB-specific checks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
import sqlglot
from pydantic import ValidationError
from sqlglot import exp

from gristmill.config import DuckDBSettings, Settings
from gristmill.governance.erasure import delete_dedupe_keys
from gristmill.pack.loader import load_pack
from gristmill.pack.models import Pack
from gristmill.sql.ddl import table_ref
from gristmill.warehouse.base import Warehouse
from gristmill.warehouse.duckdb.client import DuckDBWarehouse
from gristmill.warehouse.duckdb.factory import ROW_GROUP_ROWS, create
from tests.conftest import PACKS
from tests.integration.warehouse_conformance import Conformance, batch_of, envelope, frame


class TestDuckDB(Conformance):
    @pytest.fixture(params=[True, False], ids=["key-index", "key-join"])
    def warehouse(
        self, pack: Pack, tmp_path: Path, request: pytest.FixtureRequest
    ) -> Iterator[Warehouse]:
        """Both duplicate checks: the in-memory key set (the default) and the join."""
        wh = DuckDBWarehouse(tmp_path / "wh.duckdb", key_index=request.param)
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


def _wal_bytes(path: Path) -> int:
    wal = path.with_name(path.name + ".wal")
    return wal.stat().st_size if wal.exists() else 0


@pytest.mark.parametrize(("threshold", "checkpoints"), [("0B", True), ("128MB", False)])
def test_checkpoint_threshold_decides_whether_a_commit_checkpoints(
    tmp_path: Path, threshold: str, checkpoints: bool
) -> None:
    """The setting reaches DuckDB through the factory: at 0 B every load commit also writes
    its rows into the file (the WAL is left empty); at 128 MB a small load stays in the WAL
    until the threshold, or the close, checkpoints it."""
    settings = Settings(data_dir=tmp_path, warehouse=DuckDBSettings(checkpoint_threshold=threshold))
    pack = load_pack(PACKS / "marketplace")
    wh = create(settings)
    try:
        wh.provision([pack], apply=True)
        wh.checkpoint()
        events = [envelope(f"e{i}", amount=i) for i in range(200)]
        wh.commit_load(batch_of(pack, frame("web", *events)))
        assert (_wal_bytes(settings.warehouse_path) == 0) is checkpoints
        loaded = wh.query(
            exp.select("count(*) AS n").from_(table_ref(pack.dataset, "marketplace_events"))
        )
        assert loaded.to_pylist() == [{"n": 200}]
    finally:
        wh.close()
    assert _wal_bytes(settings.warehouse_path) == 0  # close checkpoints what was left


def test_checkpoint_threshold_is_checked_when_settings_load() -> None:
    with pytest.raises(ValidationError):
        DuckDBSettings(checkpoint_threshold="lots")


def test_insert_arrow_appends_by_row_group_in_one_transaction(tmp_path: Path) -> None:
    """``insert_arrow`` cuts a large table into one INSERT per row group (so DuckDB writes
    whole groups at insert time), and still commits all of them or none."""
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb")
    try:
        ref = table_ref("feeds", "staged")
        wh.execute(sqlglot.parse_one("CREATE SCHEMA feeds", dialect="duckdb"))
        wh.execute(sqlglot.parse_one("CREATE TABLE feeds.staged (n BIGINT NOT NULL)", "duckdb"))
        rows = 2 * ROW_GROUP_ROWS + 17
        assert wh.insert_arrow(ref, pa.table({"n": pa.array(range(rows), pa.int64())})) == rows
        bad = pa.array([*range(rows - 1), None], pa.int64())  # refused in the last slice
        with pytest.raises(duckdb.ConstraintException):
            wh.insert_arrow(ref, pa.table({"n": bad}))
        got = wh.query(exp.select("count(*) AS n", "sum(n) AS s").from_(ref)).to_pylist()
        assert got == [{"n": rows, "s": rows * (rows - 1) // 2}]  # the refused table left none
    finally:
        wh.close()


@pytest.mark.parametrize("key_index", [True, False], ids=["key-index", "key-join"])
def test_key_set_follows_erasure_and_a_reopen(tmp_path: Path, key_index: bool) -> None:
    """The in-memory key set answers what the key table does: a key erasure deleted (by
    a statement naming the key table) lets the event load again, and a warehouse opened
    again finds the keys an earlier process stored."""
    pack = load_pack(PACKS / "marketplace")
    path = tmp_path / "wh.duckdb"
    wh = DuckDBWarehouse(path, key_index=key_index)
    wh.provision([pack], apply=True)
    first = wh.commit_load(batch_of(pack, frame("web", envelope("a"), envelope("b"))))
    assert first.loaded == {("marketplace", "web"): 2}
    rows = [{"source": "web", "event_type": "order_created", "event_id": "a"}]
    wh.execute_all(delete_dedupe_keys(pack, rows, "duckdb"))  # erasure, delete mode
    again = wh.commit_load(batch_of(pack, frame("web", envelope("a"), envelope("b"))))
    assert again.loaded == {("marketplace", "web"): 1}  # "a" is new again, "b" is not
    assert again.duplicates == {("marketplace", "web"): 1}
    wh.close()
    wh = DuckDBWarehouse(path, key_index=key_index)
    try:
        third = wh.commit_load(batch_of(pack, frame("web", envelope("a"), envelope("c"))))
        assert third.loaded == {("marketplace", "web"): 1}
        assert third.duplicates == {("marketplace", "web"): 1}
    finally:
        wh.close()


@pytest.mark.parametrize("key_index", [True, False], ids=["key-index", "key-join"])
def test_repeats_scattered_in_a_batch_leave_the_right_rows_and_keys(
    tmp_path: Path, key_index: bool
) -> None:
    """A batch whose repeats sit between fresh rows: each fresh row loads with its own
    values, the repeats keep the first load's, and the keys stored (read back after a
    reopen, so from the table) make every id of both loads a repeat."""
    pack = load_pack(PACKS / "marketplace")
    path = tmp_path / "wh.duckdb"
    wh = DuckDBWarehouse(path, key_index=key_index)
    wh.provision([pack], apply=True)
    wh.commit_load(batch_of(pack, frame("web", envelope("a", 1), envelope("b", 2))))
    ids = ["c", "a", "d", "e", "b"]
    second = wh.commit_load(
        batch_of(pack, frame("web", *(envelope(e, 10 + i) for i, e in enumerate(ids))))
    )
    assert (second.loaded, second.duplicates) == (
        {("marketplace", "web"): 3},
        {("marketplace", "web"): 2},
    )
    ref = table_ref(pack.dataset, "marketplace_events")
    got = wh.query(exp.select("event_id", "amount_cents").from_(ref).order_by("event_id"))
    assert [(r["event_id"], r["amount_cents"]) for r in got.to_pylist()] == [
        ("a", 1),
        ("b", 2),
        ("c", 10),
        ("d", 12),
        ("e", 13),
    ]
    wh.close()
    wh = DuckDBWarehouse(path, key_index=key_index)
    try:
        again = wh.commit_load(batch_of(pack, frame("web", *(envelope(e) for e in "abcde"))))
        assert again.loaded.get(("marketplace", "web"), 0) == 0
        assert again.duplicates == {("marketplace", "web"): 5}
    finally:
        wh.close()
