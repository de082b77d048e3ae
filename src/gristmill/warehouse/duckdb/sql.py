"""The load statements of one pack table, built once as sqlglot expressions and cached."""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from gristmill.pack.models import Pack
from gristmill.sql.ddl import table_ref
from gristmill.warehouse.duckdb.factory import DIALECT

FRESH = "_gm_fresh"
UNIT_SEPARATOR = "\x1f"


def _key(alias: str) -> exp.Expr:
    """128-bit dedupe key of (scope, event_id)."""
    return exp.func(
        "md5_number",
        exp.DPipe(
            this=exp.DPipe(
                this=exp.column("_dedupe_scope", table=alias),
                expression=exp.Literal.string(UNIT_SEPARATOR),
            ),
            expression=exp.column("event_id", table=alias),
        ),
    )


def _idents(*names: str) -> list[exp.Identifier]:
    return [exp.to_identifier(n, quoted=True) for n in names]


@dataclass(frozen=True)
class LoadStatements:
    fresh: str
    """Temp table of the batch's rows whose key is not yet known."""
    remember: str
    """Add the fresh keys to the dedupe table."""
    insert: str
    count_by_source: str

    DROP_FRESH = exp.Drop(tables=[exp.to_table(FRESH)], kind="TABLE", exists=True).sql(DIALECT)

    @classmethod
    def build(cls, pack: Pack, table: str, dedupe_table: str) -> LoadStatements:
        target = table_ref(pack.dataset, table)
        dedupe = table_ref(pack.dataset, dedupe_table)
        cols = [c.name for c in pack.columns(table)]
        keyed = exp.select("*", exp.alias_(_key("b"), "_k")).from_(
            exp.to_table("_gm_batch").as_("b")
        )
        not_seen = exp.Not(
            this=exp.Exists(
                this=exp.select("1")
                .from_(dedupe.as_("d"))
                .where(exp.column("k", table="d").eq(exp.column("_k", table="kb")))
            )
        )
        fresh = exp.Create(
            this=exp.to_table(FRESH),
            kind="TABLE",
            replace=True,
            properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
            expression=exp.select("*").from_(keyed.subquery("kb")).where(not_seen),
        )
        remember = exp.insert(
            exp.select("_k", "received_at").from_(FRESH), dedupe, columns=_idents("k", "first_seen")
        )
        select_cols: list[exp.Expr] = [
            exp.CurrentTimestamp() if c == "loaded_at" else exp.column(c, quoted=True) for c in cols
        ]
        insert = exp.insert(exp.select(*select_cols).from_(FRESH), target, columns=_idents(*cols))
        count = exp.select("source", exp.func("count", exp.Star())).from_(FRESH).group_by("source")
        return cls(
            fresh=fresh.sql(DIALECT),
            remember=remember.sql(DIALECT),
            insert=insert.sql(DIALECT),
            count_by_source=count.sql(DIALECT),
        )
