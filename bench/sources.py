"""Scaled-out logs: end-to-end events/s and p95 event-to-queryable with 2 collectors and 2
loaders over RabbitMQ streams and over NATS JetStream, beside the embedded SQLite log (one
``gristmill serve``) in the same run. Every mode loads into its own scratch PostgreSQL
database, so the log is what differs.

Run alone: ``python -m bench --only sources`` (or ``python -m bench.sources``).
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from bench.common import PACKS, blast, bodies, pct
from gristmill.config import Settings
from gristmill.demo.marketplace import DemoConfig, generate
from gristmill.demo.process import LoaderProcess, ServerProcess, free_port
from gristmill.load.conservation import Conservation
from gristmill.meta.store import MetaStore
from gristmill.runtime import Runtime

ADMIN_DSN = "host=127.0.0.1 dbname=postgres user=postgres"
SERVICES = {"rabbitmq": 5672, "nats": 4222}


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def _database() -> Iterator[str]:
    name = f"gm_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # a generated name, not input
    try:
        yield f"host=127.0.0.1 dbname={name} user=postgres"
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Deployment:
    """One mode's processes: collectors, loaders, and an observer runtime for conservation."""

    def __init__(self, tmp: Path, kind: str, dsn: str, loaders: int = 2) -> None:
        self.kind = kind
        self.dsn = dsn
        data = tmp / "data"
        data.mkdir(parents=True)
        env = {"GRISTMILL_WAREHOUSE__TYPE": "postgres", "GRISTMILL_WAREHOUSE__DSN": dsn}
        log: dict[str, Any] = {"type": kind}
        if kind != "sqlite":
            stream = f"gmbench-{uuid.uuid4().hex[:10]}"
            env |= {
                "GRISTMILL_LOG__TYPE": kind,
                "GRISTMILL_LOG__STREAM": stream,
                "GRISTMILL_LOG__PARTITIONS": "2",
            }
            log |= {"stream": stream, "partitions": 2}
        settings = Settings(
            data_dir=data,
            packs_dir=PACKS,
            packs=["marketplace"],
            log=log,  # type: ignore[arg-type]
            warehouse={"type": "postgres", "dsn": dsn},  # type: ignore[arg-type]
        )
        meta = MetaStore(f"sqlite:///{data / 'meta.sqlite'}")
        self.key = meta.create_key("write", "bench", pack="marketplace", source="bench")[1]
        meta.close()
        self.loaders: list[LoaderProcess] = []
        if kind == "sqlite":
            # Embedded: one process is collector and loader; the observer must not hold the
            # SQLite log's loader, so it is built after the server is up (read-only use).
            self.collectors = [ServerProcess(data, free_port(), packs_dir=PACKS, env=env)]
            self.collectors[0].start()
            self.observer = Runtime(settings, "load")
        else:
            self.observer = Runtime(settings, "load")  # provisions before the loaders start
            self.collectors = [
                ServerProcess(data, free_port(), packs_dir=PACKS, env=env, role="collect")
                for _ in range(2)
            ]
            self.loaders = [
                LoaderProcess(
                    data, packs_dir=PACKS, env=env, max_partitions=2 // loaders, name=f"ld{i}"
                )
                for i in range(loaders)
            ]
            for c in self.collectors:
                c.start()
            for lp in self.loaders:
                lp.start()

    def conservation(self) -> Conservation:
        return self.observer.conservation()

    def wait_loaded(self, timeout_s: float = 600) -> Conservation:
        deadline = time.monotonic() + timeout_s
        while True:
            c = self.conservation()
            if c.total("in_flight") == 0:
                return c
            if time.monotonic() > deadline:
                raise TimeoutError(c.as_dict())
            time.sleep(0.25)  # a snapshot scans the broker: do not compete with the loaders

    def stop(self) -> None:
        for c in self.collectors:
            c.stop()
        for lp in self.loaders:
            lp.stop()
        self.observer.stop()


