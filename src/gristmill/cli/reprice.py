"""``gristmill reprice``: restate stored spend after the price book changed.

Asks the running server when there is one (the warehouse file is its), else opens the data
directory itself. Prints what changed: rows, spend before and after, buckets recomputed.
"""

from __future__ import annotations

from datetime import UTC, datetime
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
    one_line,
    open_runtime,
    print_json,
    running_server,
)


def _when(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{name}: an ISO date or time, e.g. 2026-11-01") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _money(micros: int) -> str:
    return f"{micros / 1_000_000:,.6f}"


def reprice(
    target: Annotated[str, typer.Argument(help="The pack whose spend to restate.")],
    since: Annotated[str | None, typer.Option(help="From this time (inclusive), ISO.")] = None,
    until: Annotated[str | None, typer.Option(help="Until this time (exclusive), ISO.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count only; change nothing.")] = False,
    data_dir: DataDirOpt = None,
    pack: PacksOpt = None,
    json: JsonOpt = False,
) -> None:
    """Price stored rows again from the pack's current price book and recompute rollups."""
    start, end = _when(since, "--since"), _when(until, "--until")
    settings = make_settings(data_dir, pack)
    client = running_server(settings)
    report: dict[str, Any]
    if client is not None:
        params = {"dry_run": str(dry_run).lower()}
        params |= {k: v.isoformat() for k, v in (("since", start), ("until", end)) if v}
        report = api_call(lambda: client.post(f"/v1/reprice/{target}", None, params=params), client)
    else:
        with open_runtime(settings) as rt:
            if target not in rt.packs or rt.packs[target].price_book is None:
                fail(f"pack {target!r} is not loaded or has no price book")
            with console.status(f"pricing the rows of {target} again"):
                try:
                    report = rt.governance.run_reprice(
                        target, since=start, until=end, dry_run=dry_run, actor="cli"
                    ).as_dict()
                except Exception as exc:
                    fail(f"reprice failed: {type(exc).__name__}: {one_line(exc)}")
    if json:
        print_json(report)
        return
    t = Table(title=f"Reprice of {report['pack']}" + (" (dry run)" if report["dry_run"] else ""))
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("price book", report["book"])
    t.add_row("rows scanned", f"{report['rows_scanned']:,}")
    t.add_row("rows changed", f"{report['rows_changed']:,}")
    t.add_row(
        "newly priced / newly unpriced",
        f"{report['newly_priced']:,} / {report['newly_unpriced']:,}",
    )
    t.add_row("spend before", _money(report["spend_before_micros"]))
    t.add_row("spend after", _money(report["spend_after_micros"]))
    for name, n in report["buckets_recomputed"].items():
        t.add_row(f"buckets recomputed: {name}", f"{n:,}")
    console.print(t)
    if report["dry_run"]:
        console.print("dry run: nothing changed")
