"""Gristmill's own tables in the warehouse (schema ``_gristmill``).

``loads`` is the ledger: one row per (batch, pack, source), written in the load transaction.
Its sums are the loaded / duplicates / quarantined terms of conservation, and its batch ids
make a re-delivered batch a no-op. ``offsets`` is the log position the warehouse has reached.
``quarantine`` keeps every event that was not loaded, with the original bytes.
"""

from __future__ import annotations

from sqlglot import exp

from gristmill.sql.ddl import column_def, create_schema, create_table, table_ref
from gristmill.sql.types import Logical, sql_type

_T, _I, _TS, _J, _B = Logical.TEXT, Logical.INT64, Logical.TIMESTAMP, Logical.JSON, Logical.BINARY

SYSTEM_SCHEMA = "_gristmill"

LOADS = table_ref(SYSTEM_SCHEMA, "loads")
OFFSETS = table_ref(SYSTEM_SCHEMA, "offsets")
QUARANTINE = table_ref(SYSTEM_SCHEMA, "quarantine")

LOADS_COLUMNS: tuple[tuple[str, Logical, bool], ...] = (
    ("batch_id", _T, True),
    ("log", _T, True),
    ("grp", _T, True),
    ("pack", _T, True),
    ("source", _T, True),
    ("loaded", _I, True),
    ("duplicates", _I, True),
    ("quarantined", _I, True),
    ("last_offset", _I, True),
    ("committed_at", _TS, True),
)
OFFSETS_COLUMNS: tuple[tuple[str, Logical, bool], ...] = (
    ("log", _T, True),
    ("grp", _T, True),
    ("offset", _I, True),
    ("updated_at", _TS, True),
)
QUARANTINE_ADDED: tuple[tuple[str, Logical, bool], ...] = (
    ("body_hash", _T, False),
    ("resends", _I, False),
    ("last_seen_at", _TS, False),
)
"""The same bytes re-sent by the same source are kept once: ``resends`` counts the sendings,
``last_seen_at`` is the newest one's receive time. Added after the table was first shipped,
so nullable, and added to an older table when the system tables are provisioned."""
QUARANTINE_COLUMNS: tuple[tuple[str, Logical, bool], ...] = (
    ("quarantine_id", _T, True),
    ("pack", _T, True),
    ("source", _T, True),
    ("dialect", _T, True),
    ("reason", _T, True),
    ("detail", _T, True),
    ("errors", _J, False),
    ("event_id", _T, False),
    ("event_type", _T, False),
    ("received_at", _TS, True),
    ("quarantined_at", _TS, True),
    ("raw", _B, True),
    ("replayed_at", _TS, False),
    *QUARANTINE_ADDED,
)
QUARANTINE_INPUT = tuple(
    c for c, _, _ in QUARANTINE_COLUMNS if c not in ("quarantined_at", "replayed_at")
)
"""Columns the loader supplies; the warehouse stamps ``quarantined_at``."""


def system_columns(
    cols: tuple[tuple[str, Logical, bool], ...], dialect: str
) -> list[exp.ColumnDef]:
    return [column_def(n, sql_type(t, dialect), not_null=nn) for n, t, nn in cols]


SYSTEM_TABLES: tuple[tuple[exp.Table, tuple[tuple[str, Logical, bool], ...]], ...] = (
    (LOADS, LOADS_COLUMNS),
    (OFFSETS, OFFSETS_COLUMNS),
    (QUARANTINE, QUARANTINE_COLUMNS),
)


def _if_missing(cols: list[exp.ColumnDef]) -> list[exp.ColumnDef]:
    for c in cols:
        c.set("exists", True)  # ADD COLUMN IF NOT EXISTS
    return cols


def system_ddl(dialect: str = "duckdb") -> list[exp.Expr]:
    """Create what is missing, including columns added since a table was created."""
    added = [
        exp.Alter(
            this=QUARANTINE.copy(),
            kind="TABLE",
            actions=[col],
        )
        for col in _if_missing(system_columns(QUARANTINE_ADDED, dialect))
    ]
    return [
        create_schema(SYSTEM_SCHEMA),
        *(create_table(ref, system_columns(cols, dialect)) for ref, cols in SYSTEM_TABLES),
        *added,
    ]
