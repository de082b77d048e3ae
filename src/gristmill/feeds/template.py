"""Feed templates: what a pack accepts as a CSV import, declared in ``<pack>/feeds.yaml``.

A template names its columns (type, required, aliases), the lookup that resolves a column to
an entity of the tenant (products), and the transform into fact rows of one pack table:
each fact column is an expression over template columns and lookup fields, parsed with
sqlglot and checked against that allowlist, so a template can compute but never reach
anything else. Kept beside ``pack.yaml`` rather than inside it: the pack format stays about
events, and a pack without feeds has nothing to declare.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

import sqlglot
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlglot import exp

from gristmill.core.errors import ConfigError
from gristmill.pack.models import IDENT, ColumnType, Pack

FEEDS_FILE = "feeds.yaml"
Ident = Annotated[str, Field(pattern=IDENT)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CellType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    MONEY = "money"
    """Stored as integer cents; at most two decimals."""
    DATE = "date"


STAGED_TYPE: dict[CellType, ColumnType] = {
    CellType.STRING: ColumnType.STRING,
    CellType.INTEGER: ColumnType.INT64,
    CellType.MONEY: ColumnType.INT64,
    CellType.DATE: ColumnType.DATE,
}


class FeedColumn(_Model):
    type: CellType = CellType.STRING
    required: bool = False
    aliases: list[str] = []
    """Other header spellings; all headers match case- and space-insensitively."""
    min: int | None = None
    """Smallest accepted value (integers and money in cents)."""
    max_length: int = Field(200, ge=1)
    description: str = ""


class LookupSpec(_Model):
    """Resolve ``column`` to an entity of the caller's tenant: exact (case-insensitive), then
    fuzzy with a similarity score of at least ``threshold`` (0-100)."""

    column: Ident
    entity: str = "products"
    threshold: float = Field(70, ge=0, le=100)


class IntoSpec(_Model):
    """How staged rows become rows of a pack table."""

    table: Ident
    occurred_at: Ident
    """A date column of the template: the fact's event time (midnight UTC of that day)."""
    event_type: str
    order_id: Ident | None = None
    """Column grouping lines into orders; a line without one is its own order."""
    totals: list[Ident] = []
    """Fact columns (integer cents) summed into the feed's summary metrics."""
    columns: dict[Ident, str]
    """fact column -> expression over template columns and the lookup fields
    (``product_id``, ``product_name``, ``unit_cost``)."""


class DateOrder(StrEnum):
    AUTO = "auto"
    """Decide from the file: a ``13/04/2025`` means day-first, ``04/13/2025`` month-first;
    a file whose every such date reads both ways asks (preview) and needs the choice
    (commit)."""
    DAY_FIRST = "day_first"
    MONTH_FIRST = "month_first"


class SummaryRowsSpec(_Model):
    """How summary (``Total``) rows are recognised; see :mod:`gristmill.feeds.summary`."""

    words: list[str] = []
    """Labels beside the built-in ones (``Total``, ``Grand Total``, ``Summe`` …)."""
    sum_columns: list[Ident] | None = None
    """Numeric columns compared with the sums of the rows above; default every integer and
    money column."""
    amount: tuple[Ident, Ident] | None = None
    """``[quantity, price]``: a summary row's money cell may carry sum(quantity x price)."""


class FeedSpec(_Model):
    title: str = ""
    description: str = ""
    staging_table: Ident | None = None
    """Warehouse table holding committed rows until the transform; default ``staging_<feed>``."""
    tenant: Ident = "business_id"
    """The claim (and fact column) every row of an import belongs to."""
    roles: list[Ident] = Field(min_length=1)
    """Pack roles that may import (the operator always may)."""
    columns: dict[Ident, FeedColumn]
    lookup: LookupSpec | None = None
    into: IntoSpec | None = None
    """No ``into``: the feed updates the lookup entities instead (costs feed)."""
    updates: dict[Ident, Ident] = {}
    """For feeds without ``into``: entity field -> template column (``cost_price: cost``)."""
    date_order: DateOrder = DateOrder.AUTO
    """How ``03/04/2025`` reads: ``day_first``, ``month_first`` or ``auto`` (from the file)."""
    summary_rows: SummaryRowsSpec = SummaryRowsSpec()


class FeedsFile(_Model):
    feeds: dict[Ident, FeedSpec]


LOOKUP_FIELDS = {
    "product_id": ColumnType.INT64,
    "product_name": ColumnType.STRING,
    "unit_cost": ColumnType.INT64,
}
"""What a product lookup adds to each staged row (``unit_cost`` in cents, null if unknown)."""


