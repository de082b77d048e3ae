"""Rollup tables and the statements that keep them exact.

A rollup bucket holds, per dimension combination and UTC hour (or day), the components of
each metric (row count, sum, min, max, set of distinct values). After every load the buckets
the batch touched are recomputed from rows — inside the load transaction — so late and
re-delivered events leave exact numbers, distinct counts included.
"""

from __future__ import annotations

from typing import Any

from sqlglot import exp

from gristmill.metrics.compile import AGGS, COMPONENTS, component_columns
from gristmill.pack.analytics import RollupSpec
from gristmill.pack.models import ColumnType, Pack
from gristmill.sql.ddl import column_def, create_table, table_ref
from gristmill.sql.types import Logical, array_type, sql_type
from gristmill.warehouse.base import AfterInsert

PREFIX = "_gm_rollup_"
TOUCHED = "_gm_touched"


def rollup_table(pack: Pack, name: str) -> exp.Table:
    return table_ref(pack.dataset, PREFIX + name)


def _component_type(comp: str, ctype: ColumnType | None, dialect: str) -> exp.DataType:
    if comp == "n":
        return sql_type(Logical.INT64, dialect)
    assert ctype is not None
    if comp == "sum":
        return sql_type(Logical.WIDE_INT if ctype is ColumnType.INT64 else Logical.FLOAT64, dialect)
    if comp == "set":
        return array_type(ctype, dialect)
    return sql_type(ctype, dialect)


def rollup_columns(pack: Pack, r: RollupSpec, dialect: str) -> list[exp.ColumnDef]:
    types = {c.name: c.type for c in pack.columns(r.table)}
    cols = [column_def("bucket", sql_type(Logical.TIMESTAMP, dialect), not_null=True)]
    cols += [column_def(d, sql_type(types[d], dialect)) for d in r.dimensions]
    for m_name in r.metrics:
        m = pack.spec.metrics[m_name]
        ctype = types.get(m.column) if m.column else None
        for comp in COMPONENTS[m.type]:
            cols.append(column_def(f"{m_name}__{comp}", _component_type(comp, ctype, dialect)))
    return cols


def rollup_ddl(pack: Pack, name: str, r: RollupSpec, dialect: str = "duckdb") -> exp.Create:
    return create_table(rollup_table(pack, name), rollup_columns(pack, r, dialect))


def _bucket(ts: exp.Expr, grain: str, dialect: str = "duckdb") -> exp.Expr:
    """The UTC bucket of a TIMESTAMPTZ: truncating in UTC keeps DST out of rollups."""
    utc_bucket = AGGS[dialect].utc_bucket
    if utc_bucket is not None:
        return utc_bucket(ts, grain)
    return exp.func(
        "timezone",
        exp.Literal.string("UTC"),
        exp.func(
            "date_trunc",
            exp.Literal.string(grain),
            exp.AtTimeZone(this=ts, zone=exp.Literal.string("UTC")),
        ),
    )


def refresh(pack: Pack, name: str, r: RollupSpec, dialect: str = "duckdb") -> AfterInsert:
    """Recompute the buckets a batch touched, in the load transaction: ``prepare`` collects
    (bucket, dims) of the batch, ``bounds`` gives its first and last bucket so the recompute
    scans only that time range, then the touched buckets are deleted and rebuilt from rows."""
    aggs = AGGS[dialect]
    target = rollup_table(pack, name)
    source = table_ref(pack.dataset, r.table)
    dims = [exp.column(d, quoted=True) for d in r.dimensions]
    bucket = _bucket(exp.column("occurred_at", quoted=True), r.grain, dialect)
    # DROP + CREATE rather than CREATE OR REPLACE: PostgreSQL has no OR REPLACE for tables.
    drop = exp.Drop(tables=[exp.to_table(TOUCHED)], kind="TABLE", exists=True)
    touched = exp.Create(
        this=exp.to_table(TOUCHED),
        kind="TABLE",
        properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
        expression=exp.select(exp.alias_(bucket, "bucket"), *dims).from_("_gm_batch").distinct(),
    )
    bounds = exp.select(
        exp.alias_(exp.Min(this=exp.column("bucket")), "lo"),
        exp.alias_(exp.Max(this=exp.column("bucket")), "hi"),
    ).from_(TOUCHED)
    lo, hi = exp.Placeholder(this="lo"), exp.Placeholder(this="hi")
    span = exp.Interval(this=exp.Literal.string("1"), unit=exp.var(r.grain.upper()))

    def same_key(a: str, b: str) -> exp.Expr:
        conds: list[exp.Expr] = [
            exp.EQ(this=exp.column("bucket", table=a), expression=exp.column("bucket", table=b))
        ]
        conds += [
            exp.NullSafeEQ(
                this=exp.column(d, table=a, quoted=True),
                expression=exp.column(d, table=b, quoted=True),
            )
            for d in r.dimensions
        ]
        return exp.and_(*conds)

    delete = (
        exp.delete(target.as_("r"))
        .where(
            exp.Exists(
                this=exp.select("1").from_(exp.to_table(TOUCHED).as_("t")).where(same_key("r", "t"))
            )
        )
        .where(exp.GTE(this=exp.column("bucket"), expression=lo))
        .where(exp.LTE(this=exp.column("bucket"), expression=hi))
    )
    comps: list[exp.Expr] = []
    for m_name in r.metrics:
        comps += component_columns(m_name, pack.spec.metrics[m_name], aggs)
    rows = (
        exp.select(exp.alias_(bucket, "bucket"), *dims, *comps)
        .from_(source)
        .where(exp.GTE(this=exp.column("occurred_at", quoted=True), expression=lo))
        .where(
            exp.LT(
                this=exp.column("occurred_at", quoted=True),
                expression=exp.Add(this=hi, expression=span),
            )
        )
        .group_by(exp.column("bucket"), *dims)
    )
    keyed = (
        exp.select("s.*")
        .from_(rows.subquery("s"))
        .where(
            exp.Exists(
                this=exp.select("1").from_(exp.to_table(TOUCHED).as_("t")).where(same_key("s", "t"))
            )
        )
    )
    insert = exp.insert(keyed, target, columns=_names(pack, r))
    return AfterInsert(statements=(delete, insert), prepare=(drop, touched), bounds=bounds)


