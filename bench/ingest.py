"""(a) HTTP batch ingest end to end and (d) time from 2xx to queryable."""

from __future__ import annotations

import sqlite3
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import blast, bodies, pct, serve
from gristmill.demo.marketplace import DemoConfig, generate


def end_to_end(
    events: int, batch: int = 100, clients: int = 2, workers: int = 1, balance: str = "reuseport"
) -> dict[str, Any]:
    """Events/s from the first request until every event is loaded and queryable; with
    ``workers`` > 1, ``serve --workers`` (that many collect processes on one port)."""
    traffic = generate(DemoConfig(events=events, duplicate_rate=0, invalid_rate=0, seed=3))
    payloads = bodies(traffic.events, batch)
    with tempfile.TemporaryDirectory() as tmp:
        s = serve(Path(tmp), workers=workers, balance=balance)
        try:
            t0 = time.perf_counter()
            statuses = blast(s.server.port, s.write_key, payloads, clients)
            t_acked = time.perf_counter() - t0
            st = s.wait_loaded()
            t_loaded = time.perf_counter() - t0
        finally:
            s.server.stop()
        split = [_received(Path(tmp) / "data" / "log" / f"p{i}.sqlite") for i in range(workers)]
    n = len(traffic.events)
    return {
        "events": n,
        "batch_size": batch,
        "client_processes": clients,
        "collect_workers": workers,
        "balance": balance if workers > 1 else None,
        "events_per_worker": split if workers > 1 else None,
        "statuses": statuses,
        "acked_events_per_s": round(n / t_acked),
        "end_to_end_events_per_s": round(n / t_loaded),
        "seconds_to_ack": round(t_acked, 2),
        "seconds_to_loaded": round(t_loaded, 2),
        "balanced": st["balanced"],
        "loader_batches": st["loader"]["batches"],
    }


def _received(path: Path) -> int:
    """Events one partition file counted (which worker took how much of the traffic)."""
    if not path.exists():
        return 0
    con = sqlite3.connect(path)
    try:
        return int(con.execute("SELECT coalesce(sum(received), 0) FROM counters").fetchone()[0])
    finally:
        con.close()


def workers_vs_one(events: int, workers: int = 2, clients: int = 2) -> dict[str, Any]:
    """The same traffic into one ``serve`` process, then into ``serve --workers`` with each
    way of spreading connections: the ratios are what collecting on more cores buys on this
    machine (the clients share its cores)."""
    one = end_to_end(events, clients=clients)
    out: dict[str, Any] = {"one": one}
    for balance in ("reuseport", "accept"):
        many = end_to_end(events, clients=clients, workers=workers, balance=balance)
        out[balance] = {
            **many,
            "ratio_acked": round(many["acked_events_per_s"] / one["acked_events_per_s"], 2),
            "ratio_loaded": round(
                many["end_to_end_events_per_s"] / one["end_to_end_events_per_s"], 2
            ),
        }
    return out


SENDERS = 4
"""Background senders, each its own connection: one paced sender fell short of 20k events/s
(it waited on each answer), so the background was lighter than the figure said."""


def to_queryable(
    rate: int,
    seconds: float,
    env: dict[str, str] | None = None,
    probes_per_s: float = 20,
    workers: int = 1,
    poll_s: float = 0.005,
    since: str | None = "1m",
) -> dict[str, Any]:
    """p50/p95 from a probe's 2xx until it is visible, under a steady background load
    (``env``: settings of the server, e.g. the loader's batch wait; ``workers`` > 1: under
    ``serve --workers``, the loader in a process of its own; ``since``: the trace's
    narrowing, None for the full scan the probe made before 2026-12-06)."""
    traffic = generate(
        DemoConfig(events=int(rate * seconds) + 1000, duplicate_rate=0, invalid_rate=0, seed=4)
    )
    payloads = bodies(traffic.events, 100)
    latencies: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        s = serve(Path(tmp), env=env, workers=workers)
        url = s.server.url
        api = s.api_url or url
        stop = threading.Event()
        sent = [0] * SENDERS

        def background(k: int) -> None:
            interval = 100 * SENDERS / rate
            with httpx.Client(headers={"Authorization": f"Bearer {s.write_key}"}) as c:
                nxt = time.perf_counter()
                for body in payloads[k::SENDERS]:
                    if stop.is_set():
                        return
                    c.post(url + "/v1/events", content=body)
                    sent[k] += 100
                    nxt += interval
                    time.sleep(max(0.0, nxt - time.perf_counter()))

        senders = [threading.Thread(target=background, args=(k,)) for k in range(SENDERS)]
        for t in senders:
            t.start()
        t0 = time.perf_counter()
        probe = dict(traffic.events[0])
        ops = {"Authorization": f"Bearer {s.operator_key}"}
        deadline = time.monotonic() + seconds

        try:
            with httpx.Client() as c:
                while time.monotonic() < deadline:
                    eid = f"probe-{uuid.uuid4()}"
                    body = orjson.dumps([{**probe, "event_id": eid}])
                    r = c.post(
                        url + "/v1/events",
                        content=body,
                        headers={"Authorization": f"Bearer {s.write_key}"},
                    )
                    t_ack = time.perf_counter()
                    assert r.status_code == 200, r.text
                    while True:
                        # since: only the newest row groups are read. Without it the trace
                        # scans every event table, polled every 5 ms a load of its own.
                        got = c.get(
                            f"{api}/v1/pipeline/events/{eid}",
                            params={"since": since} if since else None,
                            headers=ops,
                        ).json()
                        if got["status"] == "loaded":
                            latencies.append(time.perf_counter() - t_ack)
                            break
                        time.sleep(poll_s)
                    time.sleep(1 / probes_per_s)
        finally:
            achieved = sum(sent) / (time.perf_counter() - t0)
            stop.set()
            for t in senders:
                t.join()
            s.server.stop()
    return {
        "workers": workers,
        "background_events_per_s": rate,
        "background_sent_per_s": round(achieved),
        "poll_ms": poll_s * 1000,
        "probes": len(latencies),
        "p50_ms": round(pct(latencies, 50) * 1000, 1),
        "p95_ms": round(pct(latencies, 95) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1),
    }
