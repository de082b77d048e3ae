"""What every engine's load transaction shares: the system-table statements (batch ledger,
log offsets, quarantine) rendered once per dialect, and the arithmetic that turns a batch's
fresh-row counts into a :class:`LoadResult` and ledger rows.

Keeping this in one place is what makes conservation mean the same thing on every engine:
``loaded = fresh rows``, ``duplicates = accepted - loaded``, per (pack, source).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from gristmill.pack.models import Pack
from gristmill.sql.ddl import table_ref
from gristmill.sql.system import LOADS, OFFSETS, QUARANTINE, QUARANTINE_COLUMNS, QUARANTINE_INPUT
from gristmill.sql.types import Logical, logical, sql_type
from gristmill.warehouse.base import AfterInsert, LedgerTotals, LoadBatch, LoadResult, Warehouse

QUARANTINE_STAGE = "_gm_q"
"""The temp table (or registered Arrow table) quarantine rows are read from."""
NEW = "_gm_new"
"""The rows a load added, after dedupe, as after-insert steps name them
(:mod:`gristmill.rollup.delta`, :func:`gristmill.rollup.scripted.delta`)."""


def bind_new(e: exp.Expr, rows: exp.Select) -> exp.Expr:
    """``e`` (a copy) with every read of ``_gm_new`` replaced by ``rows``, same alias: how an
    engine that has no such table gives an after-insert step the rows its load added."""

    def visit(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Table) and not node.args.get("db") and node.name == NEW:
            return rows.subquery(node.alias or NEW)
        return node

    return e.copy().transform(visit, copy=False)


def in_one_transaction(wh: Warehouse, stmts: Sequence[tuple[exp.Expr, Mapping[str, Any]]]) -> None:
    """Run statements in one transaction where the engine offers one (``execute_all``:
    DuckDB, PostgreSQL); elsewhere in order, which callers make safe to rerun."""
    atomic: Callable[[Sequence[tuple[exp.Expr, Mapping[str, Any]]]], list[int]] | None = getattr(
        wh, "execute_all", None
    )
    if atomic is not None:
        atomic(stmts)
        return
    for stmt, params in stmts:
        wh.execute(stmt, params)


class NothingToWarm:
    """For engines whose loads read nothing into the process first: their duplicate check
    runs in the engine, so :meth:`~gristmill.warehouse.base.Warehouse.warm` has nothing to
    do."""

    def warm(self, packs: Sequence[Pack]) -> None:
        return None


class Rendered:
    """Statement text by statement object, rendered once: after-insert steps and other shared
    statements are built once per process and run on every load, and rendering a rollup's
    delta through sqlglot costs more Python time (under the GIL the collector also needs)
    than DuckDB takes to run it. Keyed by identity; the entry holds its statement, so an id
    is never reused while cached."""

    def __init__(self, render: Callable[[exp.Expr], str]) -> None:
        self._render = render
        self._texts: dict[int, tuple[exp.Expr, str]] = {}

    def __call__(self, stmt: exp.Expr) -> str:
        hit = self._texts.get(id(stmt))
        if hit is None or hit[0] is not stmt:
            hit = (stmt, self._render(stmt))
            self._texts[id(stmt)] = hit
        return hit[1]


def run_after_insert(
    after: AfterInsert,
    cur: Any,
    run: Callable[[Any, str, Mapping[str, Any] | None], Any],
    texts: Callable[[exp.Expr], Sequence[str]],
) -> None:
    """One after-insert step on a DB-API cursor (Snowflake, Redshift): ``bounds`` first (its
    row becomes the statements' parameters; a row of NULLs skips the step), then ``prepare``
    and ``statements``. ``texts`` renders a statement as the engine needs it (one text, or
    several); ``run(cur, text, params)`` executes one."""
    params: dict[str, Any] = {}
    if after.bounds is not None:
        for text in texts(after.bounds):
            run(cur, text, None)
        row = cur.fetchone()
        names = [d[0] for d in cur.description]
        params = dict(zip(names, row or (), strict=False))
        if all(v is None for v in params.values()):
            return
    for stmt in (*after.prepare, *after.statements):
        for text in texts(stmt):
            run(cur, text, params or None)


def _ph(name: str) -> exp.Placeholder:
    return exp.Placeholder(this=name)


def _log_and_group() -> exp.Expr:
    return exp.and_(exp.column("log").eq(_ph("log")), exp.column("grp").eq(_ph("grp")))


def cast_to(col: str, t: Logical, dialect: str) -> exp.Expr:
    """A staged text column cast to its stored type (JSON, DATE travel as text)."""
    return exp.Cast(this=exp.column(col, quoted=True), to=sql_type(t, dialect))


@dataclass(frozen=True)
class SystemSQL:
    """Ledger, offset and quarantine statements for one dialect (named placeholders:
    ``b``; ``log``, ``grp``, ``off``; ledger rows are positional)."""

    seen_batch: str
    insert_ledger: str
    delete_offset: str
    insert_offset: str
    select_offset: str
    sum_ledger: str
    insert_quarantine: str

    @classmethod
    def build(cls, dialect: str) -> SystemSQL:
        def sql(e: exp.Expr) -> str:
            return e.sql(dialect=dialect)

        types = {name: t for name, t, _ in QUARANTINE_COLUMNS}
        q_cols: list[exp.Expr] = [
            cast_to(c, types[c], dialect)
            if types[c] is Logical.JSON
            else exp.column(c, quoted=True)
            for c in QUARANTINE_INPUT
        ]
        return cls(
            seen_batch=sql(
                exp.select("1").from_(LOADS).where(exp.column("batch_id").eq(_ph("b"))).limit(1)
            ),
            insert_ledger=sql(
                exp.insert(
                    exp.values(
                        [(*tuple(exp.Placeholder() for _ in range(9)), exp.CurrentTimestamp())]
                    ),
                    LOADS,
                )
            ),
            delete_offset=sql(exp.delete(OFFSETS).where(_log_and_group())),
            insert_offset=sql(
                exp.insert(
                    exp.values([(_ph("log"), _ph("grp"), _ph("off"), exp.CurrentTimestamp())]),
                    OFFSETS,
                )
            ),
            select_offset=sql(
                exp.select(exp.column("offset", quoted=True)).from_(OFFSETS).where(_log_and_group())
            ),
            sum_ledger=sql(
                exp.select(
                    "pack",
                    "source",
                    exp.func("sum", exp.column("loaded")),
                    exp.func("sum", exp.column("duplicates")),
                    exp.func("sum", exp.column("quarantined")),
                )
                .from_(LOADS)
                .where(exp.column("log").eq(_ph("log")))
                .group_by("pack", "source")
            ),
            insert_quarantine=sql(merge_quarantine(q_cols)),
        )


def merge_quarantine(values: Sequence[exp.Expr]) -> exp.Merge:
    """Quarantine rows from the stage: a body this source already has in quarantine (not yet
    replayed) adds its sendings to that row's ``resends`` and moves ``last_seen_at``; any other
    body is a new row. The stage holds one row per (pack, source, body) (load/batch.py).
    ``values`` are the staged columns of :data:`QUARANTINE_INPUT`, as stored."""
    q, s = "q", "s"
    on = exp.and_(
        *(exp.column(c, q).eq(exp.column(c, s)) for c in ("pack", "source", "body_hash")),
        exp.column("replayed_at", q).is_(exp.null()),
    )
    resends = exp.Coalesce(this=exp.column("resends", q), expressions=[exp.Literal.number(1)])
    update = exp.Update(
        expressions=[
            exp.EQ(
                this=exp.column("resends"),
                expression=exp.Add(this=resends, expression=exp.column("resends", s)),
            ),
            exp.EQ(this=exp.column("last_seen_at"), expression=exp.column("last_seen_at", s)),
        ]
    )
    cols = [*QUARANTINE_INPUT, "quarantined_at"]
    insert = exp.Insert(
        this=exp.Tuple(expressions=[exp.column(c, quoted=True) for c in cols]),
        expression=exp.Tuple(
            expressions=[
                *(_qualified(v, s) for v in values),
                exp.CurrentTimestamp(),
            ]
        ),
    )
    return exp.Merge(
        this=exp.alias_(QUARANTINE.copy(), q, table=True),
        using=exp.alias_(exp.to_table(QUARANTINE_STAGE), s, table=True),
        on=on,
        whens=exp.Whens(
            expressions=[
                exp.When(matched=True, then=update),
                exp.When(matched=False, then=insert),
            ]
        ),
    )


def _qualified(e: exp.Expr, table: str) -> exp.Expr:
    e = e.copy()
    for col in e.find_all(exp.Column):
        col.set("table", exp.to_identifier(table))
    return e


def settle(
    batch: LoadBatch, fresh: Mapping[tuple[str, str], int]
) -> tuple[LoadResult, list[tuple[Any, ...]]]:
    """The batch's result and its ledger rows (one per pack and source), from the number of
    rows each source actually added."""
    loaded: dict[tuple[str, str], int] = {}
    dups: dict[tuple[str, str], int] = {}
    quarantined: dict[tuple[str, str], int] = {}
    ledger: list[tuple[Any, ...]] = []
    for key, counts in batch.sources.items():
        accepted = counts.events - counts.quarantined
        loaded[key] = fresh.get(key, 0)
        dups[key] = accepted - loaded[key]
        quarantined[key] = counts.quarantined
        ledger.append(
            (
                batch.batch_id,
                batch.log_name,
                batch.group,
                key[0],
                key[1],
                loaded[key],
                dups[key],
                quarantined[key],
                batch.last_offset,
            )
        )
    return LoadResult(batch.batch_id, loaded, dups, quarantined), ledger


def ledger_totals(rows: Sequence[Sequence[Any]], offset: Sequence[Sequence[Any]]) -> LedgerTotals:
    return LedgerTotals(
        loaded={(p, s): int(lo) for p, s, lo, _, _ in rows},
        duplicates={(p, s): int(d) for p, s, _, d, _ in rows},
        quarantined={(p, s): int(q) for p, s, _, _, q in rows},
        offset=int(offset[0][0]) if offset else 0,
    )


def stored_columns(pack_types: Mapping[str, Logical], dialect: str) -> list[exp.Expr]:
    """Select list that moves staged rows into a pack table: JSON and DATE columns travel as
    text and are cast; ``loaded_at`` is stamped by the warehouse."""
    out: list[exp.Expr] = []
    for name, t in pack_types.items():
        if name == "loaded_at":
            out.append(exp.CurrentTimestamp())
        elif t in (Logical.JSON, Logical.DATE):
            out.append(cast_to(name, t, dialect))
        else:
            out.append(exp.column(name, quoted=True))
    return out


def ledger_snapshot(dialect: str) -> str:
    """The ledger sums and the stored offset in **one** statement (one snapshot), for engines
    that read committed data per statement (BigQuery, Snowflake): the offset row comes last,
    with NULL pack and source. Named placeholders ``log`` and ``grp``."""
    null = exp.Null()
    sums = (
        exp.select(
            "pack",
            "source",
            exp.alias_(exp.func("sum", exp.column("loaded")), "loaded"),
            exp.alias_(exp.func("sum", exp.column("duplicates")), "duplicates"),
            exp.alias_(exp.func("sum", exp.column("quarantined")), "quarantined"),
            exp.alias_(exp.Cast(this=null.copy(), to=sql_type(Logical.INT64, dialect)), "off"),
        )
        .from_(LOADS)
        .where(exp.column("log").eq(_ph("log")))
        .group_by("pack", "source")
    )
    offset = (
        exp.select(
            null.copy(),
            null.copy(),
            null.copy(),
            null.copy(),
            null.copy(),
            exp.column("offset", quoted=True),
        )
        .from_(OFFSETS)
        .where(_log_and_group())
    )
    return exp.union(sums, offset, distinct=False).sql(dialect=dialect)


def split_snapshot(rows: Sequence[Sequence[Any]]) -> LedgerTotals:
    """:func:`ledger_totals` from the rows of :func:`ledger_snapshot`."""
    sums = [r[:5] for r in rows if r[0] is not None]
    offset = [(r[5],) for r in rows if r[0] is None]
    return ledger_totals(sums, offset)


def catalog_problems(
    packs: Sequence[Pack], columns: Callable[[str, str], Mapping[str, str]]
) -> list[str]:
    """What readiness reports on every engine: the ledger table, then each pack table and
    column missing from the catalog. ``columns(schema, table)`` is the engine's catalog
    lookup (empty when the table does not exist); its connection errors propagate, so the
    engine can report "unreachable" in its own words."""
    problems: list[str] = []
    if not columns("_gristmill", "loads"):
        problems.append("missing table _gristmill.loads (run provisioning)")
    for pack in packs:
        for table in pack.spec.tables:
            have = columns(pack.dataset, table)
            if not have:
                problems.append(f"missing table {pack.dataset}.{table}")
                continue
            problems += [
                f"missing column {pack.dataset}.{table}.{c.name}"
                for c in pack.columns(table)
                if c.name not in have
            ]
    return problems


@dataclass(frozen=True)
class AntiJoinLoad:
    """One pack table's load on engines that stage the batch as ``_gm_batch`` and dedupe by an
    anti-join on the key table (BigQuery, Snowflake, Redshift), in transaction order: count
    the fresh rows per source, insert them, run the after-insert steps marked ``before_keys``
    (with ``_gm_new`` bound to :attr:`new_rows`), remember the keys, run the other steps. All
    but the last see the key table as it was before the batch. Engines differ only in the key
    expression and the dialect."""

    count_fresh: exp.Expr
    insert_fresh: exp.Expr
    remember: exp.Expr
    new_rows: exp.Select
    """The rows ``insert_fresh`` adds, as stored and named by column: what ``_gm_new`` means
    to a ``before_keys`` step. A derived table, not a temp table or view: Snowflake's DDL would
    commit the load transaction."""

    def split(
        self, after: Sequence[AfterInsert]
    ) -> tuple[tuple[AfterInsert, ...], tuple[AfterInsert, ...]]:
        """The steps to run before ``remember`` (``_gm_new`` bound) and those to run after."""
        early = tuple(
            AfterInsert(
                statements=tuple(self.bind_new(s) for s in a.statements),
                prepare=tuple(self.bind_new(s) for s in a.prepare),
                bounds=None if a.bounds is None else self.bind_new(a.bounds),
                before_keys=True,
            )
            for a in after
            if a.before_keys
        )
        return early, tuple(a for a in after if not a.before_keys)

    def bind_new(self, e: exp.Expr) -> exp.Expr:
        return bind_new(e, self.new_rows)

    @classmethod
    def anti_join(
        cls, pack: Pack, table: str, dialect: str, dedupe_key: Callable[[], exp.Expr]
    ) -> Any:
        batch, dedupe = "_gm_batch", table_ref(pack.dataset, "_gm_dedupe")

        def fresh() -> exp.Expr:
            return exp.Not(
                this=exp.In(this=dedupe_key(), query=exp.select("k").from_(dedupe).subquery())
            )

        types = {c.name: logical(c.type) for c in pack.columns(table)}
        names = [exp.to_identifier(n, quoted=True) for n in types]
        stored = stored_columns(types, dialect)
        rows = exp.select(*stored).from_(batch).where(fresh())
        named = [exp.alias_(e.copy(), n, quoted=True) for e, n in zip(stored, types, strict=True)]
        keys = exp.select(exp.alias_(dedupe_key(), "k"), exp.column("received_at", quoted=True))
        return cls(
            count_fresh=exp.select(
                exp.column("source", quoted=True), exp.alias_(exp.Count(this=exp.Star()), "n")
            )
            .from_(batch)
            .where(fresh())
            .group_by(exp.column("source", quoted=True)),
            insert_fresh=exp.insert(rows, table_ref(pack.dataset, table), columns=names),
            remember=exp.insert(
                keys.from_(batch).where(fresh()),
                dedupe,
                columns=[exp.to_identifier(n, quoted=True) for n in ("k", "first_seen")],
            ),
            new_rows=exp.select(*named).from_(batch).where(fresh()),
        )
