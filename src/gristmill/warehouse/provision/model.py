"""What a provisioning plan is made of: the catalogue as read, the desired tables as rendered,
and the changes between them, each labelled by what it does to data already stored."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from sqlglot import exp


class Label(StrEnum):
    ADDITIVE = "additive"
    """Adds a schema, table, column or index; nothing stored changes meaning."""
    BREAKING = "breaking"
    """Changes how stored rows are typed or laid out (type, partitioning, clustering)."""
    DESTRUCTIVE = "destructive"
    """Would drop stored data (a column the packs no longer have, a reset)."""


@dataclass(frozen=True, slots=True)
class TableState:
    """One table as the engine's catalogue describes it, normalised by the engine's
    ``catalog.py`` so it compares with the rendered DDL."""

    columns: dict[str, str]
    """Column name -> normalised type, in table order."""
    partitioning: str | None = None
    clustering: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Catalogue:
    schemas: frozenset[str]
    tables: dict[str, TableState]
    """``schema.table`` -> state; absent tables are absent."""


@dataclass(slots=True)
class DesiredTable:
    key: str
    """``schema.table`` as the engine names it (a BigQuery dataset prefix included)."""
    ref: exp.Table
    create: str
    columns: list[exp.ColumnDef]
    related: list[str] = field(default_factory=list)
    """Statements that belong to the table (PostgreSQL's clustering index)."""
    partitioning: str | None = None
    clustering: tuple[str, ...] = ()


@dataclass(slots=True)
class DesiredSchema:
    name: str
    statements: list[str]


@dataclass(slots=True)
class Desired:
    schemas: list[DesiredSchema]
    tables: list[DesiredTable]


@dataclass(frozen=True, slots=True)
class Change:
    action: str
    target: str
    label: Label
    blocking: bool
    detail: str
    contract: str
    """What Gristmill does about it."""
    statements: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "action": self.action,
            "object": self.target,
            "label": str(self.label),
            "blocking": self.blocking,
            "detail": self.detail,
            "contract": self.contract,
            "statements": list(self.statements),
        }
