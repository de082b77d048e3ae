"""DDL builders: schemas and tables from the neutral column types of a pack.

Types come from :mod:`gristmill.sql.types` per dialect; what an engine adds around a table
(partitioning, clustering, sort keys, engines) lives in that engine's ``sql.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator, Sequence

from sqlglot import exp

from gristmill.pack.models import ColumnType, Pack, TableColumn
from gristmill.sql.types import Logical, sql_type

NOT_NULL_ENVELOPE = frozenset(
    {
        "event_id",
        "event_type",
        "schema_version",
        "occurred_at",
        "received_at",
        "loaded_at",
        "source",
    }
)


def data_type(t: ColumnType | Logical, dialect: str = "duckdb") -> exp.DataType:
    return sql_type(t, dialect)


def table_ref(dataset: str, table: str) -> exp.Table:
    return exp.table_(
        exp.to_identifier(table, quoted=True), db=exp.to_identifier(dataset, quoted=True)
    )


def column_def(name: str, kind: exp.DataType, *, not_null: bool = False) -> exp.ColumnDef:
    constraints = [exp.ColumnConstraint(kind=exp.NotNullColumnConstraint())] if not_null else []
    return exp.ColumnDef(
        this=exp.to_identifier(name, quoted=True), kind=kind, constraints=constraints
    )


def create_schema(name: str) -> exp.Create:
    return exp.Create(this=exp.to_identifier(name, quoted=True), kind="SCHEMA", exists=True)


def create_table(
    ref: exp.Table,
    columns: Sequence[exp.ColumnDef],
    properties: Sequence[exp.Expr] = (),
) -> exp.Create:
    return exp.Create(
        this=exp.Schema(this=ref, expressions=list(columns)),
        kind="TABLE",
        exists=True,
        properties=exp.Properties(expressions=list(properties)) if properties else None,
    )


def pack_table_columns(pack: Pack, table: str, dialect: str = "duckdb") -> list[exp.ColumnDef]:
    return [
        column_def(c.name, data_type(c.type, dialect), not_null=c.name in NOT_NULL_ENVELOPE)
        for c in pack.columns(table)
    ]


def create_index(ref: exp.Table, name: str, columns: Sequence[str]) -> exp.Create:
    return exp.Create(
        this=exp.Index(
            this=exp.to_identifier(name, quoted=True),
            table=ref,
            params=exp.IndexParameters(
                columns=[exp.Ordered(this=exp.column(c, quoted=True)) for c in columns]
            ),
        ),
        kind="INDEX",
        exists=True,
    )


def add_column(ref: exp.Table, col: TableColumn, dialect: str = "duckdb") -> exp.Alter:
    return exp.Alter(
        this=ref,
        kind="TABLE",
        actions=[column_def(col.name, data_type(col.type, dialect))],
    )


def missing_columns(
    packs: Sequence[Pack], have: Callable[[exp.Table], Container[str]], dialect: str
) -> Iterator[exp.Alter]:
    """``ADD COLUMN`` for every pack column its table lacks (``have``: the engine's column
    names of a table), one table at a time, so each engine's start-up provisioning runs the
    same additive migration."""
    for pack in packs:
        for table in pack.spec.tables:
            ref = table_ref(pack.dataset, table)
            present = have(ref)
            for col in pack.columns(table):
                if col.name not in present:
                    yield add_column(ref.copy(), col, dialect)
