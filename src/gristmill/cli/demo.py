"""``gristmill demo``: a data directory, realistic marketplace traffic through the real HTTP
path with a progress bar, a summary, then keep serving. ``--pack usage_metering`` runs the
usage demo (``cli/demo_usage.py``), ``--pack delivery`` the laundry-delivery demo
(``cli/demo_delivery.py``)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gristmill.cli.common import console, fail, make_settings
from gristmill.cli.serve import build_server, serve_until_interrupted, start_in_thread
from gristmill.cli.status import render
from gristmill.demo.marketplace import DemoConfig, generate
from gristmill.demo.send import send_events

MARKER = ".gristmill-demo"


def _prepare_dir(path: Path) -> None:
    if path.exists() and any(path.iterdir()):
        if not (path / MARKER).exists():
            fail(f"{path} exists and is not a demo directory; choose another --data-dir")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("created by gristmill demo; deleted by the next demo run\n")


DEFAULTS = {
    "marketplace": (250_000, 90),
    "usage_metering": (100_000, 14),
    "delivery": (40_000, 2),
}
"""Events and days of history per pack when not given."""


def demo(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", "-d", help="Demo data directory (recreated).")
    ] = Path(".gristmill-demo"),
    events: Annotated[
        int | None,
        typer.Option(help="Events to generate (default 250,000; usage_metering 100,000)."),
    ] = None,
    days: Annotated[
        int | None, typer.Option(help="Days of history (default 90; usage_metering 14).")
    ] = None,
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8765,
    seed: Annotated[int, typer.Option(help="Random seed of the traffic.")] = 7,
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Keep serving afterwards.")
    ] = True,
    pack: Annotated[
        str, typer.Option("--pack", "-p", help="marketplace, usage_metering or delivery.")
    ] = "marketplace",
    via: Annotated[
        str,
        typer.Option(
            help="usage_metering: auto (RabbitMQ when it answers, else HTTP), rabbitmq or http."
        ),
    ] = "auto",
    amqp_url: Annotated[
        str | None,
        typer.Option(
            help="usage_metering: RabbitMQ URL (default GRISTMILL_CONSUME__URL, else "
            "amqp://guest:guest@127.0.0.1:5672/).",
            show_default=False,
        ),
    ] = None,
    queue: Annotated[
        str, typer.Option(help="usage_metering: the queue the demo publishes to (emptied).")
    ] = "gristmill-demo-usage",
) -> None:
    """Generate a pack's traffic, send it in, load it, and keep serving.

    marketplace: orders, payments and ads over HTTP.
    usage_metering: AI model calls through RabbitMQ when it answers (else over HTTP),
    then spend per org and the error spikes the reliability view finds.
    delivery: branches, orders, driver pings and outreach over HTTP, shuffled and re-sent."""
    if pack not in DEFAULTS:
        fail(f"--pack must be one of {', '.join(DEFAULTS)}, not {pack!r}")
    events = DEFAULTS[pack][0] if events is None else events
    days = DEFAULTS[pack][1] if days is None else days
    if pack == "usage_metering":
        from gristmill.cli.demo_usage import run_usage_demo

        run_usage_demo(
            data_dir=data_dir,
            events=events,
            days=days,
            port=port,
            seed=seed,
            serve=serve,
            via=via,
            amqp_url=amqp_url,
            queue=queue,
            prepare_dir=_prepare_dir,
        )
        return
    if pack == "delivery":
        from gristmill.cli.demo_delivery import run_delivery_demo

        run_delivery_demo(
            data_dir=data_dir,
            events=events,
            days=days,
            port=port,
            seed=seed,
            serve=serve,
            prepare_dir=_prepare_dir,
        )
        return
    _prepare_dir(data_dir)
    settings = make_settings(data_dir, ["marketplace"])
    settings.server = settings.server.model_copy(update={"port": port})
    server, rt = build_server(settings)
    keys = {
        src: rt.meta.create_key("write", f"demo {src}", pack="marketplace", source=src)[1]
        for src in ("backend", "adserver")
    }
    _, operator = rt.meta.create_key("secret", "demo operator", role="operator")
    _, admin = rt.meta.create_key("secret", "demo admin", pack="marketplace", role="admin")
    _, vendor = rt.meta.create_key(
        "secret",
        "demo vendor vnd_000",
        pack="marketplace",
        role="vendor",
        claims={"store_id": "vnd_000"},
    )
    url = f"http://{settings.server.host}:{port}"

    thread = start_in_thread(server, url)

    with console.status("generating traffic"):
        traffic = generate(DemoConfig(events=events, days=days, seed=seed))
    console.print(
        f"generated {len(traffic.events):,} events over {days} days "
        f"({traffic.duplicates:,} re-sent duplicates, {traffic.invalid:,} invalid)"
    )
    started = time.perf_counter()
    with Progress(
        TextColumn("sending"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("send", total=len(traffic.events), rate="")

        def advance(n: int) -> None:
            done = progress.tasks[0].completed + n
            rate = done / max(1e-9, time.perf_counter() - started)
            progress.update(task, advance=n, rate=f"{rate:,.0f} events/s")

        stats = send_events(url, keys, traffic.events, traffic.sources, on_progress=advance)
    console.print(
        f"sent in {stats.requests:,} requests ({stats.retries} retries): "
        f"{stats.accepted:,} accepted, {stats.rejected:,} rejected"
    )

    with (
        console.status("waiting for the loader"),
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {operator}"}) as client,
    ):
        while True:
            data = client.get("/v1/pipeline/stats").json()
            if data["totals"]["in_flight"] == 0:
                break
            time.sleep(0.1)
    elapsed = time.perf_counter() - started
    data["server"] = url
    render(data)
    console.print(
        f"end to end: {data['totals']['received'] / elapsed:,.0f} events/s "
        f"({elapsed:.1f} s from first request to everything queryable)"
    )
    admin_principal = rt.keys.resolve(admin)
    assert admin_principal is not None
    login = f"{url}/ui/login/once/{rt.sessions.create_once(admin_principal)}"
    _summary(url, keys, operator, admin, vendor)
    console.print(
        f"\n[b]Dashboard:[/] {login}  (one-time sign-in as the marketplace admin; "
        f"or sign in at {url}/ui with a key above)"
    )
    serve_until_interrupted(server, thread, serve)


def _summary(url: str, keys: dict[str, str], operator: str, admin: str, vendor: str) -> None:
    t = Table(title="Demo endpoints and keys", show_lines=False)
    t.add_column("what")
    t.add_column("value", overflow="fold")
    t.add_row("API docs", f"{url}/docs")
    t.add_row("readiness", f"{url}/readyz")
    t.add_row("Prometheus metrics", f"{url}/metrics")
    t.add_row(
        "pipeline stats", f"curl -H 'Authorization: Bearer {operator}' {url}/v1/pipeline/stats"
    )
    t.add_row("quarantine", f"curl -H 'Authorization: Bearer {operator}' {url}/v1/quarantine")
    for src, key in keys.items():
        t.add_row(f"write key ({src})", key)
    t.add_row("operator key", operator)
    t.add_row("admin key (marketplace)", admin)
    t.add_row("vendor key (vnd_000)", vendor)
    t.add_row(
        "vendor view",
        f"curl -H 'Authorization: Bearer {vendor}' '{url}/api/v1/vendor/analytics?preset=30d'",
    )
    t.add_row(
        "admin view",
        f"curl -H 'Authorization: Bearer {admin}' '{url}/api/v1/admin/analytics?preset=7d'",
    )
    console.print(t)
