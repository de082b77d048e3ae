"""The usage pack (seed 004): RabbitMQ → queryable, and its two views at 10M usage events.

1. **RabbitMQ → queryable.** ``gristmill serve`` (embedded: SQLite log, DuckDB) and
   ``gristmill consume rabbitmq`` as child processes on one data directory. N generated model
   calls (one JSON message each, persistent, on a durable queue) are published first; the
   clock runs from the consumer's first log append to (a) every message appended (consumed)
   and (b) nothing in flight (queryable). Beside it, in the same run, a plain aio-pika
   consumer that only acknowledges (same queue size, same prefetch, own process) — what the
   broker and client library give before Gristmill does anything. Then a steady background
   publisher at R messages/s and, one at a time, probes for an org of their own: the time
   from publishing a probe to ``/analytics/v1/orgs/{org}/usage`` counting it in its totals,
   and the freshness block's own ``lag_seconds`` and ``stale`` on every poll.
2. **Views at 10M usage events** (DuckDB), in ``bench/usage_views.py``: each view's code
   path through the rollups and with the planner's rollup choice turned off (rows).

Run alone: ``python -m bench --only usage`` (sizes: ``--usage-messages``,
``--usage-events``, ``--usage-rate``, ``--usage-seconds``).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import PACKS, pct
from bench.usage_views import views_at_scale
from gristmill.demo.amqp import declare_queue, delete_queue, publish, publish_async
from gristmill.demo.process import ServerProcess, free_port
from gristmill.demo.usage import UsageConfig, generate_usage
from gristmill.meta.store import MetaStore

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
PACK = "usage_metering"
PREFETCH = 500


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# -- 1. RabbitMQ → queryable --------------------------------------------------------------


async def _ack_only(queue: str, n: int, prefetch: int) -> float:
    import aio_pika

    conn = await aio_pika.connect(AMQP)
    async with conn:
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=prefetch)
        q = await ch.get_queue(queue, ensure=True)
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        await q.consume(inbox.put, no_ack=False)
        got, t0 = 0, 0.0
        while got < n:
            batch = [await inbox.get()]
            if got == 0:
                t0 = time.perf_counter()
            while not inbox.empty() and len(batch) < prefetch:
                batch.append(inbox.get_nowait())
            await batch[-1].ack(multiple=True)
            got += len(batch)
        return n / (time.perf_counter() - t0)


def _ack_only_child(queue: str, n: int, prefetch: int, out: Any) -> None:
    out.put(asyncio.run(_ack_only(queue, n, prefetch)))


def plain_consumer(queue: str, n: int, prefetch: int) -> float:
    """Messages/s of an aio-pika consumer that only acknowledges, in its own process."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_ack_only_child, args=(queue, n, prefetch, out))
    proc.start()
    rate = float(out.get(timeout=600))
    proc.join(30)
    return rate


class Pipeline:
    """``gristmill serve`` and ``gristmill consume rabbitmq`` on one data directory."""

    def __init__(self, tmp: Path, queue: str) -> None:
        data = tmp / "data"
        data.mkdir(parents=True)
        meta = MetaStore(f"sqlite:///{data / 'meta.sqlite'}")
        self.platform = meta.create_key("secret", "bench", pack=PACK, role="platform_admin")[1]
        self.operator = meta.create_key("secret", "bench ops", role="operator")[1]
        meta.close()
        env = {"GRISTMILL_PACKS": f'["{PACK}"]', "GRISTMILL_RATE_LIMITS__ENABLED": "false"}
        self.server = ServerProcess(data, free_port(), packs_dir=PACKS, env=env)
        self.server.start()
        self.log = open(tmp / "consume.log", "ab")  # noqa: SIM115 - closed in stop()
        self.consumer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gristmill",
                "consume",
                "rabbitmq",
                "--data-dir",
                str(data),
                "--pack",
                PACK,
                "--url",
                AMQP,
                "--queue",
                queue,
                "--source",
                "rabbitmq",
                "--prefetch",
                str(PREFETCH),
            ],
            env={**os.environ, "GRISTMILL_PACKS_DIR": str(PACKS), **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(base_url=self.server.url, timeout=60)

    def totals(self) -> dict[str, int]:
        r = self.http.get(
            "/v1/pipeline/stats", headers={"Authorization": f"Bearer {self.operator}"}
        )
        r.raise_for_status()
        t: dict[str, int] = r.json()["totals"]
        return t

    def stop(self) -> None:
        self.http.close()
        self.consumer.terminate()
        try:
            self.consumer.wait(30)
        except subprocess.TimeoutExpired:
            self.consumer.kill()
            self.consumer.wait()
        self.log.close()
        self.server.stop()


def _throughput(p: Pipeline, n: int) -> dict[str, Any]:
    t0 = t_consumed = 0.0
    deadline = time.monotonic() + 1800
    while True:
        assert p.consumer.poll() is None, "the consumer exited; see consume.log"
        assert time.monotonic() < deadline, p.totals()
        t = p.totals()
        now = time.perf_counter()
        if t0 == 0.0 and t["received"] > 0:
            t0 = now
        if t_consumed == 0.0 and t["received"] >= n:
            t_consumed = now
        if t["received"] >= n and t["in_flight"] == 0:
            return {
                "messages": n,
                "consumed_per_s": round(n / (t_consumed - t0)),
                "queryable_per_s": round(n / (now - t0)),
                "loaded": t["loaded"],
                "balanced": t["received"] == t["loaded"] + t["quarantined"] + t["duplicates"],
            }
        time.sleep(0.02)


def _probe_event(org: str) -> dict[str, Any]:
    return {
        "event_id": f"probe-{uuid.uuid4().hex}",
        "event_type": "usage_recorded",
        "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "properties": {
            "org_id": org,
            "model": "gpt-4o-mini",
            "provider": "openai",
            "tokens_in": 100,
            "tokens_out": 20,
            "latency_ms": 500,
            "status": "ok",
        },
    }


