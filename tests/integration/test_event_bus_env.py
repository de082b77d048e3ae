"""Seed 002's environment names drive real runs (docs/event-bus.md):

* ``EVENT_BUS_DRIVER=memory`` → the embedded SQLite log: a served app, events sent by the SDK
  batched as ``EVENT_SINK_BATCH_SIZE`` / ``EVENT_SINK_FLUSH_INTERVAL_MS`` say, loaded by the
  loader with the same batch size, answered by ``/v1/metrics``;
* ``EVENT_BUS_DRIVER=kafka`` with ``KAFKA_BROKERS`` and ``EVENT_BUS_KAFKA_TOPIC`` → the Kafka
  log on the Tansu broker the Kafka tests start.
"""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from gristmill.client import Client
from gristmill.runtime import Runtime
from tests.conftest import make_settings
from tests.factories import order
from tests.integration.test_log_kafka import kafka_bootstrap  # noqa: F401  (module fixture)
from tests.live import live, wait_loaded

SEED = (
    "EVENT_BUS_DRIVER",
    "EVENT_BUS_KAFKA_TOPIC",
    "KAFKA_BROKERS",
    "EVENT_BUS_PUBSUB_TOPIC",
    "PUBSUB_PROJECT_ID",
    "EVENT_SINK_BATCH_SIZE",
    "EVENT_SINK_FLUSH_INTERVAL_MS",
)


@pytest.fixture(autouse=True)
def _only_these(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [*SEED, *(n for n in os.environ if n.startswith("GRISTMILL_"))]:
        monkeypatch.delenv(name, raising=False)


def _orders(n: int, prefix: str) -> list[dict[str, object]]:
    when = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [order(event_id=f"{prefix}-{i}", amount=100 + i, occurred_at=when) for i in range(n)]


def _orders_metric(url: str, key: str) -> int:
    req = urllib.request.Request(
        f"{url}/v1/metrics?metrics=orders,gmv_cents&preset=7d",
        headers={"Authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        rows = json.loads(r.read())["rows"]
    return int(rows[0]["orders"])


def test_memory_bus_is_the_embedded_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENT_BUS_DRIVER", "memory")
    monkeypatch.setenv("EVENT_SINK_BATCH_SIZE", "25")
    monkeypatch.setenv("EVENT_SINK_FLUSH_INTERVAL_MS", "50")
    settings = make_settings(tmp_path / "data")
    assert settings.log.type == "sqlite"
    assert (settings.loader.max_events, settings.loader.max_wait_s) == (25, 0.05)
    rt = Runtime(settings)
    try:
        write = rt.meta.create_key("write", "app", pack="marketplace", source="web")[1]
        admin = rt.meta.create_key("secret", "ops", pack="marketplace", role="admin")[1]
        events = _orders(60, "mem")
        with live(rt) as (url, _):
            sdk = Client.from_env(write, url)
            assert (sdk.flush_at, sdk.flush_interval) == (25, 0.05)
            for e in events:
                sdk.track(
                    str(e["event_type"]),
                    e["properties"],  # type: ignore[arg-type]
                    event_id=str(e["event_id"]),
                    occurred_at=str(e["occurred_at"]),
                    schema_version=1,
                )
            assert sdk.flush(30)
            sdk.shutdown(10)
            assert sdk.stats.sent == 60
            wait_loaded(rt, 60)
            assert _orders_metric(url, admin) == 60
            assert rt.loader.stats.batches >= 3  # 60 events in batches of at most 25
            c = rt.conservation()
            assert c.balanced
            assert c.total("loaded") == 60
    finally:
        rt.stop()


@pytest.mark.kafka
def test_kafka_bus_from_seed_names(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kafka_bootstrap: str,  # noqa: F811
) -> None:
    monkeypatch.setenv("EVENT_BUS_DRIVER", "kafka")
    monkeypatch.setenv("KAFKA_BROKERS", kafka_bootstrap)
    monkeypatch.setenv("EVENT_BUS_KAFKA_TOPIC", f"seed-events-{tmp_path.name[-8:]}")
    monkeypatch.setenv("EVENT_SINK_BATCH_SIZE", "30")
    settings = make_settings(tmp_path / "data")
    assert settings.log.type == "kafka"
    rt = Runtime(settings)
    try:
        assert rt.log.name == "kafka"
        assert rt.log.topic == settings.log.topic  # type: ignore[attr-defined]
        events = _orders(70, "kafka")
        p = rt.collector.prepare(
            pack="marketplace", source="backend", dialect="native", raw=orjson.dumps(events)
        )
        rt.collector.submit_sync(p)
        rt.loader.drain()
        n = rt.warehouse.query_sql(
            "SELECT count(*) AS n FROM marketplace.marketplace_events"
        ).to_pylist()[0]["n"]
        assert n == 70
        c = rt.conservation()
        assert c.balanced, c.as_dict()
        assert c.total("loaded") == 70
    finally:
        rt.stop()
