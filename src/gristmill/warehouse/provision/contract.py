"""The contract half of a provisioning plan (seed 002's ``provisioning-plan.json``): the bus
and the warehouse together — which log streams, topics or subjects carry a pack's events and
under which compatibility rule, which table each event type lands in, which JSON path fills
each column, and each table's partitioning, clustering, retention and dedupe key — plus the
target engine's connector hints for teams that land the topic with their own tooling.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from types import ModuleType
from typing import Any

from gristmill.config import (
    KafkaLogSettings,
    NATSLogSettings,
    PubSubLogSettings,
    RabbitMQLogSettings,
    Settings,
    SQLiteLogSettings,
)
from gristmill.pack.models import ENVELOPE_TYPES, Pack
from gristmill.sql.types import sql_type
from gristmill.warehouse.base import Capabilities

COMPATIBILITY = {
    "mode": "BACKWARD_TRANSITIVE",
    "rule": "every declared schema version of an event type stays accepted and lands in the "
    "same table; a new version may add properties (promoted ones become new nullable "
    "columns, an additive change), never retype or remove a promoted one",
}


def table_retention(pack: Pack, table: str) -> timedelta | None:
    """The longest retention among the categories of the event types routed to ``table``:
    expiring a partition earlier would drop events another category must keep."""
    spans = [
        pack.spec.categories[e.category].retention
        for e in pack.spec.event_types.values()
        if e.table == table
    ]
    return max(spans) if spans else None


def bus(settings: Settings) -> dict[str, Any]:
    """The log every pack's accepted events wait in, as the configured engine names it."""
    log = settings.log
    if isinstance(log, SQLiteLogSettings):
        return {"log": "sqlite", "stream": "events", "partitions": 1}
    if isinstance(log, KafkaLogSettings):
        return {"log": "kafka", "topic": log.topic, "partitions": log.partitions}
    if isinstance(log, NATSLogSettings):
        subjects = [f"{log.stream}.p{p}" for p in range(log.partitions)]
        return {"log": "nats", "stream": log.stream, "subjects": subjects}
    if isinstance(log, PubSubLogSettings):
        # Not "topic": the connector hints read that as a Kafka topic.
        keys = [f"p{p}" for p in range(log.partitions)]
        return {"log": "pubsub", "pubsub_topic": log.topic, "ordering_keys": keys}
    assert isinstance(log, RabbitMQLogSettings)
    streams = [f"{log.stream}.p{p}" for p in range(log.partitions)]
    return {"log": "rabbitmq", "stream": log.stream, "streams": streams}


def _json_path(column: str, promoted: bool) -> str:
    return f"$.properties.{column}" if promoted else f"$.{column}"


def _columns(pack: Pack, table: str, dialect: str) -> list[dict[str, Any]]:
    out = []
    for c in pack.columns(table):
        sources = sorted(
            f"{name}@{v}"
            for name, e in pack.spec.event_types.items()
            if e.table == table and c.name in e.promote
            for v in e.versions
            if c.name in pack.schemas.get(name, {}).get(v, {}).get("properties", {})
        )
        out.append(
            {
                "name": c.name,
                "type": sql_type(c.type, dialect).sql(dialect=dialect),
                "promoted": c.promoted,
                "json_path": _json_path(c.name, c.promoted),
                **({"from": sources} if c.promoted else {}),
            }
        )
    return out


def pack_contract(
    pack: Pack, dialect: str, log: dict[str, Any], caps: Capabilities
) -> dict[str, Any]:
    tables = []
    for name, spec in sorted(pack.spec.tables.items()):
        retention = table_retention(pack, name)
        tables.append(
            {
                "name": name,
                "dataset": pack.dataset,
                "columns": _columns(pack, name, dialect),
                "partitioning": {
                    "column": spec.partition_by.column,
                    "granularity": spec.partition_by.granularity,
                    "native": caps.native_partitioning,
                },
                "clustering": {"columns": list(spec.cluster_by), "native": caps.native_clustering},
                "retention_days": retention.days if retention is not None else None,
                "event_types": sorted(
                    t for t, e in pack.spec.event_types.items() if e.table == name
                ),
                "fed_from": log,
            }
        )
    return {
        "pack": pack.name,
        "dataset": pack.dataset,
        "dedupe": {
            "key": ["event_id", *pack.spec.dedupe.scope],
            "window_days": pack.spec.dedupe.window.total_seconds() / 86_400,
        },
        "envelope": sorted(ENVELOPE_TYPES),
        "event_types": {
            name: {"table": e.table, "versions": sorted(e.versions), "promote": sorted(e.promote)}
            for name, e in sorted(pack.spec.event_types.items())
        },
        "tables": tables,
    }


def contract(
    packs: Sequence[Pack], settings: Settings, dialect: str, catalog: ModuleType, caps: Capabilities
) -> dict[str, Any]:
    log = bus(settings)
    return {
        "bus": {**log, "compatibility": COMPATIBILITY},
        "packs": [pack_contract(p, dialect, log, caps) for p in packs],
        "connectors": catalog.connector_hints(packs, log, settings),
    }
