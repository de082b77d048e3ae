"""``gristmill relay`` as a child process: kill -9 at random points while 50 writers commit
with random delays; afterwards every committed row is in the warehouse exactly once and
conservation is exact. SIGTERM stops it cleanly and hands the lease on at once."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gristmill.config import NATSLogSettings
from gristmill.outbox import ddl, emit
from tests.brokers import scratch_stream
from tests.conftest import PACKS
from tests.factories import order
from tests.integration.test_relay import check_exactly_once, relay_settings, write_concurrently
from tests.procs import Children, stop_group

KILLS = 10


class RelayProcess:
    def __init__(self, data: Path, url: str, **env: str) -> None:
        self.args = [
            sys.executable,
            "-m",
            "gristmill",
            "relay",
            "--data-dir",
            str(data),
            "--url",
            url,
            "--progress-every",
            "0.2",
        ]
        self.env = {
            **os.environ,
            "GRISTMILL_PACKS_DIR": str(PACKS),
            "GRISTMILL_RELAY__LEASE_TTL_S": "1",
            "GRISTMILL_RELAY__BATCH_SIZE": "500",
            "GRISTMILL_RELAY__POLL_INTERVAL_S": "0.05",
            **env,
        }
        self.log_path = data.parent / "relay.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.args, *extra],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.proc

    def wait_working(self, timeout_s: float = 120) -> None:
        """Until this process printed a progress line (it holds the lease and relays)."""
        assert self.proc is not None
        start = self.log_path.stat().st_size if self.log_path.exists() else 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()[-2000:]
            with open(self.log_path, "rb") as fh:
                fh.seek(start)
                if b"rows sent (" in fh.read():
                    return
            time.sleep(0.05)
        raise TimeoutError("relay made no progress")

    def kill9(self) -> None:
        assert self.proc is not None
        stop_group(self.proc, 0)  # SIGKILL, the whole group


LOGS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("nats", id="nats", marks=pytest.mark.nats),
]


def _log(kind: str) -> tuple[dict[str, str], dict[str, object]]:
    """The log the relay feeds: environment for the child, settings for the checking side."""
    if kind == "sqlite":
        return {}, {}
    stream = scratch_stream("nats", "gmrelay")
    env = {"GRISTMILL_LOG__TYPE": kind, "GRISTMILL_LOG__STREAM": stream}
    return env, {"log": NATSLogSettings(type="nats", stream=stream)}


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("log_kind", LOGS)
def test_kill_minus_nine_relay_loses_and_duplicates_nothing(
    tmp_path: Path, log_kind: str, children: Children
) -> None:
    """Over the embedded log and over NATS JetStream: the relay appends to whichever log is
    configured, and its position and markers are what must survive the kills."""
    import psycopg

    from tests.pg import scratch_database

    env, log_settings = _log(log_kind)
    with scratch_database() as dsn:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(ddl("postgres"))
        data = tmp_path / "data"
        relay = RelayProcess(data, dsn, **env)
        committed: set[str] = set()
        kills_done = threading.Event()

        def write() -> None:  # at least 50,000 rows, and on until the last kill
            committed.update(write_concurrently(dsn, 50, 1000, 0.25, seed=7, until=kills_done))

        writers = threading.Thread(target=write)
        writers.start()
        rng = random.Random(3)
        kills = 0
        mid_write = 0
        for _ in range(KILLS):
            children.add(relay.start())
            relay.wait_working()
            time.sleep(rng.uniform(0, 0.6))  # anywhere in a read, an append or a commit
            relay.kill9()
            kills += 1
            mid_write += writers.is_alive()
        kills_done.set()
        writers.join()
        final = children.add(relay.start("--until-idle"))
        assert final.wait(300) == 0, relay.log_path.read_text()[-2000:]

        assert kills == KILLS
        assert mid_write == KILLS, "every kill lands while writers commit"
        assert len(committed) >= 50_000
        totals = check_exactly_once(relay_settings(tmp_path, dsn, **log_settings), committed)
        # re-sent rows (killed between log append and progress commit) were dropped by dedupe
        print(f"kill -9 x{kills} ({mid_write} while writing): {totals}")


def test_sigterm_stops_cleanly_and_releases_the_lease(tmp_path: Path, children: Children) -> None:
    app = tmp_path / "app.db"
    conn = sqlite3.connect(app)
    conn.executescript(ddl("sqlite"))
    with conn:
        for _ in range(20):
            emit(conn, "order_created", dict(order()["properties"]), schema_version=1)
    data = tmp_path / "data"
    relay = RelayProcess(data, f"sqlite:///{app}", GRISTMILL_RELAY__LEASE_TTL_S="600")
    proc = children.add(relay.start())
    deadline = time.monotonic() + 60
    while "20 rows sent" not in relay.log_path.read_text():
        assert proc.poll() is None, relay.log_path.read_text()
        assert time.monotonic() < deadline, relay.log_path.read_text()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert "stopped; 20 rows sent" in relay.log_path.read_text()
    # The lease (600 s) was released: a new relay starts at once and finds nothing new.
    again = relay.start("--until-idle")
    assert again.wait(60) == 0
    assert "stopped; 0 rows sent" in relay.log_path.read_text()
    check_exactly_once(
        relay_settings(tmp_path, f"sqlite:///{app}"),
        {r[0] for r in conn.execute("SELECT event_id FROM gristmill_outbox")},
    )
    conn.close()
