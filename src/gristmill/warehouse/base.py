"""The warehouse contract.

The loader hands a warehouse one :class:`LoadBatch` per log batch: rows per table, quarantined
items, and per-source counts. ``commit_load`` applies all of it in **one** transaction — the
dedupe anti-join, the inserts, the quarantine rows, the ledger row that makes the batch
idempotent, and the log offset — so a crash before commit leaves no trace and a crash after it
makes the re-delivered batch a no-op. The offset stored here, not the log's, is the truth.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa
from sqlglot import exp

from gristmill.pack.models import Pack


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an engine can do, as data: shared code asks these instead of engine names."""

    transactions: bool
    """All statements of a load commit atomically (else: idempotent steps + batch ledger)."""
    native_partitioning: bool
    native_clustering: bool
    json_type: bool
    max_identifier_length: int = 63
    secondary_indexes: bool = False
    """B-tree indexes help reads (PostgreSQL); columnar engines prune without them."""
    upsert_by_merge: bool = False
    """No ``ON CONFLICT``, and no tables may be created inside the load transaction (DDL
    commits it on Snowflake): rollups and freshness are kept by MERGE over the staged batch
    (:mod:`gristmill.rollup.scripted`; rollups merge the batch's aggregates, a
    ``before_keys`` step, or with ``rollup_mode = "recompute"`` DELETE/INSERT)."""
    delta_rollups: bool = False
    """The load defines ``_gm_new`` (the rows it added, after dedupe) before the after-insert
    steps: rollups merge the batch's aggregates (:mod:`gristmill.rollup.delta`) instead of
    recomputing touched buckets from rows — inside the load transaction, or (ClickHouse) as
    a part tagged with the batch id that a retry removes."""
    rollup_appends: bool = False
    """With ``delta_rollups`` in a transaction: the batch's aggregates are appended as rows of
    their own (reads merge rows per key anyway) and folded into one row per key every few
    loads, in a load transaction, instead of merged into the stored rows at every load."""
    append_rows: int | None = None
    """The engine's storage unit for appended rows (DuckDB's row group), when it has one. A
    bulk append cut into whole units writes them at insert time; a partial unit stays in
    memory and is rewritten at the next checkpoint, so writers that choose their batch sizes
    (feed staging) cut at multiples of it."""


@dataclass(frozen=True, slots=True)
class SourceCounts:
    """What the loader knows per (pack, source) before the warehouse dedupes."""

    events: int = 0
    quarantined: int = 0


@dataclass(frozen=True, slots=True)
class AfterInsert:
    """Statements a warehouse runs inside the load transaction after a table's rows are in,
    with the Arrow batch registered as ``_gm_batch`` (rollup refresh, freshness).

    ``prepare`` runs first; then ``bounds``, if set, returns one row whose columns become named
    parameters of ``statements`` (and a row of NULLs skips them: nothing was touched)."""

    statements: tuple[exp.Expr, ...]
    prepare: tuple[exp.Expr, ...] = ()
    bounds: exp.Expr | None = None
    parts: RollupParts | None = None
    """Set when this step appends the batch's rollup delta as rows of their own, tagged with
    the batch id (``{b}``), on an engine without transactions: a retry removes them with the
    batch's other rows, and the warehouse compacts them later."""
    fold: RollupFold | None = None
    """Set when this step appends the batch's rollup delta as rows of their own on an engine
    with transactions (``caps.rollup_appends``): the warehouse folds them from time to time."""
    before_keys: bool = False
    """Engines that dedupe by an anti-join on the key table (``AntiJoinLoad``) run the step
    after the insert but before the batch's keys are remembered, with ``_gm_new`` bound to
    the anti-join's rows: the key table as it was before the batch tells which rows are
    fresh. Engines that define ``_gm_new`` themselves ignore it."""


@dataclass(frozen=True, slots=True)
class RollupFold:
    """How an engine with transactions folds a rollup kept as appended parts.

    ``statements`` run inside a load transaction with ``$lo`` bound, between two runs of
    ``drop`` (their scratch table): every key with more than one row in a bucket from ``lo``
    on becomes one row, each component merged by its rule. A load's rows fall in buckets
    that start at most ``span`` before its earliest time. ``lock`` runs first, before the
    rollup's fold mark is read (PostgreSQL's advisory lock, which appends take too)."""

    table: exp.Table
    span: timedelta
    statements: tuple[exp.Expr, ...]
    drop: exp.Expr
    lock: tuple[exp.Expr, ...] = ()


