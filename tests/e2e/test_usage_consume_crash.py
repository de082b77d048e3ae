"""``gristmill consume rabbitmq`` into ``usage_metering`` as a child process, killed -9 five
times spread over a durable queue of model calls (some request ids published two or three
times, poison messages among them). RabbitMQ redelivers what each killed process held
unacknowledged; every second kill lands right after a log append, before the ack, so those
messages are appended again, and the loader's per-org dedupe drops every second copy.
Afterwards ``usage.usage_events`` holds exactly one row per request id (plain SQL), each org's
spend equals plain Python, the poison messages are in quarantine with their exact bytes, and
conservation balances."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gristmill.runtime import Runtime
from tests.brokers import RABBITMQ_URL, scratch_queue
from tests.conftest import PACKS, make_settings
from tests.e2e.test_consume_crash import received
from tests.integration.usage_queue import (
    POISON,
    check_exactly_once,
    check_quarantine,
    delete,
    depth,
    publish,
    usage_messages,
)
from tests.procs import Children, stop_group

KILLS = 5


def _right_after_an_append(data: Path, proc: subprocess.Popen[bytes]) -> None:
    """Return as soon as the log's counter moves again: the kill then tends to land between
    the log append and the broker ack, where the batch is appended twice after redelivery."""
    con = sqlite3.connect(data / "log.sqlite", timeout=30)
    try:
        sql = "SELECT coalesce(sum(received), 0) FROM counters"
        before = con.execute(sql).fetchone()[0]
        deadline = time.monotonic() + 60
        while con.execute(sql).fetchone()[0] == before:
            assert proc.poll() is None
            assert time.monotonic() < deadline
    finally:
        con.close()


@pytest.mark.slow
@pytest.mark.rabbitmq
def test_usage_consumer_killed_minus_nine_loses_and_doubles_nothing(
    tmp_path: Path, children: Children
) -> None:
    msgs = usage_messages(20_000, seed=33)
    queue = scratch_queue()
    publish(queue, msgs.bodies)
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
        "--pack",
        "usage_metering",
        "--url",
        RABBITMQ_URL,
        "--queue",
        queue,
        "--source",
        "rabbitmq",
        "--prefetch",
        "200",
    ]
    env = {**os.environ, "GRISTMILL_PACKS_DIR": str(PACKS)}
    rng = random.Random(7)
    depths = []
    for k in range(KILLS):
        with open(log_path, "ab") as log:
            proc = children.add(
                subprocess.Popen(
                    args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
        before = received(data)
        # Kills spread over the stream: the k-th once the queue is down to (5-k)/6 of it.
        target = len(msgs.bodies) * (KILLS - k) // (KILLS + 1)
        deadline = time.monotonic() + 120
        while received(data) == before or depth(queue) > target:
            assert proc.poll() is None, log_path.read_text()[-2000:]
            assert time.monotonic() < deadline, log_path.read_text()[-2000:]
            time.sleep(0.02)
        if k % 2:
            time.sleep(rng.uniform(0, 0.4))  # mid-batch: framing, appending or acknowledging
        else:
            _right_after_an_append(data, proc)
        stop_group(proc, 0)  # SIGKILL, the whole group
        depths.append(depth(queue))
    # Every kill landed with messages still queued: the process was killed mid-stream.
    assert all(d > 0 for d in depths), depths
    with open(log_path, "ab") as log:
        final = subprocess.run(
            [*args, "--max-idle", "3"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    assert final.returncode == 0, log_path.read_text()[-2000:]
    assert delete(queue) == 0

    rt = Runtime(make_settings(data, packs=["usage_metering"]))
    try:
        rt.loader.drain(timeout_s=300)
        check_exactly_once(rt.warehouse, msgs)
        check_quarantine(rt.warehouse)
        c = rt.conservation()
        assert c.balanced, c.as_dict()
        assert c.total("in_flight") == 0
        assert c.total("loaded") == len(msgs.distinct)
        assert c.total("received") >= len(msgs.bodies)
        redelivered = c.total("received") - len(msgs.bodies)
        # Copies published by the producer, plus whatever a kill left appended but unacked.
        assert c.total("duplicates") >= msgs.copies
        assert len(POISON) <= c.total("quarantined")
        print(
            f"usage consumer kill -9 x{KILLS}: {len(msgs.bodies)} messages, {msgs.copies} "
            f"published copies, {redelivered} re-appended after kills, queue depths at the "
            f"kills {depths}; {c.as_dict()['totals']}"
        )
    finally:
        rt.stop()
