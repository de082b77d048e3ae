"""``gristmill.outbox.emit`` writes inside the caller's transaction, on sqlite3, SQLAlchemy,
psycopg (PostgreSQL) and PyMySQL (MariaDB); the row is a native event the collector loads."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from gristmill.cli.main import app
from gristmill.outbox import ddl, emit
from gristmill.runtime import Runtime
from tests.factories import order

PROPS = dict(order()["properties"])


def load_payloads(rt: Runtime, payloads: list[str]) -> int:
    body = b"[" + b",".join(p.encode() for p in payloads) + b"]"
    rt.collector.submit_sync(
        rt.collector.prepare(pack="marketplace", source="outbox", dialect="native", raw=body)
    )
    rt.loader.drain()
    return rt.conservation().total("loaded")


def test_sqlite3_commit_and_rollback(tmp_path: Path, runtime: Runtime) -> None:
    conn = sqlite3.connect(tmp_path / "app.db")
    conn.executescript(ddl("sqlite"))
    with conn:  # commits
        eid = emit(conn, "order_created", PROPS, schema_version=1)
    try:
        with conn:
            emit(conn, "order_created", PROPS, schema_version=1, event_id="rolled-back")
            raise RuntimeError("the business change failed")
    except RuntimeError:
        pass
    rows = conn.execute("SELECT event_id, payload FROM gristmill_outbox").fetchall()
    assert [r[0] for r in rows] == [eid]
    assert orjson.loads(rows[0][1])["event_id"] == eid
    assert load_payloads(runtime, [rows[0][1]]) == 1


def test_sqlalchemy_connection(tmp_path: Path) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    with engine.begin() as c:
        c.exec_driver_sql(ddl("sqlite"))
    with engine.begin() as c:
        emit(c, "order_paid", PROPS, user_id="u-1")
    with engine.connect() as c:
        payload = c.execute(sa.text("SELECT payload FROM gristmill_outbox")).scalar_one()
    assert orjson.loads(payload)["user_id"] == "u-1"
    engine.dispose()


@pytest.fixture
def pg() -> Iterator[Any]:
    import psycopg

    table = f"outbox_{uuid.uuid4().hex[:8]}"
    # the DDL as `gristmill outbox ddl` prints it (a wrapped line would break it)
    printed = CliRunner().invoke(app, ["outbox", "ddl", "--dialect", "postgres", "--table", table])
    assert printed.exit_code == 0, printed.output
    assert printed.output.strip() == ddl("postgres", table)
    conn = psycopg.connect("host=127.0.0.1 dbname=postgres user=postgres")
    conn.execute(printed.output)
    conn.commit()
    yield conn, table
    conn.rollback()
    conn.execute(f"DROP TABLE {table}")
    conn.commit()
    conn.close()


@pytest.mark.postgres
def test_psycopg_in_the_callers_transaction(pg: Any, runtime: Runtime) -> None:
    conn, table = pg
    emit(conn, "order_created", PROPS, schema_version=1, event_id="kept", table=table)
    conn.commit()
    emit(conn, "order_created", PROPS, schema_version=1, event_id="dropped", table=table)
    conn.rollback()
    rows = conn.execute(f"SELECT event_id, payload::text, txid::text FROM {table}").fetchall()
    assert [r[0] for r in rows] == ["kept"]
    assert int(rows[0][2]) > 0  # the writing transaction is recorded for the relay
    assert load_payloads(runtime, [rows[0][1]]) == 1


@pytest.mark.mariadb
def test_pymysql() -> None:
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", user="root", password="", database="test")
    table = f"outbox_{uuid.uuid4().hex[:8]}"
    try:
        with conn.cursor() as cur:
            cur.execute(ddl("mysql", table))
        conn.commit()
        emit(conn, "order_created", PROPS, event_id="m-1", table=table)
        conn.rollback()
        emit(conn, "order_created", PROPS, event_id="m-2", table=table)
        conn.commit()
        with conn.cursor() as cur:
            cur.execute(f"SELECT event_id FROM {table}")
            assert [r[0] for r in cur.fetchall()] == ["m-2"]
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
        conn.commit()
        conn.close()


def test_refuses_unknown_connections_and_bad_names() -> None:
    with pytest.raises(TypeError, match="unsupported connection"):
        emit(object(), "x", {})
    with pytest.raises(ValueError, match="must match"):
        ddl("sqlite", "bad; DROP TABLE x")