@dataclass(frozen=True, slots=True)
class RollupParts:
    """A rollup kept as parts (one per batch) and how to compact one partition of it.

    ``folded`` and ``kept`` read partition ``{p}``: every row whose part is compacted or
    committed (in the ledger), merged into one row per key of part ``''``; and the rows of
    parts not committed (a batch that died half-way, removed when it is retried), as they
    are. Together they are the partition's new content."""

    table: exp.Table
    part_column: str
    columns: tuple[str, ...]
    """The columns ``folded`` and ``kept`` give, in order."""
    folded: exp.Select
    kept: exp.Select


@dataclass(frozen=True, slots=True)
class TableRows:
    pack: Pack
    table: str
    rows: pa.Table
    """The table's columns except ``loaded_at``, plus ``_dedupe_scope``. Unique per
    (``_dedupe_scope``, ``event_id``): the loader drops repeats inside a batch."""
    after: tuple[AfterInsert, ...] = ()


@dataclass(slots=True)
class LoadBatch:
    batch_id: str
    log_name: str
    group: str
    last_offset: int
    tables: list[TableRows] = field(default_factory=list)
    quarantine: pa.Table | None = None
    sources: dict[tuple[str, str], SourceCounts] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LoadResult:
    batch_id: str
    loaded: Mapping[tuple[str, str], int]
    duplicates: Mapping[tuple[str, str], int]
    quarantined: Mapping[tuple[str, str], int]
    replayed: bool = False
    """True when the batch id was already committed: nothing was written this time."""

    @property
    def total_loaded(self) -> int:
        return sum(self.loaded.values())


@dataclass(frozen=True, slots=True)
class Readiness:
    ok: bool
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LedgerTotals:
    """Sums of the load ledger per (pack, source), plus the stored log offset."""

    loaded: dict[tuple[str, str], int]
    duplicates: dict[tuple[str, str], int]
    quarantined: dict[tuple[str, str], int]
    offset: int


class Warehouse(Protocol):
    name: str
    dialect: str
    caps: Capabilities

    def provision(
        self, packs: Sequence[Pack], *, apply: bool, extra: Sequence[exp.Expr] = ()
    ) -> list[str]: ...

    def table_exists(self, table: exp.Table) -> bool: ...

    def columns_of(self, table: exp.Table) -> dict[str, str]: ...

    def check_ready(self, packs: Sequence[Pack]) -> Readiness: ...

    def commit_load(self, batch: LoadBatch) -> LoadResult: ...

    def stored_offset(self, log_name: str, group: str) -> int: ...

    def ledger(self, log_name: str, group: str) -> LedgerTotals: ...

    def query(self, query: exp.Expr, params: Mapping[str, Any] | None = None) -> pa.Table: ...

    def query_sql(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table: ...

    def execute(self, stmt: exp.Expr, params: Mapping[str, Any] | None = None) -> int: ...

    def delete(self, table: exp.Table, where: exp.Expr) -> int: ...

    def prune_dedupe(self, pack: Pack, now_us: int) -> int: ...

    def warm(self, packs: Sequence[Pack]) -> None:
        """Read now what the first load would otherwise read first (DuckDB: the dedupe key
        sets); the loader calls it as it starts, before its first batch. Engines with
        nothing to warm do nothing."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    """The engine's own name for it (a child table, a ClickHouse partition id)."""
    start: datetime
    end: datetime
    """Exclusive: every row of the partition has ``occurred_at < end``."""
    rows: int | None = None
    """Rows in it, where the catalogue knows exactly (ClickHouse parts); else counted."""


@runtime_checkable
class PartitionedWarehouse(Protocol):
    """Engines whose pack tables are physically partitioned by event time: retention drops a
    whole partition (a catalogue change, no row scan) when all its rows are past retention."""

    def partitions(self, pack: Pack, table: str) -> list[Partition]: ...

    def drop_partitions(self, pack: Pack, table: str, parts: Sequence[Partition]) -> None: ...
