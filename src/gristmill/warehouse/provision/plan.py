"""Build, hash and apply a provisioning plan.

The plan document is deterministic: no clock in it, keys sorted, lists in pack order (the
order statements must run in) or sorted, so an unchanged warehouse gives byte-identical JSON
and CI can diff it. Its hash is the sha256 of the canonical JSON (sorted keys, no spaces)
without the two fields outside it (``plan_hash`` itself and the Gristmill version), so
``--apply --plan-hash H`` applies only the plan a person reviewed.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from sqlglot import exp

from gristmill import __version__
from gristmill.config import Settings
from gristmill.pack.models import Pack
from gristmill.rollup.maintain import analytics_ddl
from gristmill.warehouse.base import Warehouse
from gristmill.warehouse.provision.contract import contract
from gristmill.warehouse.provision.desired import desired_state
from gristmill.warehouse.provision.diff import changes
from gristmill.warehouse.provision.model import Catalogue, Change, Desired, Label
from gristmill.warehouse.registry import ENGINES, capabilities, dialect, render_ddl

FORMAT_VERSION = "1.0"
"""Bumped in its minor part when fields are added, in its major part when one changes
meaning (Terraform's ``show -json`` does the same)."""
UNHASHED = ("plan_hash", "gristmill_version")


def catalog_module(target: str) -> ModuleType:
    """The engine's ``catalog.py``, beside its ``factory.py`` (one folder per engine)."""
    return importlib.import_module(ENGINES[target].rsplit(".", 1)[0] + ".catalog")


def desired(target: str, packs: Sequence[Pack], settings: Settings) -> Desired:
    d = dialect(target)
    extra = analytics_ddl(list(packs), d, capabilities(target))
    return desired_state(render_ddl(target, packs, settings, extra), d, catalog_module(target))


def read_catalogue(wh: Warehouse, target: str, want: Desired) -> Catalogue:
    cat = catalog_module(target)
    schemas = sorted({s.name for s in want.schemas} | {t.ref.db for t in want.tables})
    result: Catalogue = cat.read(wh, schemas, [t.ref for t in want.tables])
    return result


EMPTY = Catalogue(frozenset(), {})


def canonical(doc: dict[str, Any]) -> bytes:
    hashed = {k: v for k, v in doc.items() if k not in UNHASHED}
    return json.dumps(hashed, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def render_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class Plan:
    target: str
    changes: tuple[Change, ...]
    document: dict[str, Any]

    @property
    def hash(self) -> str:
        return str(self.document["plan_hash"])

    @property
    def blocking(self) -> list[Change]:
        return [c for c in self.changes if c.blocking]

    @property
    def statements(self) -> list[str]:
        return [s for c in self.changes for s in c.statements]


def make_plan(
    target: str,
    packs: Sequence[Pack],
    settings: Settings,
    catalogue: Catalogue,
    want: Desired,
    *,
    live: bool,
) -> Plan:
    d = dialect(target)
    cat = catalog_module(target)
    found = changes(want, catalogue, cat, d)
    doc: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "target": target,
        "dialect": d,
        "packs": [p.name for p in packs],
        "catalogue": "live" if live else "offline: nothing read, every object is created",
        "changes": [c.as_dict() for c in found],
        "summary": {
            **{str(lab): sum(c.label is lab for c in found) for lab in Label},
            "blocking": sum(c.blocking for c in found),
            "statements": sum(len(c.statements) for c in found),
        },
        "statements": [s for c in found for s in c.statements],
        "contract": contract(packs, settings, d, cat, capabilities(target)),
        "gristmill_version": __version__,
    }
    doc["plan_hash"] = hashlib.sha256(canonical(doc)).hexdigest()
    return Plan(target, tuple(found), doc)


def apply(wh: Warehouse, plan: Plan) -> int:
    """Run exactly the plan's statements; refuse one with blocking changes."""
    if plan.blocking:
        raise ValueError(f"{len(plan.blocking)} blocking change(s)")
    catalog_module(plan.target).execute(wh, plan.statements)
    return len(plan.statements)


def count_rows(wh: Warehouse, target: str, ref: exp.Table) -> int:
    cat = catalog_module(target)
    return int(cat.scalar(wh, cat.render(exp.select(exp.func("count", exp.Star())).from_(ref))))


def drop_tables(wh: Warehouse, target: str, refs: Sequence[exp.Table]) -> None:
    cat = catalog_module(target)
    cat.execute(wh, [cat.render(exp.Drop(tables=[r], kind="TABLE", exists=True)) for r in refs])
