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
2. **Views at 10M usage events** (DuckDB): rows written with SQL (``range()``: 50 orgs of
   skewed size, the generator's model mix, log-normal latency, exponential tokens, spend from
   the price book's current prices, ``latency_bin`` with the engine's bin formula), then the
   four rollups built by the engine's own ``full_rebuild``. Each view's code path (planner +
   DuckDB, in-process, as the route calls it) through the rollups, and the same requests with
   the planner's rollup choice turned off (rows). ``/usage`` also with a ``project_id``
   filter, which no rollup has (rows by necessity).

Run alone: ``python -m bench --only usage`` (sizes: ``--usage-messages``,
``--usage-events``, ``--usage-rate``, ``--usage-seconds``).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import PACKS, pct
from gristmill.config import Settings
from gristmill.demo.amqp import declare_queue, delete_queue, publish, publish_async
from gristmill.demo.process import ServerProcess, free_port
from gristmill.demo.usage import UsageConfig, generate_usage
from gristmill.meta.store import MetaStore

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
PACK = "usage_metering"
PREFETCH = 500
ORGS = 50
DAYS = 90


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


# -- 2. Views at 10M usage events ---------------------------------------------------------

# (provider, model, share %, median latency ms, sigma, mean tokens in, mean tokens out,
#  price per 1M input / output / cached tokens, as prices.yaml's current entries)
MODELS = [
    ("openai", "gpt-4o-mini", 40, 600, 0.45, 900, 250, "0.15", "0.60", "0.075"),
    ("openai", "gpt-4o", 22, 1400, 0.5, 1800, 450, "2.50", "10.00", "1.25"),
    ("anthropic", "claude-3-5-sonnet", 15, 1800, 0.5, 2200, 600, "3.00", "15.00", "0.30"),
    ("anthropic", "claude-3-5-haiku", 10, 700, 0.4, 1200, 300, "0.80", "4.00", "0.08"),
    ("google", "gemini-1.5-flash", 8, 500, 0.4, 1500, 350, "0.075", "0.30", "0.01875"),
    ("openai", "o3-mini", 4, 5200, 0.6, 1600, 2400, "1.10", "4.40", "0.55"),
    ("acme", "acme-experimental", 1, 900, 0.5, 800, 200, None, None, None),
]

FILL = """
INSERT INTO usage.usage_events (
    event_id, event_type, schema_version, occurred_at, received_at, loaded_at, source,
    org_id, project_id, api_key_id, model, provider, tokens_in, tokens_out, cached_tokens,
    latency_ms, status, error_code, spend_micros, latency_bin, ingested_at)
WITH g AS (
    SELECT i,
           $start + to_microseconds(CAST(i * $step AS BIGINT)) AS ts,
           'org_' || lpad(CAST(CAST(floor(pow(random(), 2.2) * $orgs) AS INT) AS VARCHAR),
                          3, '0') AS org,
           CAST(hash(i) % 100 AS INT) AS mh,
           random() AS us, 1 - random() AS u1, random() AS u2, 1 - random() AS u3,
           random() AS u4, 1 - random() AS u5
    FROM range($lo, $hi) r(i)
), c AS (
    SELECT g.*, m.*,
           CASE WHEN us < 0.01 THEN 'error' WHEN us < 0.013 THEN 'timeout' ELSE 'ok' END
               AS status,
           greatest(1, CAST(floor(-ln(u3) * m.tin) AS BIGINT)) AS t_in,
           CAST(m.median * exp(m.sigma * sqrt(-2 * ln(u1)) * cos(2 * pi() * u2)) AS BIGINT)
               AS lat
    FROM g JOIN models m ON g.mh BETWEEN m.lo AND m.hi
), d AS (
    SELECT c.*,
           CAST(floor(t_in * [0, 0, 0, 0.25, 0.5, 0.9][CAST(floor(u4 * 6) AS INT) + 1])
                AS BIGINT) AS cached,
           CASE WHEN status = 'ok'
                THEN greatest(1, CAST(floor(-ln(u5) * tout) AS BIGINT)) ELSE 0 END AS t_out
    FROM c
)
SELECT 'req_' || i, 'usage_recorded', 1, ts, ts, ts, 'bench',
       org, org || '_prj_' || (i % 3), org || '_key_' || (i % 4), model, provider,
       t_in, t_out, cached,
       CASE WHEN status = 'timeout' THEN greatest(lat, 30000) ELSE lat END,
       status,
       CASE WHEN status = 'ok' THEN NULL ELSE 'upstream_5xx' END,
       CASE WHEN p_in IS NULL THEN NULL
            ELSE CAST(round((t_in - cached) * p_in + t_out * p_out + cached * p_cached)
                      AS BIGINT) END,
       CASE WHEN lat <= 0 THEN -2147483648
            ELSE CAST(ceil(ln(CASE WHEN status = 'timeout' THEN greatest(lat, 30000)
                                   ELSE lat END) / ln($gamma)) AS BIGINT) END,
       ts
FROM d
"""


