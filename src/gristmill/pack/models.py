"""Pack format v1 as pydantic models.

Every model forbids unknown keys so a typo (``cluster_key:``) fails at load with its path
instead of being ignored. Names that become SQL identifiers (tables, columns, datasets) must
match :data:`IDENT`, which is what lets the SQL layer quote them without further checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from gristmill.core.durations import format_duration, parse_duration
from gristmill.core.envelope import ENVELOPE_COLUMNS
from gristmill.pack.analytics import MetricSpec, RollupSpec, ViewSpec
from gristmill.pack.exports import ExportSpec
from gristmill.pack.mapping import MappingsSpec
from gristmill.pack.names import EVENT_NAME, IDENT
from gristmill.pack.observe import ObserveSpec
from gristmill.pack.pricing import PriceBook, PricingSpec

__all__ = ["EVENT_NAME", "IDENT"]


def _duration(v: Any) -> Any:
    return parse_duration(v) if isinstance(v, str) else v


Duration = Annotated[
    timedelta, BeforeValidator(_duration), PlainSerializer(format_duration, return_type=str)
]
Ident = Annotated[str, Field(pattern=IDENT)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnType(StrEnum):
    """Warehouse-neutral column types; each engine maps them in its own folder."""

    STRING = "string"
    INT64 = "int64"
    FLOAT64 = "float64"
    BOOL = "bool"
    TIMESTAMP = "timestamp"
    DATE = "date"
    JSON = "json"


JSON_TYPES: dict[ColumnType, frozenset[str]] = {
    ColumnType.STRING: frozenset({"string"}),
    ColumnType.INT64: frozenset({"integer"}),
    ColumnType.FLOAT64: frozenset({"number", "integer"}),
    ColumnType.BOOL: frozenset({"boolean"}),
    ColumnType.TIMESTAMP: frozenset({"string"}),
    ColumnType.DATE: frozenset({"string"}),
    ColumnType.JSON: frozenset({"object", "array", "string", "number", "integer", "boolean"}),
}
"""Which JSON Schema types may feed a promoted column of each type."""


class ColumnSpec(_Model):
    type: ColumnType
    description: str = ""


class PartitionSpec(_Model):
    column: Literal["occurred_at"] = "occurred_at"
    granularity: Literal["hour", "day", "month"] = "day"


class TableSpec(_Model):
    description: str = ""
    columns: dict[Ident, ColumnSpec] = {}
    partition_by: PartitionSpec = PartitionSpec()
    cluster_by: list[Ident] = []
    dimensions: list[Ident] = []
    """Columns callers may group by and filter on (the allowlist)."""


class EntitySpec(_Model):
    """Fills the envelope's ``entity_type`` / ``entity_id`` from a property."""

    type: Ident
    id_property: Ident


class EventTypeSpec(_Model):
    description: str = ""
    category: Ident
    table: Ident
    versions: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    promote: list[Ident] = []
    """Properties copied into table columns of the same name."""
    entity: EntitySpec | None = None


class CategorySpec(_Model):
    description: str = ""
    retention: Duration


class RoleSpec(_Model):
    description: str = ""
    claims: list[Ident] = []
    """Claims a key or token of this role must carry."""
    permissions: list[str] = []
    """From the fixed list in ``gristmill.auth.permissions`` (``metrics:read`` …)."""
    scope: dict[Ident, Ident] = {}
    """column -> claim: every query by this role keeps only rows whose column equals the
    caller's claim. Applied in the query builder, never taken from request parameters."""


DEDUPE_SCOPE_FIELDS = frozenset({"source", "event_type"})


class DedupeSpec(_Model):
    """Events are unique per (scope, event_id) within ``window`` of their first receipt.

    A scope field is ``source``, ``event_type`` or a column every table of the pack has and
    every event type fills (``org_id``: a request id is unique per organisation, whichever
    path — queue, HTTP, replay — delivered it)."""

    scope: list[Ident] = Field(["source"], min_length=1)
    window: Duration = timedelta(days=7)

    def columns(self) -> list[str]:
        """Scope fields that are table columns (not ``source`` / ``event_type``)."""
        return [f for f in self.scope if f not in DEDUPE_SCOPE_FIELDS]


