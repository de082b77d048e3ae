"""``gristmill demo --pack usage_metering``: AI usage traffic (seed 004) — organisations of
skewed sizes, a skewed model mix, error bursts — sent the way the seed's producers send it:
through RabbitMQ when RabbitMQ answers on the configured URL (one message per model call on a
durable queue, ``gristmill consume``'s consumer running in this process), through HTTP
otherwise. Then the usage and spend per organisation, the unpriced calls and the spikes the
reliability view finds, and keep serving (the consumer keeps consuming the queue)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
from pydantic import SecretStr
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gristmill.cli.common import console, fail, make_settings
from gristmill.cli.serve import build_server, serve_until_interrupted, start_in_thread
from gristmill.cli.status import render
from gristmill.config import Settings
from gristmill.consume import ConsumeStats
from gristmill.demo.usage import Burst, UsageConfig, UsageTraffic, generate_usage

PACK = "usage_metering"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_QUEUE = "gristmill-demo-usage"
ORGS = 12


def redact(url: str) -> str:
    """``url`` with its password replaced (printed in the demo's output)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def demo_bursts(end: datetime, days: int) -> list[Burst]:
    """Three error bursts of one model of one org, each one whole hour, all inside the range
    the summary asks the reliability view about (with a day of baseline before them)."""
    hour = end.replace(minute=0, second=0, microsecond=0)
    candidates = [
        Burst("org_000", "gpt-4o", hour - timedelta(hours=30)),
        Burst("org_002", "claude-3-5-sonnet", hour - timedelta(hours=9)),
        Burst("org_004", "gpt-4o-mini", hour - timedelta(hours=52)),
    ]
    earliest = end - timedelta(days=min(days, 7)) + timedelta(days=1)
    return [b for b in candidates if b.start >= earliest]


@dataclass
class Keys:
    write: str
    operator: str
    platform: str
    finance: str
    org_admin: str
    engineer: str


def run_usage_demo(
    *,
    data_dir: Path,
    events: int,
    days: int,
    port: int,
    seed: int,
    serve: bool,
    via: str,
    amqp_url: str | None,
    queue: str,
    prepare_dir: Callable[[Path], None],
) -> None:
    if via not in ("auto", "rabbitmq", "http"):
        fail(f"--via must be auto, rabbitmq or http, not {via!r}")
    prepare_dir(data_dir)
    settings = make_settings(data_dir, [PACK])
    settings.server = settings.server.model_copy(update={"port": port})
    configured = settings.consume.url.get_secret_value() if settings.consume.url else None
    url_amqp = amqp_url or configured or DEFAULT_AMQP_URL
    why_not: str | None = "--via http"
    if via != "http":
        from gristmill.demo.amqp import amqp_answers

        why_not = amqp_answers(url_amqp)
        if why_not is not None and via == "rabbitmq":
            fail(f"RabbitMQ does not answer on {redact(url_amqp)}: {why_not}")
    use_rabbit = why_not is None
    logging.getLogger("aio_pika").setLevel(logging.WARNING)  # no line per queue operation

    server, rt = build_server(settings)
    mk = rt.meta.create_key
    keys = Keys(
        write=mk("write", "demo http", pack=PACK, source="http")[1],
        operator=mk("secret", "demo operator", role="operator")[1],
        platform=mk("secret", "demo platform admin", pack=PACK, role="platform_admin")[1],
        finance=mk("secret", "demo finance", pack=PACK, role="finance")[1],
        org_admin=mk(
            "secret",
            "demo org_000 admin",
            pack=PACK,
            role="org_admin",
            claims={"org_id": "org_000"},
        )[1],
        engineer=mk(
            "secret",
            "demo org_000 engineer",
            pack=PACK,
            role="engineer",
            claims={"org_id": "org_000"},
        )[1],
    )
    url = f"http://{settings.server.host}:{port}"
    thread = start_in_thread(server, url)

    end = datetime.now(UTC)
    bursts = demo_bursts(end, days)
    with console.status("generating usage traffic"):
        traffic = generate_usage(
            UsageConfig(
                events=events,
                days=days,
                orgs=ORGS,
                seed=seed,
                end=end,
                bursts=bursts,
                invalid_rate=0.001,
            )
        )
    console.print(
        f"generated {len(traffic.events):,} model calls of {ORGS} organisations over {days} "
        f"days ({traffic.duplicates:,} re-delivered, {traffic.invalid:,} broken, "
        f"{len(bursts)} error bursts)"
    )
    with ExitStack() as stack:
        started = time.perf_counter()
        if use_rabbit:
            console.print(
                f"sending through RabbitMQ: queue [b]{queue}[/] on {redact(url_amqp)}, "
                "consumed by gristmill consume's consumer in this process"
            )
            stop, consumed = _start_consumer(settings, stack, url_amqp, queue)
            _through_rabbitmq(url, keys, traffic, url_amqp, queue, consumed)
        else:
            console.print(f"sending over HTTP to {url}/v1/events (RabbitMQ: {why_not})")
            stop = None
            _over_http(url, keys, traffic)
        elapsed = time.perf_counter() - started
        with httpx.Client(base_url=url, headers=_bearer(keys.operator)) as client:
            data = client.get("/v1/pipeline/stats").json()
        data["server"] = url
        render(data)
        console.print(
            f"end to end: {data['totals']['received'] / elapsed:,.0f} events/s "
            f"({elapsed:.1f} s from the first message to everything queryable)"
        )
        _summary(url, keys, end, days, bursts)
        _endpoints(url, keys, queue if use_rabbit else None, redact(url_amqp))
        try:
            serve_until_interrupted(server, thread, serve)
        finally:
            if stop is not None:
                stop.set()
    if use_rabbit:
        from gristmill.demo.amqp import delete_queue

        left = delete_queue(url_amqp, queue)
        console.print(f"deleted the demo queue {queue} ({left or 0} messages left in it)")


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _start_consumer(
    settings: Settings, stack: ExitStack, url_amqp: str, queue: str
) -> tuple[threading.Event, ConsumeStats]:
    """Declare and empty the demo's queue, then run the consumer in a thread until stopped."""
    from gristmill.consume import open_consumer
    from gristmill.demo.amqp import declare_queue

    declare_queue(url_amqp, queue, purge=True)
    settings.consume = settings.consume.model_copy(
        update={
            "broker": "rabbitmq",
            "url": SecretStr(url_amqp),
            "queue": queue,
            "source": "rabbitmq",
            "prefetch": 500,
        }
    )
    stop = threading.Event()
    consumer = open_consumer(settings, stack, stop=stop)
    thread = threading.Thread(target=consumer.run, name="consumer", daemon=True)
    thread.start()
    stack.callback(thread.join, 30)
    stack.callback(stop.set)
    return stop, consumer.stats


def _bars() -> Progress:
    return Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
    )


