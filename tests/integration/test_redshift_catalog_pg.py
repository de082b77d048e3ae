"""Redshift's catalogue reader run against PostgreSQL, Redshift's ancestor, with the three
Redshift views it reads (``svv_columns``, ``svv_table_info``, ``pg_table_def``) as temporary
tables filled the way Redshift reports the tables the plan creates.

Redshift cannot run here; this checks what can be checked without it: that the reader's SQL
(placeholders, quoting, ``SET search_path``/``RESET``) runs on a real server of that family,
that what it reads makes an empty plan, and that a changed type, distribution or sort key is
blocking while Redshift's own move of an ``AUTO`` table is not. Temporary relations are found
whatever the search path, as ``pg_table_def`` is found on Redshift. The gated live test
(tests/integration/test_provision_live.py) runs the same reader on Redshift itself.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from gristmill.config import Settings
from gristmill.pack.loader import load_pack
from gristmill.warehouse import provision as pv
from gristmill.warehouse.redshift import catalog as rs
from tests.conftest import PACKS
from tests.pg import scratch_database

pytestmark = pytest.mark.postgres

REPORTED = {
    "VARCHAR": "character varying",
    "CHAR": "character",
    "VARBYTE": "binary varying",
    "DECIMAL": "numeric",
}
"""How svv_columns spells the types the DDL renders (the rest: lower case)."""

VIEWS = (
    "CREATE TEMP TABLE svv_columns (table_schema text, table_name text, column_name text, "
    "ordinal_position int, data_type text, character_maximum_length int, "
    "numeric_precision int, numeric_scale int)",
    'CREATE TEMP TABLE svv_table_info ("schema" text, "table" text, diststyle text)',
    'CREATE TEMP TABLE pg_table_def (schemaname text, tablename text, "column" text, '
    "distkey boolean, sortkey int)",
)


@dataclass
class Stand:
    """What ``catalog.read`` and ``execute`` use of a RedshiftWarehouse: its lock and its
    connection (psycopg binds ``%s`` like redshift_connector)."""

    _conn: Any
    _lock: threading.Lock


def _reported(typ: str) -> tuple[str, int | None, int | None, int | None]:
    m = re.fullmatch(r"([A-Z ]+?)(?:\((\d+)(?:, (\d+))?\))?", typ)
    assert m is not None, typ
    name, a, b = m.group(1), m.group(2), m.group(3)
    spelled = REPORTED.get(name, name.lower())
    if name == "DECIMAL":
        return spelled, None, int(a), int(b or 0)
    return spelled, int(a) if a else None, None, None


def _fill(conn: psycopg.Connection[Any], want: pv.Desired) -> None:
    for t in want.tables:
        schema, table = t.ref.db, t.ref.name
        for i, col in enumerate(t.columns, 1):
            typ = rs.normalize_type(col.args["kind"].sql(dialect="redshift"))
            conn.execute(
                "INSERT INTO svv_columns VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (schema, table, col.name, i, *_reported(typ)),
            )
            dist = t.partitioning == f"distkey({col.name})"
            sort = t.clustering.index(col.name) + 1 if col.name in t.clustering else 0
            conn.execute(
                "INSERT INTO pg_table_def VALUES (%s, %s, %s, %s, %s)",
                (schema, table, col.name, dist, sort),
            )
    # Only tables holding blocks are in svv_table_info: one with rows, keyed as created.
    conn.execute(
        "INSERT INTO svv_table_info VALUES ('sales_feeds', 'fact_sales', 'KEY(business_id)')"
    )
    conn.execute("CREATE SCHEMA _gristmill")
    conn.execute("CREATE SCHEMA sales_feeds")


@pytest.fixture
def stand() -> Iterator[Stand]:
    with scratch_database() as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        for stmt in VIEWS:
            conn.execute(stmt)
        yield Stand(conn, threading.Lock())


def _plan(stand: Stand) -> tuple[pv.Plan, pv.Desired]:
    packs = [load_pack(PACKS / "sales_feeds")]
    settings = Settings(packs=["sales_feeds"], warehouse={"type": "redshift"})
    want = pv.desired("redshift", packs, settings)
    catalogue = pv.read_catalogue(stand, "redshift", want)  # type: ignore[arg-type]
    return pv.make_plan("redshift", packs, settings, catalogue, want, live=True), want


def test_what_redshift_reports_of_the_created_tables_is_an_empty_plan(stand: Stand) -> None:
    empty, want = _plan(stand)
    assert {c.action for c in empty.changes} == {"create_schema", "create_table"}
    _fill(stand._conn, want)
    plan, _ = _plan(stand)
    assert plan.changes == ()
    path = stand._conn.execute("SHOW search_path").fetchone()
    assert path is not None
    assert "sales_feeds" not in path[0]  # reset after reading


def test_changed_type_distribution_and_sort_key_are_blocking(stand: Stand) -> None:
    _, want = _plan(stand)
    _fill(stand._conn, want)
    conn = stand._conn
    conn.execute(
        "UPDATE svv_columns SET character_maximum_length = 256 "
        "WHERE table_name = 'fact_sales' AND column_name = 'channel'"
    )
    conn.execute("UPDATE svv_table_info SET diststyle = 'EVEN'")
    conn.execute(
        "UPDATE pg_table_def SET sortkey = -sortkey WHERE tablename = 'fact_sales' AND sortkey > 0"
    )
    # Redshift moving an AUTO table to a key of its own choosing is not a change.
    conn.execute("INSERT INTO svv_table_info VALUES ('_gristmill', 'loads', 'AUTO(KEY(pack))')")
    plan, _ = _plan(stand)
    got = {(c.action, c.target, c.blocking) for c in plan.changes}
    assert got == {
        ("change_type", "sales_feeds.fact_sales.channel", True),
        ("change_partitioning", "sales_feeds.fact_sales", True),
        ("change_clustering", "sales_feeds.fact_sales", True),
    }
    (part,) = [c for c in plan.changes if c.action == "change_partitioning"]
    assert "diststyle(even) in the warehouse, distkey(business_id) in the packs" in part.detail


def test_execute_runs_in_one_transaction_and_scalar_reads(stand: Stand) -> None:
    with pytest.raises(psycopg.errors.UndefinedTable):
        rs.execute(stand, ["CREATE TABLE a_made (x int)", "INSERT INTO nowhere VALUES (1)"])  # type: ignore[arg-type]
    assert rs.scalar(stand, "SELECT count(*) FROM pg_tables WHERE tablename = 'a_made'") == 0  # type: ignore[arg-type]
    rs.execute(stand, ["CREATE TABLE a_made (x int)", "INSERT INTO a_made VALUES (7)"])  # type: ignore[arg-type]
    assert rs.scalar(stand, "SELECT max(x) FROM a_made") == 7  # type: ignore[arg-type]
