"""Kill -9 the server at random points while a retrying client sends 200k+ events.

At the end every distinct valid event is in the warehouse exactly once, every invalid one is
in quarantine, and conservation holds exactly.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import duckdb
import orjson
import pytest

from gristmill.demo.marketplace import DemoConfig, DemoTraffic, generate
from gristmill.demo.process import ServerProcess, free_port
from gristmill.demo.send import SendStats, send_events
from gristmill.meta.store import MetaStore
from tests.conftest import PACKS
from tests.e2e.kills import KillSchedule

pytestmark = pytest.mark.slow

KILLS = 6


def test_kill_minus_nine_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    meta = MetaStore(f"sqlite:///{data / 'meta.sqlite'}")
    keys = {
        s: meta.create_key("write", s, pack="marketplace", source=s)[1]
        for s in ("backend", "adserver")
    }
    operator = meta.create_key("secret", "ops", role="operator")[1]
    meta.close()

    traffic = generate(
        DemoConfig(events=200_000, days=30, seed=11, duplicate_rate=0.01, invalid_rate=0.002)
    )
    assert len(traffic.events) >= 200_000
    server = ServerProcess(data, free_port(), packs_dir=PACKS)
    server.start()

    rng = random.Random(5)
    schedule = KillSchedule(len(traffic.events), ["server"] * KILLS, rng, lo=0.05, hi=0.9)

    def kill(_: str) -> None:
        server.kill9()
        server.start()

    k = threading.Thread(target=schedule.run, args=(kill,))
    k.start()
    try:
        stats: SendStats = send_events(
            server.url,
            keys,
            traffic.events,
            traffic.sources,
            batch_size=500,
            concurrency=4,
            on_progress=schedule.progress,
        )
    finally:
        schedule.stop()
        k.join()
    try:
        _check(server, data, schedule, stats, operator, traffic)
    finally:
        server.stop()


def _check(
    server: ServerProcess,
    data: Path,
    schedule: KillSchedule,
    stats: SendStats,
    operator: str,
    traffic: DemoTraffic,
) -> None:
    assert len(schedule.done) == KILLS, f"only {len(schedule.done)} kills happened"
    assert stats.retries > 0

    import httpx

    h = {"Authorization": f"Bearer {operator}"}
    deadline = time.monotonic() + 120
    while True:
        st = httpx.get(server.url + "/v1/pipeline/stats", headers=h, timeout=10).json()
        if st["totals"]["in_flight"] == 0:
            break
        assert time.monotonic() < deadline, st
        time.sleep(0.2)
    server.stop()

    assert st["balanced"], st
    con = duckdb.connect(str(data / "warehouse.duckdb"), read_only=True)
    rows = con.execute(
        "SELECT count(*), count(DISTINCT (source, event_id)) FROM ("
        " SELECT source, event_id FROM marketplace.marketplace_events"
        " UNION ALL SELECT source, event_id FROM marketplace.ad_events)"
    ).fetchall()[0]
    assert rows[0] == rows[1] == len(traffic.valid_ids)
    loaded = set(
        con.execute(
            "SELECT source, event_id FROM marketplace.marketplace_events"
            " UNION ALL SELECT source, event_id FROM marketplace.ad_events"
        ).fetchall()
    )
    assert loaded == traffic.valid_ids

    valid_raw = {
        orjson.dumps(e)
        for s, e in zip(traffic.sources, traffic.events, strict=True)
        if (s, e.get("event_id")) in traffic.valid_ids
    }
    invalid_raw = {orjson.dumps(e) for e in traffic.events} - valid_raw
    quarantined_raw = {
        bytes(r[0]) for r in con.execute("SELECT raw FROM _gristmill.quarantine").fetchall()
    }
    assert quarantined_raw == invalid_raw

    totals = st["totals"]
    assert totals["loaded"] == len(traffic.valid_ids)
    assert totals["received"] == (totals["loaded"] + totals["quarantined"] + totals["duplicates"])
    assert totals["received"] >= len(traffic.events)
    con.close()