def _settled(client: httpx.Client) -> tuple[int, int]:
    """(events received, events settled: loaded, quarantined or dropped as duplicates)."""
    t = client.get("/v1/pipeline/stats").json()["totals"]
    return int(t["received"]), int(t["received"]) - int(t["in_flight"])


def _rate(done: float, since: float) -> str:
    return f"{done / max(1e-9, time.perf_counter() - since):,.0f}/s"


def _through_rabbitmq(
    url: str, keys: Keys, traffic: UsageTraffic, url_amqp: str, queue: str, stats: ConsumeStats
) -> None:
    from gristmill.demo.amqp import publish_elsewhere

    total = len(traffic.events)
    bodies = [orjson.dumps(e) for e in traffic.events]
    with _bars() as progress, httpx.Client(base_url=url, headers=_bearer(keys.operator)) as c:
        pub = progress.add_task("published", total=total, rate="")
        ack = progress.add_task("consumed", total=total, rate="")
        load = progress.add_task("loaded", total=total, rate="")
        t0 = time.perf_counter()
        proc, confirmed = publish_elsewhere(url_amqp, queue, bodies)
        while True:
            if proc.exitcode not in (None, 0):
                fail(f"the publisher process failed (exit code {proc.exitcode})")
            published = int(confirmed.value)
            received, settled = _settled(c)
            progress.update(pub, completed=published, rate=_rate(published, t0))
            progress.update(ack, completed=stats.acked, rate=_rate(stats.acked, t0))
            progress.update(load, completed=settled, rate=_rate(settled, t0))
            if stats.acked >= total and received >= total and settled == received:
                break
            time.sleep(0.2)
        proc.join(30)


def _over_http(url: str, keys: Keys, traffic: UsageTraffic) -> None:
    from gristmill.demo.send import send_events

    total = len(traffic.events)
    with _bars() as progress, httpx.Client(base_url=url, headers=_bearer(keys.operator)) as c:
        sent = progress.add_task("sent", total=total, rate="")
        load = progress.add_task("loaded", total=total, rate="")
        t0 = time.perf_counter()

        def advance(n: int) -> None:
            done = progress.tasks[sent].completed + n
            progress.update(sent, advance=n, rate=_rate(done, t0))

        result: list[Any] = []
        sender = threading.Thread(
            target=lambda: result.append(
                send_events(
                    url, {"http": keys.write}, traffic.events, ["http"] * total, on_progress=advance
                )
            ),
            daemon=True,
        )
        sender.start()
        while True:
            received, settled = _settled(c)
            progress.update(load, completed=settled, rate=_rate(settled, t0))
            if not sender.is_alive() and received >= total and settled == received:
                break
            time.sleep(0.2)
    if not result:
        fail("sending over HTTP failed (see above)")
    st = result[0]
    console.print(
        f"sent in {st.requests:,} requests ({st.retries} retries): {st.accepted:,} accepted, "
        f"{st.rejected:,} rejected"
    )


def _dollars(micros: int | None) -> str:
    return "—" if micros is None else f"${micros / 1_000_000:,.2f}"


def _measure(kind: str, v: float) -> str:
    return f"{v:.1%}" if kind == "error_rate" else f"{v:,.0f} ms"


