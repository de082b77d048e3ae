"""BigQuery statements, built as sqlglot expressions: datasets and partitioned, clustered
tables, the load statements of one pack table, and the pure pieces of loading (job ids,
parameter types, the ledger insert) — everything here runs without credentials.

Tables: ``PARTITION BY DATE(occurred_at)`` (or ``TIMESTAMP_TRUNC(occurred_at, HOUR|MONTH)``
for the pack's granularity), ``CLUSTER BY`` the pack's clustering keys (BigQuery takes four at
most), ``partition_expiration_days`` from the longest retention of the categories routed to
the table. Dedupe keys are ``MD5(scope ␟ event_id)`` (16 bytes) in ``<dataset>._gm_dedupe``,
partitioned by the day they were first seen.

Every statement of a load names the staged batch ``_gm_batch`` (and quarantine ``_gm_q``);
:class:`Naming` points those at the batch's stage table and adds the dataset prefix.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlglot
from sqlglot import exp

from gristmill.pack.models import Pack
from gristmill.sql import ddl
from gristmill.sql.ddl import create_table, pack_table_columns, table_ref
from gristmill.sql.system import LOADS, SYSTEM_SCHEMA, system_ddl
from gristmill.sql.types import Logical, sql_type
from gristmill.warehouse.bigquery.factory import DIALECT
from gristmill.warehouse.common import AntiJoinLoad
from gristmill.warehouse.provision.contract import table_retention

BATCH = "_gm_batch"
QUARANTINE_STAGE = "_gm_q"
DEDUPE_TABLE = "_gm_dedupe"
STAGE_DATASET = "_gristmill_stage"
STAGE_EXPIRATION_DAYS = 1
"""Stage tables are dropped after their load; a crashed load's stage expires within a day."""
MAX_CLUSTER_COLUMNS = 4


@dataclass(frozen=True)
class Naming:
    """Renders statements for one BigQuery project: dataset prefix, the stage tables of the
    load at hand, and the spellings sqlglot's canonical trees do not carry over."""

    prefix: str = ""
    stages: Mapping[str, exp.Table] = field(default_factory=dict)

    def fix(self, e: exp.Expr) -> exp.Expr:
        def visit(node: exp.Expr) -> exp.Expr:
            if isinstance(node, exp.Table) and not node.args.get("db"):
                stage = self.stages.get(node.name)
                if stage is not None:
                    out = stage.copy()
                    if node.alias:
                        out.set("alias", node.args["alias"].copy())
                    return out
            if isinstance(node, exp.Table) and node.args.get("db") and self.prefix:
                node = node.copy()
                node.set("db", exp.to_identifier(self.prefix + node.db, quoted=True))
                return node
            if isinstance(node, exp.Create) and node.kind == "SCHEMA" and self.prefix:
                node = node.copy()
                node.set("this", exp.to_identifier(self.prefix + node.this.name, quoted=True))
                return node
            if isinstance(node, exp.Cast) and node.to.is_type(exp.DataType.Type.JSON):
                return exp.ParseJSON(this=node.this.copy())  # CAST(text AS JSON) is no BigQuery
            if isinstance(node, exp.Delete) and not node.args.get("where"):
                node = node.copy()  # BigQuery refuses a DELETE without WHERE
                node.set("where", exp.Where(this=exp.true()))
                return node
            if isinstance(node, exp.PrimaryKey):
                # BigQuery keys are NOT ENFORCED hints; MERGE keeps freshness unique instead.
                return exp.null()
            return node

        out = e.copy().transform(visit, copy=False)
        for schema in out.find_all(exp.Schema):
            schema.set(
                "expressions", [c for c in schema.expressions if not isinstance(c, exp.Null)]
            )
        return out

    def sql(self, e: exp.Expr | str) -> str:
        """Render a statement; text rendered elsewhere (the shared system statements, the
        planner's cached queries) is parsed back when a prefix or a stage applies to it."""
        if isinstance(e, str):
            if not self.prefix and not self.stages:
                return e
            e = sqlglot.parse_one(e, read=DIALECT)
        return self.fix(e).sql(dialect=DIALECT)

    def table(self, dataset: str, table: str) -> exp.Table:
        return table_ref(self.prefix + dataset, table)


