"""``gristmill load``: loaders only (the scaled-out mode). Run any number of them.

Over a broker log each process takes the leases of free partitions and loads them; over the
embedded SQLite log it is the one loader of that file. Offsets are committed to the log only
after the warehouse committed the batch.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Annotated

import typer

from gristmill.cli.common import (
    DataDirOpt,
    PacksOpt,
    console,
    fail,
    make_settings,
    stop_on_signals,
)
from gristmill.config import Settings
from gristmill.load.pool import SplitLoads
from gristmill.runtime import Runtime

log = logging.getLogger(__name__)


def _runtime(settings: Settings, max_partitions: int | None, attempts: int = 8) -> Runtime:
    """Start-up provisions the warehouse idempotently; loaders starting together can still
    collide on the catalog (PostgreSQL: deadlock, "tuple concurrently updated"), so a failed
    start is retried rather than leaving a partition without its loader."""
    for attempt in range(1, attempts + 1):
        try:
            return Runtime(settings, "load", max_partitions=max_partitions)
        except SplitLoads:
            raise
        except Exception as exc:
            if attempt == attempts:
                raise
            log.warning("start-up failed (%s); retrying", exc)
            time.sleep(min(5.0, 0.2 * 2**attempt))
    raise AssertionError("unreachable")


def load(
    data_dir: DataDirOpt = None,
    pack: PacksOpt = None,
    max_partitions: Annotated[
        int | None,
        typer.Option(
            help="Most partitions this process loads at once (default: all free). Not below "
            "the log's partitions on ClickHouse, whose loads are not transactions."
        ),
    ] = None,
) -> None:
    """Load from the log into the warehouse until interrupted (SIGINT or SIGTERM)."""
    settings = make_settings(data_dir, pack)
    try:
        rt = _runtime(settings, max_partitions)
    except SplitLoads as exc:
        fail(str(exc), 2)
    done = threading.Event()
    stop_on_signals(done)
    rt.start()
    console.print(
        f"gristmill loading {settings.log.type} log {rt.log.log_id} into {rt.warehouse.name}"
    )
    try:
        done.wait()
    finally:
        rt.stop()