def _summary(url: str, keys: Keys, end: datetime, days: int, bursts: list[Burst]) -> None:
    now = datetime.now(UTC) + timedelta(seconds=1)
    rng = {"start": (end - timedelta(days=days)).isoformat(), "end": now.isoformat()}
    with httpx.Client(base_url=url, timeout=120) as c:
        usage = c.get("/analytics/v1/usage", params=rng, headers=_bearer(keys.finance)).json()
        t = Table(
            title=f"Usage and spend per organisation, last {days} days (GET /analytics/v1/usage)"
        )
        for col in ("org", "requests", "tokens in", "tokens out", "spend", "unpriced", "errors"):
            t.add_column(col, justify="left" if col == "org" else "right")
        rows = sorted(usage["by_org_id"], key=lambda r: -(r["spend_micros"] or 0))
        for r in rows:
            t.add_row(
                r["org_id"],
                f"{r['requests']:,}",
                f"{r['tokens_in']:,}",
                f"{r['tokens_out']:,}",
                _dollars(r["spend_micros"]),
                f"{r['unpriced_requests']:,}",
                f"{r['errors']:,}",
            )
        tot = usage["totals"]
        t.add_row(
            "[b]all[/]",
            f"{tot['requests']:,}",
            f"{tot['tokens_in']:,}",
            f"{tot['tokens_out']:,}",
            _dollars(tot["spend_micros"]),
            f"{tot['unpriced_requests']:,}",
            f"{tot['errors']:,}",
        )
        console.print(t)
        console.print(
            f"{tot['requests']:,} requests, {_dollars(tot['spend_micros'])} spend, "
            f"{tot['unpriced_requests']:,} unpriced (a model missing from prices.yaml: spend "
            "unknown, not zero)"
        )
        week = {"start": (now - timedelta(days=min(days, 7))).isoformat(), "end": now.isoformat()}
        spikes: list[dict[str, Any]] = []
        for r in rows:
            body = c.get(
                f"/analytics/v1/orgs/{r['org_id']}/reliability",
                params={**week, "grain": "hour"},
                headers=_bearer(keys.platform),
            ).json()
            spikes += [{"org_id": r["org_id"], **s} for s in body["spikes"]]
        fresh = c.get(
            "/analytics/v1/orgs/org_000/usage",
            params={"preset": "24h"},
            headers=_bearer(keys.org_admin),
        ).json()["freshness"]
    injected = {(b.org, b.model, b.start.isoformat()) for b in bursts}
    t = Table(title="Spikes the reliability view found (hourly, against the trailing 24 hours)")
    for col in ("org", "model", "hour (UTC)", "kind", "value", "baseline", "injected"):
        t.add_column(col, justify="right" if col in ("value", "baseline") else "left")
    found: set[tuple[str, str, str]] = set()
    for s in sorted(spikes, key=lambda s: (s["bucket"], s["org_id"], s["kind"])):
        key = (s["org_id"], s["model"], s["bucket"])
        if key in injected:
            found.add(key)
        t.add_row(
            s["org_id"],
            s["model"],
            s["bucket"][5:16].replace("T", " "),
            s["kind"],
            _measure(s["kind"], s["value"]),
            _measure(s["kind"], s["baseline"]),
            "yes" if key in injected else "no",
        )
    console.print(t)
    console.print(
        f"found {len(found)} of {len(injected)} injected error bursts; freshness of org_000: "
        f"lag {fresh['lag_seconds']} s, stale {str(fresh['stale']).lower()} "
        f"(budget {fresh['budget_seconds']:.0f} s)"
    )


def _endpoints(url: str, keys: Keys, queue: str | None, amqp: str) -> None:
    t = Table(title="Demo endpoints and keys (usage_metering)")
    t.add_column("what")
    t.add_column("value", overflow="fold")
    t.add_row("API docs", f"{url}/docs")
    t.add_row(
        "org_000 usage (org admin)",
        f"curl -H 'Authorization: Bearer {keys.org_admin}' "
        f"'{url}/analytics/v1/orgs/org_000/usage?preset=7d&grain=day'",
    )
    t.add_row(
        "org_000 reliability (engineer)",
        f"curl -H 'Authorization: Bearer {keys.engineer}' "
        f"'{url}/analytics/v1/orgs/org_000/reliability?preset=7d'",
    )
    t.add_row(
        "every org (finance)",
        f"curl -H 'Authorization: Bearer {keys.finance}' '{url}/analytics/v1/usage?preset=30d'",
    )
    t.add_row(
        "pipeline stats",
        f"curl -H 'Authorization: Bearer {keys.operator}' {url}/v1/pipeline/stats",
    )
    t.add_row("platform admin key", keys.platform)
    t.add_row("write key (HTTP, POST /v1/events)", keys.write)
    if queue is not None:
        t.add_row(
            "RabbitMQ queue",
            f"{queue} on {amqp}: publish usage_recorded events (one JSON per message); the "
            "consumer keeps loading them while the demo serves",
        )
    console.print(t)
