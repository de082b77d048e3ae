"""Desired tables against the catalogue: the changes a plan lists, each labelled.

Gristmill makes additive changes itself (schemas, tables, nullable columns, indexes). It never
changes a column's type, drops a column, or re-partitions or re-clusters a table that holds
rows: those are listed as **blocking** and ``--apply`` refuses until a person resolves them
(docs/provisioning.md says how), because each can lose data or rewrite a large table.
"""

from __future__ import annotations

from types import ModuleType

from sqlglot import exp

from gristmill.warehouse.provision.model import Catalogue, Change, Desired, DesiredTable, Label

APPLIED = "applied by --apply (idempotent)"
REFUSED = (
    "not applied: --apply refuses while this is listed; migrate by hand (docs/provisioning.md)"
)


def _nullable(col: exp.ColumnDef) -> exp.ColumnDef:
    """A column added to a table with rows cannot be NOT NULL: old rows have no value."""
    col = col.copy()
    col.set(
        "constraints",
        [
            c
            for c in col.constraints
            if not isinstance(c.args.get("kind"), exp.NotNullColumnConstraint)
        ],
    )
    return col


def _type(catalog: ModuleType, dialect: str, col: exp.ColumnDef) -> str:
    kind = col.args.get("kind")
    text = kind.sql(dialect=dialect) if isinstance(kind, exp.DataType) else ""
    return str(catalog.normalize_type(text))


def _table_changes(
    t: DesiredTable, have: dict[str, str], cat: ModuleType, dialect: str
) -> list[Change]:
    out: list[Change] = []
    wanted = {c.name: c for c in t.columns}
    for name, col in wanted.items():
        want = _type(cat, dialect, col)
        if name not in have:
            alter = exp.Alter(this=t.ref.copy(), kind="TABLE", actions=[_nullable(col)])
            out.append(
                Change(
                    "add_column",
                    f"{t.key}.{name}",
                    Label.ADDITIVE,
                    False,
                    f"new nullable column {name} {want}",
                    f"{APPLIED}; rows loaded before it read NULL",
                    (cat.render(alter),),
                )
            )
        elif have[name] != want:
            out.append(
                Change(
                    "change_type",
                    f"{t.key}.{name}",
                    Label.BREAKING,
                    True,
                    f"type {have[name]} in the warehouse, {want} in the packs "
                    "(narrowing or a type change)",
                    f"{REFUSED}: Gristmill never retypes a column in place",
                )
            )
    added = [n for n in wanted if n not in have]
    for name, typ in have.items():
        if name in wanted:
            continue
        hint = f"; renamed to {', '.join(added)}?" if added else ""
        out.append(
            Change(
                "unmanaged_column",
                f"{t.key}.{name}",
                Label.DESTRUCTIVE,
                True,
                f"column {name} {typ} is in the warehouse but not in the packs "
                f"(dropped or renamed{hint})",
                f"{REFUSED}: Gristmill never drops a column that may hold data",
            )
        )
    return out


def changes(desired: Desired, catalogue: Catalogue, cat: ModuleType, dialect: str) -> list[Change]:
    out: list[Change] = []
    for s in desired.schemas:
        if s.name not in catalogue.schemas:
            out.append(
                Change(
                    "create_schema",
                    s.name,
                    Label.ADDITIVE,
                    False,
                    "new schema",
                    APPLIED,
                    tuple(s.statements),
                )
            )
    for t in desired.tables:
        state = catalogue.tables.get(t.key)
        if state is None:
            out.append(
                Change(
                    "create_table",
                    t.key,
                    Label.ADDITIVE,
                    False,
                    f"new table, {len(t.columns)} columns",
                    APPLIED,
                    (t.create, *t.related),
                )
            )
            continue
        out += _table_changes(t, state.columns, cat, dialect)
        if state.partitioning != t.partitioning:
            out.append(
                Change(
                    "change_partitioning",
                    t.key,
                    Label.BREAKING,
                    True,
                    f"partitioned by {state.partitioning or 'nothing'} in the warehouse, "
                    f"{t.partitioning or 'nothing'} in the packs",
                    f"{REFUSED}: re-partitioning rewrites the table",
                )
            )
        if state.clustering != t.clustering:
            addable = not state.clustering and bool(t.related) and cat.CLUSTERING_IS_INDEX
            out.append(
                Change(
                    "create_index" if addable else "change_clustering",
                    t.key,
                    Label.ADDITIVE if addable else Label.BREAKING,
                    not addable,
                    f"clustered by ({', '.join(state.clustering)}) in the warehouse, "
                    f"({', '.join(t.clustering)}) in the packs",
                    APPLIED if addable else f"{REFUSED}: re-clustering rewrites the table",
                    tuple(t.related) if addable else (),
                )
            )
    return out
