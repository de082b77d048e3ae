"""Provisioning and maintenance glue: which statements each load runs after each table, and
creating (or rebuilding) rollup tables when a pack declares or changes them."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from sqlglot import exp

from gristmill.pack.analytics import RollupSpec
from gristmill.pack.models import Pack
from gristmill.rollup import scripted
from gristmill.rollup.delta import delta, rollup_lock, rollup_parts
from gristmill.rollup.freshness import freshness_ddl, freshness_refresh
from gristmill.rollup.spec import PREFIX, full_rebuild, refresh, rollup_ddl, rollup_table
from gristmill.sql.ddl import column_def, create_index, create_table, table_ref
from gristmill.sql.system import SYSTEM_SCHEMA
from gristmill.sql.types import Logical, sql_type
from gristmill.warehouse.base import AfterInsert, Capabilities, Warehouse
from gristmill.warehouse.common import in_one_transaction
from gristmill.warehouse.folds import CLEAR_MARK, mark_of, marks_ddl
from gristmill.warehouse.registry import capabilities

log = logging.getLogger(__name__)


def after_insert(
    packs: Mapping[str, Pack], dialect: str, mode: str = "auto"
) -> dict[tuple[str, str], tuple[AfterInsert, ...]]:
    """(pack, table) -> what every load of that table also does, in its transaction.

    ``mode`` picks how rollups are kept (``LoaderSettings.rollup_mode``): ``auto`` and
    ``delta`` merge the batch's aggregates (where the engine defines the load's fresh rows,
    ``caps.delta_rollups``, or by one MERGE on the ``upsert_by_merge`` engines), ``recompute``
    rebuilds touched buckets from rows."""
    out: dict[tuple[str, str], tuple[AfterInsert, ...]] = {}
    if _by_merge(dialect):
        return _after_insert_by_merge(packs, dialect, mode)
    by_delta = mode != "recompute" and _has_delta(dialect)
    if mode == "delta" and not by_delta:
        raise ValueError(f"{dialect} keeps rollups by recompute only (no delta_rollups)")
    appends = by_delta and capabilities(dialect).rollup_appends
    for pack in packs.values():
        for table in pack.spec.tables:
            rollups = [(n, r) for n, r in pack.spec.rollups.items() if r.table == table]
            steps = [
                delta(pack, n, r, dialect, appends=appends)
                if by_delta
                else refresh(pack, n, r, dialect)
                for n, r in rollups
            ]
            if dialect in LAYOUTS and not by_delta:
                # A recompute over a rollup kept as parts: the parts are folded first.
                steps = [
                    replace(s, parts=rollup_parts(pack, n, r))
                    for s, (n, r) in zip(steps, rollups, strict=True)
                ]
            steps.append(freshness_refresh(pack, table))
            out[(pack.name, table)] = tuple(steps)
    return out


def _by_merge(dialect: str) -> bool:
    try:
        return capabilities(dialect).upsert_by_merge
    except ValueError:  # a dialect that is no engine of the registry
        return False


def _has_delta(dialect: str) -> bool:
    try:
        return capabilities(dialect).delta_rollups
    except ValueError:
        return False


def _after_insert_by_merge(
    packs: Mapping[str, Pack], dialect: str, mode: str = "auto"
) -> dict[tuple[str, str], tuple[AfterInsert, ...]]:
    """Steps for engines that keep rollups by MERGE (:mod:`gristmill.rollup.scripted`):
    ``auto`` and ``delta`` merge the batch's aggregates (one MERGE per rollup), ``recompute``
    rebuilds every touched bucket from rows."""
    step = scripted.refresh if mode == "recompute" else scripted.delta
    out: dict[tuple[str, str], tuple[AfterInsert, ...]] = {}
    for pack in packs.values():
        for table in pack.spec.tables:
            steps = [
                step(pack, name, r, dialect)
                for name, r in pack.spec.rollups.items()
                if r.table == table
            ]
            steps.append(scripted.freshness_refresh(pack, table, dialect))
            out[(pack.name, table)] = tuple(steps)
    return out


DEFS = table_ref(SYSTEM_SCHEMA, "rollup_defs")


LAYOUTS = {"clickhouse": "parts-1"}
"""How an engine stores rollup rows, where it changed since rollups were first kept (ClickHouse:
rows per batch part, partitioned by month): a stored rollup of another layout is rebuilt."""


def definition(pack: Pack, r: RollupSpec, dialect: str = "") -> str:
    """A digest of everything a rollup's numbers depend on: its table, grain, dimensions and
    each metric's type, column and filter, and the engine's layout. Any change means the
    stored rows mean something else, so the rollup is rebuilt."""
    doc: dict[str, object] = {
        "table": r.table,
        "grain": r.grain,
        "dimensions": r.dimensions,
        "metrics": {m: pack.spec.metrics[m].model_dump(mode="json") for m in r.metrics},
    }
    if dialect in LAYOUTS:
        doc["layout"] = LAYOUTS[dialect]
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _defs_ddl(dialect: str) -> exp.Create:
    cols = [
        column_def(c, sql_type(Logical.TEXT, dialect), not_null=True)
        for c in ("pack", "rollup", "definition")
    ]
    return create_table(DEFS, cols)


def analytics_ddl(packs: Sequence[Pack], dialect: str, caps: Capabilities) -> list[exp.Expr]:
    """The freshness and rollup-definition tables and every rollup table, as DDL (for
    ``gristmill provision`` without a connection; :func:`provision_analytics` applies them)."""
    out: list[exp.Expr] = [freshness_ddl(dialect), _defs_ddl(dialect)]
    if caps.rollup_appends:
        out.append(marks_ddl(dialect))
    for pack in packs:
        for name, r in pack.spec.rollups.items():
            out += rollup_tables(pack, name, r, dialect, caps)
    return out


def rebuild_rollup(wh: Warehouse, pack: Pack, name: str) -> None:
    """Replace rollup ``name`` with what its rows give.

    On DuckDB and PostgreSQL in one transaction (readers never see it empty), which on
    PostgreSQL first takes the rollup's advisory lock, as a load's append and a fold do: a
    load that committed between the rebuild's delete and its insert would otherwise be
    counted twice (its appended rows kept, its raw rows read again). Where loads append rollup
    rows, the transaction also clears the rollup's fold mark. Elsewhere (ClickHouse,
    BigQuery, Snowflake) statement by statement: delete, then insert, rerunnable."""
    r = pack.spec.rollups[name]
    stmts: list[tuple[exp.Expr, dict[str, Any]]] = [
        (stmt, {})
        for stmt in [*rollup_lock(pack, name, wh.dialect), *full_rebuild(pack, name, r, wh.dialect)]
    ]
    if wh.caps.rollup_appends:
        mark = mark_of(rollup_table(pack, name))
        stmts += [(stmt.copy(), mark) for stmt in CLEAR_MARK]
    in_one_transaction(wh, stmts)


def rollup_tables(
    pack: Pack, name: str, r: RollupSpec, dialect: str, caps: Capabilities
) -> list[exp.Expr]:
    """A rollup table, and where indexes help, one on its buckets: refreshes delete and reads
    select bucket ranges."""
    out: list[exp.Expr] = [rollup_ddl(pack, name, r, dialect)]
    if caps.secondary_indexes:
        out.append(create_index(rollup_table(pack, name), f"{PREFIX}{name}_bucket", ["bucket"]))
    return out


def provision_analytics(wh: Warehouse, packs: Sequence[Pack]) -> list[str]:
    """Create the freshness table and every rollup table. A rollup that is new, or whose
    definition changed with the pack, is dropped and rebuilt from rows; rollups are derived
    data, so a rebuild loses nothing."""
    extra = [freshness_ddl(wh.dialect), _defs_ddl(wh.dialect)]
    if wh.caps.rollup_appends:
        extra.append(marks_ddl(wh.dialect))
    done = wh.provision(packs, apply=True, extra=extra)
    stored = {
        (r["pack"], r["rollup"]): r["definition"]
        for r in wh.query(exp.select("pack", "rollup", "definition").from_(DEFS)).to_pylist()
    }
    for pack in packs:
        for name, r in pack.spec.rollups.items():
            ref = rollup_table(pack, name)
            digest = definition(pack, r, wh.dialect)
            if wh.table_exists(ref) and stored.get((pack.name, name)) == digest:
                continue
            log.warning("building rollup %s.%s from rows", pack.name, name)
            wh.execute(exp.Drop(tables=[ref], kind="TABLE", exists=True))
            done += wh.provision(
                [], apply=True, extra=rollup_tables(pack, name, r, wh.dialect, wh.caps)
            )
            rebuild_rollup(wh, pack, name)
            key = exp.and_(
                exp.column("pack").eq(exp.Placeholder(this="p")),
                exp.column("rollup").eq(exp.Placeholder(this="r")),
            )
            wh.execute(exp.delete(DEFS).where(key), {"p": pack.name, "r": name})
            wh.execute(
                exp.insert(
                    exp.values(
                        [
                            (
                                exp.Placeholder(this="p"),
                                exp.Placeholder(this="r"),
                                exp.Placeholder(this="d"),
                            )
                        ]
                    ),
                    DEFS,
                ),
                {"p": pack.name, "r": name, "d": digest},
            )
            done.append(f"rebuilt rollup {pack.name}.{name}")
    return done
