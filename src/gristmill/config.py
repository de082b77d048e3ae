"""Typed settings: one root, environment overrides ``GRISTMILL_…`` nested with ``__``.

Examples::

    GRISTMILL_DATA_DIR=/var/lib/gristmill
    GRISTMILL_LOG__MAX_BYTES=2000000000
    GRISTMILL_WAREHOUSE__TYPE=duckdb
    GRISTMILL_LIMITS__MAX_EVENT_BYTES=65536

Engines are a discriminated union on ``type``: a new warehouse or log adds one model to
:mod:`gristmill.config_engines` (re-exported here) and one folder under ``warehouse/`` or
``log/``, and nothing else branches on its name.
"""

from __future__ import annotations

import ipaddress
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gristmill.config_engines import (
    BigQuerySettings,
    ClickHouseSettings,
    DuckDBSettings,
    KafkaLogSettings,
    LogSettings,
    NATSLogSettings,
    PostgresSettings,
    PubSubLogSettings,
    RabbitMQLogSettings,
    RedshiftSettings,
    RedshiftStagingSettings,
    S3Settings,
    SnowflakeSettings,
    SQLiteLogSettings,
    WarehouseSettings,
)

# Every settings model, the engine sections of config_engines.py included: the rest of the
# code imports them all from here.
__all__ = [
    "PLACEHOLDER_SECRETS",
    "AuthSettings",
    "BigQuerySettings",
    "ClickHouseSettings",
    "ConsumeSettings",
    "DuckDBSettings",
    "EnrichmentSettings",
    "ExportSettings",
    "FeedSettings",
    "GovernanceSettings",
    "JWTSettings",
    "KafkaLogSettings",
    "LimitSettings",
    "LoaderSettings",
    "LogSettings",
    "NATSLogSettings",
    "OutboxSettings",
    "PostgresSettings",
    "PubSubLogSettings",
    "RabbitMQLogSettings",
    "RateLimitSettings",
    "RedshiftSettings",
    "RedshiftStagingSettings",
    "RelaySettings",
    "S3Settings",
    "SQLiteLogSettings",
    "ServerSettings",
    "Settings",
    "SnowflakeSettings",
    "WarehouseSettings",
    "apply_seed_aliases",
]


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8765
    access_log: bool = False
    coalesce_writes: bool = True
    """Send a response's head and body in one write (``gristmill.api.protocol``): one
    system call and one segment per small answer instead of two. Off: uvicorn's own
    httptools protocol, as is."""
    metrics_allow: list[str] = ["127.0.0.1", "::1"]
    """Client addresses that may read ``/metrics`` (``*`` for any, e.g. behind a proxy that
    already restricts it). Per-source counts are business data."""


class LimitSettings(BaseModel):
    """Limits on uncompressed bytes; past them the collector answers 413 naming the limit."""

    max_event_bytes: int = Field(32 * 1024, ge=256)
    max_request_bytes: int = Field(5 * 1024 * 1024, ge=1024)
    max_events_per_request: int = Field(10_000, ge=1)


