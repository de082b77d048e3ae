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
T = exp.DataType.Type

LOADS = table_ref(SYSTEM_SCHEMA, "loads")
OFFSETS = table_ref(SYSTEM_SCHEMA, "offsets")
QUARANTINE = table_ref(SYSTEM_SCHEMA, "quarantine")

LOADS_COLUMNS: tuple[tuple[str, T, bool], ...] = (
    ("batch_id", T.VARCHAR, True),
    ("log", T.VARCHAR, True),
    ("grp", T.VARCHAR, True),
    ("pack", T.VARCHAR, True),
    ("source", T.VARCHAR, True),
    ("loaded", T.BIGINT, True),
    ("duplicates", T.BIGINT, True),
    ("quarantined", T.BIGINT, True),
    ("last_offset", T.BIGINT, True),
    ("committed_at", T.TIMESTAMPTZ, True),
)
OFFSETS_COLUMNS: tuple[tuple[str, T, bool], ...] = (
    ("log", T.VARCHAR, True),
    ("grp", T.VARCHAR, True),
    ("offset", T.BIGINT, True),
    ("updated_at", T.TIMESTAMPTZ, True),
)
QUARANTINE_COLUMNS: tuple[tuple[str, T, bool], ...] = (
    ("quarantine_id", T.VARCHAR, True),
    ("pack", T.VARCHAR, True),
    ("source", T.VARCHAR, True),
    ("dialect", T.VARCHAR, True),
    ("reason", T.VARCHAR, True),
    ("detail", T.VARCHAR, True),
    ("errors", T.JSON, False),
    ("event_id", T.VARCHAR, False),
    ("event_type", T.VARCHAR, False),
    ("received_at", T.TIMESTAMPTZ, True),
    ("quarantined_at", T.TIMESTAMPTZ, True),
    ("raw", T.VARBINARY, True),
    ("replayed_at", T.TIMESTAMPTZ, False),
)
QUARANTINE_INPUT = tuple(c for c, _, _ in QUARANTINE_COLUMNS if c not in ("quarantined_at", "replayed_at"))
"""Columns the loader supplies; the warehouse stamps ``quarantined_at``."""


def _create(ref: exp.Table, cols: tuple[tuple[str, T, bool], ...]) -> exp.Create:
    return create_table(
        ref, [column_def(n, exp.DataType.build(t), not_null=nn) for n, t, nn in cols]
    )


def system_ddl() -> list[exp.Expression]:
    return [
        create_schema(SYSTEM_SCHEMA),
        _create(LOADS, LOADS_COLUMNS),
        _create(OFFSETS, OFFSETS_COLUMNS),
        _create(QUARANTINE, QUARANTINE_COLUMNS),
    ]
