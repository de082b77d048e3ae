"""``gristmill schema pins|pin``: which schema version each source's unversioned events mean.

A source is pinned to the newest version when it first sends an event type without
``schema_version`` (docs/packs.md, *Versions*). Moving a pin is how an operator migrates a
source once its client sends the new shape; collectors pick the move up within 30 s.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from gristmill.cli.common import DataDirOpt, JsonOpt, console, fail, make_settings, print_json
from gristmill.meta.store import MetaStore
from gristmill.pack.loader import load_pack

app = typer.Typer(help="Schema version pins per source.", no_args_is_help=True)


def _store(data_dir: DataDirOpt) -> MetaStore:
    settings = make_settings(data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return MetaStore(settings.meta_database_url)


@app.command("pins")
def pins(
    pack: Annotated[str | None, typer.Option("--pack", "-p", help="Only this pack.")] = None,
    data_dir: DataDirOpt = None,
    json: JsonOpt = False,
) -> None:
    """List the pins: pack, source, event type, version, since when and by whom."""
    store = _store(data_dir)
    try:
        rows = [
            {
                "pack": p.pack,
                "source": p.source,
                "event_type": p.event_type,
                "version": p.version,
                "pinned_at": p.pinned_at.isoformat(),
                "pinned_by": p.pinned_by,
            }
            for p in store.pins.list(pack)
        ]
    finally:
        store.close()
    if json:
        print_json(rows)
        return
    t = Table(title="Schema version pins")
    for col in ("pack", "source", "event_type", "version", "pinned_at", "pinned_by"):
        t.add_column(col)
    for r in rows:
        t.add_row(*(str(r[c]) for c in r))
    console.print(t)


@app.command("pin")
def pin(
    pack: Annotated[str, typer.Option("--pack", "-p", help="The pack.")],
    source: Annotated[str, typer.Option(help="The source (of its write key).")],
    event_type: Annotated[str, typer.Option("--event-type", help="The event type.")],
    version: Annotated[int, typer.Option(help="The version its unversioned events mean.")],
    data_dir: DataDirOpt = None,
) -> None:
    """Move a source's pin (for example to v2 once its client sends the new shape)."""
    settings = make_settings(data_dir)
    spec = load_pack(settings.resolved_packs_dir / pack).spec
    et = spec.event_types.get(event_type)
    if et is None:
        fail(f"pack {pack!r} has no event type {event_type!r}")
    assert et is not None
    if version not in et.versions:
        fail(f"{event_type!r} has no version {version} (versions: {et.versions})")
    store = _store(data_dir)
    try:
        store.pins.set(pack, source, event_type, version)
    finally:
        store.close()
    console.print(f"{pack}/{source} {event_type}: unversioned events now mean v{version}")