class LoaderSettings(BaseModel):
    max_events: int = Field(50_000, ge=1)
    """Most events one warehouse transaction carries."""
    target_events: int = Field(20_000, ge=1)
    """A batch smaller than this waits up to ``max_wait_s`` for more: each warehouse commit
    has a fixed cost (the dedupe join scans the window's keys), so under load fewer, larger
    batches load faster. Idle, an event waits at most ``max_wait_s``."""
    max_wait_s: float = Field(0.2, ge=0)
    adaptive_wait: bool = True
    """Scale the wait by how busy the loader is (``Loader.batch_wait``): no wait when traffic
    is light, up to ``max_wait_s`` when commits fill its time. Off: always ``max_wait_s``."""
    saturated_wait_s: float = Field(0.4, ge=0)
    """When the machine's CPUs are saturated (``saturated_cpu``), a small batch waits up to
    this long instead: each load's fixed cost is then CPU the collectors lack, and fewer,
    larger loads let them answer more requests (``gristmill.load.pressure``). Part of the
    adaptive wait: not applied with ``adaptive_wait`` off or ``max_wait_s`` 0. 0: never.
    0.4 s: single-event requests on 2 cores gained as much as with 0.8 s (BENCHMARKS.md),
    and an event stays queryable within ~0.4 s plus a commit while saturated."""
    saturated_cpu: float = Field(0.9, gt=0, le=1)
    """CPU utilization (machine, or the cgroup's quota) from which the wait grows towards
    ``saturated_wait_s``; it is reached 0.05 above."""
    idle_poll_s: float = Field(0.05, gt=0)
    stop_drain_s: float = Field(10.0, ge=0)
    """On stop (SIGTERM, Ctrl-C), after the server has stopped taking requests, the loader
    keeps loading until the log holds nothing, for up to this long and while loads succeed,
    so the warehouse is current when the process exits. What is left loads at the next
    start; nothing is lost either way. 0: stop at once."""
    retry_backoff_s: float = Field(1.0, gt=0)
    dedupe_prune_interval_s: float = Field(600.0, gt=0)
    rollup_mode: Literal["auto", "delta", "recompute"] = "auto"
    """How a load keeps rollups: ``delta`` merges the batch's aggregates (in the load
    transaction, by one MERGE on the cloud engines, or as a part per batch on ClickHouse),
    ``recompute`` rebuilds every touched bucket from rows; ``auto`` takes delta where the
    engine has it (every engine today). Same numbers either way; recompute is the oracle."""


class JWTSettings(BaseModel):
    """Bearer JWTs from your identity provider: HS256 with a shared secret, or RS256/ES256
    with public keys from a JWKS file. ``claim_map`` maps Gristmill claim names to token
    claims (dotted paths allowed), e.g. ``{"store_id": "https://example.com/store"}``."""

    hs256_secret: SecretStr | None = None
    jwks_file: Path | None = None
    audience: str | None = None
    issuer: str | None = None
    role_claim: str = "role"
    pack_claim: str | None = None
    """Token claim naming the pack; without it the token is for ``default_pack``."""
    default_pack: str | None = None
    claim_map: dict[str, str] = {}
    leeway_s: int = Field(30, ge=0)
    max_bytes: int = Field(8192, ge=512)
    """A longer token is refused (401) before it is parsed or verified: signature checks
    and header parsing of a client-chosen size are a cost an attacker sets."""

    @property
    def enabled(self) -> bool:
        return self.hs256_secret is not None or self.jwks_file is not None


PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "dev", "test", "password"})


class AuthSettings(BaseModel):
    key_cache_ttl_s: float = Field(5.0, ge=0)
    """How long a looked-up key is trusted before the store is asked again (revocation delay)."""
    jwt: JWTSettings = JWTSettings()
    session_ttl_s: int = Field(12 * 3600, ge=60)
    """Dashboard sign-in sessions (kept in memory; a restart signs everyone out)."""


class FeedSettings(BaseModel):
    """CSV feeds (preview -> commit -> transform); see docs/feeds.md."""

    preview_rows: int = Field(25, ge=1, le=1000)
    """Rows a preview parses and returns."""
    token_ttl_s: int = Field(3600, ge=1)
    """How long an upload token can be committed (then 410 Gone)."""
    max_upload_bytes: int = Field(100 * 1024 * 1024, ge=1024)
    """Past this an upload answers 413."""
    upload_dir: Path | None = None
    """Where uploads wait for their commit; default ``<data_dir>/feeds``."""
    stage_batch_rows: int = Field(50_000, ge=100)
    """Rows per staging write (memory is bounded by one batch)."""
    fast_lane: bool = True
    """Check plain-shaped rows in Arrow column batches (same results as the row parser)."""
    stale_after_s: int = Field(900, ge=1)
    """A queued or transforming feed this long unchanged may be retried (its process died)."""


