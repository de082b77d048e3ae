"""Redshift statements, built as sqlglot expressions: schemas and sorted, distributed tables,
the load statements of one pack table, and the pure pieces of loading (the staging table, the
``COPY`` from S3 and the multi-row ``INSERT``) — everything here runs without a cluster.

Tables: Redshift declares no partitions. A compound ``SORTKEY`` led by the pack's partition
column (``occurred_at``) and followed by its clustering keys lets range scans skip blocks by
their zone maps, as partitions would; ``DISTKEY`` is the first clustering key (rows of one
vendor or store on one slice, so joins and group-bys on it stay local); without clustering,
``DISTSTYLE AUTO``. JSON columns are ``SUPER``, filled with ``JSON_PARSE`` (a cast would store
the text as a SUPER string). Dedupe keys are ``MD5(scope ␟ event_id)`` (32 hex characters) in
``<schema>._gm_dedupe``. Parameters render as ``%(name)s`` (the connector's ``pyformat``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import sqlglot
from sqlglot import exp

from gristmill.metrics.redshift_aggs import fold_filters
from gristmill.pack.models import Pack
from gristmill.sql import ddl
from gristmill.sql.ddl import create_table, pack_table_columns, table_ref
from gristmill.sql.system import system_ddl
from gristmill.sql.types import Logical, sql_type
from gristmill.warehouse.common import AntiJoinLoad, SystemSQL, ledger_snapshot
from gristmill.warehouse.redshift.factory import DIALECT

BATCH = "_gm_batch"
QUARANTINE_STAGE = "_gm_q"
DEDUPE_TABLE = "_gm_dedupe"

SESSION = ("SET timezone TO 'UTC'",)
"""Fixed text run on every connection: rollup buckets and ``CONVERT_TIMEZONE`` assume UTC."""


def _fix(e: exp.Expr) -> exp.Expr:
    def visit(node: exp.Expr) -> exp.Expr:
        if (
            isinstance(node, exp.Cast)
            and node.to.is_type(exp.DataType.Type.SUPER)
            and not isinstance(node.this, exp.Null)
        ):
            return exp.ParseJSON(this=node.this.copy())  # text → JSON, not a SUPER string
        if isinstance(node, exp.NullSafeEQ):
            # Spelled out: IS NOT DISTINCT FROM is not among Redshift's comparison conditions.
            a, b = node.this, node.expression
            both_null = exp.and_(
                exp.Is(this=a.copy(), expression=exp.Null()),
                exp.Is(this=b.copy(), expression=exp.Null()),
            )
            return exp.Paren(this=exp.or_(exp.EQ(this=a.copy(), expression=b.copy()), both_null))
        alias = node.args.get("alias") if isinstance(node, exp.Table) else None
        if isinstance(alias, exp.Identifier):
            # ``Table.as_`` leaves a bare identifier; the MERGE generator wants a TableAlias.
            node.set("alias", exp.TableAlias(this=alias.copy()))
        return node

    return _unalias_delete(fold_filters(e.copy().transform(visit, copy=False)))


def _unalias_delete(e: exp.Expr) -> exp.Expr:
    """Redshift's ``DELETE`` takes no alias on its target: references to the alias become
    references to the table itself."""
    if not isinstance(e, exp.Delete) or not isinstance(e.this, exp.Table) or not e.this.alias:
        return e
    target = e.this
    alias = target.alias
    for col in e.find_all(exp.Column):
        if col.table == alias:
            col.set("table", target.this.copy())
            col.set("db", target.args["db"].copy() if target.args.get("db") else None)
    target.set("alias", None)
    return e


MERGE_SOURCE = "_gm_merge_src"


def statements(e: exp.Expr | str) -> list[str]:
    """The text(s) one statement becomes. Redshift's ``MERGE`` takes a table as its source
    and no alias on its target: a ``MERGE … USING (subquery) AS b`` becomes a temporary table
    of the subquery's rows, then the ``MERGE`` from it, target references by table name."""
    if isinstance(e, str):
        return [e]
    fixed = _fix(e)
    if not isinstance(fixed, exp.Merge):
        return [fixed.sql(dialect=DIALECT, identify=True)]
    target = fixed.this
    target_alias = target.alias
    for col in fixed.find_all(exp.Column):
        if target_alias and col.table == target_alias:
            col.set("table", target.this.copy())
    target.set("alias", None)
    using = fixed.args.get("using")
    if not isinstance(using, exp.Subquery):  # a table source: only the target alias goes
        return [fixed.sql(dialect=DIALECT, identify=True)]
    source_alias = using.alias
    source = exp.to_table(MERGE_SOURCE)
    source.set("alias", exp.TableAlias(this=exp.to_identifier(source_alias)))
    create = exp.Create(
        this=exp.to_table(MERGE_SOURCE),
        kind="TABLE",
        expression=using.this.copy(),
        properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
    )
    fixed.set("using", source)
    drop = exp.Drop(tables=[exp.to_table(MERGE_SOURCE)], kind="TABLE", exists=True)
    return [s.sql(dialect=DIALECT, identify=True) for s in (drop, create, fixed)]


def sql(e: exp.Expr | str) -> str:
    """One statement's text (several joined by ``;\n`` where Redshift needs them)."""
    return ";\n".join(statements(e))


def _system(text: str) -> str:
    """Shared system text re-rendered through :func:`sql` (JSON text → ``JSON_PARSE``)."""
    return sql(sqlglot.parse_one(text, read=DIALECT))


_SHARED = SystemSQL.build(DIALECT)
SYSTEM = SystemSQL(**{f: _system(getattr(_SHARED, f)) for f in _SHARED.__dataclass_fields__})
"""Ledger, offset and quarantine statements as the client sends them."""
LEDGER = _system(ledger_snapshot(DIALECT))


