"""Column types per SQL dialect, as data.

Shared builders (pack tables, system tables, rollups) name a *logical* type; each dialect says
how it spells it. sqlglot would translate most names itself, but not always into what we want:
ClickHouse needs microsecond UTC ``DateTime64``, PostgreSQL should store JSON as ``JSONB``,
and a sum of 64-bit integers needs a wider type whose name differs everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from sqlglot import exp

from gristmill.pack.models import ColumnType


class Logical(StrEnum):
    TEXT = "text"
    INT64 = "int64"
    FLOAT64 = "float64"
    BOOL = "bool"
    TIMESTAMP = "timestamp"
    DATE = "date"
    JSON = "json"
    BINARY = "binary"
    WIDE_INT = "wide_int"
    """A sum of 64-bit integers over many rows: no overflow at 2^63."""
    KEY128 = "key128"
    """A 128-bit dedupe key."""


_FROM_COLUMN: dict[ColumnType, Logical] = {
    ColumnType.STRING: Logical.TEXT,
    ColumnType.INT64: Logical.INT64,
    ColumnType.FLOAT64: Logical.FLOAT64,
    ColumnType.BOOL: Logical.BOOL,
    ColumnType.TIMESTAMP: Logical.TIMESTAMP,
    ColumnType.DATE: Logical.DATE,
    ColumnType.JSON: Logical.JSON,
}


@dataclass(frozen=True)
class TypeMap:
    names: Mapping[Logical, str]
    array: str
    """How an array of an element type is spelled; ``{}`` is the element."""


_BASE: dict[Logical, str] = {
    Logical.TEXT: "VARCHAR",
    Logical.INT64: "BIGINT",
    Logical.FLOAT64: "DOUBLE",
    Logical.BOOL: "BOOLEAN",
    Logical.TIMESTAMP: "TIMESTAMPTZ",
    Logical.DATE: "DATE",
    Logical.JSON: "JSON",
    Logical.BINARY: "VARBINARY",
}

TYPES: dict[str, TypeMap] = {
    "duckdb": TypeMap({**_BASE, Logical.WIDE_INT: "HUGEINT", Logical.KEY128: "UHUGEINT"}, "{}[]"),
    "postgres": TypeMap(
        {
            **_BASE,
            Logical.TEXT: "TEXT",
            Logical.FLOAT64: "DOUBLE PRECISION",
            Logical.JSON: "JSONB",
            Logical.BINARY: "BYTEA",
            Logical.WIDE_INT: "NUMERIC",
            Logical.KEY128: "UUID",
        },
        "{}[]",
    ),
    "clickhouse": TypeMap(
        {
            Logical.TEXT: "String",
            Logical.INT64: "Int64",
            Logical.FLOAT64: "Float64",
            Logical.BOOL: "Bool",
            Logical.TIMESTAMP: "DateTime64(6, 'UTC')",
            Logical.DATE: "Date32",
            Logical.JSON: "String",
            Logical.BINARY: "String",
            Logical.WIDE_INT: "Int128",
            Logical.KEY128: "UInt128",
        },
        "Array({})",
    ),
    "bigquery": TypeMap(
        {
            Logical.TEXT: "STRING",
            Logical.INT64: "INT64",
            Logical.FLOAT64: "FLOAT64",
            Logical.BOOL: "BOOL",
            Logical.TIMESTAMP: "TIMESTAMP",
            Logical.DATE: "DATE",
            Logical.JSON: "JSON",
            Logical.BINARY: "BYTES",
            Logical.WIDE_INT: "NUMERIC",
            Logical.KEY128: "BYTES",
        },
        "ARRAY<{}>",
    ),
    "snowflake": TypeMap(
        {
            Logical.TEXT: "VARCHAR",
            Logical.INT64: "BIGINT",
            Logical.FLOAT64: "DOUBLE",
            Logical.BOOL: "BOOLEAN",
            Logical.TIMESTAMP: "TIMESTAMP_TZ",
            Logical.DATE: "DATE",
            Logical.JSON: "VARIANT",
            Logical.BINARY: "BINARY",
            Logical.WIDE_INT: "NUMBER(38, 0)",
            Logical.KEY128: "BINARY(16)",
        },
        "ARRAY",
    ),
    # VARCHAR alone is VARCHAR(256) on Redshift: text columns take its maximum. MD5 keys are
    # 32 hex characters; sets are never stored (no array aggregate: see metrics/redshift_aggs).
    "redshift": TypeMap(
        {
            Logical.TEXT: "VARCHAR(65535)",
            Logical.INT64: "BIGINT",
            Logical.FLOAT64: "DOUBLE PRECISION",
            Logical.BOOL: "BOOLEAN",
            Logical.TIMESTAMP: "TIMESTAMPTZ",
            Logical.DATE: "DATE",
            Logical.JSON: "SUPER",
            Logical.BINARY: "VARBYTE(1024000)",
            Logical.WIDE_INT: "DECIMAL(38, 0)",
            Logical.KEY128: "CHAR(32)",
        },
        "SUPER",
    ),
}


def logical(t: ColumnType) -> Logical:
    return _FROM_COLUMN[t]


def sql_type(t: Logical | ColumnType, dialect: str) -> exp.DataType:
    """The dialect's data type for a logical or pack column type."""
    lt = _FROM_COLUMN[t] if isinstance(t, ColumnType) else t
    return exp.DataType.build(TYPES[dialect].names[lt], dialect=dialect)


def array_type(t: Logical | ColumnType, dialect: str) -> exp.DataType:
    lt = _FROM_COLUMN[t] if isinstance(t, ColumnType) else t
    tm = TYPES[dialect]
    return exp.DataType.build(tm.array.format(tm.names[lt]), dialect=dialect)


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def json_text(column: str, key: str, dialect: str) -> exp.Expr | None:
    """A top-level key of a JSON column as text when its value is a JSON string (NULL for a
    number, an object, null or a missing key), in SQL, on the engines whose stored JSON type
    this is written for and tested against (DuckDB ``JSON``, PostgreSQL ``JSONB``,
    ClickHouse ``String``); None elsewhere, or for a key that is not a plain name, where
    callers read the text and decode it themselves. ``key`` comes from a pack."""
    if not _PLAIN_KEY.match(key):
        return None
    col = exp.column(column, quoted=True)
    name = exp.Literal.string(key)
    if dialect == "postgres":
        value = exp.func("jsonb_extract_path", col.copy(), name.copy())
        is_text = exp.func("jsonb_typeof", value).eq(exp.Literal.string("string"))
        text: exp.Expr = exp.func("jsonb_extract_path_text", col, name)
    elif dialect == "duckdb":
        path = exp.Literal.string(f"$.{key}")
        is_text = exp.func("json_type", col.copy(), path.copy()).eq(exp.Literal.string("VARCHAR"))
        text = exp.func("json_extract_string", col, path)
    elif dialect == "clickhouse":
        is_text = exp.Anonymous(this="JSONType", expressions=[col.copy(), name.copy()]).eq(
            exp.Literal.string("String")
        )
        text = exp.Anonymous(this="JSONExtractString", expressions=[col, name])
    else:
        return None
    return exp.Case(ifs=[exp.If(this=is_text, true=text)])