class OutboxSettings(BaseModel):
    """The application database ``gristmill relay`` reads: the table ``gristmill outbox ddl``
    creates, or a mapping of its column roles onto an existing table."""

    url: SecretStr | None = None
    """``sqlite:///path/app.db``, or a PostgreSQL DSN (``host=… dbname=…`` or
    ``postgresql://…``)."""
    table: str = "gristmill_outbox"
    """Table name, optionally ``schema.table`` (PostgreSQL)."""
    id_column: str = "id"
    event_id_column: str = "event_id"
    payload_column: str = "payload"
    """One event per row in the relay's dialect (the native event by default)."""
    txid_column: str = "txid"
    """PostgreSQL only: ``xid8 DEFAULT pg_current_xact_id()``, the writing transaction."""


class RelaySettings(BaseModel):
    """``gristmill relay``: outbox rows -> the collector pipeline -> the configured log."""

    outbox: OutboxSettings = OutboxSettings()
    consumer: str = Field("gristmill", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    """Names this relay's progress, lease and processed markers."""
    key_prefix: str = Field("gm", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    """Markers are ``<key_prefix>:processed:<consumer>:<event_id>`` (seed 000's format)."""
    pack: str | None = None
    """Pack the events belong to; default the only pack served."""
    source: str = "outbox"
    dialect: str = "native"
    batch_size: int = Field(1000, ge=1, le=50_000)
    poll_interval_s: float = Field(0.2, gt=0)
    lease_ttl_s: float = Field(15.0, gt=0)
    """A relay that dies holds the lease this long; a second relay waits for it."""
    marker_ttl_s: float = Field(7 * 86400.0, gt=0)
    redis_url: SecretStr | None = None
    """Keep progress, lease and markers in Redis instead of the metadata store."""


class ConsumeSettings(BaseModel):
    """``gristmill consume``: a foreign queue's JSON messages -> the collector pipeline."""

    broker: Literal["rabbitmq", "nats", "kafka", "pubsub"] = "rabbitmq"
    url: SecretStr | None = None
    """amqp://…, nats://…, or Kafka bootstrap servers ``host:port`` (unused for Pub/Sub)."""
    subscription: str | None = None
    """Pub/Sub: the subscription to pull, ``projects/<p>/subscriptions/<s>`` or a bare name
    in ``project``."""
    project: str | None = None
    """Pub/Sub: the project of a bare subscription name."""
    queue: str | None = None
    """RabbitMQ: queue to consume (declared passive unless ``exchange`` is set)."""
    exchange: str | None = None
    """RabbitMQ: bind ``queue`` to this existing exchange with ``routing_key``."""
    routing_key: str = "#"
    stream: str | None = None
    """NATS JetStream: stream name (must exist)."""
    subject: str | None = None
    """NATS subject filter, or the Kafka topic."""
    durable: str = "gristmill"
    """NATS durable consumer name / Kafka consumer group."""
    pack: str | None = None
    source: str = "queue"
    dialect: str = "native"
    """Collector dialect of the messages (native, segment, posthog, snowplow, cloudevents)."""
    prefetch: int = Field(500, ge=1, le=100_000)
    """Messages in flight, unacknowledged: the broker stops delivering past it."""
    batch_wait_s: float = Field(0.2, ge=0)
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Serve Prometheus text (``gristmill_consumer_*``) on this port; unset serves nothing."""
    metrics_host: str = "127.0.0.1"
    """Address the metrics server binds (loopback unless a scraper elsewhere needs it)."""
    backlog_interval_s: float = Field(5.0, gt=0)
    """How often the broker is asked for the backlog while metrics are served."""


class GovernanceSettings(BaseModel):
    """Retention and erasure (docs/governance.md)."""

    retention_interval_s: float = Field(86400.0, ge=0)
    """How often ``serve`` enforces retention; 0 turns the schedule off (the CLI still runs)."""
    retention_first_run_s: float = Field(300.0, ge=0)
    """Delay of the first scheduled run after start (not while the server is warming up)."""
    quarantine_retention_days: int = Field(90, ge=1)
    """Quarantined items older than this are removed by a retention run."""
    erasure_drain_timeout_s: float = Field(300.0, gt=0)
    """An erasure waits this long for the loader to load what the log held at request time
    (so nothing of the subject lands after it); past it the request fails and says why."""
    erasure_deadline_s: float = Field(3600.0, gt=0)
    """The documented completion time of an erasure request; its receipt says whether it
    finished within it."""
    suppression_refresh_s: float = Field(1.0, gt=0)
    """How often a collect-role process (``serve --workers``, scaled-out collectors) re-reads
    the suppression list. Over a partitioned log an erasure waits twice this before its
    drain, so every collector drops the subject's new events before the log is drained."""


class ExportSettings(BaseModel):
    """CSV exports (docs/exports.md)."""

    destination: str | None = None
    """``file:///path`` or ``s3://bucket/prefix``; default ``<data_dir>/exports``."""
    s3: S3Settings = S3Settings()
    expires_s: int = Field(3600, ge=1, le=7 * 86400)
    """Lifetime of a signed download URL (S3 presigned, or Gristmill's own HMAC-signed one)."""
    signing_key: SecretStr | None = None
    """HMAC key of local download URLs; default a random key kept in the metadata store."""
    public_url: str | None = None
    """Base of local download URLs (``https://analytics.example.com``); default the URL the
    request came in on."""
    retention: Annotated[str, Field(pattern=r"^\s*\d+\s*[smhdwy]\s*$")] = "30d"
    """Jobs and files older than this are removed by ``ExportService.expire`` (governance)."""
    chunk_rows: int = Field(50_000, ge=1)
    """Rows read and written per step (memory is bounded by one chunk)."""
    max_attempts: int = Field(3, ge=1, le=100)
    retry_backoff_s: float = Field(5.0, ge=0)
    """A failed attempt waits ``retry_backoff_s * attempts`` before the next one."""
    stale_after_s: float = Field(60.0, ge=0)
    """A running job whose heartbeat is older than this belongs to a dead process: a worker
    takes it over (on start, and while it polls)."""
    poll_interval_s: float = Field(1.0, gt=0)
    test_chunk_pause_s: float = Field(0.0, ge=0)
    """Test-only: sleep this long after each written chunk, so a test can kill a worker
    between chunks. Leave at 0."""


class EnrichmentSettings(BaseModel):
    """Collect-time enrichment (a pack's ``enrichment:`` section)."""

    mmdb_path: Path | None = None
    """A MaxMind GeoIP2/GeoLite2 ``.mmdb`` for country and city; unset: geoip2fast's bundled
    country data."""


class RateLimitSettings(BaseModel):
    """Token-bucket rate limits on ingest and query, per key and per client IP.

    Limits count **requests, not events**: a 500-event batch costs one token. Over a limit
    the answer is 429 with ``Retry-After`` (whole seconds) and nothing is written to the log.
    A rate of 0 turns that one limit off. Buckets are in memory, per server process.

    The defaults are deliberately high so they never throttle ``make bench`` or ``make demo``
    (both send from 127.0.0.1 with one write key; the single-event bench reaches 3-5k
    requests/s against an aim of 10k, the demo sends 500-event batches): out of the box they
    only stop floods. Set them to your clients' real rates. Loopback is *not* exempt by
    default: behind a reverse proxy on the same host every client would look like 127.0.0.1
    (use ``trust_forwarded_for`` there).
    """

    enabled: bool = True
    ingest_per_key_rps: float = Field(20_000, ge=0)
    """Ingest requests per second one key (write key id, or a JWT subject) may send."""
    ingest_burst: int = Field(40_000, ge=1)
    """Requests a key may send at once after being idle (the bucket's size)."""
    ingest_per_ip_rps: float = Field(50_000, ge=0)
    """Ingest requests per second from one client address, all keys (and bad keys) together."""
    ingest_per_ip_burst: int = Field(100_000, ge=1)
    query_per_key_rps: float = Field(100, ge=0)
    """Query requests (GET ``/v1/metrics``, ``/v1/events``, ``/v1/freshness``, pack views
    under ``/api/…``, ``/analytics/…``) per second per key, JWT subject or dashboard session."""
    query_burst: int = Field(200, ge=1)
    query_per_ip_rps: float = Field(500, ge=0)
    query_per_ip_burst: int = Field(1000, ge=1)
    trusted_ips: list[str] = []
    """Client addresses or CIDR networks exempt from every limit (none by default)."""
    trust_forwarded_for: bool = False
    """Take the client address from the last ``X-Forwarded-For`` entry (the one your proxy
    appended). Off by default: any client can write that header."""
    max_keys: int = Field(100_000, ge=100)
    """Buckets kept per limit; past it idle (refilled) buckets are dropped, then the least
    recently used, so memory stays bounded under many distinct keys or addresses."""

    @field_validator("trusted_ips")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for item in v:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"trusted_ips: {item!r} is not an address or network") from exc
        return v


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GRISTMILL_", env_nested_delimiter="__", extra="forbid"
    )

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Path(".gristmill")
    packs_dir: Path | None = None
    """Folder holding ``<pack>/pack.yaml``; default ``./packs``, else the packs shipped along."""
    packs: list[str] = ["marketplace"]
    server: ServerSettings = ServerSettings()
    limits: LimitSettings = LimitSettings()
    log: LogSettings = SQLiteLogSettings()
    warehouse: WarehouseSettings = DuckDBSettings()
    loader: LoaderSettings = LoaderSettings()
    auth: AuthSettings = AuthSettings()
    meta_url: str | None = None
    """SQLAlchemy URL of the metadata store; default a SQLite file in the data directory."""
    feeds: FeedSettings = FeedSettings()
    relay: RelaySettings = RelaySettings()
    consume: ConsumeSettings = ConsumeSettings()
    governance: GovernanceSettings = GovernanceSettings()
    rate_limits: RateLimitSettings = RateLimitSettings()
    enrichment: EnrichmentSettings = EnrichmentSettings()
    exports: ExportSettings = ExportSettings()

    # Seed 002's environment names, read as aliases of the settings above. A GRISTMILL_* name
    # for the same setting wins (docs/provisioning.md#environment-names).
    seed_warehouse_database_url: SecretStr | None = Field(
        None, validation_alias=AliasChoices("WAREHOUSE_DATABASE_URL"), exclude=True
    )
    """PostgreSQL DSN: ``warehouse.dsn``, and the postgres engine when none is configured."""
    seed_bigquery_dataset: str | None = Field(
        None, validation_alias=AliasChoices("BIGQUERY_DATASET"), exclude=True
    )
    seed_snowflake_schema: str | None = Field(
        None, validation_alias=AliasChoices("SNOWFLAKE_SCHEMA"), exclude=True
    )
    seed_snowflake_stage: str | None = Field(
        None, validation_alias=AliasChoices("SNOWFLAKE_STAGE"), exclude=True
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """``GRISTMILL_*`` first, then the event-bus names of seed 002 (``EVENT_BUS_DRIVER``,
        ``KAFKA_BROKERS`` …: :mod:`gristmill.config_aliases`, docs/event-bus.md)."""
        from gristmill.config_aliases import EventBusAliases

        return (
            init_settings,
            env_settings,
            EventBusAliases(settings_cls),
            dotenv_settings,
            file_secret_settings,
        )

    @model_validator(mode="before")
    @classmethod
    def _default_engine_types(cls, data: Any) -> Any:
        """``GRISTMILL_LOG__MAX_BYTES=…`` alone must work: a nested engine section without a
        ``type`` means the default engine, not a missing discriminator."""
        if isinstance(data, dict):
            for section, default in (("log", "sqlite"), ("warehouse", "duckdb")):
                value = data.get(section)
                if isinstance(value, dict) and "type" not in value:
                    data[section] = {**value, "type": default}
        return data

    @model_validator(mode="after")
    def _seed_aliases(self) -> Settings:
        return apply_seed_aliases(self)

    @model_validator(mode="after")
    def _no_placeholder_secrets(self) -> Settings:
        """Outside development, refuse weak JWT secrets instead of running with them."""
        secret = self.auth.jwt.hs256_secret
        if (
            self.environment == "production"
            and self.auth.jwt.enabled
            and not (self.auth.jwt.audience)
        ):
            raise ValueError(
                "auth.jwt.audience is required in production: without it any token your "
                "identity provider issued for another application would be accepted"
            )
        if self.environment == "production" and secret is not None:
            value = secret.get_secret_value()
            if value.lower() in PLACEHOLDER_SECRETS or len(value) < 32:
                raise ValueError(
                    "auth.jwt.hs256_secret is a placeholder or shorter than 32 characters; "
                    "set GRISTMILL_AUTH__JWT__HS256_SECRET to a long random value"
                )
        return self

    @cached_property
    def resolved_packs_dir(self) -> Path:
        if self.packs_dir is not None:
            return self.packs_dir
        here = Path(__file__).resolve().parent
        # ./packs, then the source checkout (editable install), then the copy inside the wheel.
        for candidate in (Path("packs"), here.parent.parent / "packs", here / "packs"):
            if all((candidate / p / "pack.yaml").exists() for p in self.packs):
                return candidate
        return Path("packs")

    @property
    def log_path(self) -> Path:
        path = self.log.path if isinstance(self.log, SQLiteLogSettings) else None
        return path or self.data_dir / "log.sqlite"

    @property
    def log_parts_dir(self) -> Path:
        """Where a partitioned embedded log (``log.partitions`` > 1) keeps its files."""
        return self.log_path.with_name("log")

    @property
    def warehouse_path(self) -> Path:
        """The DuckDB file (or chdb folder) of the embedded warehouse."""
        wh = self.warehouse
        if isinstance(wh, DuckDBSettings):
            return wh.path or self.data_dir / "warehouse.duckdb"
        if isinstance(wh, ClickHouseSettings):
            return wh.path or self.data_dir / "chdb"
        raise ValueError(f"warehouse {wh.type!r} has no local path")

    @property
    def meta_database_url(self) -> str:
        return self.meta_url or f"sqlite:///{self.data_dir / 'meta.sqlite'}"


def apply_seed_aliases(settings: Settings) -> Settings:
    """Apply seed 002's environment names where no GRISTMILL_* name set the same thing
    (also after a command swaps the warehouse section for another engine's defaults)."""
    wh = settings.warehouse
    url = settings.seed_warehouse_database_url
    if url is not None:
        if "warehouse" not in settings.model_fields_set:
            settings.warehouse = wh = PostgresSettings(dsn=url)
        elif isinstance(wh, PostgresSettings) and "dsn" not in wh.model_fields_set:
            wh.dsn = url
    seeds: dict[type[BaseModel], dict[str, str | None]] = {
        BigQuerySettings: {"landing_dataset": settings.seed_bigquery_dataset},
        SnowflakeSettings: {
            "landing_schema": settings.seed_snowflake_schema,
            "stage": settings.seed_snowflake_stage,
        },
    }
    for field, value in seeds.get(type(wh), {}).items():
        if value is not None and field not in wh.model_fields_set:
            setattr(wh, field, value)
    return settings