@dataclass(frozen=True)
class Feed:
    """A checked template of one pack, with the parsed fact expressions."""

    pack: Pack
    name: str
    spec: FeedSpec
    expressions: dict[str, exp.Expr]

    @property
    def staging_table(self) -> str:
        return self.spec.staging_table or f"staging_{self.name}"

    @property
    def sum_columns(self) -> tuple[str, ...]:
        cols = self.spec.summary_rows.sum_columns
        if cols is None:
            numeric = (CellType.INTEGER, CellType.MONEY)
            cols = [c for c, s in self.spec.columns.items() if s.type in numeric]
        return tuple(cols)

    @property
    def date_column(self) -> str | None:
        return next((c for c, s in self.spec.columns.items() if s.type is CellType.DATE), None)

    @property
    def required(self) -> list[str]:
        return [c for c, s in self.spec.columns.items() if s.required]

    def staged_columns(self) -> dict[str, ColumnType]:
        out = {c: STAGED_TYPE[s.type] for c, s in self.spec.columns.items()}
        if self.spec.lookup is not None:
            for name, t in LOOKUP_FIELDS.items():
                out.setdefault(name, t)
        return out


def _check(pack: Pack, name: str, spec: FeedSpec) -> Feed:
    where = f"{pack.root / FEEDS_FILE} feeds.{name}"
    staged = {c: STAGED_TYPE[s.type] for c, s in spec.columns.items()}
    if spec.lookup is not None:
        if spec.lookup.column not in spec.columns:
            raise ConfigError(f"{where}.lookup.column: unknown column {spec.lookup.column!r}")
        staged.update({k: v for k, v in LOOKUP_FIELDS.items() if k not in staged})
    for role in spec.roles:
        if role not in pack.spec.roles:
            raise ConfigError(f"{where}.roles: unknown role {role!r}")
    sr = spec.summary_rows
    for col in [*(sr.sum_columns or []), *(sr.amount or ())]:
        c = spec.columns.get(col)
        if c is None or c.type not in (CellType.INTEGER, CellType.MONEY):
            raise ConfigError(f"{where}.summary_rows: {col!r} is no integer or money column")
    exprs: dict[str, exp.Expr] = {}
    if spec.into is not None:
        into = spec.into
        if into.table not in pack.spec.tables:
            raise ConfigError(f"{where}.into.table: unknown table {into.table!r}")
        if into.event_type not in pack.spec.event_types:
            raise ConfigError(f"{where}.into.event_type: unknown event type {into.event_type!r}")
        if staged.get(into.occurred_at) != ColumnType.DATE:
            raise ConfigError(f"{where}.into.occurred_at: {into.occurred_at!r} is no date column")
        if any(r.table == into.table for r in pack.spec.rollups.values()):
            raise ConfigError(
                f"{where}.into.table: {into.table!r} has rollups; feed loads replace rows "
                "and would leave them stale"
            )
        table_cols = {c.name for c in pack.columns(into.table)}
        for needed in (spec.tenant, "data_feed_id"):
            if needed not in table_cols:
                raise ConfigError(f"{where}.into.table: {into.table!r} lacks column {needed!r}")
        for col, text in into.columns.items():
            if col not in table_cols:
                raise ConfigError(f"{where}.into.columns.{col}: not a column of {into.table}")
            try:
                tree = sqlglot.parse_one(text)
            except sqlglot.errors.ParseError as e:
                raise ConfigError(f"{where}.into.columns.{col}: {e}") from e
            for node in tree.walk():
                if isinstance(node, exp.Column) and node.name not in staged:
                    raise ConfigError(
                        f"{where}.into.columns.{col}: unknown name {node.name!r} "
                        f"(known: {', '.join(staged)})"
                    )
                if isinstance(node, (exp.Select, exp.Subquery, exp.Table, exp.Anonymous)):
                    raise ConfigError(f"{where}.into.columns.{col}: only arithmetic allowed")
            exprs[col] = tree
    elif spec.updates:
        for field, col in spec.updates.items():
            if col not in spec.columns or field not in ("cost_price", "selling_price"):
                raise ConfigError(f"{where}.updates.{field}: unknown field or column {col!r}")
    return Feed(pack, name, spec, exprs)


def load_feeds(pack: Pack) -> dict[str, Feed]:
    """The pack's feed templates; none when the pack has no ``feeds.yaml``."""
    path = pack.root / FEEDS_FILE
    if not path.exists():
        return {}
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        spec = FeedsFile.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as e:
        raise ConfigError(f"{path}: {e}") from e
    return {name: _check(pack, name, s) for name, s in spec.feeds.items()}


def find_feeds(packs: Mapping[str, Pack]) -> dict[str, dict[str, Feed]]:
    """Feeds of every served pack that declares any: pack -> feed name -> feed."""
    return {name: f for name, pack in packs.items() if (f := load_feeds(pack))}
