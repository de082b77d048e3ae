"""``gristmill provision``: plan, diff and migrate the warehouse tables of the packs.

It reads the live catalogue of the configured warehouse, compares it with the DDL the packs
need, and prints a plan: every change labelled additive, breaking or destructive, the
blocking ones (never made automatically) flagged, and the seed 002 contract (bus, tables,
JSON paths, partitioning, clustering, retention, dedupe, connector hints) beside it. The plan
is hashed; ``--apply`` runs exactly the statements it printed, ``--apply --plan-hash H`` only
if the fresh plan still hashes to H. A target other than the configured one (or
``--offline``) plans against an empty catalogue without connecting. ``provision reset``
drops a pack's tables, behind confirmations. See docs/provisioning.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import typer
from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.table import Table

from gristmill.cli.common import DataDirOpt, PacksOpt, console, err_console, fail, make_settings
from gristmill.config import Settings, WarehouseSettings, apply_seed_aliases
from gristmill.meta.store import MetaStore
from gristmill.pack.loader import load_packs
from gristmill.pack.models import Pack
from gristmill.warehouse import provision as pv
from gristmill.warehouse.base import Warehouse
from gristmill.warehouse.registry import ENGINES, open_warehouse, schema_files

app = typer.Typer(
    invoke_without_command=True,
    help="Plan and apply the warehouse tables of the packs (docs/provisioning.md).",
)

SYMBOL = {pv.Label.ADDITIVE: "+", pv.Label.BREAKING: "~", pv.Label.DESTRUCTIVE: "-"}


def _engine_sections() -> dict[str, type[BaseModel]]:
    """Engine name -> its settings section, read from the ``type``-tagged union in config: a
    new engine's section and registry entry are all ``--target`` needs."""
    union = get_args(WarehouseSettings)[0]
    return {str(m.model_fields["type"].default): m for m in get_args(union)}


DEFAULTS: dict[str, type[BaseModel]] = _engine_sections()
TargetOpt = Annotated[
    str | None,
    typer.Option(
        "--target",
        "--provider",
        help=f"{', '.join(e for e in ENGINES if e in DEFAULTS)} (default: the configured "
        "warehouse, GRISTMILL_WAREHOUSE__TYPE).",
        show_default=False,
    ),
]


def _for_target(settings: Settings, target: str) -> Settings:
    """Settings whose warehouse is ``target``: the configured section when it is that engine,
    else that engine's defaults (with seed 002's environment names applied)."""
    if settings.warehouse.type == target:
        return settings
    out = settings.model_copy(update={"warehouse": DEFAULTS[target]()})
    return apply_seed_aliases(out)


def _setup(
    target: str | None, data_dir: Path | None, packs: list[str] | None
) -> tuple[Settings, str, list[Pack], bool]:
    settings = make_settings(data_dir, packs)
    configured = settings.warehouse.type
    target = target or configured
    if target not in ENGINES or target not in DEFAULTS:
        fail(f"unknown target {target!r}; one of {', '.join(sorted(ENGINES))}")
    loaded = list(load_packs(settings.resolved_packs_dir, settings.packs).values())
    return _for_target(settings, target), target, loaded, target == configured


def _nothing_yet(settings: Settings, target: str) -> bool:
    """An embedded warehouse (DuckDB file, chdb folder) that does not exist yet: its
    catalogue is empty, and opening it to find that out would create it (a plan changes
    nothing on disk)."""
    wh = settings.warehouse
    if target not in ("duckdb", "clickhouse") or getattr(wh, "url", None) is not None:
        return False
    return not settings.warehouse_path.exists()


def _open(settings: Settings, target: str) -> Warehouse:
    try:
        return open_warehouse(settings)
    except Exception as exc:
        fail(f"cannot open the {target} warehouse: {exc}")


def _audit(settings: Settings, action: str, target: str, **detail: Any) -> None:
    if settings.meta_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    meta = MetaStore(settings.meta_database_url)
    try:
        meta.governance.audit("cli", action, target, **detail)
    finally:
        meta.close()


