"""Seed 002's event-bus names as settings: each driver, the sink's batch settings, and the
precedence of ``GRISTMILL_*`` names and of values given in code."""

from __future__ import annotations

import pytest

from gristmill.client import Client
from gristmill.config import Settings
from gristmill.config_aliases import log_section, settings_from

SEED = (
    "EVENT_BUS_DRIVER",
    "EVENT_BUS_KAFKA_TOPIC",
    "KAFKA_BROKERS",
    "EVENT_BUS_PUBSUB_TOPIC",
    "PUBSUB_PROJECT_ID",
    "EVENT_SINK_BATCH_SIZE",
    "EVENT_SINK_FLUSH_INTERVAL_MS",
    "REDSHIFT_ENABLED",
    "REDSHIFT_HOST",
    "REDSHIFT_DATABASE",
    "REDSHIFT_USER",
    "REDSHIFT_PASSWORD",
)


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SEED:
        monkeypatch.delenv(name, raising=False)
    for name in list(__import__("os").environ):
        if name.startswith(("GRISTMILL_LOG", "GRISTMILL_LOADER", "GRISTMILL_WAREHOUSE")):
            monkeypatch.delenv(name)


def test_memory_is_the_embedded_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_BUS_DRIVER", "memory")
    assert Settings().log.type == "sqlite"


def test_kafka_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_BUS_DRIVER", "kafka")
    monkeypatch.setenv("KAFKA_BROKERS", "10.0.0.1:9092, 10.0.0.2:9092")
    monkeypatch.setenv("EVENT_BUS_KAFKA_TOPIC", "analytics-events")
    log = Settings().log
    assert log.type == "kafka"
    assert log.bootstrap_servers == "10.0.0.1:9092,10.0.0.2:9092"
    assert log.topic == "analytics-events"


def test_pubsub_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_BUS_DRIVER", "PubSub")
    monkeypatch.setenv("EVENT_BUS_PUBSUB_TOPIC", "analytics-events")
    monkeypatch.setenv("PUBSUB_PROJECT_ID", "acme-prod")
    log = Settings().log
    assert log.type == "pubsub"
    assert (log.project, log.topic) == ("acme-prod", "analytics-events")


def test_sink_batching_is_the_loaders_and_the_sdks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_SINK_BATCH_SIZE", "250")
    monkeypatch.setenv("EVENT_SINK_FLUSH_INTERVAL_MS", "1500")
    loader = Settings().loader
    assert (loader.max_events, loader.target_events, loader.max_wait_s) == (250, 250, 1.5)
    client = Client.from_env("key", "http://127.0.0.1:1")
    try:
        assert (client.flush_at, client.flush_interval) == (250, 1.5)
    finally:
        client.shutdown(0)
    given = Client.from_env("key", "http://127.0.0.1:1", flush_at=3)
    try:
        assert given.flush_at == 3
    finally:
        given.shutdown(0)


def test_gristmill_names_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_BUS_DRIVER", "kafka")
    monkeypatch.setenv("KAFKA_BROKERS", "10.0.0.1:9092")
    monkeypatch.setenv("EVENT_SINK_BATCH_SIZE", "250")
    monkeypatch.setenv("GRISTMILL_LOG__MAX_BYTES", "5000")
    monkeypatch.setenv("GRISTMILL_LOADER__MAX_EVENTS", "900")
    s = Settings()
    assert s.log.type == "sqlite"  # a GRISTMILL_LOG__ section is taken whole
    assert s.log.max_bytes == 5000
    assert s.loader.max_events == 900  # per field: the GRISTMILL_ name
    assert s.loader.target_events == 250  # the alias fills what is left


def test_values_in_code_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_BUS_DRIVER", "kafka")
    assert Settings(log={"type": "sqlite"}).log.type == "sqlite"  # type: ignore[arg-type]


def test_unknown_driver_is_refused() -> None:
    with pytest.raises(ValueError, match="EVENT_BUS_DRIVER='redis'"):
        log_section({"EVENT_BUS_DRIVER": "redis"})
    assert settings_from({}) == {}
    assert settings_from({"EVENT_BUS_DRIVER": ""}) == {}


def test_redshift_names_of_seed_001(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDSHIFT_HOST", "analytics.example.redshift.amazonaws.com")
    monkeypatch.setenv("REDSHIFT_DATABASE", "workdev")
    monkeypatch.setenv("REDSHIFT_USER", "admin")
    monkeypatch.setenv("REDSHIFT_PASSWORD", "pw")
    assert Settings().warehouse.type == "duckdb"  # not without REDSHIFT_ENABLED
    monkeypatch.setenv("REDSHIFT_ENABLED", "true")
    wh = Settings().warehouse
    assert wh.type == "redshift"
    assert (wh.host, wh.database, wh.user) == (
        "analytics.example.redshift.amazonaws.com",
        "workdev",
        "admin",
    )
    assert wh.password is not None
    assert wh.password.get_secret_value() == "pw"
    monkeypatch.setenv("GRISTMILL_WAREHOUSE__TYPE", "duckdb")
    assert Settings().warehouse.type == "duckdb"  # GRISTMILL_WAREHOUSE__ wins whole
