"""``gristmill rollups check|rebuild``: compare rollups with their rows; rebuild them.

Loads keep rollups by merging each batch's aggregates (or recomputing touched buckets); the
rows stay the oracle. ``check`` exits 1 when a rollup differs from what its rows give, so it
can run from cron or CI. Asks the running server when there is one (the warehouse file is
its), else opens the data directory itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gristmill.cli.common import (
    DataDirOpt,
    JsonOpt,
    PacksOpt,
    api_call,
    console,
    fail,
    make_settings,
    open_runtime,
    print_json,
    running_server,
)
from gristmill.rollup import repair

app = typer.Typer(help="Check rollups against their rows; rebuild them.", no_args_is_help=True)

RollupOpt = Annotated[str | None, typer.Option("--rollup", help="One rollup (default: all).")]


def _local(
    data_dir: Path | None, pack: list[str] | None, target: str, rollup: str | None, do: str
) -> dict[str, Any]:
    settings = make_settings(data_dir, pack)
    client = running_server(settings)
    path = f"/v1/rollups/{target}/{do}"
    params = {"rollup": rollup} if rollup else None
    if client is not None:
        if do == "check":
            return api_call(lambda: client.get(path, **(params or {})), client)
        return api_call(lambda: client.post(path, None, params=params), client)
    with open_runtime(settings) as rt:
        if target not in rt.packs:
            fail(f"pack {target!r} is not loaded (loaded: {', '.join(sorted(rt.packs))})")
        p = rt.packs[target]
        names = [rollup] if rollup else list(p.spec.rollups)
        unknown = [n for n in names if n not in p.spec.rollups]
        if unknown:
            fail(f"pack {target!r} declares no rollup {unknown[0]!r}")
        items: list[dict[str, Any]] = []
        with console.status(f"{do} rollups of {target}"):
            for n in names:
                if do == "check":
                    items.append(repair.check(rt.warehouse, p, n).as_dict())
                else:
                    items.append({"rollup": n, "rows": repair.rebuild(rt.warehouse, p, n)})
        return {"pack": target, "items": items}


@app.command("check")
def check(
    target: Annotated[str, typer.Argument(help="The pack whose rollups to check.")],
    rollup: RollupOpt = None,
    data_dir: DataDirOpt = None,
    pack: PacksOpt = None,
    json: JsonOpt = False,
) -> None:
    """Compare each rollup with what its rows give; exit 1 if any differs."""
    report = _local(data_dir, pack, target, rollup, "check")
    if json:
        print_json(report)
    else:
        t = Table(title=f"Rollups of {report['pack']} against their rows")
        for col in ("rollup", "stored", "expected", "missing", "extra", "different", "ok"):
            t.add_column(col, justify="left" if col == "rollup" else "right")
        for it in report["items"]:
            t.add_row(
                it["rollup"],
                f"{it['stored_rows']:,}",
                f"{it['expected_rows']:,}",
                str(it["missing"]),
                str(it["extra"]),
                str(it["different"]),
                "yes" if it["ok"] else "NO",
            )
        console.print(t)
        for it in report["items"]:
            for ex in it["examples"]:
                console.print(
                    f"{it['rollup']} {ex['key']}: stored {ex['stored']} rows say {ex['expected']}"
                )
    if not all(it["ok"] for it in report["items"]):
        raise typer.Exit(1)


@app.command("rebuild")
def rebuild(
    target: Annotated[str, typer.Argument(help="The pack whose rollups to rebuild.")],
    rollup: RollupOpt = None,
    data_dir: DataDirOpt = None,
    pack: PacksOpt = None,
    json: JsonOpt = False,
) -> None:
    """Replace each rollup with what its rows give (the repair path)."""
    report = _local(data_dir, pack, target, rollup, "rebuild")
    if json:
        print_json(report)
        return
    for it in report["items"]:
        console.print(f"rebuilt {report['pack']}.{it['rollup']}: {it['rows']:,} rows")
