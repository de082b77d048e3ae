"""``gristmill load``: loaders only (the scaled-out mode). Run any number of them.

Over a broker log each process takes the leases of free partitions and loads them; over the
embedded SQLite log it is the one loader of that file. Offsets are committed to the log only
after the warehouse committed the batch.
"""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from gristmill.cli.common import DataDirOpt, PacksOpt, console, make_settings
from gristmill.runtime import Runtime


def load(
    data_dir: DataDirOpt = None,
    pack: PacksOpt = None,
    max_partitions: Annotated[
        int | None,
        typer.Option(help="Most partitions this process loads at once (default: all free)."),
    ] = None,
) -> None:
    """Load from the log into the warehouse until interrupted (SIGINT or SIGTERM)."""
    settings = make_settings(data_dir, pack)
    rt = Runtime(settings, "load", max_partitions=max_partitions)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    rt.start()
    console.print(
        f"gristmill loading {settings.log.type} log {rt.log.log_id} into {rt.warehouse.name}"
    )
    try:
        done.wait()
    finally:
        rt.stop()