def _print_human(plan: pv.Plan) -> None:
    doc = plan.document
    s = doc["summary"]
    title = (
        f"Provisioning plan for {plan.target} ({', '.join(doc['packs'])}; catalogue "
        f"{doc['catalogue']}): {s['additive']} additive, {s['breaking']} breaking, "
        f"{s['destructive']} destructive, {s['blocking']} blocking"
    )
    if not plan.changes:
        console.print(
            f"{title}\nNo changes: the warehouse matches the packs.",
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print(title, highlight=False, soft_wrap=True)
        t = Table(box=box.SIMPLE_HEAD)
        t.add_column("", no_wrap=True)
        t.add_column("change", no_wrap=True)
        t.add_column("object", overflow="fold")
        t.add_column("label", no_wrap=True)
        t.add_column("detail", overflow="fold", ratio=1)
        for c in plan.changes:
            t.add_row(
                SYMBOL[c.label],
                c.action,
                c.target,
                f"{c.label}, BLOCKING" if c.blocking else str(c.label),
                f"{c.detail}; {c.contract}" if c.blocking else c.detail,
            )
        # Piped or captured output is not cut to 80 columns: a plan is read in CI logs too.
        wide = console if console.is_terminal else Console(width=max(console.width, 160))
        wide.print(t)
    for stmt in plan.statements:
        console.print(f"{stmt};", markup=False, highlight=False, soft_wrap=True)
    console.print(f"-- plan sha256:{plan.hash}", markup=False, highlight=False, soft_wrap=True)


@app.callback()
def provision(
    ctx: typer.Context,
    target: TargetOpt = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="Run the plan's statements (refused if blocking).")
    ] = False,
    plan_hash: Annotated[
        str | None,
        typer.Option(
            "--plan-hash",
            help="With --apply: apply only if the fresh plan has this sha256.",
            show_default=False,
        ),
    ] = None,
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Plan against an empty catalogue; connect to nothing."),
    ] = False,
    output: Annotated[
        str,
        typer.Option("--format", help="human (table + statements), sql (statements only) or json."),
    ] = "human",
    plan: Annotated[
        Path | None,
        typer.Option(help="Write the plan (provisioning-plan.json) here.", show_default=False),
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
    """Plan the warehouse tables of the packs against the live catalogue; --apply runs it."""
    if ctx.invoked_subcommand is not None:
        return
    if output not in ("human", "sql", "json"):
        fail(f"--format is human, sql or json, not {output!r}")
    if plan_hash is not None and not apply:
        fail("--plan-hash goes with --apply")
    if offline and apply:
        fail("--apply needs the live warehouse; drop --offline")
    settings, target, loaded, configured = _setup(target, data_dir, packs)
    files = schema_files(target, loaded) if schemas is not None else None
    if schemas is not None and files is None:
        fail(f"the {target} target has no schema files; --schemas is for bigquery")
    want = pv.desired(target, loaded, settings)
    live = not offline and (configured or apply) and (apply or not _nothing_yet(settings, target))
    wh = _open(settings, target) if live else None
    try:
        catalogue = pv.read_catalogue(wh, target, want) if wh is not None else pv.EMPTY
        result = pv.make_plan(target, loaded, settings, catalogue, want, live=wh is not None)
        _show(result, output)
        if plan is not None:
            plan.write_text(pv.render_json(result.document))
            if output == "human":
                console.print(f"-- plan written to {plan}", highlight=False)
        if schemas is not None and files is not None:
            schemas.mkdir(parents=True, exist_ok=True)
            for name, text in files.items():
                (schemas / name).write_text(text)
            if output == "human":
                console.print(f"-- {len(files)} table schemas written to {schemas}")
        if apply and wh is not None:
            # Machine-readable output stays parseable: the apply's own lines go to stderr.
            _apply(wh, settings, result, plan_hash, console if output == "human" else err_console)
    finally:
        if wh is not None:
            wh.close()


def _show(result: pv.Plan, output: Literal["human", "sql", "json"] | str) -> None:
    if output == "json":
        console.out(pv.render_json(result.document), end="", highlight=False)
    elif output == "sql":
        for stmt in result.statements:
            console.out(f"{stmt};", highlight=False)
    else:
        _print_human(result)


def _apply(
    wh: Warehouse, settings: Settings, result: pv.Plan, plan_hash: str | None, say: Console
) -> None:
    if plan_hash is not None and plan_hash != result.hash:
        fail(
            f"refused: the plan is now sha256:{result.hash}, not {plan_hash} — the catalogue "
            "or the packs changed since that plan was made; review the new plan and apply it"
        )
    if result.blocking:
        fail(
            f"refused: {len(result.blocking)} blocking change(s) — "
            + "; ".join(f"{c.target}: {c.detail}" for c in result.blocking)
            + ". Nothing was applied; see docs/provisioning.md#blocking-changes"
        )
    if not result.statements:
        say.print(f"-- applied to {result.target}: nothing to do", highlight=False)
        return
    try:
        n = pv.apply(wh, result)
    except Exception as exc:
        fail(f"apply failed: {type(exc).__name__}: {exc}")
    _audit(settings, "provision.apply", result.target, plan_hash=result.hash, statements=n)
    say.print(
        f"-- applied to {result.target}: {n} statements (plan sha256:{result.hash})",
        highlight=False,
        soft_wrap=True,
    )


@app.command("reset")
def reset(
    pack: Annotated[str, typer.Option("--pack", help="The pack whose tables to drop.")],
    yes: Annotated[bool, typer.Option("--yes", help="Really drop (else: show only).")] = False,
    confirm: Annotated[
        str | None,
        typer.Option(help="The pack name again (else it is asked for).", show_default=False),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Drop tables that hold rows too.")] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Drop a pack's warehouse tables (seed 002's "reset the warehouse tables"): shows what it
    would drop; needs --yes and the pack name confirmed; refuses tables with rows unless
    --force; audited. `gristmill provision --apply` creates them again."""
    settings = make_settings(data_dir)
    target = settings.warehouse.type
    found = load_packs(settings.resolved_packs_dir, [pack])
    want = pv.desired(target, list(found.values()), settings)
    mine = [t for t in want.tables if t.ref.db.endswith(found[pack].dataset)]
    wh = _open(settings, target)
    try:
        catalogue = pv.read_catalogue(wh, target, want)
        present = [t for t in mine if t.key in catalogue.tables]
        rows = {t.key: pv.count_rows(wh, target, t.ref) for t in present}
        t = Table(title=f"provision reset --pack {pack}: tables on {target}", title_justify="left")
        t.add_column("table")
        t.add_column("rows", justify="right")
        for key, n in rows.items():
            t.add_row(key, f"{n:,}")
        console.print(t)
        if not present:
            console.print("Nothing to drop.")
            return
        if not yes:
            console.print("Nothing dropped: pass --yes (and --confirm PACK) to drop these tables.")
            return
        typed = confirm if confirm is not None else typer.prompt("Type the pack name to confirm")
        if typed != pack:
            fail(f"refused: {typed!r} is not {pack!r}; nothing dropped")
        holding = [k for k, n in rows.items() if n]
        if holding and not force:
            fail(
                f"refused: {', '.join(holding)} hold rows; pass --force to drop them anyway "
                "(their events stay in the log, but the loader has already moved past them)"
            )
        pv.drop_tables(wh, target, [t.ref for t in present])
    finally:
        wh.close()
    _audit(settings, "provision.reset", pack, tables=sorted(rows), rows=sum(rows.values()))
    console.print(
        f"Dropped {len(present)} tables of {pack}; `gristmill provision --apply` creates them "
        "again.",
        highlight=False,
    )
