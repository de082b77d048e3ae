"""``gristmill relay``: outbox rows reach the warehouse once each, in commit order, with the
seed's processed markers, a lease between relays, and nothing skipped under concurrency."""

from __future__ import annotations

import random
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from gristmill.config import OutboxSettings, RelaySettings, Settings
from gristmill.outbox import ddl, emit
from gristmill.relay import LeaseLost, MetaProgress, Position, open_relay
from gristmill.relay.outbox import PostgresOutbox
from gristmill.runtime import Runtime
from tests.conftest import make_settings
from tests.factories import order

PROPS = dict(order()["properties"])


def relay_settings(tmp: Path, url: str, log: Any = None, **relay: Any) -> Settings:
    cfg = RelaySettings(outbox=OutboxSettings(url=SecretStr(url)), **relay)
    extra = {} if log is None else {"log": log}
    return make_settings(tmp / "data", relay=cfg, **extra)


def run_relay(settings: Settings) -> Any:
    with ExitStack() as stack:
        return open_relay(settings, stack).run(until_idle=True)


def warehouse_ids(rt: Runtime) -> list[str]:
    rt.loader.drain()
    t = rt.warehouse.query_sql(
        "SELECT event_id FROM marketplace.marketplace_events"
        " UNION ALL SELECT event_id FROM marketplace.ad_events"
    )
    return [str(v) for v in t.column("event_id").to_pylist()]


def test_sqlite_outbox_to_warehouse_with_markers_and_quarantine(tmp_path: Path) -> None:
    app = tmp_path / "app.db"
    conn = sqlite3.connect(app)
    conn.executescript(ddl("sqlite"))
    with conn:
        ids = [emit(conn, "order_created", PROPS, schema_version=1) for _ in range(30)]
        bad = emit(conn, "order_created", {"order_id": 5}, schema_version=1)  # schema violation
    settings = relay_settings(
        tmp_path, f"sqlite:///{app}", consumer="analytics", key_prefix="pf:evt"
    )
    st = run_relay(settings)
    assert (st.sent, st.already_processed) == (31, 0)

    rt = Runtime(settings)
    try:
        assert sorted(warehouse_ids(rt)) == sorted(ids)
        q = rt.warehouse.query_sql(
            "SELECT event_id, reason, raw FROM _gristmill.quarantine"
        ).to_pylist()
        q = [(r["event_id"], r["reason"], r["raw"]) for r in q]
        assert [(r[0], r[1]) for r in q] == [(bad, "schema_violation")]
        raw = conn.execute("SELECT payload FROM gristmill_outbox WHERE event_id = ?", (bad,))
        assert bytes(q[0][2]) == raw.fetchone()[0].encode()  # the row's bytes, untouched
        c = rt.conservation()
        assert c.balanced
        assert c.total("loaded") == 30
        assert c.total("quarantined") == 1
        # the seed's key format, in the metadata store
        keys = {
            r[0] for r in rt.meta.engine.connect().exec_driver_sql("SELECT key FROM relay_markers")
        }
        assert f"pf:evt:processed:analytics:{ids[0]}" in keys
        assert len(keys) == 31
    finally:
        rt.stop()

    # New rows continue from the position; a reset position is caught by the markers.
    with conn:
        more = emit(conn, "order_paid", PROPS)
    st = run_relay(settings)
    assert (st.sent, st.already_processed) == (1, 0)
    rt = Runtime(settings)
    try:
        with rt.meta.engine.begin() as c:
            c.exec_driver_sql('UPDATE relay_state SET position = \'{"txid": 0, "id": 0}\'')
    finally:
        rt.stop()
    st = run_relay(settings)
    assert (st.sent, st.already_processed) == (0, 32)
    rt = Runtime(settings)
    try:
        got = warehouse_ids(rt)
        assert sorted(got) == sorted([*ids, more])
        assert rt.conservation().total("duplicates") == 0
    finally:
        rt.stop()
    conn.close()