def _partition_expr(pack: Pack, table: str) -> exp.Expr:
    spec = pack.spec.tables[table].partition_by
    col = exp.column(spec.column, quoted=True)
    if spec.granularity == "day":
        return exp.Date(this=col)
    return exp.TimestampTrunc(this=col, unit=exp.var(spec.granularity.upper()))


def _option(name: str, value: exp.Expr) -> exp.Property:
    return exp.Property(this=exp.var(name), value=value)


def pack_table(pack: Pack, table: str) -> exp.Create:
    spec = pack.spec.tables[table]
    props: list[exp.Expr] = [exp.PartitionedByProperty(this=_partition_expr(pack, table))]
    if spec.cluster_by:
        keys = spec.cluster_by[:MAX_CLUSTER_COLUMNS]
        props.append(exp.Cluster(expressions=[exp.column(c, quoted=True) for c in keys]))
    retention = table_retention(pack, table)
    if retention is not None:
        props.append(_option("partition_expiration_days", exp.Literal.number(retention.days)))
    if spec.description:
        props.append(_option("description", exp.Literal.string(spec.description.strip())))
    return create_table(
        table_ref(pack.dataset, table), pack_table_columns(pack, table, DIALECT), props
    )


def dedupe_table(pack: Pack) -> exp.Create:
    cols = [
        ddl.column_def("k", sql_type(Logical.KEY128, DIALECT), not_null=True),
        ddl.column_def("first_seen", sql_type(Logical.TIMESTAMP, DIALECT), not_null=True),
    ]
    props = [exp.PartitionedByProperty(this=exp.Date(this=exp.column("first_seen", quoted=True)))]
    return create_table(table_ref(pack.dataset, DEDUPE_TABLE), cols, props)


def create_dataset(name: str, location: str, *, expiration_days: int | None = None) -> exp.Create:
    props = [_option("location", exp.Literal.string(location))]
    if expiration_days is not None:
        props.append(_option("default_table_expiration_days", exp.Literal.number(expiration_days)))
    return exp.Create(
        this=exp.to_identifier(name, quoted=True),
        kind="SCHEMA",
        exists=True,
        properties=exp.Properties(expressions=props),
    )


def partition_rollup(stmt: exp.Expr) -> exp.Expr:
    """A rollup table (shared DDL: a ``bucket`` column first, then its dimensions, then
    ``<metric>__<component>`` columns) partitioned by the bucket's day and clustered by its
    dimensions, so the refresh after each load and the reads of a range prune partitions."""
    if not (isinstance(stmt, exp.Create) and stmt.kind == "TABLE"):
        return stmt
    schema = stmt.this
    cols = [c for c in schema.expressions if isinstance(c, exp.ColumnDef)] if schema else []
    if not cols or cols[0].name != "bucket" or stmt.args.get("properties"):
        return stmt
    dims = [c.name for c in cols[1:] if "__" not in c.name][:MAX_CLUSTER_COLUMNS]
    props: list[exp.Expr] = [
        exp.PartitionedByProperty(this=exp.Date(this=exp.column("bucket", quoted=True)))
    ]
    if dims:
        props.append(exp.Cluster(expressions=[exp.column(d, quoted=True) for d in dims]))
    out = stmt.copy()
    out.set("properties", exp.Properties(expressions=props))
    return out


def pack_ddl(packs: Sequence[Pack], location: str = "US") -> list[exp.Expr]:
    """The system dataset and its tables, the stage dataset, then per pack its dataset, key
    table and tables."""
    stmts: list[exp.Expr] = []
    for s in system_ddl(DIALECT):
        is_schema = isinstance(s, exp.Create) and s.kind == "SCHEMA"
        stmts.append(create_dataset(SYSTEM_SCHEMA, location) if is_schema else s)
    stmts.append(create_dataset(STAGE_DATASET, location, expiration_days=STAGE_EXPIRATION_DAYS))
    for pack in packs:
        stmts.append(create_dataset(pack.dataset, location))
        stmts.append(dedupe_table(pack))
        stmts += [pack_table(pack, t) for t in pack.spec.tables]
    return stmts


