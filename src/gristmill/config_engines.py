"""The engine sections of the settings: the log (``GRISTMILL_LOG__…``) and the warehouse
(``GRISTMILL_WAREHOUSE__…``), each a union tagged by ``type``.

They live apart from :mod:`gristmill.config` because they grow with every engine while the
rest of the settings do not: a new warehouse or log adds one model here (and to its union)
and one folder under ``warehouse/`` or ``log/``, and nothing else branches on its name.
``gristmill.config`` re-exports every name, so ``from gristmill.config import X`` stays the
one import the rest of the code uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr


class SQLiteLogSettings(BaseModel):
    """The embedded log: a SQLite file in WAL mode, appended with group commit."""

    type: Literal["sqlite"] = "sqlite"
    path: Path | None = None
    max_bytes: int = Field(1 << 30, ge=1024)
    """Cap on not-yet-loaded bytes; past it collectors answer 503 with Retry-After."""
    retry_after_s: int = 5
    group_commit_max: int = 512
    """Most appends one fsync may cover."""
    partitions: int = Field(1, ge=1, le=64)
    """1: one file (``log.sqlite``). More: that many files under ``<data_dir>/log/``
    (``p0.sqlite`` …), one writer each, so ``gristmill serve --workers N`` collects on N cores;
    a loader pool loads them all. Fixed once the files exist (offsets encode it)."""
    append_partition: int | None = Field(None, ge=0)
    """The partition this process appends to (``serve --workers`` sets it per worker); unset:
    round robin over all partitions."""
    lease_ttl_s: float = Field(10.0, gt=0)
    """A partition lease (kept in the partition's file) not renewed for this long is free."""


class _BrokerLogSettings(BaseModel):
    """What every broker log shares (scaled-out mode, docs/scale-out.md)."""

    partitions: int = Field(2, ge=1, le=256)
    """Ordered sequences the log is split into; each is loaded by one loader at a time, so
    this bounds how many loaders work in parallel. Fixed once data exists: offsets encode it."""
    max_bytes: int = Field(1 << 30, ge=1024)
    """Cap on not-yet-loaded bytes (estimated from broker positions); past it 503."""
    retry_after_s: int = 5
    retention_s: float = Field(7 * 86400, gt=0)
    """How long the broker keeps records, loaded or not. Conservation counts what is kept."""
    lease_ttl_s: float = Field(10.0, gt=0)
    """A partition lease not renewed for this long is free (a killed loader's, say)."""


class RabbitMQLogSettings(_BrokerLogSettings):
    """RabbitMQ streams (one per partition), published with publisher confirms."""

    type: Literal["rabbitmq"]
    url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    stream: str = Field("gristmill", pattern=r"^[A-Za-z0-9_.-]{1,200}$")


class NATSLogSettings(_BrokerLogSettings):
    """NATS JetStream: one stream, one subject per partition, durable pull consumers."""

    type: Literal["nats"]
    url: SecretStr = SecretStr("nats://127.0.0.1:4222")
    stream: str = Field("gristmill", pattern=r"^[A-Za-z0-9_-]{1,200}$")
    replicas: int = Field(1, ge=1, le=5)


class KafkaLogSettings(_BrokerLogSettings):
    """Kafka (confluent-kafka): one topic, its partitions are the log's partitions."""

    type: Literal["kafka"]
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = Field("gristmill", pattern=r"^[A-Za-z0-9_.-]{1,200}$")
    replication_factor: int = Field(1, ge=1)


class PubSubLogSettings(BaseModel):
    """Google Cloud Pub/Sub as the log (``gristmill[pubsub]``): one topic, published with an
    ordering key per partition; one subscription per consumer group, acknowledged after the
    warehouse commit. Pub/Sub keeps no offsets to re-read: docs/event-bus.md says what that
    changes."""

    type: Literal["pubsub"]
    project: str | None = None
    topic: str = Field("gristmill", pattern=r"^[A-Za-z][A-Za-z0-9_.~+%-]{2,254}$")
    subscription_prefix: str | None = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9_.~+%-]{0,200}$")
    """Consumer group ``g`` reads subscription ``<prefix>.<g>``, by default
    ``<topic>.<g>`` (created with message ordering if missing; a subscription stays bound to
    the topic it was created for)."""
    partitions: int = Field(2, ge=1, le=256)
    """Ordering keys ``p0`` … ``p<n-1>``, assigned round robin per append: messages of one
    key arrive in publish order."""
    max_bytes: int = Field(1 << 30, ge=1024)
    retry_after_s: int = 5
    ack_deadline_s: int = Field(60, ge=10, le=600)
    """How long a pulled, unacknowledged message stays with its reader before redelivery."""
    publish_max_messages: int = Field(100, ge=1, le=1000)
    """Publisher batching: messages per publish request at most."""
    publish_max_latency_s: float = Field(0.01, ge=0, le=10)
    """Publisher batching: how long a batch waits for more messages."""


LogSettings = Annotated[
    SQLiteLogSettings
    | RabbitMQLogSettings
    | NATSLogSettings
    | KafkaLogSettings
    | PubSubLogSettings,
    Field(discriminator="type"),
]