class PiiSpec(_Model):
    """Keys that identify a person, stripped when a subject is anonymized (GDPR Art. 17)."""

    properties: list[str] = []
    """Property keys removed from ``properties`` (the seed's ``event_data``); a promoted
    column of the same name is nulled too."""
    context: list[str] = ["ip", "user_agent"]
    """Context keys removed from ``context`` (the seed's ``metadata``)."""


class GovernanceSpec(_Model):
    """Erasure and retention choices of one pack (docs/governance.md)."""

    pii: PiiSpec = PiiSpec()
    subject_properties: list[str] = []
    """Property keys whose value names a subject besides ``user_id`` / ``anonymous_id``
    (``email``): an erasure request matching one of them reaches that row too."""
    aggregates_outlive_raw: bool = True
    """Rollup buckets stay after the rows they summarise pass retention: aggregates carry no
    personal data. ``false`` expires them with the rows."""

    @property
    def stripped_properties(self) -> list[str]:
        """Property keys an anonymized event loses: the PII keys, and the keys whose value
        names a subject (left in, an ``email`` would still name the erased subject)."""
        return list(dict.fromkeys([*self.pii.properties, *self.subject_properties]))


class ContextEnrichment(_Model):
    column: Ident
    """A ``json`` column of the table the event lands in."""
    keys: list[str]
    """Context keys to read it from, first present wins (``user_agent``, ``userAgent``)."""


class TraitsEnrichment(_Model):
    """User metadata as of the event's time, from the pack's own trait events (and Segment
    ``identify`` calls mapped to them): the latest traits seen for the user at or before the
    event's ``occurred_at`` — never today's values on an old event."""

    from_events: list[Annotated[str, Field(pattern=EVENT_NAME)]]
    """Event types whose properties are traits of their ``user_id`` from their time on."""
    columns: dict[Ident, str] = {}
    """column -> trait key (``user_role: account_type``)."""
    tenure_column: Ident | None = None
    """An ``int64`` column: whole days from the user's first trait event to this event."""


class LogBinSpec(_Model):
    """A ``int64`` column holding the log-spaced bin of a numeric property (core/sketch.py):
    a rollup with this column as a dimension keeps a mergeable histogram of the property,
    from which percentiles come within ``relative_error`` of the exact ones."""

    property: Ident
    relative_error: float = Field(0.02, gt=0, le=0.5)


class EnrichmentSpec(_Model):
    """Columns the collector fills beyond promoted properties (docs/packs.md)."""

    category_column: Ident | None = None
    """A ``string`` column holding the event type's category."""
    received_column: Ident | None = None
    """A ``timestamp`` column holding the receive time (the seed's ``ingested_at``)."""
    user_agent: ContextEnrichment | None = None
    """``{device_type, browser, browser_version, os, os_version, device}`` parsed with
    ua-parser."""
    geo: ContextEnrichment | None = None
    """``{country}`` (and ``city`` from a MaxMind database when one is configured)."""
    traits: TraitsEnrichment | None = None
    pricing: PricingSpec | None = None
    """Spend computed from a price book in the pack folder (pack/pricing.py)."""
    log_bins: dict[Ident, LogBinSpec] = {}
    """column -> the property it bins (``latency_bin: {property: latency_ms}``)."""
    payload_column: Ident | None = None
    """A ``json`` column holding the event exactly as the producer sent it (envelope and
    properties, before mapping), so consumers can rehydrate the original body (seed 002)."""

    def columns(self) -> list[str]:
        out = [c for c in (self.category_column, self.received_column, self.payload_column) if c]
        out += [self.pricing.column] if self.pricing else []
        out += list(self.log_bins)
        out += [e.column for e in (self.user_agent, self.geo) if e is not None]
        if self.traits is not None:
            out += list(self.traits.columns)
            out += [self.traits.tenure_column] if self.traits.tenure_column else []
        return out