def _throughput(d: Deployment, payloads: list[bytes], events: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    results: list[dict[int, int]] = []
    threads = [
        threading.Thread(
            target=lambda c=c, i=i: results.append(
                blast(c.port, d.key, payloads[i :: len(d.collectors)], 1)
            )
        )
        for i, c in enumerate(d.collectors)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t_acked = time.perf_counter() - t0
    c = d.wait_loaded()
    t_loaded = time.perf_counter() - t0
    return {
        "events": events,
        "acked_events_per_s": round(events / t_acked),
        "end_to_end_events_per_s": round(events / t_loaded),
        "balanced": c.balanced,
        "statuses": {k: sum(r.get(k, 0) for r in results) for k in {k for r in results for k in r}},
    }


def _latency(d: Deployment, rate: int, seconds: float) -> dict[str, Any]:
    traffic = generate(
        DemoConfig(events=int(rate * seconds) + 1000, duplicate_rate=0, invalid_rate=0, seed=8)
    )
    payloads = bodies(traffic.events, 100)
    stop = threading.Event()
    urls = [c.url for c in d.collectors]
    h = {"Authorization": f"Bearer {d.key}"}

    def background() -> None:
        interval = 100 / rate
        with httpx.Client(headers=h) as client:
            nxt = time.perf_counter()
            for i, body in enumerate(payloads):
                if stop.is_set():
                    return
                client.post(urls[i % len(urls)] + "/v1/events", content=body)
                nxt += interval
                time.sleep(max(0.0, nxt - time.perf_counter()))

    bg = threading.Thread(target=background, daemon=True)
    bg.start()
    probe = dict(traffic.events[0])
    probe["event_type"] = "order_created"
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    try:
        with httpx.Client(headers=h) as client, psycopg.connect(d.dsn, autocommit=True) as pg:
            n = 0
            while time.monotonic() < deadline:
                eid = f"probe-{uuid.uuid4()}"
                body = orjson.dumps([{**traffic.events[n], "event_id": eid}])
                table = (
                    "marketplace.ad_events"
                    if traffic.events[n]["event_type"].startswith("ad_")
                    else "marketplace.marketplace_events"
                )
                n += 1
                r = client.post(urls[n % len(urls)] + "/v1/events", content=body)
                t_ack = time.perf_counter()
                if r.status_code != 200:
                    continue
                while time.perf_counter() - t_ack < 60:
                    # the query path of the scaled-out mode: the warehouse itself
                    row = pg.execute(
                        f"SELECT 1 FROM {table} WHERE event_id = %s",
                        (eid,),
                    ).fetchone()
                    if row:
                        latencies.append(time.perf_counter() - t_ack)
                        break
                    time.sleep(0.005)
                time.sleep(0.1)
    finally:
        stop.set()
        bg.join()
    return {
        "background_events_per_s": rate,
        "probes": len(latencies),
        "p50_ms": round(pct(latencies, 50) * 1000, 1),
        "p95_ms": round(pct(latencies, 95) * 1000, 1),
    }


def run(events: int = 100_000, rate: int = 1000, seconds: float = 15) -> dict[str, Any]:
    traffic = generate(DemoConfig(events=events, duplicate_rate=0, invalid_rate=0, seed=5))
    payloads = bodies(traffic.events, 100)
    out: dict[str, Any] = {}
    for kind in ("sqlite", "rabbitmq", "nats"):
        if kind in SERVICES and not _reachable(SERVICES[kind]):
            out[kind] = {"skipped": f"{kind} is not reachable on 127.0.0.1:{SERVICES[kind]}"}
            continue
        with tempfile.TemporaryDirectory() as tmp, _database() as dsn:
            d = Deployment(Path(tmp), kind, dsn)
            try:
                r = _throughput(d, payloads, len(traffic.events))
                r |= _latency(d, rate, seconds)
                r["collectors"], r["loaders"] = len(d.collectors), max(1, len(d.loaders))
            finally:
                d.stop()
        out[kind] = r
        print("sources", kind, r, flush=True)
    return out


def render(results: dict[str, Any]) -> str:
    res = results["sources"]
    lines = [
        f"Run {results['when']} on {results['machine']['cores']} cores; PostgreSQL warehouse "
        f"for every mode; {next(iter(res.values())).get('events', 0):,} events in 100-event "
        "batches, then probes under background load.",
        "",
        "| log | collectors + loaders | acked events/s | end-to-end events/s | "
        "2xx → queryable p50 / p95 (background) | balanced |",
        "|---|---|---|---|---|---|",
    ]
    for kind, r in res.items():
        if "skipped" in r:
            lines.append(f"| {kind} | — | {r['skipped']} | — | — | — |")
            continue
        procs = "1 (embedded)" if kind == "sqlite" else f"{r['collectors']} + {r['loaders']}"
        lines.append(
            f"| {kind} | {procs} | {r['acked_events_per_s']:,} | "
            f"{r['end_to_end_events_per_s']:,} | {r['p50_ms']} / {r['p95_ms']} ms "
            f"({r['background_events_per_s']:,} events/s) | {r['balanced']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    sys.argv = [sys.argv[0], "--only", "sources", *sys.argv[1:]]
    from bench.__main__ import main

    main()
