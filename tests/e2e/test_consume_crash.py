"""``gristmill consume rabbitmq`` as a child process, killed -9 mid-batch several times:
unacknowledged messages are redelivered, the loader's dedupe drops what was appended twice,
and every event is in the warehouse exactly once with conservation exact."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from gristmill.runtime import Runtime
from tests.conftest import PACKS, make_settings
from tests.integration.test_consume import _rabbit_cleanup, _rabbit_publish, messages
from tests.procs import Children, stop_group

KILLS = 4


def received(data: Path) -> int:
    """Events the log counted (its own counter table), read without opening the pipeline."""
    path = data / "log.sqlite"
    if not path.exists():
        return 0
    con = sqlite3.connect(path, timeout=30)
    try:
        return int(con.execute("SELECT coalesce(sum(received), 0) FROM counters").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        con.close()


@pytest.mark.slow
@pytest.mark.rabbitmq
def test_kill_minus_nine_consumer_loses_and_duplicates_nothing(
    tmp_path: Path, children: Children
) -> None:
    exchange, queue = f"gm-ex-{uuid.uuid4().hex[:8]}", f"gm-q-{uuid.uuid4().hex[:8]}"
    bodies, valid, _poison = messages(20_000)
    asyncio.run(_rabbit_publish(exchange, queue, bodies))
    data = tmp_path / "data"
    log_path = tmp_path / "consume.log"
    args = [
        sys.executable,
        "-m",
        "gristmill",
        "consume",
        "rabbitmq",
        "--data-dir",
        str(data),
        "--url",
        "amqp://guest:guest@127.0.0.1/",
        "--queue",
        queue,
        "--prefetch",
        "200",
    ]
    env = {**os.environ, "GRISTMILL_PACKS_DIR": str(PACKS)}
    rng = random.Random(4)
    try:
        for _ in range(KILLS):
            with open(log_path, "ab") as log:
                proc = children.add(
                    subprocess.Popen(
                        args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
            before = received(data)
            deadline = time.monotonic() + 120
            while received(data) == before:  # until this process appends: it is consuming
                assert proc.poll() is None, log_path.read_text()[-2000:]
                assert time.monotonic() < deadline
                time.sleep(0.02)
            time.sleep(rng.uniform(0, 0.4))  # mid-batch: framed, appended, or acking
            stop_group(proc, 0)  # SIGKILL, the whole group
        with open(log_path, "ab") as log:
            final = subprocess.run(
                [*args, "--max-idle", "3"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        assert final.returncode == 0, log_path.read_text()[-2000:]
    finally:
        left = asyncio.run(_rabbit_cleanup(exchange, queue))
    assert left == 0

    rt = Runtime(make_settings(data))
    try:
        rt.loader.drain()
        ids = [
            str(v)
            for v in rt.warehouse.query_sql("SELECT event_id FROM marketplace.marketplace_events")
            .column("event_id")
            .to_pylist()
        ]
        assert len(ids) == len(set(ids))
        assert set(ids) == valid
        c = rt.conservation()
        assert c.balanced, c.as_dict()
        assert c.total("loaded") == len(valid)
        # a redelivered poison message is quarantined again: at least the two, at most a few
        assert c.total("quarantined") >= 2
        assert c.total("received") >= len(bodies)
        print(f"consumer kill -9 x{KILLS}: {c.as_dict()['totals']}")
    finally:
        rt.stop()
