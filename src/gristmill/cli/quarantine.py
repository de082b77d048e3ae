"""``gristmill quarantine list|show|replay``."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.table import Table

from gristmill.cli.common import (
    DataDirOpt,
    JsonOpt,
    api_call,
    console,
    fail,
    make_settings,
    missing_state,
    nothing_stored,
    running_server,
)
from gristmill.core.envelope import Reason
from gristmill.load.quarantine import QuarantineFilter, list_quarantine, replay
from gristmill.runtime import Runtime

app = typer.Typer(help="Inspect and replay events that were not loaded.", no_args_is_help=True)
ReasonOpt = Annotated[Reason | None, typer.Option(help="Only this reason.")]


def _offline(data_dir: DataDirOpt) -> Runtime:
    return Runtime(make_settings(data_dir))


@app.command("list")
def list_(
    data_dir: DataDirOpt = None,
    reason: ReasonOpt = None,
    pack: Annotated[str | None, typer.Option(help="Only this pack.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows.")] = 50,
    replayed: Annotated[bool, typer.Option(help="Include replayed rows.")] = False,
    json: JsonOpt = False,
) -> None:
    """List quarantined events, oldest id first."""
    settings = make_settings(data_dir)
    client = running_server(settings)
    rows: list[dict[str, Any]]
    if client is not None:
        rows = api_call(
            lambda: client.get(
                "/v1/quarantine",
                reason=reason.value if reason else None,
                pack=pack,
                limit=limit,
                include_replayed=replayed,
            ),
            client,
        )["items"]
    elif missing_state(settings) is not None:
        rows = []  # nothing stored: nothing quarantined (and nothing created by looking)
    else:
        rt = _offline(data_dir)
        try:
            rows = list_quarantine(
                rt.warehouse,
                QuarantineFilter(pack, None, reason.value if reason else None, replayed),
                limit=limit,
            )
        finally:
            rt.stop()
    if json:
        console.print_json(orjson.dumps(rows).decode())
        return
    t = Table(title=f"{len(rows)} quarantined event(s)")
    for col in ("id", "pack", "source", "reason", "event_type", "event_id", "received", "detail"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(
            r["quarantine_id"],
            r["pack"],
            r["source"],
            r["reason"],
            r["event_type"] or "",
            r["event_id"] or "",
            r["received_at"],
            r["detail"][:120],
        )
    console.print(t)


@app.command("show")
def show(quarantine_id: str, data_dir: DataDirOpt = None) -> None:
    """Show one quarantined event, including its original bytes."""
    settings = make_settings(data_dir)
    client = running_server(settings)
    if client is not None:
        try:
            row = client.get(f"/v1/quarantine/{quarantine_id}")
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 404:
                raise
            fail(f"no quarantined event {quarantine_id!r} (`gristmill quarantine list` shows ids)")
    elif missing_state(settings) is not None:
        fail(f"no quarantined event {quarantine_id!r}: {nothing_stored(settings)}")
    else:
        rt = _offline(data_dir)
        try:
            rows = list_quarantine(
                rt.warehouse,
                QuarantineFilter(ids=(quarantine_id,), include_replayed=True),
                limit=1,
                with_raw=True,
            )
        finally:
            rt.stop()
        if not rows:
            fail(f"no quarantined event {quarantine_id!r} (`gristmill quarantine list` shows ids)")
        row = rows[0]
    console.print_json(orjson.dumps(row).decode())


@app.command("replay")
def replay_(
    ids: Annotated[
        list[str] | None, typer.Argument(help="Quarantine ids; none = by filter.")
    ] = None,
    data_dir: DataDirOpt = None,
    reason: ReasonOpt = None,
    pack: Annotated[str | None, typer.Option(help="Only this pack.")] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Replay everything not yet replayed.")
    ] = False,
) -> None:
    """Send quarantined events through the collector again (after fixing the pack)."""
    if not ids and reason is None and pack is None and not all_:
        fail("name ids, or filter with --reason / --pack, or pass --all")
    settings = make_settings(data_dir)
    client = running_server(settings)
    if client is not None:
        res = client.post(
            "/v1/quarantine/replay",
            {"ids": ids or [], "reason": reason.value if reason else None, "pack": pack},
        )
    else:
        rt = _offline(data_dir)
        try:
            r = replay(
                rt.warehouse,
                rt.collector,
                QuarantineFilter(
                    pack, None, reason.value if reason else None, False, tuple(ids or ())
                ),
            )
            rt.loader.drain()
        finally:
            rt.stop()
        res = {"replayed": r.replayed, "accepted": r.accepted, "rejected": r.rejected}
    console.print(
        f"replayed {res['replayed']} quarantined item(s): {res['accepted']} accepted, "
        f"{res['rejected']} rejected again"
    )
