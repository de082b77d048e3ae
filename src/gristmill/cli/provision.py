"""``gristmill provision``: the warehouse DDL of the packs for a target engine; apply it, and
write the provisioning plan.

Without ``--apply`` nothing is opened or connected: the DDL is rendered from the packs, so a
platform team can review it (or run it themselves) before granting Gristmill any access.
With ``--apply`` the statements run against the configured warehouse; every one is idempotent,
and the command reports whether the catalog changed (a second apply reports no change).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from gristmill.cli.common import DataDirOpt, PacksOpt, console, fail, make_settings
from gristmill.config import (
    BigQuerySettings,
    ClickHouseSettings,
    DuckDBSettings,
    PostgresSettings,
    Settings,
    SnowflakeSettings,
)
from gristmill.pack.loader import load_packs
from gristmill.pack.models import Pack
from gristmill.rollup.maintain import analytics_ddl, provision_analytics
from gristmill.rollup.spec import rollup_table
from gristmill.sql.ddl import table_ref
from gristmill.sql.system import SYSTEM_TABLES
from gristmill.warehouse.base import Warehouse
from gristmill.warehouse.plan import provisioning_plan
from gristmill.warehouse.registry import (
    ENGINES,
    capabilities,
    dialect,
    open_warehouse,
    render_ddl,
    schema_files,
)

DEFAULTS: dict[str, Any] = {
    "duckdb": DuckDBSettings,
    "postgres": PostgresSettings,
    "clickhouse": ClickHouseSettings,
    "bigquery": BigQuerySettings,
    "snowflake": SnowflakeSettings,
}


def _for_target(settings: Settings, target: str) -> Settings:
    """Settings whose warehouse is ``target``: the configured section when it is that engine,
    else that engine's defaults."""
    if settings.warehouse.type == target:
        return settings
    return settings.model_copy(update={"warehouse": DEFAULTS[target]()})


def catalog(wh: Warehouse, packs: list[Pack]) -> dict[str, dict[str, str]]:
    """Columns of every table Gristmill provisions: what an apply may change."""
    refs = [ref for ref, _ in SYSTEM_TABLES]
    for pack in packs:
        refs += [table_ref(pack.dataset, t) for t in pack.spec.tables]
        refs += [rollup_table(pack, n) for n in pack.spec.rollups]
    return {f"{r.db}.{r.name}": wh.columns_of(r) for r in refs}


def provision(
    target: Annotated[
        str | None,
        typer.Option(
            help="duckdb, postgres, clickhouse, bigquery or snowflake (default: the configured "
            "warehouse, GRISTMILL_WAREHOUSE__TYPE).",
            show_default=False,
        ),
    ] = None,
    apply: Annotated[bool, typer.Option("--apply", help="Run the DDL (idempotent).")] = False,
    plan: Annotated[
        Path | None,
        typer.Option(help="Write the provisioning plan (JSON) to this file.", show_default=False),
    ] = None,
    schemas: Annotated[
        Path | None,
        typer.Option(
            help="Write the table schemas as JSON files (<table>.schema.json) to this folder "
            "(bigquery).",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    packs: PacksOpt = None,
) -> None:
    """Print the warehouse DDL for the packs; with --apply, run it; with --plan, write the
    plan (tables, columns, partitioning, clustering, retention, feeding log streams)."""
    settings = make_settings(data_dir, packs)
    target = target or settings.warehouse.type
    if target not in ENGINES or target not in DEFAULTS:
        fail(f"unknown target {target!r}; one of {', '.join(sorted(ENGINES))}")
    settings = _for_target(settings, target)
    loaded = list(load_packs(settings.resolved_packs_dir, settings.packs).values())
    extra = analytics_ddl(loaded, dialect(target), capabilities(target))
    statements = render_ddl(target, loaded, settings, extra)
    files = schema_files(target, loaded) if schemas is not None else None
    if schemas is not None and files is None:
        fail(f"the {target} target has no schema files; --schemas is for bigquery")
    if apply:
        try:
            wh = open_warehouse(settings)
        except Exception as exc:
            fail(f"cannot open the {target} warehouse: {exc}")
        try:
            before = catalog(wh, loaded)
            provision_analytics(wh, loaded)
            after = catalog(wh, loaded)
        finally:
            wh.close()
        changed = sorted(k for k in after if after[k] != before.get(k))
    for stmt in statements:
        console.print(f"{stmt};", markup=False, highlight=False, soft_wrap=True)
    if apply:
        if changed:
            console.print(f"-- applied to {target}: created or changed {', '.join(changed)}")
        else:
            console.print(f"-- applied to {target}: already up to date, nothing changed")
    if schemas is not None and files is not None:
        schemas.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (schemas / name).write_text(text)
        console.print(f"-- {len(files)} table schemas written to {schemas}", highlight=False)
    if plan is not None:
        doc = provisioning_plan(target, loaded, settings, statements)
        plan.write_text(json.dumps(doc, indent=2) + "\n")
        console.print(f"-- plan written to {plan}", highlight=False)
