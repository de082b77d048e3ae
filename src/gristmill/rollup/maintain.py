"""Provisioning and maintenance glue: which statements each load runs after each table, and
creating (or rebuilding) rollup tables when a pack declares or changes them."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from sqlglot import exp

from gristmill.pack.models import Pack
from gristmill.rollup.freshness import freshness_ddl, freshness_refresh
from gristmill.rollup.spec import full_rebuild, refresh, rollup_ddl, rollup_table
from gristmill.warehouse.base import AfterInsert, Warehouse

log = logging.getLogger(__name__)


def after_insert(
    packs: Mapping[str, Pack], dialect: str
) -> dict[tuple[str, str], tuple[AfterInsert, ...]]:
    """(pack, table) -> what every load of that table also does, in its transaction."""
    out: dict[tuple[str, str], tuple[AfterInsert, ...]] = {}
    for pack in packs.values():
        for table in pack.spec.tables:
            steps = [
                refresh(pack, name, r, dialect)
                for name, r in pack.spec.rollups.items()
                if r.table == table
            ]
            steps.append(freshness_refresh(pack, table))
            out[(pack.name, table)] = tuple(steps)
    return out


def _expected_columns(create: exp.Create) -> list[str]:
    return [cd.this.name for cd in create.this.expressions if isinstance(cd, exp.ColumnDef)]


def provision_analytics(wh: Warehouse, packs: Sequence[Pack]) -> list[str]:
    """Create the freshness table and every rollup table; a rollup that is new, or whose
    columns changed with the pack, is (re)built from rows. Rollups are derived data, so a
    rebuild loses nothing."""
    done = wh.provision(packs, apply=True, extra=[freshness_ddl()])
    for pack in packs:
        for name, r in pack.spec.rollups.items():
            ref = rollup_table(pack, name)
            create = rollup_ddl(pack, name, r)
            have = wh.columns_of(ref)
            if have and list(have) != _expected_columns(create):
                log.warning("rollup %s.%s changed with the pack; rebuilding it", pack.name, name)
                wh.execute(exp.Drop(tables=[ref], kind="TABLE", exists=True))
                have = {}
            if not have:
                done += wh.provision([], apply=True, extra=[create])
                for stmt in full_rebuild(pack, name, r, wh.dialect):
                    wh.execute(stmt)
                done.append(f"rebuilt rollup {pack.name}.{name}")
    return done