class DuckDBSettings(BaseModel):
    type: Literal["duckdb"] = "duckdb"
    path: Path | None = None
    threads: int | None = None
    memory_limit: str | None = None
    checkpoint_threshold: str = Field("128MB", pattern=r"^[0-9]+(\.[0-9]+)? ?([KMGT]i?B|B)$")
    """WAL size at which a commit also checkpoints (DuckDB's own default is 16 MB).

    The checkpoint runs inside the loader's commit and blocks the next load, and it rewrites
    every row group that new rows went into, already-written rows included. At 16 MB that
    came every ~50k events, and 1M events spent 6.4 s in commits against 3.2 s at 64 MB;
    128 MB measured the better p95 freshness at 20k events/s (BENCHMARKS.md). The price is a
    WAL of up to this size replayed at the next start after a crash, and that much data held
    in memory."""
    key_index: bool = True
    """Keep each pack's dedupe keys in memory (24 bytes a key), so a load's duplicate check
    does not read the whole key table: without it each load reads every key of the dedupe
    window (58 ms per load at 10M keys, BENCHMARKS.md). Off: the check is a join, as before."""
    fold_every: int = Field(32, ge=1)
    """Delta rollups append each load's aggregates as rows of their own; every this many loads
    that appended to a rollup, the load also folds its keys into one row each (from the
    earliest bucket appended since). Higher: less folding, more rows per key to merge on
    read until the fold. 1: fold at every load."""


class PostgresSettings(BaseModel):
    """PostgreSQL as the warehouse: pack tables range-partitioned by ``occurred_at``, loads by
    binary COPY. The DSN is a libpq connection string or URL."""

    type: Literal["postgres"] = "postgres"
    dsn: SecretStr = SecretStr("host=127.0.0.1 dbname=postgres user=postgres")
    partitions_ahead: int = Field(7, ge=0, le=366)
    """Partitions created ahead of time (days, hours or months by the pack's granularity);
    any other is created on demand before the rows that need it are loaded."""
    fold_every: int = Field(32, ge=1)
    """As for DuckDB: delta rollups append each load's aggregates, and every this many loads
    that appended to a rollup the load also folds its keys into one row each. Appends and
    folds of one rollup hold its advisory lock, so concurrent loaders stay exact."""


class ClickHouseSettings(BaseModel):
    """ClickHouse as the warehouse: in process (chdb, data under ``path``) when ``url`` is
    unset, else a server through clickhouse-connect."""

    type: Literal["clickhouse"] = "clickhouse"
    url: SecretStr | None = None
    path: Path | None = None


class BigQuerySettings(BaseModel):
    """BigQuery: datasets per pack in ``project``; credentials as the Google client finds
    them (``GOOGLE_APPLICATION_CREDENTIALS``)."""

    type: Literal["bigquery"] = "bigquery"
    project: str | None = None
    location: str = "US"
    dataset_prefix: str = ""
    landing_dataset: str | None = Field(None, pattern=r"^[A-Za-z0-9_]{1,1024}$")
    """Dataset the connector hints of ``gristmill provision`` land in (seed name
    ``BIGQUERY_DATASET``); Gristmill's own loader keeps one dataset per pack."""


class SnowflakeSettings(BaseModel):
    """Snowflake through the official connector; one schema per pack in ``database``."""

    type: Literal["snowflake"] = "snowflake"
    account: str | None = None
    user: str | None = None
    password: SecretStr | None = None
    database: str = "GRISTMILL"
    warehouse: str | None = None
    role: str | None = None
    landing_schema: str | None = Field(None, pattern=r"^[A-Za-z0-9_]{1,255}$")
    """Schema the connector hints of ``gristmill provision`` land in (seed name
    ``SNOWFLAKE_SCHEMA``); Gristmill's own loader keeps one schema per pack."""
    stage: str = Field("gristmill_stage", pattern=r"^[A-Za-z0-9_.]{1,255}$")
    """Named stage the hints' ``COPY INTO`` reads from (seed name ``SNOWFLAKE_STAGE``)."""


class S3Settings(BaseModel):
    """Credentials and endpoint of an S3-compatible store (AWS, MinIO, Ceph …) for exports."""

    endpoint_url: str | None = None
    """Unset for AWS itself; e.g. ``http://127.0.0.1:9000`` for MinIO."""
    key: SecretStr | None = None
    """Access key id; unset: the usual AWS credential chain (environment, profile, role)."""
    secret: SecretStr | None = None
    region: str | None = None


class RedshiftStagingSettings(BaseModel):
    """Where a Redshift load stages its Parquet files for ``COPY`` (any S3-compatible store
    the cluster can read); unset ``bucket``: every batch loads by multi-row ``INSERT``."""

    bucket: str | None = None
    prefix: str = "gristmill/staging"
    iam_role: str | None = None
    """ARN of the role Redshift assumes to read the bucket (``COPY … IAM_ROLE``)."""
    s3: S3Settings = S3Settings()
    """Credentials and endpoint Gristmill writes the staged files with."""


class RedshiftSettings(BaseModel):
    """Amazon Redshift through the official ``redshift_connector``; one schema per pack."""

    type: Literal["redshift"] = "redshift"
    host: str | None = None
    port: int = 5439
    database: str = "dev"
    user: str | None = None
    password: SecretStr | None = None
    staging: RedshiftStagingSettings = RedshiftStagingSettings()
    copy_min_rows: int = Field(5000, ge=1)
    """Tables of a batch with fewer rows load by multi-row ``INSERT`` (a ``COPY`` has a fixed
    cost of seconds); from this many on, by ``COPY`` from the staging bucket, if one is set."""


WarehouseSettings = Annotated[
    DuckDBSettings
    | PostgresSettings
    | ClickHouseSettings
    | BigQuerySettings
    | SnowflakeSettings
    | RedshiftSettings,
    Field(discriminator="type"),
]
