"""``gristmill status``: conservation per source, log depth and loader state."""

from __future__ import annotations

from typing import Any

import orjson
from rich.table import Table

from gristmill.cli.common import (
    DataDirOpt,
    JsonOpt,
    PacksOpt,
    console,
    err_console,
    make_settings,
    missing_state,
    nothing_stored,
    running_server,
)
from gristmill.cli.workers import read_workers
from gristmill.config import Settings
from gristmill.runtime import Runtime


def empty_status(settings: Settings) -> dict[str, Any]:
    """What ``status`` reports for a data directory holding nothing yet, without creating
    it: every count zero, in the same shape as a real answer (``"empty": true`` added)."""
    from gristmill.pack.loader import load_packs

    load_packs(settings.resolved_packs_dir, settings.packs)  # a bad pack is still an error
    fields = ("received", "loaded", "quarantined", "duplicates", "in_flight", "suppressed")
    return {
        "balanced": True,
        "totals": dict.fromkeys(fields, 0),
        "sources": [],
        "log": {
            "depth_records": 0,
            "depth_events": 0,
            "depth_bytes": 0,
            "oldest_pending_received_at": None,
            "committed_offset": 0,
        },
        "warehouse_offset": 0,
        "load_lag_seconds": 0.0,
        "loader": {
            "running": False,
            "batches": 0,
            "events": 0,
            "loaded": 0,
            "failures": 0,
            "last_error": None,
            "last_commit_at": None,
            "last_batch_seconds": 0.0,
            "last_wait_seconds": 0.0,
            "last_wait_ended": None,
        },
        "log_cap_bytes": settings.log.max_bytes,
        "warehouse": None,
        "packs": sorted(settings.packs),
        "server": None,
        "empty": True,
    }


def collect_status(data_dir: DataDirOpt = None, pack: PacksOpt = None) -> dict[str, Any]:
    """The server's figures, else the files' (all zero when nothing is stored yet)."""
    settings = make_settings(data_dir, pack)
    client = running_server(settings)
    if client is not None:
        data: dict[str, Any] = client.get("/v1/pipeline/stats")
        data["server"] = client.url
        supervisor = read_workers(settings.data_dir)
        data["workers"] = supervisor["children"] if supervisor else None
        return data
    if missing_state(settings) is not None:
        return empty_status(settings)
    # No server: open the files directly (DuckDB allows one writing process at a time).
    from gristmill.api.routers.ops import pipeline_stats

    rt = Runtime(settings)
    try:
        data = pipeline_stats(rt)
    finally:
        rt.stop()
    data["server"] = None
    return data


def render(data: dict[str, Any]) -> None:
    t = Table(title="Conservation: received = loaded + quarantined + duplicates + in_flight")
    for col in (
        "pack",
        "source",
        "received",
        "loaded",
        "quarantined",
        "duplicates",
        "in_flight",
        "balanced",
    ):
        t.add_column(col, justify="right" if col not in ("pack", "source") else "left")
    for s in data["balances"]:
        t.add_row(
            s["pack"],
            s["source"],
            *[
                f"{s[k]:,}"
                for k in ("received", "loaded", "quarantined", "duplicates", "in_flight")
            ],
            "[green]yes[/]" if s["balanced"] else "[red]NO[/]",
        )
    tot = data["totals"]
    t.add_row(
        "[b]total[/]",
        "",
        *[
            f"[b]{tot[k]:,}[/]"
            for k in ("received", "loaded", "quarantined", "duplicates", "in_flight")
        ],
        "[green]yes[/]" if data["balanced"] else "[red]NO[/]",
    )
    console.print(t)
    _quarantine_rates(data)
    _schema_pins(data)
    lg = data["log"]
    ld = data["loader"]
    console.print(
        f"log: {lg['depth_events']:,} events / {lg['depth_bytes']:,} bytes pending "
        f"(cap {data['log_cap_bytes']:,}), load lag {data['load_lag_seconds']:.2f} s"
    )
    for part in lg.get("partitions", []):
        console.print(
            f"  partition {part['partition']}: {part['depth_records']:,} records / "
            f"{part['depth_events']:,} events / {part['depth_bytes']:,} bytes pending"
        )
    console.print(
        f"loader: {'running' if ld['running'] else 'stopped'}, {ld['batches']:,} batches, "
        f"last commit {ld['last_commit_at'] or '-'}, "
        f"last batch waited {ld.get('last_wait_seconds', 0.0):.2f} s"
        + (f" ({ld['last_wait_ended']})" if ld.get("last_wait_ended") else "")
        + (f", [red]last error: {ld['last_error']}[/]" if ld["last_error"] else "")
    )
    console.print(f"server: {data['server'] or 'not running (read from files)'}")
    if data.get("workers"):
        console.print(
            "workers: "
            + ", ".join(
                f"{w['name']} (pid {w['pid']}"
                + (f", partition {w['partition']}" if w["partition"] is not None else "")
                + (f", {w['restarts']} restarts" if w["restarts"] else "")
                + ")"
                for w in data["workers"]
            )
        )


def _quarantine_rates(data: dict[str, Any]) -> None:
    """Sources whose events were quarantined in the window: a Segment client gets 200 for
    them all the same, so this is where it shows."""
    hit = [s for s in data.get("sources", []) if s["quarantined"]]
    if not hit:
        return
    t = Table(title=f"Quarantined in the last {data.get('window', '1h')}")
    for col in ("pack", "source", "accepted", "quarantined", "rate", "last reasons"):
        t.add_column(col)
    for s in hit:
        reasons = ", ".join(f"{r['reason']} x{r['count']}" for r in s["last_reasons"])
        t.add_row(
            s["pack"],
            s["source"],
            f"{s['accepted']:,}",
            f"{s['quarantined']:,}",
            f"{s['quarantine_rate']:.1%}",
            reasons,
        )
    console.print(t)


def _schema_pins(data: dict[str, Any]) -> None:
    """Which version each source's unversioned events are checked against, so sources
    behind the newest can be found and moved (``gristmill schema pin``)."""
    pins = data.get("schema_pins", [])
    if not pins:
        return
    t = Table(title="Schema versions of unversioned events, per source")
    for col in ("pack", "source", "event type", "version", "newest", "pinned by"):
        t.add_column(col)
    for p in pins:
        behind = p["newest"] is not None and p["version"] < p["newest"]
        t.add_row(
            p["pack"],
            p["source"],
            p["event_type"],
            f"[yellow]{p['version']}[/]" if behind else str(p["version"]),
            str(p["newest"]),
            p["pinned_by"],
        )
    console.print(t)


def status(data_dir: DataDirOpt = None, pack: PacksOpt = None, json: JsonOpt = False) -> None:
    """Show conservation per source, log depth and loader state."""
    data = collect_status(data_dir, pack)
    if data.get("empty") and not json:
        err_console.print(nothing_stored(make_settings(data_dir, pack)), soft_wrap=True)
        return
    if json:
        console.print_json(orjson.dumps(data).decode())
    else:
        render(data)