async def _probes(p: Pipeline, queue: str, until: threading.Event) -> dict[str, Any]:
    import aio_pika

    org = f"org_probe_{uuid.uuid4().hex[:6]}"
    lags: list[float] = []
    reported: list[float] = []
    stale = 0
    headers = {"Authorization": f"Bearer {p.platform}"}
    conn = await aio_pika.connect(AMQP)
    async with conn, httpx.AsyncClient(base_url=p.server.url, timeout=60) as client:
        ch = await conn.channel(publisher_confirms=True)
        while not until.is_set():
            body = orjson.dumps(_probe_event(org))
            t_pub = time.perf_counter()
            await ch.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), queue
            )
            want = len(lags) + 1
            while time.perf_counter() - t_pub < 120:
                r = await client.get(
                    f"/analytics/v1/orgs/{org}/usage", params={"preset": "1d"}, headers=headers
                )
                body_json = r.json()
                f = body_json["freshness"]
                reported.append(float(f["lag_seconds"]))
                stale += bool(f["stale"])
                if (body_json["totals"].get("requests") or 0) >= want:
                    lags.append(time.perf_counter() - t_pub)
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
    return {
        "probes": len(lags),
        "p50_ms": round(pct(lags, 50) * 1000, 1),
        "p95_ms": round(pct(lags, 95) * 1000, 1),
        "max_ms": round(max(lags, default=float("nan")) * 1000, 1),
        "reported_lag_max_s": round(max(reported, default=float("nan")), 3),
        "polls": len(reported),
        "stale_answers": stale,
    }


def _freshness(p: Pipeline, queue: str, rate: int, seconds: float) -> dict[str, Any]:
    bg = generate_usage(
        UsageConfig(events=int(rate * seconds), days=1, orgs=12, seed=4, duplicate_rate=0)
    )
    bodies = [orjson.dumps(e) for e in bg.events]
    done = threading.Event()

    def background() -> None:
        try:
            asyncio.run(publish_async(AMQP, queue, bodies, rate=rate))
        finally:
            done.set()

    t = threading.Thread(target=background, daemon=True)
    t.start()
    out = asyncio.run(_probes(p, queue, done))
    t.join()
    return {"background_per_s": rate, "seconds": seconds, **out}


def rabbitmq_to_queryable(n: int, rate: int, seconds: float) -> dict[str, Any]:
    if not _reachable(5672):
        return {"skipped": "rabbitmq is not reachable on 127.0.0.1:5672"}
    traffic = generate_usage(UsageConfig(events=n, days=7, orgs=12, seed=3, duplicate_rate=0))
    bodies = [orjson.dumps(e) for e in traffic.events]
    plain_q, ours_q = (f"gmbench-usage-{uuid.uuid4().hex[:8]}" for _ in range(2))
    out: dict[str, Any] = {"prefetch": PREFETCH}
    try:
        for q in (plain_q, ours_q):
            declare_queue(AMQP, q)
            t0 = time.perf_counter()
            publish(AMQP, q, bodies)
            out["publish_per_s"] = round(len(bodies) / (time.perf_counter() - t0))
        out["plain_consumer_per_s"] = round(plain_consumer(plain_q, len(bodies), PREFETCH))
        with tempfile.TemporaryDirectory() as tmp:
            p = Pipeline(Path(tmp), ours_q)
            try:
                out |= _throughput(p, len(bodies))
                print("usage throughput", out, flush=True)
                out["freshness"] = _freshness(p, ours_q, rate, seconds)
            finally:
                p.stop()
    finally:
        for q in (plain_q, ours_q):
            delete_queue(AMQP, q)
    out["ratio_to_plain"] = round(out["consumed_per_s"] / out["plain_consumer_per_s"], 2)
    return out


