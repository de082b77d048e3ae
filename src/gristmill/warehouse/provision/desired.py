"""The desired state, read from the very DDL an engine renders for the packs: every
``CREATE TABLE … (columns)`` is a table to diff, schema statements (and fixed text after them,
PostgreSQL's functions) belong to their schema, an index belongs to its table.

Reading the rendered DDL instead of the pack keeps one truth: the plan can only ask for what
``provision`` has always created, on every engine, rollup and system tables included.
PostgreSQL's ``CREATE TABLE … PARTITION OF`` (partitions ahead of time) is left out: which
partitions exist depends on the clock, and the loader creates any it needs before a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import sqlglot
from sqlglot import exp

from gristmill.warehouse.provision.model import Desired, DesiredSchema, DesiredTable


def table_key(ref: exp.Table) -> str:
    return f"{ref.db}.{ref.name}"


def _parse(text: str, dialect: str) -> exp.Expr:
    # Fixed text sqlglot does not model (CREATE FUNCTION …) parses as a Command, quietly.
    with _Quiet():
        return sqlglot.parse_one(text, read=dialect)


class _Quiet:
    """Silence sqlglot's "falling back to a Command" warning for the fixed function text."""

    def __enter__(self) -> None:
        import logging

        self._logger = logging.getLogger("sqlglot")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)


def desired_state(statements: Sequence[str], dialect: str, catalog: ModuleType) -> Desired:
    schemas: list[DesiredSchema] = []
    tables: dict[str, DesiredTable] = {}
    for text in statements:
        e = _parse(text, dialect)
        if isinstance(e, exp.Create) and e.kind in ("SCHEMA", "DATABASE"):
            name = e.this.db or e.this.name if isinstance(e.this, exp.Table) else e.this.name
            schemas.append(DesiredSchema(name, [text]))
        elif isinstance(e, exp.Create) and e.kind == "TABLE" and isinstance(e.this, exp.Schema):
            ref = e.this.this
            assert isinstance(ref, exp.Table)
            cols = [c for c in e.this.expressions if isinstance(c, exp.ColumnDef)]
            part, clus = catalog.layout(e)
            tables[table_key(ref)] = DesiredTable(table_key(ref), ref, text, cols, [], part, clus)
        elif isinstance(e, exp.Create) and e.kind == "INDEX":
            on = e.this.args.get("table")
            owner = tables.get(table_key(on)) if isinstance(on, exp.Table) else None
            if owner is None:
                raise ValueError(f"index before its table: {text}")
            owner.related.append(text)
            owner.clustering = catalog.index_clustering(e) or owner.clustering
        elif isinstance(e, exp.Create) and e.kind == "TABLE":
            continue  # a partition of a table: runtime upkeep, see the module docstring
        elif isinstance(e, exp.Alter):
            # ``ADD COLUMN IF NOT EXISTS`` upgrades of older tables (start-up provisioning):
            # the CREATE above already lists those columns, and the diff adds missing ones.
            continue
        elif schemas:
            schemas[-1].statements.append(text)
        else:
            raise ValueError(f"statement outside any schema: {text}")
    return Desired(schemas, list(tables.values()))
