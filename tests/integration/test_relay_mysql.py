"""``gristmill relay`` from a MySQL/MariaDB outbox: the table ``gristmill outbox ddl --dialect
mysql`` creates, read below a mark no running transaction can still fill, so a transaction
that took a lower id and commits later is waited for, never skipped."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from gristmill.config import OutboxSettings
from gristmill.outbox import ddl, emit
from gristmill.relay import Position, open_relay
from gristmill.relay.outbox import MySQLOutbox, mysql_connect_args
from tests.integration.test_relay import PROPS, check_exactly_once, relay_settings, run_relay

pytestmark = pytest.mark.mariadb
BASE = "mysql://root@127.0.0.1:3306/test"


def connect(autocommit: bool = False) -> Any:
    import pymysql

    return pymysql.connect(**mysql_connect_args(BASE), autocommit=autocommit)


@pytest.fixture
def table() -> Iterator[str]:
    name = f"gm_outbox_{uuid.uuid4().hex[:10]}"
    c = connect(autocommit=True)
    try:
        with c.cursor() as cur:
            cur.execute(ddl("mysql", name))
        yield name
    finally:
        with c.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {name}")
        c.close()


def test_connect_args_from_a_url() -> None:
    args = mysql_connect_args("mysql+pymysql://app:p%40ss@db.internal:3307/shop")
    assert args == {
        "host": "db.internal",
        "port": 3307,
        "user": "app",
        "password": "p@ss",
        "database": "shop",
    }
    with pytest.raises(ValueError, match="names its database"):
        mysql_connect_args("mysql://root@127.0.0.1:3306/")


def test_a_slow_transaction_holds_the_relay_back_instead_of_being_skipped(table: str) -> None:
    reader = MySQLOutbox(BASE, OutboxSettings(table=table))
    slow, fast = connect(), connect()
    try:
        emit(slow, "order_created", PROPS, event_id="slow", table=table)  # lower id, commits later
        emit(fast, "order_created", PROPS, event_id="fast", table=table)
        fast.commit()
        with fast.cursor() as cur:
            cur.execute(f"SELECT id FROM {table} WHERE event_id = 'fast'")
            (fast_id,) = cur.fetchone()
        fast.commit()  # that SELECT opened a transaction: an open one holds every mark back
        assert fast_id > 1
        for _ in range(3):  # however often it polls, nothing past the open transaction
            assert reader.read(Position(), 100) == []
        slow.commit()
        rows: list[Any] = []
        deadline = threading.Event()
        for _ in range(100):  # the mark passes once the slow transaction's second is over
            rows = reader.read(Position(), 100)
            if rows:
                break
            deadline.wait(0.1)
        assert [r.event_id for r in rows] == ["slow", "fast"]
        assert reader.read(rows[-1].position, 100) == []
    finally:
        slow.close()
        fast.close()
        reader.close()


def write_concurrently(table: str, writers: int, per_writer: int, max_delay_s: float) -> set[str]:
    """Writers committing 1-5 rows after a random pause; some roll back (ids burnt)."""
    committed: set[str] = set()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(w: int) -> None:
        rng = random.Random(w)
        seq = done = 0
        try:
            conn = connect()
            try:
                while done < per_writer:
                    k = min(rng.randint(1, 5), per_writer - done)
                    ids = [f"m{w}-{seq + i}" for i in range(k)]
                    for eid in ids:
                        emit(
                            conn,
                            "order_created",
                            PROPS,
                            schema_version=1,
                            event_id=eid,
                            table=table,
                        )
                    threading.Event().wait(rng.uniform(0, max_delay_s))
                    if rng.random() < 0.05:
                        conn.rollback()
                        continue
                    conn.commit()
                    seq += k
                    done += k
                    with lock:
                        committed.update(ids)
            finally:
                conn.close()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    return committed


def test_concurrent_writers_none_skipped_none_twice(table: str, tmp_path: Path) -> None:
    url = BASE
    settings = relay_settings(tmp_path, url, batch_size=100, poll_interval_s=0.05)
    settings.relay.outbox = settings.relay.outbox.model_copy(update={"table": table})
    stop = threading.Event()
    with ExitStack() as stack:
        relay = open_relay(settings, stack, stop=stop)
        assert relay.outbox.kind == "mysql"
        t = threading.Thread(target=relay.run)
        t.start()
        try:
            expected = write_concurrently(table, 10, 100, 0.05)
        finally:
            stop.set()
            t.join()
    assert len(expected) == 1000
    run_relay(settings)  # whatever settled after the stop (until_idle: up to the frontier)
    check_exactly_once(settings, expected)


def test_docs_relay_mysql_walkthrough_runs() -> None:
    from tests.conftest import ROOT
    from tests.integration.test_readme import run_block

    out = run_block(ROOT / "docs" / "sources.md", "relay-mysql")
    assert "relay gristmill: stopped; 2 rows sent, 0 already processed" in out
    assert "position txid=0 id=2" in out
    assert "'received': 2, 'loaded': 0, 'quarantined': 0, 'duplicates': 0, 'in_flight': 2" in out