def _names(pack: Pack, r: RollupSpec) -> list[exp.Identifier]:
    names = ["bucket", *r.dimensions]
    for m_name in r.metrics:
        names += [f"{m_name}__{c}" for c in COMPONENTS[pack.spec.metrics[m_name].type]]
    return [exp.to_identifier(n, quoted=True) for n in names]


def full_rebuild(pack: Pack, name: str, r: RollupSpec, dialect: str = "duckdb") -> list[exp.Expr]:
    """Statements that recompute a rollup from all rows (after provisioning a new one)."""
    aggs = AGGS[dialect]
    target = rollup_table(pack, name)
    dims = [exp.column(d, quoted=True) for d in r.dimensions]
    bucket = _bucket(exp.column("occurred_at", quoted=True), r.grain, dialect)
    comps: list[exp.Expr] = []
    for m_name in r.metrics:
        comps += component_columns(m_name, pack.spec.metrics[m_name], aggs)
    rows = (
        exp.select(exp.alias_(bucket, "bucket"), *dims, *comps)
        .from_(table_ref(pack.dataset, r.table))
        .group_by(exp.column("bucket"), *dims)
    )
    return [exp.delete(target), exp.insert(rows, target, columns=_names(pack, r))]


def bucket_of(us: int, grain: str) -> int:
    """The UTC bucket (µs) of a time in µs, as :func:`_bucket` computes it in SQL."""
    step = 3_600_000_000 if grain == "hour" else 86_400_000_000
    return us - us % step


def recompute(
    pack: Pack,
    name: str,
    r: RollupSpec,
    keys: list[tuple[Any, ...]],
    dialect: str = "duckdb",
) -> list[tuple[exp.Expr, dict[str, Any]]]:
    """Statements that rebuild the given buckets ``(bucket, *dims)`` from rows, for changes
    made outside a load (erasure, retention): delete them, insert what the rows say now. A
    bucket whose rows are all gone stays deleted. Only the rows of those buckets are read
    (each key's time span and dimension values), not the span between the first and the
    last: an erased user's buckets are spread over years. Keys are bound, never inlined."""
    aggs = AGGS[dialect]
    target = rollup_table(pack, name)
    dims = [exp.column(d, quoted=True) for d in r.dimensions]
    occurred = exp.column("occurred_at", quoted=True)
    bucket = _bucket(occurred, r.grain, dialect)
    comps: list[exp.Expr] = []
    for m_name in r.metrics:
        comps += component_columns(m_name, pack.spec.metrics[m_name], aggs)
    span = exp.Interval(this=exp.Literal.string("1"), unit=exp.var(r.grain.upper()))
    params: dict[str, Any] = {}

    def dims_match(i: int, key: tuple[Any, ...]) -> list[exp.Expr]:
        conds: list[exp.Expr] = []
        for j, d in enumerate(r.dimensions):
            col = exp.column(d, quoted=True)
            if key[j + 1] is None:
                conds.append(exp.Is(this=col, expression=exp.Null()))
            else:
                params[f"d{i}_{j}"] = key[j + 1]
                conds.append(col.eq(exp.Placeholder(this=f"d{i}_{j}")))
        return conds

    stored: list[exp.Expr] = []
    rows_of: list[exp.Expr] = []
    for i, key in enumerate(keys):
        params[f"b{i}"] = key[0]
        b = exp.Placeholder(this=f"b{i}")
        stored.append(exp.and_(exp.column("bucket").eq(b), *dims_match(i, key)))
        in_span = [
            exp.GTE(this=occurred.copy(), expression=b.copy()),
            exp.LT(this=occurred.copy(), expression=exp.Add(this=b.copy(), expression=span.copy())),
        ]
        rows_of.append(exp.and_(*in_span, *dims_match(i, key)))
    # A cheap test first (one IN list, hashed by the engine); the exact OR runs only on the
    # rows that pass it.
    starts = [exp.Placeholder(this=f"b{i}") for i in range(len(keys))]
    stored_in = exp.In(this=exp.column("bucket"), expressions=[b.copy() for b in starts])
    delete = exp.delete(target).where(exp.and_(stored_in, exp.Paren(this=exp.or_(*stored))))
    # The span of all keys as a plain range the engine can prune on, then the exact keys.
    params["lo"] = min(k[0] for k in keys)
    params["hi"] = max(k[0] for k in keys)
    span_all = exp.and_(
        exp.GTE(this=occurred.copy(), expression=exp.Placeholder(this="lo")),
        exp.LT(
            this=occurred.copy(),
            expression=exp.Add(this=exp.Placeholder(this="hi"), expression=span.copy()),
        ),
    )
    rows = (
        exp.select(exp.alias_(bucket, "bucket"), *dims, *comps)
        .from_(table_ref(pack.dataset, r.table))
        .where(exp.and_(span_all, exp.Paren(this=exp.or_(*rows_of))))
        .group_by(exp.column("bucket"), *dims)
    )
    insert = exp.insert(rows, target, columns=_names(pack, r))
    delete_params = {k: v for k, v in params.items() if k not in ("lo", "hi")}
    return [(delete, delete_params), (insert, params)]