def _sorted(table: exp.Create, sort: Sequence[str], dist: str | None) -> exp.Create:
    props: list[exp.Expr] = []
    if dist is not None:
        props.append(exp.DistKeyProperty(this=exp.to_identifier(dist, quoted=True)))
    else:
        props.append(exp.DistStyleProperty(this=exp.var("AUTO")))
    if sort:
        props.append(
            exp.SortKeyProperty(
                this=[exp.to_identifier(c, quoted=True) for c in sort], compound=True
            )
        )
    out = table.copy()
    existing = out.args.get("properties")
    kept = list(existing.expressions) if existing is not None else []
    out.set("properties", exp.Properties(expressions=[*kept, *props]))
    return out


def sort_keys(pack: Pack, table: str) -> list[str]:
    """The partition column first (time ranges prune blocks), then the clustering keys."""
    spec = pack.spec.tables[table]
    keys = [spec.partition_by.column]
    return keys + [c for c in spec.cluster_by if c not in keys]


def pack_table(pack: Pack, table: str) -> exp.Create:
    spec = pack.spec.tables[table]
    base = create_table(table_ref(pack.dataset, table), pack_table_columns(pack, table, DIALECT))
    dist = spec.cluster_by[0] if spec.cluster_by else None
    return _sorted(base, sort_keys(pack, table), dist)


def dedupe_table(pack: Pack) -> exp.Create:
    base = create_table(
        table_ref(pack.dataset, DEDUPE_TABLE),
        [
            ddl.column_def("k", sql_type(Logical.KEY128, DIALECT), not_null=True),
            ddl.column_def("first_seen", sql_type(Logical.TIMESTAMP, DIALECT), not_null=True),
        ],
    )
    # Distributed by key: the anti-join of each load meets its keys on their own slice.
    return _sorted(base, ["k"], "k")


def sort_rollup(stmt: exp.Expr) -> exp.Expr:
    """A rollup table (shared DDL: ``bucket`` first, then its dimensions, then
    ``<metric>__<component>`` columns) sorted by bucket and dimensions, so refreshes and
    range reads skip blocks; other statements unchanged."""
    if not (isinstance(stmt, exp.Create) and stmt.kind == "TABLE"):
        return stmt
    schema = stmt.this
    cols = [c for c in schema.expressions if isinstance(c, exp.ColumnDef)] if schema else []
    if not cols or cols[0].name != "bucket" or stmt.args.get("properties"):
        return stmt
    dims = [c.name for c in cols[1:] if "__" not in c.name]
    return _sorted(stmt, ["bucket", *dims], None)


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
    return exp.MD5(this=joined)


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


def stage_logical(t: pa.DataType) -> Logical:
    return Logical.TIMESTAMP if pa.types.is_timestamp(t) else _ARROW[str(t)]


def stage_table(name: str, schema: pa.Schema) -> str:
    """A temporary table shaped like an Arrow batch (JSON and DATE travel as text), in the
    batch's column order: ``COPY`` from Parquet matches columns by position."""
    cols = [ddl.column_def(f.name, sql_type(stage_logical(f.type), DIALECT)) for f in schema]
    create = exp.Create(
        this=exp.Schema(this=exp.to_table(name), expressions=cols),
        kind="TABLE",
        properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
    )
    return sql(create)


def copy_from_s3(name: str, url: str, iam_role: str | None) -> str:
    """``COPY`` a staged Parquet file into the stage table. The URL is built by Gristmill
    (bucket and prefix from settings, a random key) and the role is the operator's: COPY
    takes neither as a bound parameter, so both are rendered as escaped string literals."""
    copy = exp.Copy(
        this=exp.to_table(name),
        kind=True,
        files=[exp.Literal.string(url)],
        params=[exp.CopyParameter(this=exp.var("FORMAT"), expression=exp.var("PARQUET"))],
    )
    if iam_role is not None:
        copy.set("credentials", exp.Credentials(iam_role=exp.Literal.string(iam_role)))
    return copy.sql(dialect=DIALECT, identify=True)


def insert_rows(name: str, schema: pa.Schema, rows: int) -> str:
    """A multi-row ``INSERT`` into the stage table with one ``%s`` per value, for batches too
    small to be worth a ``COPY``."""
    if rows <= 0:
        raise ValueError("no rows to insert")
    tuples = [tuple(exp.Placeholder() for _ in schema) for _ in range(rows)]
    stmt = exp.insert(
        exp.values(tuples),
        exp.to_table(name),
        columns=[exp.to_identifier(f.name, quoted=True) for f in schema],
    )
    return stmt.sql(dialect=DIALECT, identify=True)


def insert_values(data: pa.Table) -> list[Any]:
    """The batch's values, row after row, in column order (what :func:`insert_rows` binds)."""
    columns = [data.column(i).to_pylist() for i in range(data.num_columns)]
    return [v for row in zip(*columns, strict=True) for v in row]


def insert_chunks(rows: int, columns: int, max_params: int = 32_000) -> list[tuple[int, int]]:
    """(start, length) slices of a batch whose ``INSERT`` each bind at most ``max_params``
    values (the server's limit on parameters of one statement)."""
    per = max(1, max_params // max(columns, 1))
    return [(i, min(per, rows - i)) for i in range(0, rows, per)]


def staging_key(prefix: str, batch_id: str, table: int) -> str:
    """Object key of one table's staged file: unique per batch and table, so a retried batch
    overwrites its own file and never another's."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in batch_id)
    return f"{prefix.strip('/')}/{safe}/t{table}.parquet"
