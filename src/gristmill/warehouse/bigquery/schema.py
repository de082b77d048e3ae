"""BigQuery table schemas as JSON (the format ``bq mk --schema`` and Terraform's
``google_bigquery_table.schema`` read), generated from a pack: the schema documented in code
next to the DDL, as seed 000 asks (``infra/bigquery/schemas/v1/<table>.schema.json``).

Columns and types are the ones :func:`gristmill.warehouse.bigquery.sql.pack_table` creates;
partitioning, clustering and expiration are properties of the table, not of the schema, and
are in the DDL and the provisioning plan.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gristmill.pack.models import ColumnType, Pack
from gristmill.sql.ddl import NOT_NULL_ENVELOPE

JSON_TYPES: dict[ColumnType, str] = {
    ColumnType.STRING: "STRING",
    ColumnType.INT64: "INTEGER",
    ColumnType.FLOAT64: "FLOAT",
    ColumnType.BOOL: "BOOLEAN",
    ColumnType.TIMESTAMP: "TIMESTAMP",
    ColumnType.DATE: "DATE",
    ColumnType.JSON: "JSON",
}
"""The schema file's type names (the API's legacy names, which every tool accepts)."""

ENVELOPE_DOCS: dict[str, str] = {
    "event_id": "Producer's id of the event; unique per dedupe scope within the window.",
    "event_type": "Event type of the pack.",
    "schema_version": "Version of the event type's JSON Schema the event was validated by.",
    "occurred_at": "When the event happened (UTC); the partitioning column.",
    "received_at": "When Gristmill accepted the event (UTC).",
    "loaded_at": "When the row was committed to the warehouse (UTC).",
    "source": "Ingest source (API key's source or collector).",
    "user_id": "Known user, if any.",
    "anonymous_id": "Anonymous visitor id, if any.",
    "session_id": "Session id, if any.",
    "entity_type": "Type of the business entity the event is about.",
    "entity_id": "Id of that entity.",
    "properties": "The event's validated properties, as sent.",
    "context": "Collector context (user agent, library, ip …), as sent.",
}


def table_schema(pack: Pack, table: str) -> list[dict[str, Any]]:
    declared = pack.spec.tables[table].columns
    fields = []
    for col in pack.columns(table):
        doc = declared[col.name].description if col.name in declared else ""
        fields.append(
            {
                "name": col.name,
                "type": JSON_TYPES[col.type],
                "mode": "REQUIRED" if col.name in NOT_NULL_ENVELOPE else "NULLABLE",
                "description": (doc or ENVELOPE_DOCS.get(col.name, "")).strip(),
            }
        )
    return fields


def schema_files(packs: list[Pack]) -> dict[str, str]:
    """File name -> JSON text, one ``<table>.schema.json`` per pack table."""
    out: dict[str, str] = {}
    for pack in packs:
        for table in pack.spec.tables:
            name = f"{table}.schema.json"
            if name in out:
                raise ValueError(f"two packs declare a table {table!r}: write them apart")
            out[name] = json.dumps(table_schema(pack, table), indent=2) + "\n"
    return out


def write_schemas(packs: list[Pack], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in schema_files(packs).items():
        path = folder / name
        path.write_text(text)
        written.append(path)
    return written
