"""``gristmill demo --pack delivery``: laundry-delivery traffic (seed 002) over HTTP —
branches, orders moving through their states, drivers pinging along their routes, outreach;
shuffled, partly re-sent and re-emitted — then the branch manager's and operations' answers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

from gristmill.cli.common import console, make_settings
from gristmill.cli.serve import build_server, serve_until_interrupted, start_in_thread
from gristmill.demo.delivery import DeliveryConfig, generate_delivery
from gristmill.demo.send import send_events

EVENTS_PER_BRANCH_DAY = 4_000
"""About what one branch emits a day with the default config (pings dominate)."""


def run_delivery_demo(
    *,
    data_dir: Path,
    events: int,
    days: int,
    port: int,
    seed: int,
    serve: bool,
    prepare_dir: Callable[[Path], None],
) -> None:
    prepare_dir(data_dir)
    settings = make_settings(data_dir, ["delivery"])
    settings.server = settings.server.model_copy(update={"port": port})
    server, rt = build_server(settings)
    write = rt.meta.create_key("write", "demo api", pack="delivery", source="api")[1]
    ops = rt.meta.create_key("secret", "demo operations", pack="delivery", role="operations")[1]
    _, operator = rt.meta.create_key("secret", "demo operator", role="operator")
    manager = rt.meta.create_key(
        "secret",
        "demo br_00",
        pack="delivery",
        role="branch_manager",
        claims={"branch_id": "br_00"},
    )[1]
    url = f"http://{settings.server.host}:{port}"
    thread = start_in_thread(server, url)

    branches = max(1, round(events / (days * EVENTS_PER_BRANCH_DAY)))
    with console.status("generating traffic"):
        t = generate_delivery(DeliveryConfig(days=days, branches=branches, seed=seed))
    console.print(
        f"generated {len(t.events):,} events: {branches} branches, {len(t.drivers)} drivers, "
        f"{days} days ({len(t.events) - len(t.distinct):,} re-sent, shuffled in arrival)"
    )
    started = time.perf_counter()
    stats = send_events(url, {"api": write}, t.events, ["api"] * len(t.events))
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {operator}"}) as client:
        while client.get("/v1/pipeline/stats").json()["totals"]["in_flight"]:
            time.sleep(0.1)
    elapsed = time.perf_counter() - started
    console.print(
        f"sent {stats.accepted:,} accepted, {stats.rejected:,} rejected; "
        f"{len(t.events) / elapsed:,.0f} events/s end to end"
    )
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ops}"}) as client:
        _report(
            client.get("/delivery/v1/lifecycle", params={"preset": "7d"}).json(),
            client.get("/delivery/v1/drivers", params={"preset": "7d"}).json(),
            client.get("/delivery/v1/outreach", params={"preset": "7d"}).json(),
        )
    _keys(url, write, ops, manager)
    serve_until_interrupted(server, thread, serve)


def _minutes(v: float | None) -> str:
    return "-" if v is None else f"{v / 60:.1f} min"


def _report(life: dict[str, Any], drivers: dict[str, Any], outreach: dict[str, Any]) -> None:
    t = Table(title="Orders per branch (last 7 days, Europe/London)")
    for col in (
        "branch",
        "orders",
        "delivered",
        "accept p50",
        "deliver p50",
        "deliver p95",
        "on time (3h)",
    ):
        t.add_column(col)
    for r in life["by_branch_id"]:
        d = r["durations"]["to_deliver"]
        share = d["on_time_share"]
        t.add_row(
            r["branch_id"],
            str(r["entities"]),
            str(r["by_status"]["delivered"]),
            _minutes(r["durations"]["to_accept"]["p50_s"]),
            _minutes(d["p50_s"]),
            _minutes(d["p95_s"]),
            "-" if share is None else f"{share:.1%}",
        )
    console.print(t)
    tot = drivers["totals"]
    console.print(
        f"drivers today: {tot['entities']} pinged {tot['pings']:,} times over {tot['km']:,.1f} km; "
        f"stale (no ping for {drivers['stale_minutes']:g} min): "
        f"{', '.join(s['driver_id'] for s in drivers['stale']) or 'none'}"
    )
    rows = sorted(outreach["by_template_key"], key=lambda r: -(r["conversion_rate"] or 0))
    console.print(
        "outreach conversion: "
        + ", ".join(f"{r['template_key']} {r['conversion_rate'] or 0:.0%}" for r in rows)
    )


def _keys(url: str, write: str, ops: str, manager: str) -> None:
    t = Table(title="Demo endpoints and keys")
    t.add_column("what")
    t.add_column("value", overflow="fold")
    t.add_row("write key (api)", write)
    t.add_row("operations key", ops)
    t.add_row("branch manager key (br_00)", manager)
    t.add_row(
        "lifecycle, every branch",
        f"curl -H 'Authorization: Bearer {ops}' '{url}/delivery/v1/lifecycle?preset=7d'",
    )
    t.add_row(
        "drivers of br_00",
        f"curl -H 'Authorization: Bearer {manager}' "
        f"'{url}/delivery/v1/branches/br_00/drivers?stale_minutes=15'",
    )
    console.print(t)
