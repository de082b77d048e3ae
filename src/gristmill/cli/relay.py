"""``gristmill relay``: ship an application's outbox table into the pipeline."""

from __future__ import annotations

import sys
import threading
import time
from contextlib import ExitStack
from typing import Annotated, Any

import typer
from pydantic import SecretStr

from gristmill.cli.common import DataDirOpt, PacksOpt, fail, make_settings, stop_on_signals
from gristmill.relay import LeaseLost, RelayStats, open_relay


def _progress_printer(consumer: str, every_s: float) -> Any:
    last = {"t": 0.0}

    def show(st: RelayStats) -> None:
        now = time.monotonic()
        if now - last["t"] < every_s:
            return
        last["t"] = now
        p = st.position
        print(
            f"relay {consumer}: {st.sent} rows sent ({st.rate():.0f}/s), "
            f"{st.already_processed} already processed, position txid={p.txid} id={p.id}"
            + (f", horizon {st.horizon}" if st.horizon is not None else ""),
            file=sys.stderr,
            flush=True,
        )

    return show


def relay(
    data_dir: DataDirOpt = None,
    pack: PacksOpt = None,
    url: Annotated[
        str | None,
        typer.Option(
            help="Outbox database: sqlite:///app.db or a PostgreSQL DSN.", show_default=False
        ),
    ] = None,
    table: Annotated[str | None, typer.Option(help="Outbox table.", show_default=False)] = None,
    consumer: Annotated[
        str | None,
        typer.Option(help="Names the position, lease and markers.", show_default=False),
    ] = None,
    source: Annotated[str | None, typer.Option(help="Source name (default outbox).")] = None,
    dialect: Annotated[str | None, typer.Option(help="Payload dialect (default native).")] = None,
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Exit once no settled row is waiting.")
    ] = False,
    progress_every: Annotated[float, typer.Option(help="Seconds between progress lines.")] = 1.0,
) -> None:
    """Relay outbox rows in commit order until interrupted (SIGINT/SIGTERM stop cleanly)."""
    settings = make_settings(data_dir, pack)
    cfg = settings.relay
    outbox = cfg.outbox.model_copy(
        update={
            k: v
            for k, v in {"url": SecretStr(url) if url else None, "table": table}.items()
            if v is not None
        }
    )
    settings.relay = cfg.model_copy(
        update={
            k: v
            for k, v in {
                "outbox": outbox,
                "consumer": consumer,
                "source": source,
                "dialect": dialect,
            }.items()
            if v is not None
        }
    )
    stop = threading.Event()
    stop_on_signals(stop)
    name = settings.relay.consumer
    with ExitStack() as stack:
        try:
            r = open_relay(
                settings, stack, stop=stop, on_progress=_progress_printer(name, progress_every)
            )
        except (ValueError, ImportError) as exc:
            fail(str(exc))
        print(f"relay {name}: started, {r.outbox.kind} outbox", file=sys.stderr, flush=True)
        try:
            st = r.run(until_idle=until_idle)
        except LeaseLost as exc:
            fail(str(exc), code=3)
    p = st.position
    print(
        f"relay {name}: stopped; {st.sent} rows sent, {st.already_processed} already processed, "
        f"position txid={p.txid} id={p.id}",
        file=sys.stderr,
        flush=True,
    )
