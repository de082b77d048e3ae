"""Log registry: settings ``type`` -> implementation, imported only when chosen."""

from __future__ import annotations

from gristmill.config import Settings
from gristmill.log.base import EventLog


def open_log(settings: Settings) -> EventLog:
    cfg = settings.log
    if cfg.type == "sqlite" and cfg.partitions > 1:
        from gristmill.log.sqlite_parts import PartitionedSQLiteLog

        return PartitionedSQLiteLog(
            settings.log_parts_dir,
            partitions=cfg.partitions,
            max_bytes=cfg.max_bytes,
            retry_after_s=cfg.retry_after_s,
            group_commit_max=cfg.group_commit_max,
            lease_ttl_s=cfg.lease_ttl_s,
            append_partition=cfg.append_partition,
            legacy=settings.log_path,
        )
    if cfg.type == "sqlite":
        from gristmill.log.sqlite import SQLiteLog

        return SQLiteLog(
            settings.log_path,
            max_bytes=cfg.max_bytes,
            retry_after_s=cfg.retry_after_s,
            group_commit_max=cfg.group_commit_max,
        )
    if cfg.type == "nats":
        from gristmill.log.nats import NATSLog

        return NATSLog(cfg)
    if cfg.type == "rabbitmq":
        from gristmill.log.rabbitmq import RabbitMQLog

        return RabbitMQLog(cfg)
    if cfg.type == "kafka":
        from gristmill.log.kafka import KafkaLog

        return KafkaLog(cfg)
    if cfg.type == "pubsub":
        from gristmill.log.pubsub import PubSubLog

        return PubSubLog(cfg)
    raise ValueError(f"unknown log type {cfg.type!r}")  # pragma: no cover - pydantic refuses it
