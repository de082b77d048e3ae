"""Two ways to reach ClickHouse behind one small interface: chdb (the engine in this process,
data in a folder) and clickhouse-connect (a server over HTTP). Everything above this module —
DDL, the load steps, queries — is the same code for both.

Parameters are ClickHouse's typed ``{name:Type}`` placeholders (see :func:`bind`); each
connection passes the values in its driver's way. Results are Arrow tables, normalised so they
read like DuckDB's and PostgreSQL's (:func:`normalise`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
from sqlglot import exp

SESSION_SETTINGS: dict[str, int | str] = {
    # Reads see ReplacingMergeTree/AggregatingMergeTree tables (rollups, freshness, offsets)
    # merged: exact answers without waiting for background merges. Plain MergeTree tables are
    # unaffected.
    "final": 1,
    # SQL semantics the shared builders assume: an aggregate over no rows is NULL (not 0),
    # outer joins yield NULLs, and time is UTC.
    "aggregate_functions_null_for_empty": 1,
    "join_use_nulls": 1,
    # Types must meet in a UNION ALL (rollup buckets + raw edges) as they do elsewhere,
    # not as a Variant.
    "use_variant_as_common_type": 0,
    "session_timezone": "UTC",
    # Deletes and mutations finish before the statement returns.
    "lightweight_deletes_sync": 2,
    "mutations_sync": 2,
}

LOCAL_TIME_ZONE = "Etc/GMT"
"""ClickHouse has no zone-less timestamp. Local wall-clock values (day buckets in the caller's
zone) travel as DateTime64 in this zone, which Gristmill never stores, and come back naive, as
DuckDB and PostgreSQL return them."""

_PLACEHOLDER = re.compile(r"\{(\w+): \}")


def param_type(value: Any) -> str:
    if value is None:
        return "Nullable(String)"
    if isinstance(value, bool):
        return "Bool"
    if isinstance(value, int):
        return "Int64"
    if isinstance(value, float | Decimal):
        return "Float64"
    if isinstance(value, datetime):
        return "DateTime64(6, 'UTC')"
    if isinstance(value, date):
        return "Date32"
    return "String"


def bind(sql: str, params: Mapping[str, Any] | None) -> str:
    """Type the untyped placeholders sqlglot renders (``{p0: }``) from the values bound to
    them: ClickHouse needs ``{p0:String}``. Only type names from :func:`param_type` are
    written into the text; values always travel separately."""
    if not params:
        return sql

    def typed(m: re.Match[str]) -> str:
        return "{" + m.group(1) + ":" + param_type(params[m.group(1)]) + "}"

    return _PLACEHOLDER.sub(typed, sql)


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


def text_value(value: Any) -> str:
    """A parameter value as ClickHouse parses it (the escaped text format)."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        t = value.astimezone(UTC) if value.tzinfo else value
        return t.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").translate(_ESCAPES)
    return str(value).translate(_ESCAPES)


def normalise(table: pa.Table) -> pa.Table:
    """Int128 sums arrive as 16 raw bytes: make them decimals. Timestamps in
    :data:`LOCAL_TIME_ZONE` are wall-clock values: make them naive."""
    cols = []
    for i, field in enumerate(table.schema):
        col = table.column(i)
        if pa.types.is_fixed_size_binary(field.type) and field.type.byte_width == 16:
            ints = [
                None if b is None else int.from_bytes(b, "little", signed=True)
                for b in col.to_pylist()
            ]
            col = pa.array([None if v is None else Decimal(v) for v in ints], pa.decimal128(38, 0))
        elif pa.types.is_timestamp(field.type) and field.type.tz == LOCAL_TIME_ZONE:
            col = col.cast(pa.timestamp(field.type.unit, tz="UTC")).cast(
                pa.timestamp(field.type.unit)
            )
        elif pa.types.is_timestamp(field.type) and field.type.tz in ("Etc/UTC", "UTC"):
            col = col.cast(pa.timestamp(field.type.unit, tz="UTC"))
        cols.append(col)
    return pa.Table.from_arrays(cols, names=table.column_names)


def _quoted(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql(dialect="clickhouse")


class Connection(Protocol):
    kind: str

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None: ...

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table: ...

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        """Append an Arrow table to ``table`` (a rendered, quoted name)."""
        ...

    def close(self) -> None: ...


class ChdbConnection:
    """The engine in this process. One chdb session; calls take turns (the loader thread and
    API threads share it)."""

    kind = "chdb"

    def __init__(self, path: Path) -> None:
        import chdb

        path.mkdir(parents=True, exist_ok=True)
        self._conn = chdb.connect(str(path))  # type: ignore[no-untyped-call]  # untyped lib
        self._lock = threading.Lock()
        for name, value in SESSION_SETTINGS.items():
            literal = f"'{value}'" if isinstance(value, str) else str(value)
            self._conn.query(f"SET {name} = {literal}")

    @staticmethod
    def _params(params: Mapping[str, Any] | None) -> dict[str, str] | None:
        return {k: text_value(v) for k, v in params.items()} if params else None

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        with self._lock:
            self._conn.query(bind(sql, params), "CSV", params=self._params(params))

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        with self._lock:
            out = self._conn.query(bind(sql, params), "ArrowTable", params=self._params(params))
        return normalise(out)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, data.schema) as writer:
            writer.write_table(data)
        cols = ", ".join(_quoted(n) for n in data.column_names)
        stmt = f"INSERT INTO {table} ({cols})"
        with self._lock, self._conn.send_insert(stmt, "ArrowStream") as ins:
            ins.append(sink.getvalue().to_pybytes())
            ins.finish()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class ServerConnection:
    """A ClickHouse server through clickhouse-connect (HTTP). Its session keeps the
    temporary tables a load stages into, so calls take turns on one client."""

    kind = "server"

    def __init__(self, url: str) -> None:
        import clickhouse_connect

        self._client = clickhouse_connect.get_client(
            dsn=url, settings=dict(SESSION_SETTINGS), autogenerate_session_id=True
        )
        self._lock = threading.Lock()

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        with self._lock:
            self._client.command(bind(sql, params), parameters=dict(params or {}))

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        with self._lock:
            out = self._client.query_arrow(bind(sql, params), parameters=dict(params or {}))
        return normalise(out)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        with self._lock:
            self._client.insert_arrow(table, data)

    def close(self) -> None:
        self._client.close()


def connect(url: str | None, path: Path) -> Connection:
    """A server when ``url`` is set (``clickhouse://user:pass@host:8123/``), else chdb with
    its data under ``path``."""
    if url:
        return ServerConnection(url)
    return ChdbConnection(path)