def run(
    messages: int = 100_000, events: int = 10_000_000, rate: int = 1000, seconds: float = 20
) -> dict[str, Any]:
    out = {"queue": rabbitmq_to_queryable(messages, rate, seconds)}
    print("usage queue", out["queue"], flush=True)
    out["views"] = views_at_scale(events)
    return out


def render(results: dict[str, Any]) -> str:
    r = results["usage"]
    q, v = r["queue"], r["views"]
    lines = [
        f"Run {results['when']} on {results['machine']['cores']} cores; embedded mode "
        "(SQLite log, DuckDB).",
        "",
        "| measure | Gristmill | baseline (same run) | ratio |",
        "|---|---|---|---|",
    ]
    if "skipped" in q:
        lines.append(f"| RabbitMQ → queryable | skipped: {q['skipped']} | — | — |")
    else:
        f = q["freshness"]
        lines += [
            f"| RabbitMQ → log: `consume rabbitmq`, {q['messages']:,} queued usage messages, "
            f"prefetch {q['prefetch']} | {q['consumed_per_s']:,} messages/s | plain aio-pika "
            f"consumer that only acks: {q['plain_consumer_per_s']:,} messages/s | "
            f"{q['ratio_to_plain']:.0%} |",
            f"| RabbitMQ → queryable in DuckDB (same run, until nothing in flight) | "
            f"{q['queryable_per_s']:,} events/s (balanced: {q['balanced']}) | — | — |",
            f"| publish → counted in `/usage` totals, under {f['background_per_s']:,} "
            f"messages/s for {f['seconds']:.0f} s | p50 {f['p50_ms']} ms, p95 {f['p95_ms']} ms, "
            f"max {f['max_ms']} ms ({f['probes']} probes) | budget 300 s | — |",
            f"| the freshness block meanwhile ({f['polls']} answers) | `lag_seconds` at most "
            f"{f['reported_lag_max_s']} s, `stale: true` {f['stale_answers']} times | "
            "budget 300 s | — |",
        ]
    lines += [
        "",
        f"{v['events']:,} usage events (DuckDB file {v['warehouse_mb']} MB; written in "
        f"{v['fill_s']} s, four rollups rebuilt in {v['rollups_full_rebuild_s']} s):",
        "",
        "| request (org from the ten largest, platform admin) | rollup path p50 / p95 | rows "
        "path p50 / p95 (rollups off) | speedup p50 |",
        "|---|---|---|---|",
    ]
    labels = {
        "usage_7d_day": "`/usage` 7d, by day",
        "usage_90d_day": "`/usage` 90d, by day",
        "reliability_1d_hour": "`/reliability` 1d, by hour (exact percentiles: rows)",
        "reliability_7d_hour": "`/reliability` 7d, by hour (histogram percentiles)",
    }
    for key, label in labels.items():
        c = v[key]
        lines.append(
            f"| {label} | {c['rollup_p50_ms']} / {c['rollup_p95_ms']} ms | {c['rows_p50_ms']} / "
            f"{c['rows_p95_ms']} ms | {c['speedup_p50']}x |"
        )
    p = v["usage_7d_project_filter"]
    lines.append(
        f"| `/usage` 7d by day, `project_id` filter (no rollup has it) | — | "
        f"{p['rows_p50_ms']} / {p['rows_p95_ms']} ms | — |"
    )
    fx = v.get("finance_export")
    if fx:
        g, d = fx["gristmill"], fx["duckdb_copy"]
        lines += [
            "",
            f"Finance export of {fx['period']} (one month of the {v['events']:,}), each side "
            "in its own process:",
            "",
            "| measure | Gristmill `finance_monthly` job | DuckDB `COPY (GROUP BY) TO csv` over "
            "raw rows | ratio |",
            "|---|---|---|---|",
            f"| seconds (rows: {g['rows']:,} per day, org and model; {g['requests']:,} "
            f"requests) | {g['seconds']} s (CSV + manifest + sha256 + reconciliation: "
            f"{'reconciled' if g['reconciled'] else 'NOT reconciled'}) | {d['seconds']} s | "
            f"{fx['ratio_seconds']}x |",
            f"| peak RSS | {g['peak_rss_mb']} MB | {d['peak_rss_mb']} MB | — |",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "--only", "usage", *sys.argv[1:]]
    from bench.__main__ import main

    main()