def _fill(rt: Any, n: int, end_us: int) -> float:
    """n usage rows over DAYS days in time order, ``models`` as a temp table."""
    from gristmill.core import sketch
    from gristmill.core.clock import to_datetime

    cur = rt.warehouse._cur()
    rows, lo = [], 0
    for prov, model, share, med, sig, tin, tout, p_in, p_out, p_c in MODELS:
        rows.append(
            f"({lo}, {lo + share - 1}, '{prov}', '{model}', {med}, {sig}, {tin}, {tout}, "
            + ", ".join(
                "NULL" if v is None else f"CAST('{v}' AS DECIMAL(18, 6))"
                for v in (p_in, p_out, p_c)
            )
            + ")"
        )
        lo += share
    cur.execute(
        "CREATE OR REPLACE TEMP TABLE models AS SELECT * FROM (VALUES "
        + ", ".join(rows)
        + ") v(lo, hi, provider, model, median, sigma, tin, tout, p_in, p_out, p_cached)"
    )
    span = DAYS * 86400 * 1_000_000
    t0 = time.perf_counter()
    chunk = 2_500_000
    for lo in range(0, n, chunk):
        cur.execute(
            FILL,
            {
                "start": to_datetime(end_us - span),
                "step": span / n,
                "orgs": ORGS,
                "lo": lo,
                "hi": min(n, lo + chunk),
                "gamma": sketch.gamma(0.01),
            },
        ).fetchall()
    return time.perf_counter() - t0


def _timed(fn: Any, iterations: int, seed: int = 5) -> list[float]:
    """Seconds per call of ``fn(org)``, the org drawn from the ten largest (where rows are)."""
    rng = random.Random(seed)
    out = []
    for _ in range(iterations):
        org = f"org_{rng.randrange(10):03d}"
        t0 = time.perf_counter()
        fn(org)
        out.append(time.perf_counter() - t0)
    return out


@contextmanager
def _rows_only(planner: Any) -> Iterator[None]:
    """The planner with its rollup choice turned off: every metric from rows."""
    real = planner.choose_rollup
    planner.choose_rollup = lambda *a: None
    try:
        yield
    finally:
        planner.choose_rollup = real


def _without_clock(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer without what reads the clock (the range's end is now, the freshness)."""
    return {k: v for k, v in answer.items() if k not in ("freshness", "range")}


def views_at_scale(n: int, iterations: int = 100, rows_iterations: int = 10) -> dict[str, Any]:
    from gristmill.api.routers.view_breakdown import answer_breakdown, answer_reliability
    from gristmill.auth.permissions import Principal
    from gristmill.metrics import planner
    from gristmill.rollup.spec import full_rebuild
    from gristmill.runtime import Runtime

    with tempfile.TemporaryDirectory() as tmp:
        rt = Runtime(Settings(data_dir=Path(tmp) / "d", packs_dir=PACKS, packs=[PACK]))
        try:
            fill_s = _fill(rt, n, int(time.time() * 1_000_000))
            pack = rt.packs[PACK]
            t0 = time.perf_counter()
            for name, r in pack.spec.rollups.items():
                for stmt in full_rebuild(pack, name, r, rt.warehouse.dialect):
                    rt.warehouse.execute(stmt)
            rebuild_s = time.perf_counter() - t0
            who = Principal(kind="secret", role="platform_admin", pack=PACK)
            usage, reliability = pack.spec.views["usage"], pack.spec.views["reliability"]

            def usage_view(preset: str, **query: str) -> Any:
                return lambda org: answer_breakdown(
                    rt, who, pack, usage, path={"orgId": org}, query=query, grain="day",
                    preset=preset, start=None, end=None, tz="UTC",
                )  # fmt: skip

            def reliability_view(preset: str) -> Any:
                return lambda org: answer_reliability(
                    rt, who, pack, reliability, path={"orgId": org}, query={}, grain="hour",
                    preset=preset, start=None, end=None, tz="UTC", percentiles=None,
                )  # fmt: skip

            cases = {
                "usage_7d_day": usage_view("7d"),
                "usage_90d_day": usage_view("90d"),
                "reliability_1d_hour": reliability_view("1d"),
                "reliability_7d_hour": reliability_view("7d"),
            }
            out: dict[str, Any] = {
                "events": n,
                "fill_s": round(fill_s, 1),
                "rollups_full_rebuild_s": round(rebuild_s, 1),
            }
            for name, fn in cases.items():
                fast = _timed(fn, iterations)
                with _rows_only(planner):
                    slow = _timed(fn, rows_iterations)
                    same = _without_clock(fn("org_000"))
                assert _without_clock(fn("org_000")) == same, f"{name}: rollups and rows differ"
                out[name] = {
                    "rollup_p50_ms": round(pct(fast, 50) * 1000, 1),
                    "rollup_p95_ms": round(pct(fast, 95) * 1000, 1),
                    "rows_p50_ms": round(pct(slow, 50) * 1000, 1),
                    "rows_p95_ms": round(pct(slow, 95) * 1000, 1),
                    "speedup_p50": round(pct(slow, 50) / pct(fast, 50), 1),
                }
                print("usage views", name, out[name], flush=True)
            proj = _timed(
                lambda org: usage_view("7d", project_id=f"{org}_prj_1")(org), rows_iterations
            )
            out["usage_7d_project_filter"] = {
                "rows_p50_ms": round(pct(proj, 50) * 1000, 1),
                "rows_p95_ms": round(pct(proj, 95) * 1000, 1),
            }
            db = Path(tmp) / "d" / "warehouse.duckdb"
            out["warehouse_mb"] = round(db.stat().st_size / 1e6)
        finally:
            rt.stop()
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
    return "\n".join(lines)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "--only", "usage", *sys.argv[1:]]
    from bench.__main__ import main

    main()