# -- loading ---------------------------------------------------------------------------------
def dedupe_key(table: str | None = None) -> exp.Expr:
    """16 bytes: ``MD5(scope ␟ event_id)``."""
    joined = exp.DPipe(
        this=exp.DPipe(
            this=exp.column("_dedupe_scope", table=table, quoted=True),
            expression=exp.func("CHR", exp.Literal.number(31)),
        ),
        expression=exp.column("event_id", table=table, quoted=True),
    )
    return exp.MD5Digest(this=joined)


class LoadStatements(AntiJoinLoad):
    """One pack table's load: the shared anti-join (:class:`AntiJoinLoad`) with this
    engine's key."""

    @classmethod
    def build(cls, pack: Pack, table: str) -> LoadStatements:
        load: LoadStatements = cls.anti_join(pack, table, DIALECT, dedupe_key)
        return load


def batch_digest(batch_id: str, what: str) -> str:
    """A stable name part for one batch and one target: a retry of the batch gets the same."""
    return hashlib.sha256(f"{batch_id}\x1f{what}".encode()).hexdigest()[:40]


def load_job_id(batch_id: str, what: str, attempt: int = 0) -> str:
    """The id of the load job that stages one batch for one table. BigQuery refuses a second
    job with an id it has seen (409), so a retried batch finds its stage job instead of
    loading the rows twice; only when that job failed is a new one started, as attempt 1, 2…
    (the stage is overwritten, and the ledger in the load transaction is what makes the batch
    count once)."""
    suffix = f"_r{attempt}" if attempt else ""
    return f"gristmill_stage_{batch_digest(batch_id, what)}{suffix}"


def stage_table(prefix: str, batch_id: str, what: str) -> exp.Table:
    return table_ref(prefix + STAGE_DATASET, f"_gm_stage_{batch_digest(batch_id, what)}")


def param_type(value: Any) -> str:
    """The GoogleSQL type of a bound Python value (bool before int: bool is an int)."""
    if value is None:
        return "STRING"  # a typed NULL; comparisons with NULL are unknown in any type
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, Decimal):
        return "BIGNUMERIC"
    if isinstance(value, str):
        return "STRING"
    if isinstance(value, bytes):
        return "BYTES"
    if isinstance(value, datetime):
        return "TIMESTAMP" if value.tzinfo is not None else "DATETIME"
    if isinstance(value, date):
        return "DATE"
    raise TypeError(f"no BigQuery parameter type for {type(value).__name__}")


def typed_params(
    params: Mapping[str, Any] | None, text: str | None = None
) -> list[tuple[str, str, Any]]:
    """(name, type, value) per named parameter, in name order; with ``text``, only those the
    statement names (``@name``): callers share one mapping across statements, and a query
    job is not the place to find out whether BigQuery tolerates an unused one."""
    used = None if text is None else set(re.findall(r"@(\w+)", text))
    return [
        (k, param_type(v), v)
        for k, v in sorted((params or {}).items())
        if used is None or k in used
    ]


def ledger_insert(rows: Sequence[Sequence[Any]]) -> tuple[exp.Insert, dict[str, Any]]:
    """One INSERT of every ledger row, with named parameters (BigQuery has no executemany)."""
    params: dict[str, Any] = {}
    tuples = []
    for i, row in enumerate(rows):
        names = [f"l{i}_{j}" for j in range(len(row))]
        params.update(zip(names, row, strict=True))
        tuples.append((*(exp.Placeholder(this=n) for n in names), exp.CurrentTimestamp()))
    return exp.insert(exp.values(tuples), LOADS), params
