"""``gristmill provision`` as plan, diff and migrate: the desired tables (the DDL an engine
renders for the packs) against the live catalogue (each engine's ``catalog.py``), the changes
labelled additive, breaking or destructive, a deterministic hashed plan, and its apply."""

from gristmill.warehouse.provision.contract import table_retention
from gristmill.warehouse.provision.model import Catalogue, Change, Label, TableState
from gristmill.warehouse.provision.plan import (
    EMPTY,
    FORMAT_VERSION,
    Plan,
    apply,
    canonical,
    count_rows,
    desired,
    drop_tables,
    make_plan,
    read_catalogue,
    render_json,
)

__all__ = [
    "EMPTY",
    "FORMAT_VERSION",
    "Catalogue",
    "Change",
    "Label",
    "Plan",
    "TableState",
    "apply",
    "canonical",
    "count_rows",
    "desired",
    "drop_tables",
    "make_plan",
    "read_catalogue",
    "render_json",
    "table_retention",
]
