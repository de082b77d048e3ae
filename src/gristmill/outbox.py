"""The transactional outbox, application side: write an event into your own database, in the
same transaction as the change it describes. ``gristmill relay`` ships the rows later.

::

    with psycopg.connect(dsn) as conn:          # or sqlite3, or a SQLAlchemy Connection
        conn.execute("UPDATE orders SET status = 'paid' WHERE id = %s", (order_id,))
        emit(conn, "order_paid", {"order_id": order_id, ...})
        # commit: both rows, or neither

Create the table with ``gristmill outbox ddl --dialect postgres|sqlite|mysql``. Each row holds
the native event (the body ``POST /v1/events`` takes) plus the columns a relay needs to read
in commit order (PostgreSQL records the writing transaction's id).
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["DEFAULT_TABLE", "ddl", "emit"]

DEFAULT_TABLE = "gristmill_outbox"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_DDL = {
    "postgres": """CREATE TABLE IF NOT EXISTS {t} (
    id BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL,
    payload JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- the writing transaction: a relay reads by commit visibility, not by id order
    txid XID8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX IF NOT EXISTS {t}_txid ON {t} (txid, id);""",
    "sqlite": """CREATE TABLE IF NOT EXISTS {t} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);""",
    "mysql": """CREATE TABLE IF NOT EXISTS {t} (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    event_id VARCHAR(200) NOT NULL UNIQUE,
    event_type VARCHAR(128) NOT NULL,
    occurred_at DATETIME(6) NOT NULL,
    payload JSON NOT NULL,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
);""",
}


def _table(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"outbox table name {name!r} must match {_NAME.pattern}")
    return name


def ddl(dialect: str, table: str = DEFAULT_TABLE) -> str:
    """The CREATE TABLE statement(s) for the outbox in ``dialect``."""
    try:
        return _DDL[dialect].format(t=_table(table))
    except KeyError:
        raise ValueError(f"dialect must be one of {', '.join(_DDL)}") from None


def _flavour(conn: Any) -> str:
    """How this connection binds parameters: ``qmark`` (sqlite3), ``format`` (psycopg,
    pymysql …) or ``named`` (SQLAlchemy)."""
    if isinstance(conn, sqlite3.Connection):
        return "qmark"
    module = type(conn).__module__
    if module.startswith("sqlalchemy"):
        return "named"
    if module.startswith(("psycopg", "pymysql", "MySQLdb", "mysql")):
        return "format"
    raise TypeError(
        f"unsupported connection type {type(conn).__module__}.{type(conn).__name__}"
        "; pass a sqlite3, psycopg, PyMySQL or SQLAlchemy connection"
    )


def emit(
    conn: Any,
    event_type: str,
    properties: dict[str, Any],
    *,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
    schema_version: int | None = None,
    user_id: str | None = None,
    context: dict[str, Any] | None = None,
    table: str = DEFAULT_TABLE,
) -> str:
    """Insert one event into the outbox on ``conn``, inside the caller's transaction (this
    never commits). Returns the event id."""
    eid = event_id or str(uuid.uuid4())
    when = (occurred_at or datetime.now(UTC)).astimezone(UTC)
    event: dict[str, Any] = {
        "event_id": eid,
        "event_type": event_type,
        "occurred_at": when.isoformat(),
        "properties": properties,
    }
    if schema_version is not None:
        event["schema_version"] = schema_version
    if user_id is not None:
        event["user_id"] = user_id
    if context is not None:
        event["context"] = context
    payload = orjson.dumps(event).decode()
    t = _table(table)
    cols = "(event_id, event_type, occurred_at, payload)"
    flavour = _flavour(conn)
    if flavour == "named":
        from sqlalchemy import text

        conn.execute(
            text(f"INSERT INTO {t} {cols} VALUES (:e, :t, :o, :p)"),
            {"e": eid, "t": event_type, "o": when, "p": payload},
        )
    elif flavour == "qmark":
        conn.execute(
            f"INSERT INTO {t} {cols} VALUES (?, ?, ?, ?)",
            (eid, event_type, when.isoformat(), payload),
        )
    else:
        cur = conn.cursor()
        try:
            cur.execute(
                f"INSERT INTO {t} {cols} VALUES (%s, %s, %s, %s)",
                (eid, event_type, when, payload),
            )
        finally:
            cur.close()
    return eid
