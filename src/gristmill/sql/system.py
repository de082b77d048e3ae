"""Gristmill's own tables in the warehouse (schema ``_gristmill``).

``loads`` is the ledger: one row per (batch, pack, source), written in the load transaction.
Its sums are the loaded / duplicates / quarantined terms of conservation, and its batch ids
make a re-delivered batch a no-op. ``offsets`` is the log position the warehouse has reached.
``quarantine`` keeps every event that was not loaded, with the original bytes.
"""

from __future__ import annotations

from sqlglot import exp

from gristmill.sql.ddl import column_def, create_schema, create_table, table_ref

SYSTEM_SCHEMA = "_gristmill"

LOADS = table_ref(SYSTEM_SCHEMA, "loads")
OFFSETS = table_ref(SYSTEM_SCHEMA, "offsets")
QUARANTINE = table_ref(SYSTEM_SCHEMA, "quarantine")

LOADS_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("batch_id", "VARCHAR", True),
    ("log", "VARCHAR", True),
    ("grp", "VARCHAR", True),
    ("pack", "VARCHAR", True),
    ("source", "VARCHAR", True),
    ("loaded", "BIGINT", True),
    ("duplicates", "BIGINT", True),
    ("quarantined", "BIGINT", True),
    ("last_offset", "BIGINT", True),
    ("committed_at", "TIMESTAMPTZ", True),
)
OFFSETS_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("log", "VARCHAR", True),
    ("grp", "VARCHAR", True),
    ("offset", "BIGINT", True),
    ("updated_at", "TIMESTAMPTZ", True),
)
QUARANTINE_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("quarantine_id", "VARCHAR", True),
    ("pack", "VARCHAR", True),
    ("source", "VARCHAR", True),
    ("dialect", "VARCHAR", True),
    ("reason", "VARCHAR", True),
    ("detail", "VARCHAR", True),
    ("errors", "JSON", False),
    ("event_id", "VARCHAR", False),
    ("event_type", "VARCHAR", False),
    ("received_at", "TIMESTAMPTZ", True),
    ("quarantined_at", "TIMESTAMPTZ", True),
    ("raw", "VARBINARY", True),
    ("replayed_at", "TIMESTAMPTZ", False),
)
QUARANTINE_INPUT = tuple(
    c for c, _, _ in QUARANTINE_COLUMNS if c not in ("quarantined_at", "replayed_at")
)
"""Columns the loader supplies; the warehouse stamps ``quarantined_at``."""


def _create(ref: exp.Table, cols: tuple[tuple[str, str, bool], ...]) -> exp.Create:
    return create_table(
        ref, [column_def(n, exp.DataType.build(t), not_null=nn) for n, t, nn in cols]
    )


def system_ddl() -> list[exp.Expr]:
    return [
        create_schema(SYSTEM_SCHEMA),
        _create(LOADS, LOADS_COLUMNS),
        _create(OFFSETS, OFFSETS_COLUMNS),
        _create(QUARANTINE, QUARANTINE_COLUMNS),
    ]
