"""Scaled-out crash test: kill -9 the collector and the loaders (each at least 10 times, at
random points) during a 200k-event run over RabbitMQ and over NATS JetStream.

Processes: one ``gristmill serve --role collect`` (the sender retries through its deaths), two
``gristmill load --max-partitions 1`` over a two-partition log, PostgreSQL as the warehouse
(concurrent loaders in separate processes). At the end every distinct valid event is in the
warehouse exactly once, every invalid one is in quarantine with its bytes, and conservation
holds exactly, counted from the broker's records and the warehouse's ledger.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import psycopg
import pytest

from gristmill.config import Settings
from gristmill.demo.marketplace import DemoConfig, generate
from gristmill.demo.process import LoaderProcess, ServerProcess, free_port
from gristmill.demo.send import send_events
from gristmill.meta.store import MetaStore
from gristmill.runtime import Runtime
from tests.brokers import scratch_stream
from tests.conftest import PACKS
from tests.e2e.kills import KillSchedule
from tests.pg import scratch_database

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

KILLS_EACH = 10
EVENTS = 200_000
DEADLINE_S = 480
"""Under pytest's own 600 s timeout, so a stuck run fails with conservation and the children's
logs in its message rather than a bare timeout."""


def _env(kind: str, stream: str, dsn: str) -> dict[str, str]:
    return {
        "GRISTMILL_LOG__TYPE": kind,
        "GRISTMILL_LOG__STREAM": stream,
        "GRISTMILL_LOG__PARTITIONS": "2",
        "GRISTMILL_LOG__LEASE_TTL_S": "6",
        "GRISTMILL_WAREHOUSE__TYPE": "postgres",
        "GRISTMILL_WAREHOUSE__DSN": dsn,
        "GRISTMILL_LOADER__TARGET_EVENTS": "5000",
    }


def _settings(data: Path, env: dict[str, str]) -> Settings:
    log: dict[str, object] = {
        "type": env["GRISTMILL_LOG__TYPE"],
        "stream": env["GRISTMILL_LOG__STREAM"],
        "partitions": 2,
        "lease_ttl_s": 6,
    }
    return Settings(
        data_dir=data,
        packs_dir=PACKS,
        packs=["marketplace"],
        log=log,  # type: ignore[arg-type]
        warehouse={"type": "postgres", "dsn": env["GRISTMILL_WAREHOUSE__DSN"]},  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("nats", marks=pytest.mark.nats),
    ],
)
def test_kill_collectors_and_loaders(kind: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with scratch_database() as dsn:
        env = _env(kind, scratch_stream(kind, "gmcrash"), dsn)
        settings = _settings(data, env)
        # Provision once, before any loader starts, and keep this runtime for the checks.
        observer = Runtime(settings, "load")
        try:
            _run(kind, data, env, observer, dsn)
        finally:
            observer.stop()


def _run(kind: str, data: Path, env: dict[str, str], observer: Runtime, dsn: str) -> None:
    meta = MetaStore(f"sqlite:///{data / 'meta.sqlite'}")
    keys = {
        s: meta.create_key("write", s, pack="marketplace", source=s)[1]
        for s in ("backend", "adserver")
    }
    meta.close()
    traffic = generate(
        DemoConfig(events=EVENTS, days=30, seed=23, duplicate_rate=0.01, invalid_rate=0.002)
    )
    collector = ServerProcess(data, free_port(), packs_dir=PACKS, env=env, role="collect")
    loaders = [
        LoaderProcess(data, packs_dir=PACKS, env=env, max_partitions=1, name=f"loader-{i}")
        for i in range(2)
    ]
    collector.start()
    for lp in loaders:
        lp.start()

    rng = random.Random(f"crash-{kind}")  # str seeds are stable; hash() is salted
    targets = ["collector"] * KILLS_EACH + ["loader"] * KILLS_EACH
    rng.shuffle(targets)
    schedule = KillSchedule(len(traffic.events), targets, rng)
    started = time.monotonic()

    def kill(target: str) -> None:
        if target == "collector":
            collector.kill9()
            collector.start()
        else:
            victim = rng.choice(loaders)
            victim.kill9()
            victim.start()

    k = threading.Thread(target=schedule.run, args=(kill,))
    k.start()
    try:
        stats = send_events(
            collector.url,
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
    kills = {t: schedule.count(t) for t in ("collector", "loader")}
    try:
        assert kills == {"collector": KILLS_EACH, "loader": KILLS_EACH}, kills
        assert stats.retries > 0
        c = _wait(lambda: observer.conservation(), started, [collector, *loaders])
    finally:
        collector.stop()
        for lp in loaders:
            lp.stop()

    assert c.balanced, c.as_dict()
    with psycopg.connect(dsn) as con:
        rows = con.execute(
            "SELECT count(*), count(DISTINCT (source, event_id)) FROM ("
            " SELECT source, event_id FROM marketplace.marketplace_events"
            " UNION ALL SELECT source, event_id FROM marketplace.ad_events) t"
        ).fetchone()
        loaded = set(
            con.execute(
                "SELECT source, event_id FROM marketplace.marketplace_events"
                " UNION ALL SELECT source, event_id FROM marketplace.ad_events"
            ).fetchall()
        )
        quarantined_raw = [
            bytes(r[0]) for r in con.execute("SELECT raw FROM _gristmill.quarantine").fetchall()
        ]
    assert rows is not None
    assert rows[0] == rows[1] == len(traffic.valid_ids)  # 0 lost, 0 duplicated
    assert loaded == traffic.valid_ids
    valid_raw = {
        orjson.dumps(e)
        for s, e in zip(traffic.sources, traffic.events, strict=True)
        if (s, e.get("event_id")) in traffic.valid_ids
    }
    invalid_raw = {orjson.dumps(e) for e in traffic.events} - valid_raw
    assert set(quarantined_raw) == invalid_raw
    totals = c.as_dict()["totals"]
    assert isinstance(totals, dict)
    assert totals["loaded"] == len(traffic.valid_ids)
    assert totals["in_flight"] == 0
    assert totals["received"] == totals["loaded"] + totals["quarantined"] + totals["duplicates"]
    assert totals["received"] >= len(traffic.events)


def _wait(
    snapshot: Callable[[], object], started: float, children: list[ServerProcess | LoaderProcess]
) -> object:
    from gristmill.load.conservation import Conservation

    while True:
        c = snapshot()
        assert isinstance(c, Conservation)
        if c.total("in_flight") == 0 and c.total("received") > 0:
            return c
        dead = [ch for ch in children if ch.proc is None or ch.proc.poll() is not None]
        late = time.monotonic() - started >= DEADLINE_S
        if dead or late:
            pytest.fail(
                f"{'children exited' if dead else 'not drained in time'}: {c.as_dict()}\n"
                + "\n".join(ch.tail() for ch in children)
            )
        time.sleep(0.5)
