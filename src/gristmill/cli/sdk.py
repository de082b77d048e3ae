"""``gristmill sdk``: typed client code for a pack's event types (Python or TypeScript)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from gristmill import codegen, codegen_ts
from gristmill.cli.common import DataDirOpt, console, fail, make_settings
from gristmill.core.errors import ConfigError
from gristmill.pack.loader import load_packs


class Lang(StrEnum):
    python = "python"
    ts = "ts"


def sdk(
    pack: Annotated[str, typer.Option("--pack", "-p", help="The pack to generate for.")],
    lang: Annotated[
        Lang,
        typer.Option(
            "--lang",
            help="python: a module over gristmill.client; ts: a browser client (docs/sdk-ts.md).",
        ),
    ] = Lang.python,
    out: Annotated[
        Path | None,
        typer.Option(help="Write the source here (default: print it).", show_default=False),
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Generate a client with one typed method per event type of the pack."""
    settings = make_settings(data_dir, [pack])
    try:
        loaded = load_packs(settings.resolved_packs_dir, [pack])[pack]
    except ConfigError as exc:
        fail(str(exc))
    source = codegen_ts.generate(loaded) if lang is Lang.ts else codegen.generate(loaded)
    if out is None:
        typer.echo(source, nl=False)
        return
    out.write_text(source)
    console.print(f"wrote {out} ({len(loaded.spec.event_types)} event types)", highlight=False)
