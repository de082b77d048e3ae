"""Shared benchmark plumbing: paths, a server with keys, traffic, a load client."""

from __future__ import annotations

import http.client
import multiprocessing as mp
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow as pa

from gristmill.config import DuckDBSettings
from gristmill.demo.process import ServerProcess, free_port
from gristmill.load.batch import build_batch
from gristmill.meta.store import MetaStore
from gristmill.runtime import Runtime
from gristmill.warehouse.base import AfterInsert, LoadBatch
from gristmill.warehouse.duckdb.client import DuckDBWarehouse

ROOT = Path(__file__).resolve().parents[1]
PACKS = ROOT / "packs"
RESULTS = ROOT / "bench" / "results"


@dataclass
class Served:
    server: ServerProcess
    write_key: str
    operator_key: str
    api_url: str = ""
    """Where the operator API answers: the server's URL, or the loader's with ``--workers``."""

    def stats(self) -> dict[str, Any]:
        r = httpx.get(
            (self.api_url or self.server.url) + "/v1/pipeline/stats",
            headers={"Authorization": f"Bearer {self.operator_key}"},
            timeout=30,
        )
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def wait_loaded(self, timeout_s: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.stats()
            if st["totals"]["in_flight"] == 0:
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(st)
            time.sleep(0.02)


def serve(
    tmp: Path,
    *,
    source: str = "bench",
    env: dict[str, str] | None = None,
    workers: int = 1,
    balance: str = "reuseport",
) -> Served:
    """A ``gristmill serve`` child; with ``workers`` > 1 a supervisor of that many collect
    workers over as many log partitions, and a loader process on the next free port."""
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    meta = MetaStore(f"sqlite:///{data / 'meta.sqlite'}")
    key = meta.create_key("write", source, pack="marketplace", source=source)[1]
    op = meta.create_key("secret", "bench", role="operator")[1]
    meta.close()
    if workers == 1:
        server = ServerProcess(data, free_port(), packs_dir=PACKS, env=env)
        server.start()
        return Served(server, key, op)
    api_port = free_port()
    server = ServerProcess(
        data,
        free_port(),
        packs_dir=PACKS,
        env={**(env or {}), "GRISTMILL_LOG__PARTITIONS": str(workers)},
        args=("--workers", str(workers), "--api-port", str(api_port), "--balance", balance),
    )
    server.start(timeout_s=120)
    deadline = time.monotonic() + 120
    while not _all_listening(data):  # the port answering means one worker listens, not all
        if time.monotonic() > deadline:
            raise TimeoutError(f"serve --workers {workers}: not every worker started")
        time.sleep(0.05)
    return Served(server, key, op, api_url=f"http://127.0.0.1:{api_port}")


def _all_listening(data: Path) -> bool:
    try:
        return bool(orjson.loads((data / "workers.json").read_bytes())["ready"])
    except (FileNotFoundError, orjson.JSONDecodeError):
        return False


def bodies(events: Sequence[dict[str, Any]], size: int) -> list[bytes]:
    return [orjson.dumps(list(events[i : i + size])) for i in range(0, len(events), size)]


def _connection(
    port: int,
    key: str,
    chunk: list[bytes],
    statuses: dict[int, int],
    path: str = "/v1/events",
    headers: dict[str, str] | None = None,
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = headers or {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    for body in chunk:
        while True:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            if resp.status in (429, 503):
                time.sleep(float(resp.getheader("Retry-After") or "1"))
                continue
            break
    conn.close()


def _client(
    port: int,
    key: str,
    chunk: list[bytes],
    conns: int,
    out: mp.Queue,  # type: ignore[type-arg]
    path: str,
    headers: dict[str, str] | None,
) -> None:
    statuses: dict[int, int] = {}
    threads = [
        threading.Thread(
            target=_connection, args=(port, key, chunk[i::conns], statuses, path, headers)
        )
        for i in range(conns)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(statuses)


def blast(
    port: int,
    key: str,
    payloads: list[bytes],
    clients: int,
    conns: int = 16,
    path: str = "/v1/events",
    headers: dict[str, str] | None = None,
) -> dict[int, int]:
    """POST every payload from ``clients`` processes with ``conns`` keep-alive connections each
    (many concurrent senders, as many app servers or SDK instances would be)."""
    ctx = mp.get_context("fork")
    q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [
        ctx.Process(target=_client, args=(port, key, payloads[i::clients], conns, q, path, headers))
        for i in range(clients)
    ]
    for p in procs:
        p.start()
    total: dict[int, int] = {}
    for _ in procs:
        for k, v in q.get().items():
            total[k] = total.get(k, 0) + v
    for p in procs:
        p.join()
    return total


def collect(rt: Runtime, events: Sequence[dict[str, Any]], per_request: int = 100) -> list[Any]:
    """Send ``events`` through the real collector into the log, ``per_request`` to a native
    request, as a client would; returns each request's prepared frame (``.frame``)."""
    prepared = []
    for i in range(0, len(events), per_request):
        p = rt.collector.prepare(
            pack="marketplace",
            source="bench",
            dialect="native",
            raw=orjson.dumps(events[i : i + per_request]),
        )
        rt.collector.submit_sync(p)
        prepared.append(p)
    return prepared


def log_batches(
    rt: Runtime,
    group: str,
    max_events: int | None = None,
    after: Mapping[tuple[str, str], tuple[AfterInsert, ...]] | None = None,
) -> list[LoadBatch]:
    """The whole log read into the loader's own batches (``build_batch``, up to
    ``max_events`` events each, the loader's setting by default; ``after``: the rollup and
    freshness steps each table's load runs), without loading them."""
    size = max_events or rt.settings.loader.max_events
    out: list[LoadBatch] = []
    offset = 0
    while True:
        b = rt.log.read(group, size, 0, after=offset)
        if not b.entries:
            return out
        offset = b.last_offset
        out.append(build_batch(b.entries, rt.packs, log_id=group, group=group, after=after))


def raw_duckdb_append(path: Path, tables: Sequence[tuple[str, pa.Table]]) -> float:
    """Seconds for DuckDB's own path, no guarantees: ``INSERT INTO t SELECT * FROM arrow`` per
    table into plain tables of a fresh file, at the warehouse's checkpoint threshold and with
    the last checkpoint on the clock, as the loader's side (:func:`checkpointed`)."""
    import duckdb

    threshold = DuckDBSettings().checkpoint_threshold
    con = duckdb.connect(str(path), config={"checkpoint_threshold": threshold})
    made: set[str] = set()
    t0 = time.perf_counter()
    for name, arrow in tables:
        con.register("a", arrow)
        if name not in made:
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM a LIMIT 0")
            made.add(name)
        con.execute(f"INSERT INTO {name} SELECT * FROM a")
        con.unregister("a")
    con.execute("CHECKPOINT")
    spent = time.perf_counter() - t0
    con.close()
    return spent


def checkpointed(rt: Runtime) -> None:
    """DuckDB defers writing rows into its file to a checkpoint (at a WAL size, inside some
    later commit): run the one a load left pending, on the clock, on every side of a
    comparison (the raw sides end with ``CHECKPOINT`` too)."""
    if isinstance(rt.warehouse, DuckDBWarehouse):
        rt.warehouse.checkpoint()


def pct(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]