def test_lease_keeps_a_second_relay_out_and_fences_a_stale_one(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    rt = Runtime(settings)
    try:
        a = MetaProgress(rt.meta.engine, "c1", "gm", lease_ttl_s=600, marker_ttl_s=60)
        b = MetaProgress(rt.meta.engine, "c1", "gm", lease_ttl_s=600, marker_ttl_s=60)
        other = MetaProgress(rt.meta.engine, "c2", "gm", lease_ttl_s=600, marker_ttl_s=60)
        assert a.acquire() is None
        assert b.acquire() == a.holder  # held
        assert other.acquire() is None  # another consumer is independent
        a.commit(Position(0, 5), ["e1"])
        with rt.meta.engine.begin() as c:  # a's lease runs out (a relay paused past its TTL)
            c.exec_driver_sql("UPDATE relay_state SET lease_until = 0 WHERE consumer = 'c1'")
        assert b.acquire() is None
        with pytest.raises(LeaseLost):
            a.commit(Position(0, 9), ["e2"])  # fenced: nothing written
        assert b.position() == Position(0, 5)
        assert b.processed(["e1", "e2"]) == {"e1"}
        b.release()
        assert a.acquire() is None
    finally:
        rt.stop()


@pytest.mark.redis
def test_redis_progress_markers_and_lease(tmp_path: Path) -> None:
    import redis

    app = tmp_path / "app.db"
    conn = sqlite3.connect(app)
    conn.executescript(ddl("sqlite"))
    with conn:
        ids = [emit(conn, "order_created", PROPS, schema_version=1) for _ in range(10)]
    consumer = f"t{uuid.uuid4().hex[:8]}"
    settings = relay_settings(
        tmp_path,
        f"sqlite:///{app}",
        consumer=consumer,
        key_prefix="pf:evt",
        redis_url=SecretStr("redis://127.0.0.1:6379/0"),
    )
    r = redis.Redis()
    try:
        assert run_relay(settings).sent == 10
        for e in ids:
            assert r.get(f"pf:evt:processed:{consumer}:{e}") == b"1"
            assert 0 < r.ttl(f"pf:evt:processed:{consumer}:{e}") <= 7 * 86400
        r.set(f"pf:evt:relay:{consumer}:position", '{"txid": 0, "id": 0}')
        assert run_relay(settings).already_processed == 10
        rt = Runtime(settings)
        try:
            assert sorted(warehouse_ids(rt)) == sorted(ids)
        finally:
            rt.stop()
    finally:
        for k in r.scan_iter(f"pf:evt:*{consumer}*"):
            r.delete(k)
        r.close()
        conn.close()


# -- PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture
def pg_outbox() -> Iterator[str]:
    from tests.pg import scratch_database

    with scratch_database() as dsn:
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(ddl("postgres"))
        yield dsn


@pytest.mark.postgres
def test_a_slow_transaction_holds_the_relay_back_instead_of_being_skipped(
    pg_outbox: str,
) -> None:
    import psycopg

    reader = PostgresOutbox(pg_outbox, OutboxSettings())
    slow = psycopg.connect(pg_outbox)
    fast = psycopg.connect(pg_outbox)
    try:
        emit(slow, "order_created", PROPS, event_id="slow")  # gets the lower id, commits later
        emit(fast, "order_created", PROPS, event_id="fast")
        fast.commit()
        ids = dict(slow.execute("SELECT event_id, id FROM gristmill_outbox").fetchall())
        fast_id = fast.execute("SELECT id FROM gristmill_outbox").fetchone()
        assert fast_id is not None
        assert ids["slow"] < fast_id[0]
        assert reader.read(Position(), 100) == []  # the slow transaction is still running
        slow.commit()
        rows = reader.read(Position(), 100)
        assert [r.event_id for r in rows] == ["slow", "fast"]  # commit-safe order: txid
        assert reader.read(rows[-1].position, 100) == []
    finally:
        slow.close()
        fast.close()
        reader.close()


@pytest.mark.postgres
def test_transaction_ids_order_as_numbers_not_text(pg_outbox: str) -> None:
    """Transaction ids cross 9999 -> 10000 (every power of ten) in every server's life:
    sorted as text, a page would end at 10000 and the position would pass 9999 unread."""
    import psycopg

    with psycopg.connect(pg_outbox, autocommit=True) as c:
        # The largest power of ten the server's ids have passed: rows with ids the server
        # has not reached yet would sit above the snapshot horizon, unread by design.
        row = c.execute("SELECT pg_current_xact_id()::text").fetchone()
        assert row is not None
        boundary = 10 ** (len(row[0]) - 1)
        assert boundary >= 100, f"server transaction id {row[0]} too young for this test"
        later, earlier = str(boundary), str(boundary - 1)
        for i, (eid, txid) in enumerate([("late", later), ("early", earlier)]):
            c.execute(
                "INSERT INTO gristmill_outbox (id, event_id, event_type, occurred_at, payload,"
                " txid) VALUES (%s, %s, 'order_created', now(), '{}', %s::xid8)",
                (i + 1, eid, txid),
            )
    reader = PostgresOutbox(pg_outbox, OutboxSettings())
    try:
        first = reader.read(Position(), 1)
        assert [(r.event_id, r.position.txid) for r in first] == [("early", boundary - 1)]
        second = reader.read(first[0].position, 1)
        assert [r.event_id for r in second] == ["late"]
    finally:
        reader.close()


def write_concurrently(
    dsn: str,
    writers: int,
    per_writer: int,
    max_delay_s: float,
    seed: int = 1,
    until: threading.Event | None = None,
) -> set[str]:
    """``writers`` threads, each committing transactions of 1-10 rows after a random pause;
    some transactions roll back (their rows must never appear). Each writer commits
    ``per_writer`` rows, and with ``until`` keeps going until it is set. Returns the ids
    that were committed."""
    import psycopg

    committed: set[str] = set()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(w: int) -> None:
        rng = random.Random(seed * 1000 + w)
        seq = 0
        try:
            with psycopg.connect(dsn) as conn:
                done = 0
                while done < per_writer or (until is not None and not until.is_set()):
                    k = rng.randint(1, 10)
                    if until is None:
                        k = min(k, per_writer - done)
                    ids = [f"w{w}-{seq + i}" for i in range(k)]
                    for eid in ids:
                        emit(conn, "order_created", PROPS, schema_version=1, event_id=eid)
                    threading.Event().wait(rng.uniform(0, max_delay_s))
                    if rng.random() < 0.02:
                        conn.rollback()  # the ids are burnt, the rows never exist
                        continue
                    conn.commit()
                    seq += k
                    done += k
                    with lock:
                        committed.update(ids)
        except BaseException as exc:  # surfaced by the caller
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    return committed


def check_exactly_once(settings: Settings, expected: set[str]) -> dict[str, int]:
    rt = Runtime(settings)
    try:
        got = warehouse_ids(rt)
        c = rt.conservation()
        assert len(got) == len(set(got)), "an event is in the warehouse twice"
        missing = expected - set(got)
        assert not missing, f"{len(missing)} rows skipped, e.g. {sorted(missing)[:5]}; {c}"
        assert set(got) == expected
        assert c.balanced, c.as_dict()
        totals = {f: c.total(f) for f in ("received", "loaded", "duplicates", "quarantined")}
        assert totals["loaded"] == len(expected)
        assert totals["quarantined"] == 0
        assert totals["received"] == totals["loaded"] + totals["duplicates"]
        return totals
    finally:
        rt.stop()


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("rows", "batch"),
    [
        pytest.param(5_000, 200, id="5k"),
        pytest.param(100_000, 2000, id="100k", marks=pytest.mark.slow),
    ],
)
def test_concurrent_writers_none_skipped_none_twice(
    pg_outbox: str, tmp_path: Path, rows: int, batch: int
) -> None:
    """50 writers with random delays before commit, the relay reading all along."""
    settings = relay_settings(tmp_path, pg_outbox, batch_size=batch, poll_interval_s=0.05)
    stop = threading.Event()
    with ExitStack() as stack:
        relay = open_relay(settings, stack, stop=stop)
        t = threading.Thread(target=relay.run)
        t.start()
        try:
            expected = write_concurrently(pg_outbox, 50, rows // 50, 0.03)
        finally:
            stop.set()
            t.join()
        # (how much it sent while writers ran depends on other transactions on the server:
        # the horizon is cluster-wide, so a long transaction elsewhere holds it back)
    assert len(expected) == rows
    run_relay(settings)  # whatever settled after the stop
    check_exactly_once(settings, expected)


@pytest.mark.tools("curl")
def test_docs_relay_walkthrough_runs() -> None:
    from tests.conftest import ROOT
    from tests.integration.test_readme import run_block

    out = run_block(ROOT / "docs" / "sources.md", "relay")
    assert "relay analytics: stopped; 3 rows sent" in out
    assert "[('ob-3', 'schema_violation')]" in out
    assert "'pf:evt:processed:analytics:ob-1'" in out
    assert (
        "{'received': 3, 'loaded': 2, 'quarantined': 1, 'duplicates': 0, "
        "'in_flight': 0, 'suppressed': 0}" in out
    )
