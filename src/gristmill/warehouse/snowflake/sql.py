"""Snowflake statements, built as sqlglot expressions: schemas and clustered tables, the load
statements of one pack table, and the pure pieces of loading (named parameters to the
connector's ``qmark`` style) — everything here runs without credentials.

Every identifier is rendered quoted: Gristmill's names are lower case and Snowflake folds
unquoted ones to upper case. Snowflake declares no partitions (micro-partitions are
automatic); ``CLUSTER BY`` takes the pack's clustering keys. Dedupe keys are
``MD5_BINARY(scope ␟ event_id)`` (16 bytes) in ``<schema>._gm_dedupe``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import pyarrow as pa
import sqlglot
from sqlglot import exp

from gristmill.pack.models import Pack
from gristmill.sql import ddl
from gristmill.sql.ddl import create_table, pack_table_columns, table_ref
from gristmill.sql.system import system_ddl
from gristmill.sql.types import Logical, sql_type
from gristmill.warehouse.common import AntiJoinLoad
from gristmill.warehouse.snowflake.factory import DIALECT

BATCH = "_gm_batch"
QUARANTINE_STAGE = "_gm_q"
DEDUPE_TABLE = "_gm_dedupe"

SESSION = (
    "ALTER SESSION SET TIMEZONE = 'UTC'",
    # date_trunc('week', …) starts weeks on Monday, as on every other engine.
    "ALTER SESSION SET WEEK_START = 1",
)
"""Fixed text run on every connection (no names from packs or requests)."""


def _fix(e: exp.Expr) -> exp.Expr:
    def visit(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Cast) and node.to.is_type(exp.DataType.Type.VARIANT):
            return exp.ParseJSON(this=node.this.copy())  # text → JSON, not a string VARIANT
        return node

    return e.copy().transform(visit, copy=False)


def sql(e: exp.Expr | str) -> str:
    return e if isinstance(e, str) else _fix(e).sql(dialect=DIALECT, identify=True)


def pack_table(pack: Pack, table: str) -> exp.Create:
    spec = pack.spec.tables[table]
    props: list[exp.Expr] = []
    if spec.cluster_by:
        props.append(
            exp.ClusterProperty(expressions=[exp.column(c, quoted=True) for c in spec.cluster_by])
        )
    if spec.description:
        props.append(exp.SchemaCommentProperty(this=exp.Literal.string(spec.description.strip())))
    return create_table(
        table_ref(pack.dataset, table), pack_table_columns(pack, table, DIALECT), props
    )


def dedupe_table(pack: Pack) -> exp.Create:
    return create_table(
        table_ref(pack.dataset, DEDUPE_TABLE),
        [
            ddl.column_def("k", sql_type(Logical.KEY128, DIALECT), not_null=True),
            ddl.column_def("first_seen", sql_type(Logical.TIMESTAMP, DIALECT), not_null=True),
        ],
    )


def pack_ddl(packs: Sequence[Pack]) -> list[exp.Expr]:
    """System schema and tables, then per pack its schema, key table and tables."""
    stmts = system_ddl(DIALECT)
    for pack in packs:
        stmts.append(ddl.create_schema(pack.dataset))
        stmts.append(dedupe_table(pack))
        stmts += [pack_table(pack, t) for t in pack.spec.tables]
    return stmts


# -- loading ---------------------------------------------------------------------------------
def dedupe_key() -> exp.Expr:
    joined = exp.DPipe(
        this=exp.DPipe(
            this=exp.column("_dedupe_scope", quoted=True),
            expression=exp.func("CHR", exp.Literal.number(31)),
        ),
        expression=exp.column("event_id", quoted=True),
    )
    return exp.MD5Digest(this=joined)


class LoadStatements(AntiJoinLoad):
    """One pack table's load: the shared anti-join (:class:`AntiJoinLoad`) with this
    engine's key."""

    @classmethod
    def build(cls, pack: Pack, table: str) -> LoadStatements:
        load: LoadStatements = cls.anti_join(pack, table, DIALECT, dedupe_key)
        return load


_ARROW: dict[str, Logical] = {
    "string": Logical.TEXT,
    "large_string": Logical.TEXT,
    "int64": Logical.INT64,
    "double": Logical.FLOAT64,
    "bool": Logical.BOOL,
    "binary": Logical.BINARY,
    "large_binary": Logical.BINARY,
}


def stage_table(name: str, schema: pa.Schema) -> str:
    """A temporary table shaped like an Arrow batch (JSON and DATE travel as text), created
    before the load transaction: DDL inside it would commit it."""
    cols = [
        ddl.column_def(
            f.name,
            sql_type(
                Logical.TIMESTAMP if pa.types.is_timestamp(f.type) else _ARROW[str(f.type)],
                DIALECT,
            ),
        )
        for f in schema
    ]
    create = exp.Create(
        this=exp.Schema(this=exp.to_table(name), expressions=cols),
        kind="TABLE",
        replace=True,
        properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
    )
    return sql(create)


def copy_into_stage(name: str) -> str:
    """``COPY INTO`` the stage from the Parquet file just PUT to its table stage, columns
    matched by (case-sensitive) name; the file is purged once loaded."""
    table = exp.to_table(name).sql(dialect=DIALECT, identify=True)
    # Fixed options; the only name is a constant of this module, rendered quoted above.
    return (
        f"COPY INTO {table} FROM @%{table} FILE_FORMAT = (TYPE = PARQUET) "
        "MATCH_BY_COLUMN_NAME = CASE_SENSITIVE PURGE = TRUE"
    )


@lru_cache(maxsize=4096)
def _qmark(text: str) -> tuple[str, tuple[str | int, ...]]:
    """Parse once per text: placeholders in the order they appear *in the text* (a tree walk
    need not follow it), then each replaced by ``?``."""
    tree = sqlglot.parse_one(text, read=DIALECT)
    for ident in tree.find_all(exp.Identifier):
        ident.set("quoted", True)
    tree = _fix(tree)
    keys: dict[str, str | None] = {}
    for i, node in enumerate(list(tree.find_all(exp.Placeholder))):
        name = node.args.get("this")
        keys[f"gmq{i}"] = str(name) if name else None
        node.set("this", f"gmq{i}")
    marked = tree.sql(dialect=DIALECT)
    order: list[str | int] = []
    for t in sqlglot.Dialect.get_or_raise(DIALECT).tokenize(marked):
        if t.token_type == sqlglot.TokenType.VAR and t.text in keys:
            name = keys[t.text]
            order.append(name if name is not None else sum(isinstance(k, int) for k in order))
    assert len(order) == len(keys), "every placeholder appears once in the text"
    for node in tree.find_all(exp.Placeholder):
        node.set("this", None)
    return tree.sql(dialect=DIALECT), tuple(order)


def qmark(
    text: str, params: Mapping[str, Any] | Sequence[Any] | None = None
) -> tuple[str, list[Any]]:
    """SQL rendered here (``:name`` placeholders, unquoted system names) as the connector's
    server-side ``qmark`` style: every identifier quoted, ``?`` per placeholder, and the
    values in placeholder order (a name used twice is bound twice). The connector binds an
    aware datetime as its UTC wall-clock time (``TIMESTAMP_NTZ``), which Snowflake compares
    with ``TIMESTAMP_TZ`` columns in the session's zone: sessions run in UTC (``SESSION``)."""
    out, order = _qmark(text)
    values: list[Any] = []
    for key in order:
        if isinstance(key, int):
            assert isinstance(params, Sequence)
            values.append(params[key])
        else:
            assert isinstance(params, Mapping), f"named parameter {key!r} needs a mapping"
            values.append(params[key])
    return out, values