class WarehouseSpec(_Model):
    dataset: Ident | None = None
    """Schema (BigQuery dataset) holding the pack's tables; default the pack name."""


class PackSpec(_Model):
    pack: Ident
    format: Literal[1] = 1
    title: str = ""
    description: str = ""
    warehouse: WarehouseSpec = WarehouseSpec()
    dedupe: DedupeSpec = DedupeSpec()
    categories: dict[Ident, CategorySpec]
    roles: dict[Ident, RoleSpec] = {}
    event_types: dict[Annotated[str, Field(pattern=EVENT_NAME)], EventTypeSpec]
    tables: dict[Ident, TableSpec]
    metrics: dict[Ident, MetricSpec] = {}
    rollups: dict[Ident, RollupSpec] = {}
    views: dict[Ident, ViewSpec] = {}
    exports: dict[Ident, ExportSpec] = {}
    mappings: MappingsSpec = MappingsSpec()
    governance: GovernanceSpec = GovernanceSpec()
    enrichment: EnrichmentSpec = EnrichmentSpec()
    observe: ObserveSpec | None = None
    """Metrics published to Prometheus over a trailing window (``pack/observe.py``)."""
    freshness_budget: Duration | None = None
    """How far behind the pipeline may be (the age of the oldest event not yet queryable):
    past it a breakdown's freshness says ``stale: true`` and the freshness alert fires;
    exposed as ``gristmill_freshness_budget_seconds{pack}``."""

    @property
    def dataset(self) -> str:
        return self.warehouse.dataset or self.pack


@dataclass(frozen=True, slots=True)
class TableColumn:
    name: str
    type: ColumnType
    promoted: bool


ENVELOPE_TYPES: dict[str, ColumnType] = {
    "event_id": ColumnType.STRING,
    "event_type": ColumnType.STRING,
    "schema_version": ColumnType.INT64,
    "occurred_at": ColumnType.TIMESTAMP,
    "received_at": ColumnType.TIMESTAMP,
    "loaded_at": ColumnType.TIMESTAMP,
    "source": ColumnType.STRING,
    "user_id": ColumnType.STRING,
    "anonymous_id": ColumnType.STRING,
    "session_id": ColumnType.STRING,
    "entity_type": ColumnType.STRING,
    "entity_id": ColumnType.STRING,
    "properties": ColumnType.JSON,
    "context": ColumnType.JSON,
}
assert tuple(ENVELOPE_TYPES) == ENVELOPE_COLUMNS


@dataclass(frozen=True)
class Pack:
    """A loaded, cross-checked pack: the spec plus its schemas and derived lookups."""

    spec: PackSpec
    root: Path
    schemas: dict[str, dict[int, dict[str, Any]]]
    """event_type -> version -> JSON Schema document."""
    table_columns: dict[str, tuple[TableColumn, ...]] = field(default_factory=dict)
    fingerprint: str = ""
    """Hash of pack.yaml, the schemas and the price book: caches keyed by it never outlive
    an edit."""
    price_book: PriceBook | None = None

    @property
    def name(self) -> str:
        return self.spec.pack

    @property
    def dataset(self) -> str:
        return self.spec.dataset

    def columns(self, table: str) -> tuple[TableColumn, ...]:
        return self.table_columns[table]

    def latest_version(self, event_type: str) -> int:
        return max(self.spec.event_types[event_type].versions)


def build_table_columns(spec: PackSpec) -> dict[str, tuple[TableColumn, ...]]:
    out: dict[str, tuple[TableColumn, ...]] = {}
    for name, table in spec.tables.items():
        cols = [TableColumn(c, t, False) for c, t in ENVELOPE_TYPES.items()]
        cols += [TableColumn(c, s.type, True) for c, s in table.columns.items()]
        out[name] = tuple(cols)
    return out
