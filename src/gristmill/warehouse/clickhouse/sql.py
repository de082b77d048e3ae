"""ClickHouse statements: MergeTree tables from the shared (engine-neutral) DDL, the load
steps of one pack table, and the rewrites that make shared DML run on ClickHouse.

Tables. Shared builders produce ``CREATE TABLE`` without an engine; :func:`with_engine` gives
each one, from what the statement says:

* pack tables — ``MergeTree PARTITION BY`` the pack's time partition ``ORDER BY`` the
  clustering keys then ``occurred_at``, plus a ``_gm_batch_id`` column (which load wrote the
  row: the compensation key, see client.py);
* a table with a primary key (freshness: an upsert target) — ``AggregatingMergeTree`` keyed by
  it, every other column ``SimpleAggregateFunction(max, …)``: an upsert that keeps the newest
  value is an insert, merged at read time;
* rollup tables (``bucket``, dimensions, ``<metric>__<component>`` columns) —
  ``ReplacingMergeTree PARTITION BY toYYYYMM(bucket) ORDER BY (bucket, dimensions,
  _gm_batch_id)``: each load appends its batch's delta as rows of its own part (the batch
  id), reads merge the parts, and compaction folds committed parts into ``''`` rows one
  month partition at a time (``REPLACE PARTITION``: atomic). A recompute writes ``''`` rows,
  which replace the old ones by key;
* anything else — ``MergeTree``.

Reads run with ``final = 1`` (connection.py), so replacing and aggregating tables are read
merged and answers are exact without waiting for background merges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp

from gristmill.pack.models import Pack
from gristmill.sql import ddl
from gristmill.sql.ddl import table_ref
from gristmill.sql.system import LOADS, OFFSETS, QUARANTINE, SYSTEM_SCHEMA, system_ddl
from gristmill.sql.types import Logical, logical, sql_type
from gristmill.warehouse.clickhouse.factory import DIALECT
from gristmill.warehouse.common import stored_columns

BATCH = "_gm_batch"
KEYS = "_gm_keys"
SEEN = "_gm_seen"
DEDUPE_TABLE = "_gm_dedupe"
BATCH_COLUMN = "_gm_batch_id"
UNIT_SEPARATOR = "\x1f"
ATTEMPTS = table_ref(SYSTEM_SCHEMA, "attempts")
"""Batches whose load started: a batch found here but not in the ledger left rows behind,
which are removed (by ``_gm_batch_id``) before it loads again."""
_PARTITION = {"hour": "toStartOfHour", "day": "toDate", "month": "toYYYYMM"}


def sql(e: exp.Expr) -> str:
    return e.sql(dialect=DIALECT)


def _ident(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def _col(name: str) -> exp.Column:
    return exp.column(name, quoted=True)


def _settings(**values: int) -> exp.SettingsProperty:
    return exp.SettingsProperty(
        expressions=[
            exp.EQ(this=exp.column(k), expression=exp.Literal.number(v)) for k, v in values.items()
        ]
    )


def _nullable(col: exp.ColumnDef) -> exp.ColumnDef:
    """ClickHouse columns are NOT NULL unless ``Nullable``: a column the shared DDL leaves
    nullable becomes ``Nullable(T)`` (arrays cannot be, and stay empty instead)."""
    col = col.copy()
    not_null = any(
        isinstance(c.args.get("kind"), exp.NotNullColumnConstraint) for c in col.constraints
    )
    kind = col.args.get("kind")
    if (
        not not_null
        and isinstance(kind, exp.DataType)
        and not kind.is_type(exp.DataType.Type.ARRAY)
    ):
        kind = kind.copy()
        kind.set("nullable", True)
        col.set("kind", kind)
    return col


def _rollup_column(col: exp.ColumnDef) -> exp.ColumnDef:
    """Row counts are ``UInt64`` here, the type of ``count()``: a rollup's counts and the raw
    edges' counts meet in one UNION ALL, and ClickHouse has no common type for Int64 and
    UInt64."""
    if col.name.endswith("__n"):
        return ddl.column_def(col.name, exp.DataType.build("UInt64", dialect=DIALECT))
    return _nullable(col)


def _order(cols: Sequence[str]) -> exp.Order:
    keys: list[exp.Expr] = [_col(c) for c in cols]
    this: exp.Expr = exp.Tuple(expressions=keys) if keys else exp.Tuple(expressions=[])
    return exp.Order(expressions=[exp.Ordered(this=this)])


def with_engine(create: exp.Expr, partition: exp.Expr | None = None) -> exp.Expr:
    """A shared ``CREATE TABLE`` given its ClickHouse engine (see the module docstring);
    other statements pass through."""
    if not (isinstance(create, exp.Create) and create.kind == "TABLE"):
        return create
    if not isinstance(create.this, exp.Schema) or create.args.get("properties"):
        return create
    out = create.copy()
    schema = out.this
    cols = [e for e in schema.expressions if isinstance(e, exp.ColumnDef)]
    pks = [e for e in schema.expressions if isinstance(e, exp.PrimaryKey)]
    names = [c.name for c in cols]
    props: list[exp.Expr]
    if pks:
        key = [i.name for i in pks[0].expressions]
        defs: list[exp.ColumnDef] = []
        for c in cols:
            if c.name in key:
                defs.append(c)
                continue
            inner = _nullable(c).args["kind"]
            agg = exp.DataType.build(
                f"SimpleAggregateFunction(max, {inner.sql(DIALECT)})", dialect=DIALECT
            )
            defs.append(exp.ColumnDef(this=c.this.copy(), kind=agg))
        schema.set("expressions", defs)
        props = [exp.EngineProperty(this=exp.var("AggregatingMergeTree")), _order(key)]
    elif names and names[0] == "bucket" and any("__" in n for n in names):
        dims = [n for n in names[1:] if "__" not in n]
        schema.set("expressions", [*(_rollup_column(c) for c in cols), _part_column()])
        props = [
            exp.EngineProperty(this=exp.var("ReplacingMergeTree")),
            exp.PartitionedByProperty(
                this=exp.Anonymous(this="toYYYYMM", expressions=[_col("bucket")])
            ),
            _order(["bucket", *dims, BATCH_COLUMN]),
            _settings(allow_nullable_key=1),
        ]
    else:
        schema.set("expressions", [_nullable(c) for c in cols])
        props = [exp.EngineProperty(this=exp.var("MergeTree"))]
        if partition is not None:
            props.append(exp.PartitionedByProperty(this=partition))
        props.append(_order([]))
    out.set("properties", exp.Properties(expressions=props))
    return out


def _table(
    ref: exp.Table,
    columns: Sequence[exp.ColumnDef],
    engine: str,
    order_by: Sequence[str],
    partition: exp.Expr | None = None,
    **settings: int,
) -> exp.Create:
    props: list[exp.Expr] = [exp.EngineProperty(this=exp.var(engine))]
    if partition is not None:
        props.append(exp.PartitionedByProperty(this=partition))
    props.append(_order(order_by))
    if settings:
        props.append(_settings(**settings))
    return ddl.create_table(ref, [_nullable(c) for c in columns], props)


def _part_column() -> exp.ColumnDef:
    """A rollup row's part: ``''`` for a compacted (or recomputed) row, else the batch whose
    delta it holds (see rollup/compact.py)."""
    return exp.ColumnDef(
        this=_ident(BATCH_COLUMN),
        kind=sql_type(Logical.TEXT, DIALECT),
        constraints=[
            exp.ColumnConstraint(kind=exp.DefaultColumnConstraint(this=exp.Literal.string("")))
        ],
    )


def _batch_column() -> exp.ColumnDef:
    return ddl.column_def(BATCH_COLUMN, sql_type(Logical.TEXT, DIALECT), not_null=True)


def system_tables() -> list[exp.Expr]:
    """The shared system tables with their engines: the ledger ordered by batch id (the
    replay check is a point lookup), offsets replaced by the newest, quarantine tagged with
    the batch that wrote it (and updatable in place, for ``replayed_at``)."""
    out: list[exp.Expr] = []
    for stmt in system_ddl(DIALECT):
        if not (isinstance(stmt, exp.Create) and stmt.kind == "TABLE"):
            out.append(stmt)
            continue
        ref = stmt.this.this
        cols = list(stmt.this.expressions)
        if ref == LOADS:
            out.append(_table(LOADS, cols, "MergeTree", ["batch_id"]))
        elif ref == OFFSETS:
            out.append(_table(OFFSETS, cols, "ReplacingMergeTree(updated_at)", ["log", "grp"]))
        elif ref == QUARANTINE:
            out.append(
                _table(
                    QUARANTINE,
                    [*cols, _batch_column()],
                    "MergeTree",
                    ["pack", "quarantine_id"],
                    enable_block_number_column=1,
                    enable_block_offset_column=1,
                )
            )
    ts = sql_type(Logical.TIMESTAMP, DIALECT)
    out.append(
        _table(
            ATTEMPTS,
            [
                ddl.column_def("batch_id", sql_type(Logical.TEXT, DIALECT), not_null=True),
                ddl.column_def("started_at", ts, not_null=True),
            ],
            "MergeTree",
            ["batch_id"],
        )
    )
    return out


def partition_expr(pack: Pack, table: str) -> exp.Expr:
    spec = pack.spec.tables[table].partition_by
    return exp.Anonymous(this=_PARTITION[spec.granularity], expressions=[_col(spec.column)])


def pack_table(pack: Pack, table: str) -> exp.Create:
    spec = pack.spec.tables[table]
    order = [*spec.cluster_by, *([] if "occurred_at" in spec.cluster_by else ["occurred_at"])]
    return _table(
        table_ref(pack.dataset, table),
        [*ddl.pack_table_columns(pack, table, DIALECT), _batch_column()],
        "MergeTree",
        order,
        partition_expr(pack, table),
        allow_nullable_key=1,
    )


def dedupe_table(pack: Pack) -> exp.Create:
    return _table(
        table_ref(pack.dataset, DEDUPE_TABLE),
        [
            ddl.column_def("k", sql_type(Logical.KEY128, DIALECT), not_null=True),
            ddl.column_def("first_seen", sql_type(Logical.TIMESTAMP, DIALECT), not_null=True),
            _batch_column(),
        ],
        "MergeTree",
        ["k"],
    )


def pack_ddl(packs: Sequence[Pack]) -> list[exp.Expr]:
    stmts = system_tables()
    for pack in packs:
        stmts.append(ddl.create_schema(pack.dataset))
        stmts.append(dedupe_table(pack))
        stmts += [pack_table(pack, t) for t in pack.spec.tables]
    return stmts


def render(stmts: Sequence[exp.Expr]) -> list[str]:
    return [sql(for_clickhouse(with_engine(s))) for s in stmts]


# -- shared DML on ClickHouse -----------------------------------------------------------------
def _rewrite(node: exp.Expr) -> exp.Expr:
    if isinstance(node, exp.CurrentTimestamp):
        # now() has whole seconds; stored times have microseconds.
        return exp.Anonymous(this="now64", expressions=[exp.Literal.number(6)])
    if isinstance(node, exp.Cast) and not node.to.is_type(exp.DataType.Type.ARRAY):
        # A cast keeps NULLs: the shared builders cast nullable text (JSON, DATE) columns.
        to = node.to.copy()
        to.set("nullable", True)
        node.set("to", to)
        return node
    if isinstance(node, exp.Anonymous) and str(node.this).lower() == "timezone":
        # timezone('UTC', date_trunc(g, ts AT TIME ZONE 'UTC')) gives back an instant on
        # DuckDB/PostgreSQL; ClickHouse's dateTrunc of a UTC DateTime64 already is one.
        inner: exp.Expr = node.expressions[-1]
        return inner
    return node


def _exists_as_in(node: exp.Exists) -> exp.Expr | None:
    """``EXISTS (SELECT 1 FROM t WHERE o.a = t.a AND o.b <=> t.b)`` as
    ``(o.a, o.b) IN (SELECT t.a, t.b FROM t)``: the same rows, and ClickHouse answers the set
    lookup about 2x faster than the correlated subquery (measured on a rollup refresh)."""
    sel = node.this
    if not isinstance(sel, exp.Select) or sel.args.get("joins"):
        return None
    frm = sel.args.get("from_")
    where = sel.args.get("where")
    if frm is None or where is None or not isinstance(frm.this, exp.Table):
        return None
    alias = frm.this.alias_or_name
    conds = list(where.this.flatten()) if isinstance(where.this, exp.And) else [where.this]
    outer: list[exp.Expr] = []
    inner: list[exp.Expr] = []
    for c in conds:
        if not isinstance(c, exp.EQ | exp.NullSafeEQ):
            return None
        a, b = c.this, c.expression
        if not (isinstance(a, exp.Column) and isinstance(b, exp.Column)):
            return None
        if b.table == alias and a.table != alias:
            outer.append(a.copy())
            inner.append(b.copy())
        elif a.table == alias and b.table != alias:
            outer.append(b.copy())
            inner.append(a.copy())
        else:
            return None
    return exp.In(
        this=exp.Tuple(expressions=outer),
        query=exp.select(*inner).from_(frm.this.copy()).subquery(),
    )


def for_clickhouse(stmt: exp.Expr) -> exp.Expr:
    """Shared DML rewritten where ClickHouse differs: microsecond ``now64(6)``; an upsert
    (``ON CONFLICT``) is a plain insert into an AggregatingMergeTree that keeps the max; a
    ``DELETE`` without ``WHERE`` names all rows; ``UPDATE`` is a lightweight update."""
    out = stmt.copy().transform(_rewrite)
    null_safe = False
    for node in list(out.find_all(exp.Exists)):
        rewritten = _exists_as_in(node)
        if rewritten is not None:
            null_safe |= node.find(exp.NullSafeEQ) is not None
            node.replace(rewritten)
    if null_safe:
        # <=> compared NULL dimensions as equal; the IN does so with this setting.
        top = out.expression if isinstance(out, exp.Insert) else out
        if isinstance(top, exp.Select):
            setting = exp.EQ(this=exp.column("transform_null_in"), expression=exp.Literal.number(1))
            top.set("settings", [setting])
    if isinstance(out, exp.Insert) and out.args.get("conflict") is not None:
        out.set("conflict", None)
    if isinstance(out, exp.Delete) and out.args.get("where") is None:
        out = out.where(exp.true())
    if isinstance(out, exp.Delete) and out.this.alias:
        out = _unaliased(out)
    return out


def _unaliased(stmt: exp.Delete) -> exp.Delete:
    """``DELETE FROM t AS r WHERE r.c …`` as ``DELETE FROM t WHERE c …``: a lightweight
    delete takes no alias. Columns of other tables (in subqueries) keep their qualifier."""
    alias = stmt.this.alias
    stmt.this.set("alias", None)
    for col in list(stmt.find_all(exp.Column)):
        if col.table == alias:
            col.set("table", None)
    return stmt


# -- loading ----------------------------------------------------------------------------------
_ARROW: dict[str, Logical] = {
    "string": Logical.TEXT,
    "large_string": Logical.TEXT,
    "int64": Logical.INT64,
    "double": Logical.FLOAT64,
    "bool": Logical.BOOL,
    "binary": Logical.BINARY,
    "large_binary": Logical.BINARY,
}


def stage(name: str, schema: pa.Schema) -> list[str]:
    """A temporary (Memory) table shaped like an Arrow batch, every column nullable."""
    cols = []
    for f in schema:
        lt = Logical.TIMESTAMP if pa.types.is_timestamp(f.type) else _ARROW[str(f.type)]
        kind = sql_type(lt, DIALECT)
        kind.set("nullable", True)
        cols.append(exp.ColumnDef(this=_ident(f.name), kind=kind))
    create = exp.Create(
        this=exp.Schema(this=exp.to_table(name), expressions=cols),
        kind="TABLE",
        properties=exp.Properties(
            expressions=[exp.TemporaryProperty(), exp.EngineProperty(this=exp.var("Memory"))]
        ),
    )
    return [sql(exp.Drop(tables=[exp.to_table(name)], kind="TABLE", exists=True)), sql(create)]


def dedupe_key(column: str = "event_id", scope: str = "_dedupe_scope") -> exp.Expr:
    """128 bits of MD5 over (scope ␟ event_id): a hash for bucketing, not security."""
    joined = exp.Anonymous(
        this="concat",
        expressions=[_col(scope), exp.Literal.string(UNIT_SEPARATOR), _col(column)],
    )
    return exp.Anonymous(
        this="reinterpretAsUInt128", expressions=[exp.Anonymous(this="MD5", expressions=[joined])]
    )


def _temp_as(name: str, query: exp.Query) -> list[str]:
    return [
        sql(exp.Drop(tables=[exp.to_table(name)], kind="TABLE", exists=True)),
        sql(
            exp.Create(
                this=exp.to_table(name),
                kind="TABLE",
                properties=exp.Properties(
                    expressions=[
                        exp.TemporaryProperty(),
                        exp.EngineProperty(this=exp.var("Memory")),
                    ]
                ),
                expression=query,
            )
        ),
    ]


def _not_seen(key: exp.Expr) -> exp.Expr:
    return exp.Not(this=exp.In(this=key, query=exp.select("k").from_(SEEN).subquery()))


@dataclass(frozen=True)
class LoadStatements:
    """One pack table's load steps; every insert carries the batch id (``{b}``)."""

    keys: list[str]
    seen: list[str]
    count_seen: str
    remember_all: str
    insert_all: str
    remember_fresh: str
    insert_fresh: str
    count_fresh: str
    compensate: list[str]
    """Remove what an unfinished attempt of batch ``{b}`` wrote to this table and its keys."""
    new_all: exp.Select
    new_fresh: exp.Select
    """The rows this load adds, typed as stored: what ``_gm_new`` means in a delta rollup step
    (all of the batch, or its rows whose key was not seen)."""

    @classmethod
    def build(cls, pack: Pack, table: str) -> LoadStatements:
        target = table_ref(pack.dataset, table)
        dedupe = table_ref(pack.dataset, DEDUPE_TABLE)
        types = {c.name: logical(c.type) for c in pack.columns(table)}
        batch_id = exp.Placeholder(this="b")
        values = [for_clickhouse(e) for e in stored_columns(types, DIALECT)]
        rows = exp.select(*values, batch_id).from_(BATCH)
        named = exp.select(
            *[
                v if isinstance(v, exp.Column) else exp.alias_(v, name, quoted=True)
                for v, name in zip(values, types, strict=True)
            ]
        ).from_(BATCH)
        cols = [_ident(c) for c in [*types, BATCH_COLUMN]]
        key_cols = [_ident(c) for c in ("k", "first_seen", BATCH_COLUMN)]
        keys = exp.select(exp.alias_(dedupe_key(), "_k"), "received_at", "source").from_(BATCH)
        seen = (
            exp.select(exp.column("k"))
            .from_(dedupe)
            .where(exp.In(this=exp.column("k"), query=exp.select("_k").from_(KEYS).subquery()))
        )
        remember = exp.select("_k", "received_at", batch_id.copy()).from_(KEYS)
        mine = exp.column(BATCH_COLUMN, quoted=True).eq(exp.Placeholder(this="b"))
        return cls(
            keys=_temp_as(KEYS, keys),
            seen=_temp_as(SEEN, seen),
            count_seen=sql(exp.select(exp.func("count", exp.Star()).as_("n")).from_(SEEN)),
            remember_all=sql(exp.insert(remember, dedupe, columns=key_cols)),
            insert_all=sql(exp.insert(rows, target, columns=cols)),
            remember_fresh=sql(
                exp.insert(remember.where(_not_seen(exp.column("_k"))), dedupe, columns=key_cols)
            ),
            insert_fresh=sql(exp.insert(rows.where(_not_seen(dedupe_key())), target, columns=cols)),
            count_fresh=sql(
                exp.select("source", exp.func("count", exp.Star()).as_("n"))
                .from_(KEYS)
                .where(_not_seen(exp.column("_k")))
                .group_by("source")
            ),
            compensate=[sql(exp.delete(target).where(mine)), sql(exp.delete(dedupe).where(mine))],
            new_all=named,
            new_fresh=named.copy().where(_not_seen(dedupe_key())),
        )


SEEN_BATCH = sql(
    exp.select("1")
    .from_(LOADS)
    .where(exp.column("batch_id").eq(exp.Placeholder(this="b")))
    .limit(1)
)
ATTEMPTED = sql(
    exp.select("1")
    .from_(ATTEMPTS)
    .where(exp.column("batch_id").eq(exp.Placeholder(this="b")))
    .limit(1)
)
COMPENSATE_QUARANTINE = sql(
    exp.delete(QUARANTINE).where(
        exp.column(BATCH_COLUMN, quoted=True).eq(exp.Placeholder(this="b"))
    )
)
