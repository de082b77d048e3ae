"""The event-bus and sink environment names an application may already set (seed 002:
``EVENT_BUS_DRIVER``, ``KAFKA_BROKERS`` …; seed 001's ``REDSHIFT_*``), read as a
pydantic-settings source below the ``GRISTMILL_*`` names.

Precedence, highest first: values passed to ``Settings(...)``, ``GRISTMILL_*`` variables,
these names, the defaults. A section set through ``GRISTMILL_LOG__*`` is taken whole from
there (mixing a ``GRISTMILL_LOG__TYPE`` with another driver's alias fields would describe no
log), so these names only fill what Gristmill's own names leave unset. docs/event-bus.md has
the table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic_settings import PydanticBaseSettingsSource

DRIVERS = {"memory": "sqlite", "kafka": "kafka", "pubsub": "pubsub"}
"""``EVENT_BUS_DRIVER`` value -> Gristmill log type (``memory``: the embedded SQLite log,
which needs no broker, as the in-process bus needs none)."""


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value if value not in (None, "") else None


def _has_prefix(env: Mapping[str, str], prefix: str) -> bool:
    return any(k.upper().startswith(prefix) for k in env)


def log_section(env: Mapping[str, str]) -> dict[str, Any] | None:
    """The ``log`` section the seed's names describe, or None when they describe none or
    ``GRISTMILL_LOG__*`` is set."""
    driver = _get(env, "EVENT_BUS_DRIVER")
    if driver is None or _has_prefix(env, "GRISTMILL_LOG__"):
        return None
    kind = DRIVERS.get(driver.strip().lower())
    if kind is None:
        raise ValueError(f"EVENT_BUS_DRIVER={driver!r}: use one of {', '.join(DRIVERS)}")
    section: dict[str, Any] = {"type": kind}
    if kind == "kafka":
        if (topic := _get(env, "EVENT_BUS_KAFKA_TOPIC")) is not None:
            section["topic"] = topic
        if (brokers := _get(env, "KAFKA_BROKERS")) is not None:
            # A comma-separated list is librdkafka's bootstrap.servers format as it is.
            section["bootstrap_servers"] = ",".join(b.strip() for b in brokers.split(","))
    elif kind == "pubsub":
        if (topic := _get(env, "EVENT_BUS_PUBSUB_TOPIC")) is not None:
            section["topic"] = topic
        if (project := _get(env, "PUBSUB_PROJECT_ID")) is not None:
            section["project"] = project
    return section


def loader_section(env: Mapping[str, str]) -> dict[str, Any]:
    """``EVENT_SINK_BATCH_SIZE`` -> the loader's batch (the most events one warehouse
    transaction carries, and the size it waits for); ``EVENT_SINK_FLUSH_INTERVAL_MS`` -> how
    long a smaller batch waits for more."""
    out: dict[str, Any] = {}
    if (size := _get(env, "EVENT_SINK_BATCH_SIZE")) is not None:
        out["max_events"] = out["target_events"] = int(size)
    if (ms := _get(env, "EVENT_SINK_FLUSH_INTERVAL_MS")) is not None:
        out["max_wait_s"] = int(ms) / 1000
    return out


def warehouse_section(env: Mapping[str, str]) -> dict[str, Any] | None:
    """Seed 001's Redshift names: ``REDSHIFT_ENABLED=true`` with ``REDSHIFT_HOST``,
    ``REDSHIFT_DATABASE``, ``REDSHIFT_USER``, ``REDSHIFT_PASSWORD`` (and ``REDSHIFT_PORT``) ->
    a Redshift warehouse, unless ``GRISTMILL_WAREHOUSE__*`` is set."""
    enabled = (_get(env, "REDSHIFT_ENABLED") or "").strip().lower()
    if enabled not in ("true", "1", "yes") or _has_prefix(env, "GRISTMILL_WAREHOUSE__"):
        return None
    section: dict[str, Any] = {"type": "redshift"}
    for name, field in (
        ("REDSHIFT_HOST", "host"),
        ("REDSHIFT_PORT", "port"),
        ("REDSHIFT_DATABASE", "database"),
        ("REDSHIFT_USER", "user"),
        ("REDSHIFT_PASSWORD", "password"),
    ):
        if (value := _get(env, name)) is not None:
            section[field] = value
    return section


def settings_from(env: Mapping[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    warehouse = warehouse_section(env)
    if warehouse is not None:
        data["warehouse"] = warehouse
    log = log_section(env)
    if log is not None:
        data["log"] = log
    loader = loader_section(env)
    if loader:
        data["loader"] = loader
    return data


class EventBusAliases(PydanticBaseSettingsSource):
    """The seed's names as a settings source (placed after the ``GRISTMILL_*`` source)."""

    def __init__(self, settings_cls: Any, env: Mapping[str, str] | None = None) -> None:
        super().__init__(settings_cls)
        self._env = env

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # the whole mapping comes from __call__

    def __call__(self) -> dict[str, Any]:
        import os

        return settings_from(self._env if self._env is not None else os.environ)
