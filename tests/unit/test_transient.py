"""Which commit failures the loader retries as they are instead of isolating the batch."""

from __future__ import annotations

import psycopg
import pytest

from gristmill.load.loader import transient


class _Sqlstate(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize("state", ["40001", "40P01", "55P03"])
def test_lost_races_are_transient(state: str) -> None:
    assert transient(_Sqlstate(state))


def test_a_wrapped_deadlock_is_transient() -> None:
    outer = RuntimeError("commit failed")
    outer.__cause__ = _Sqlstate("40P01")
    assert transient(outer)


@pytest.mark.parametrize("state", ["23505", "22P02", None])
def test_refused_rows_are_not_transient(state: str | None) -> None:
    exc = _Sqlstate(state) if state else ValueError("bad value")
    assert not transient(exc)


@pytest.mark.postgres
def test_a_real_deadlock_from_postgres_is_transient() -> None:
    """Two sessions lock two rows in opposite orders; PostgreSQL aborts one of them."""
    import threading

    dsn = "host=127.0.0.1 user=postgres dbname=postgres"
    table = "gm_deadlock_probe"
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"DROP TABLE IF EXISTS {table}")
        c.execute(f"CREATE TABLE {table} (k int primary key, v int)")
        c.execute(f"INSERT INTO {table} VALUES (1, 0), (2, 0)")
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker(first: int, second: int) -> None:
        try:
            with psycopg.connect(dsn) as c:
                c.execute(f"UPDATE {table} SET v = v + 1 WHERE k = %s", (first,))
                barrier.wait()
                c.execute(f"UPDATE {table} SET v = v + 1 WHERE k = %s", (second,))
                c.commit()
        except psycopg.Error as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=a) for a in ((1, 2), (2, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"DROP TABLE {table}")
    assert len(errors) == 1
    assert transient(errors[0])
