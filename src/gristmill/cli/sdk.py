"""``gristmill sdk``: typed Python helpers for a pack's event types."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gristmill.cli.common import DataDirOpt, console, fail, make_settings
from gristmill.codegen import generate
from gristmill.core.errors import ConfigError
from gristmill.pack.loader import load_packs


def sdk(
    pack: Annotated[str, typer.Option("--pack", "-p", help="The pack to generate for.")],
    out: Annotated[
        Path | None,
        typer.Option(help="Write the module here (default: print it).", show_default=False),
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Generate a Python module with one typed method per event type of the pack."""
    settings = make_settings(data_dir, [pack])
    try:
        loaded = load_packs(settings.resolved_packs_dir, [pack])[pack]
    except ConfigError as exc:
        fail(str(exc))
    source = generate(loaded)
    if out is None:
        typer.echo(source, nl=False)
        return
    out.write_text(source)
    console.print(f"wrote {out} ({len(loaded.spec.event_types)} event types)", highlight=False)
