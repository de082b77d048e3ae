"""Single-event requests through the ingest path in process: one log record per request (how
a broker log takes them, and how the embedded log took them before) against frames merged
at the group commit (``log.frames``, what the embedded log does now).

No HTTP server: the ingest app (``IngestApp``, the fast path uvicorn calls) is driven
directly by 16 concurrent senders, one native event per request, against the real embedded
log of a ``collect``-role runtime (no loader), so the CPU per request is the collector's
own: auth, rate limits, parse, validate, frame, the group commit and its fsync. The modes
alternate over the rounds, each run in a fresh interpreter with a fresh data directory; the
median round is shown. Then the loader's side: ``build_batch`` over each log's records for loads
of 300 events, the size the adaptive wait makes at ~5k single-event requests/s (median per
load).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import PACKS, ROOT
from bench.dialects import _events, native
from gristmill.api.app import create_app
from gristmill.api.routers.ingest import ROUTES
from gristmill.config import Settings
from gristmill.load.batch import build_batch
from gristmill.meta.store import MetaStore
from gristmill.runtime import Runtime

SENDERS = 16
LOAD_EVENTS = 300


def _runtime(tmp: Path) -> tuple[Runtime, str]:
    meta = MetaStore(f"sqlite:///{tmp / 'meta.sqlite'}")
    key = meta.create_key("write", "bench", pack="marketplace", source="bench")[1]
    meta.close()
    return Runtime(Settings(data_dir=tmp, packs_dir=PACKS), role="collect"), key


def _one_mode(requests: int, merged: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        rt, key = _runtime(Path(d))
        try:
            if not merged:
                rt.collector.frames = None  # one encoded record per request
            ingest = create_app(rt, start=False).ingest  # type: ignore[attr-defined]
            template = native(_events("x", 1), key).decode().replace("x-0", "__ID__")
            bodies = [template.replace("__ID__", f"id-{i}").encode() for i in range(requests)]
            headers = [
                (b"authorization", f"Bearer {key}".encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(bodies[0])).encode()),
            ]
            route = ROUTES[("POST", "/v1/events")]

            async def send(body: bytes) -> None:
                scope = {
                    "type": "http",
                    "method": "POST",
                    "path": "/v1/events",
                    "headers": headers,
                    "query_string": b"",
                    "client": ("127.0.0.1", 5000),
                }
                answered: list[dict[str, Any]] = []

                async def receive() -> dict[str, Any]:
                    return {"type": "http.request", "body": body, "more_body": False}

                async def reply(msg: dict[str, Any]) -> None:
                    answered.append(msg)

                await ingest(route, scope, receive, reply)
                if answered[0]["status"] != 200:
                    raise RuntimeError(f"ingest answered {answered}")

            async def sender(mine: list[bytes]) -> None:
                for body in mine:
                    await send(body)

            async def everyone() -> None:
                await asyncio.gather(*(sender(bodies[i::SENDERS]) for i in range(SENDERS)))

            wall, cpu = time.perf_counter(), time.process_time()
            asyncio.run(everyone())
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            records: list[Any] = []
            while more := rt.log.read("bench", 10 * requests, 0, after=_last(records)).entries:
                records += more
            # Loads of LOAD_EVENTS events, as the loader cuts them: whole records.
            loads: list[list[Any]] = [[]]
            count = 0
            for e in records:
                if count >= LOAD_EVENTS:
                    loads.append([])
                    count = 0
                loads[-1].append(e)
                count += e.record.count
            build_batch(loads[0], rt.packs, log_id="b", group="g")  # first calls warm up
            builds = []
            for chunk in loads:
                t = time.process_time()
                build_batch(chunk, rt.packs, log_id="b", group="g")
                builds.append(time.process_time() - t)
        finally:
            rt.stop()
    return {
        "requests_per_s": round(requests / wall),
        "cpu_ms_per_request": round(cpu * 1e3 / requests, 4),
        "events": sum(e.record.count for e in records),
        "records": len(records),
        "build_ms_per_load": round(statistics.median(builds) * 1e3, 2),
    }


def _last(records: list[Any]) -> int:
    return records[-1].offset if records else 0


def _in_child(requests: int, merged: bool) -> dict[str, Any]:
    """One run in a fresh interpreter: no heap or collector state carried between modes."""
    code = (
        "import json, sys; from bench.single import _one_mode; "
        f"print(json.dumps(_one_mode({requests}, merged={merged})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(requests: int = 20_000, rounds: int = 3) -> dict[str, Any]:
    by_mode: dict[str, list[dict[str, Any]]] = {"per_request": [], "merged": []}
    for r in range(rounds):
        order = ("per_request", "merged") if r % 2 == 0 else ("merged", "per_request")
        for mode in order:
            by_mode[mode].append(_in_child(requests, merged=mode == "merged"))
    out: dict[str, Any] = {"requests": requests, "senders": SENDERS, "rounds": rounds}
    for mode, runs in by_mode.items():
        mid = sorted(runs, key=lambda x: x["cpu_ms_per_request"])[len(runs) // 2]
        out[mode] = {
            **mid,
            "cpu_ms_per_request_all": [x["cpu_ms_per_request"] for x in runs],
            "build_ms_per_load_median": statistics.median(x["build_ms_per_load"] for x in runs),
        }
    return out


def render(results: dict[str, Any]) -> str:
    r = results["single"]
    per, merged = r["per_request"], r["merged"]
    lines = [
        f"Run {results['when']} on {results['machine']['cores']} cores; {r['requests']:,} "
        f"single-event requests from {r['senders']} concurrent senders per run, in process, "
        f"{r['rounds']} rounds alternating the modes (median round by CPU per request).",
        "",
        "| mode | CPU per request | all rounds | requests/s | log records for the events "
        f"| loader build per {LOAD_EVENTS}-event load |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in (("one record per request (before)", per), ("merged at the commit", merged)):
        lines.append(
            f"| {name} | {m['cpu_ms_per_request']:.4f} ms | "
            f"{' / '.join(f'{x:.4f}' for x in m['cpu_ms_per_request_all'])} | "
            f"{m['requests_per_s']:,} | {m['records']:,} for {m['events']:,} | "
            f"{m['build_ms_per_load_median']:.2f} ms |"
        )
    ratio = merged["cpu_ms_per_request"] / per["cpu_ms_per_request"]
    lines += ["", f"Merged / per request, CPU per request: {ratio:.0%}."]
    return "\n".join(lines)
