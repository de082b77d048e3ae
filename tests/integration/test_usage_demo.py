"""``gristmill demo --pack usage_metering``: through RabbitMQ when it answers (publisher in a
child process, the consumer in the demo's process), through HTTP when it does not; both end
balanced, with spend per org and the three injected error bursts found by the reliability
view. The marketplace demo (``make demo``) is tested unchanged in test_cli.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gristmill.cli.main import app
from gristmill.demo.process import free_port
from gristmill.runtime import Runtime
from tests.brokers import RABBITMQ_URL, scratch_queue
from tests.conftest import make_settings

DEAD_AMQP = "amqp://guest:guest@127.0.0.1:1/"


def run_demo(tmp_path: Path, *extra: str) -> str:
    r = CliRunner().invoke(
        app,
        [
            "demo",
            "--pack",
            "usage_metering",
            "--data-dir",
            str(tmp_path / "demo"),
            "--events",
            "16000",  # enough calls that each burst's org and model has a day of baseline
            "--days",
            "4",
            "--port",
            str(free_port()),
            "--no-serve",
            *extra,
        ],
    )
    assert r.exit_code == 0, r.output
    return r.output


def check_loaded(tmp_path: Path, source: str) -> None:
    """The demo's data directory afterwards: 16,000 calls once, the 16 broken ones
    quarantined, the 160 re-deliveries dropped, all from ``source``."""
    rt = Runtime(make_settings(tmp_path / "demo", packs=["usage_metering"]))
    try:
        c = rt.conservation()
        assert c.balanced, c.as_dict()
        assert [s.source for s in c.sources] == [source]
        got = (c.total("loaded"), c.total("quarantined"), c.total("duplicates"))
        assert got == (16000, 16, 160)
        n = rt.warehouse.query_sql("SELECT count(DISTINCT event_id) FROM usage.usage_events")
        assert n.column(0)[0].as_py() == 16000
    finally:
        rt.stop()


def check_summary(out: str) -> None:
    out = " ".join(out.split())  # rich wraps lines at the terminal's width
    assert "Conservation" in out
    assert "Usage and spend per organisation" in out
    assert "unpriced (a model missing from prices.yaml" in out
    assert "found 3 of 3 injected error bursts" in out
    assert "stale false" in out


async def _exists(queue: str) -> bool:
    import aio_pika

    conn = await aio_pika.connect(RABBITMQ_URL)
    async with conn:
        ch = await conn.channel()
        try:
            await ch.declare_queue(queue, passive=True)
        except Exception:  # 404 NOT_FOUND closes the channel
            return False
        return True


@pytest.mark.rabbitmq
def test_usage_demo_through_rabbitmq(tmp_path: Path) -> None:
    queue = scratch_queue("gmtest-demo")
    out = run_demo(tmp_path, "--queue", queue, "--amqp-url", RABBITMQ_URL)
    assert f"sending through RabbitMQ: queue {queue}" in out
    check_summary(out)
    check_loaded(tmp_path, "rabbitmq")
    assert f"deleted the demo queue {queue} (0 messages left in it)" in out
    assert not asyncio.run(_exists(queue))


def test_usage_demo_over_http_when_rabbitmq_does_not_answer(tmp_path: Path) -> None:
    out = run_demo(tmp_path, "--amqp-url", DEAD_AMQP)
    assert "sending over HTTP" in out
    check_summary(out)
    check_loaded(tmp_path, "http")


def test_usage_demo_via_rabbitmq_refuses_a_dead_broker(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        app,
        [
            "demo",
            "--pack",
            "usage_metering",
            "--data-dir",
            str(tmp_path / "demo"),
            "--via",
            "rabbitmq",
            "--amqp-url",
            DEAD_AMQP,
            "--no-serve",
        ],
    )
    assert r.exit_code == 1
    assert "RabbitMQ does not answer on amqp://guest:***@127.0.0.1:1/" in r.output
