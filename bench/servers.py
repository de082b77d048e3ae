"""Issue 14: the HTTP server choice for single-event ingest, measured rather than assumed.

The same single-event request as bench/dialects.py's native one (one order per POST, a fresh
event id per request) from ``wrk -t2 -c32`` for 8 s against:

* ``gristmill serve``: uvicorn + httptools on uvloop, one process (collector, loader, API);
* ``gristmill serve --workers 2``: two such collector processes on one port (``SO_REUSEPORT``),
  each appending to its own log partition, and the loader in a third process;
* granian (a Rust HTTP server: HTTP parsing and socket I/O in Rust threads, the ASGI app on a
  uvloop event loop) running the same ASGI app, one worker (collector, loader and API in the
  worker, as ``serve``);
* the floor: uvicorn + httptools on uvloop serving a bare ASGI app that reads the body and
  answers 202, with no collector, log or loader behind it, in one and in two worker
  processes. What the same server does with nothing to do bounds what any app on it can do
  on this machine (the issue's 10k req/s aim is read against it). It runs ``serve``'s HTTP
  protocol (a response's head and body in one write, ``gristmill.api.protocol``), and once
  more, in one process, uvicorn's own (two writes); ``serve`` runs both ways too;
* granian, two workers. A granian worker is a whole process running the app's lifespan, and
  granian does not tell the app which worker it is: two workers of the plain app would be two
  loaders, two erasure/export schedulers and two appenders into one log partition, which is
  not how Gristmill runs. So the two workers here run the collector only (``role=collect``),
  each claiming its own log partition with a lock file when granian builds its app, and the
  loader runs in a separate ``gristmill serve`` process: the layout of ``serve --workers 2``
  with granian in place of uvicorn.

Every run gets a fresh data directory (embedded SQLite log, DuckDB warehouse, the loader
running as in ``serve``). After it the loader is drained and conservation is checked: every
event wrk saw acknowledged is received by the log, and received = loaded + quarantined +
duplicates + in flight (0 quarantined and 0 duplicates expected). wrk stops with up to 32
requests still open, so ``received`` may exceed the acknowledged count by at most that.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import PACKS, ROOT, Served, serve
from bench.dialects import _events, native, wrk_script
from bench.ingest import _received
from gristmill.demo.process import ServerProcess, free_port
from gristmill.meta.store import MetaStore

SECONDS = 8
CONNECTIONS = 32
CLAIM = "granian-partition-{}.lock"
_claimed: list[int] = []  # lock file descriptors, held for the worker's lifetime


def granian_app() -> Any:
    """The ASGI app for a granian worker (``granian --factory bench.servers:granian_app``).

    Settings come from the environment as for ``gristmill serve``. ``GM_BENCH_ROLE=collect``
    makes a collector that claims the first free log partition (an exclusive lock on a file
    in the data directory, released when the worker exits) and appends only to it."""
    from gristmill.api.app import create_app
    from gristmill.config import Settings
    from gristmill.runtime import Runtime

    role = os.environ.get("GM_BENCH_ROLE", "all")
    settings = Settings()
    if role == "collect":
        partitions = int(os.environ["GRISTMILL_LOG__PARTITIONS"])
        for i in range(partitions):
            fd = os.open(settings.data_dir / CLAIM.format(i), os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            _claimed.append(fd)
            os.environ["GRISTMILL_LOG__APPEND_PARTITION"] = str(i)
            settings = Settings()
            break
        else:
            raise RuntimeError("every log partition is claimed by another granian worker")
    rt = Runtime(settings, "collect" if role == "collect" else "all")
    app = create_app(rt, url=os.environ.get("GM_BENCH_URL"))
    gc.collect()  # as `gristmill serve` does before serving
    gc.freeze()
    return app


async def floor_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The floor (``uvicorn bench.servers:floor_app``): read the request body, answer 202 with
    a body of the size ingest answers, do nothing else."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    body = b'{"accepted":1,"rejected":0}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 202, "headers": headers})
    await send({"type": "http.response.body", "body": body})


COALESCING = "gristmill.api.protocol:CoalescingHttpToolsProtocol"
"""The HTTP protocol ``gristmill serve`` runs (``SERVER__COALESCE_WRITES``, the default)."""


def _floor(tmp: Path, workers: int, http: str = COALESCING) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp / "floor.log", "ab") as log:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "bench.servers:floor_app"),
                *("--http", http, "--loop", "uvloop", "--no-access-log"),
                *("--log-level", "warning", "--host", "127.0.0.1", "--port", str(port)),
                *("--workers", str(workers)),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.post(url + "/v1/events", content=b"{}", timeout=1).status_code == 202:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the floor server did not start: {tmp / 'floor.log'}")
            time.sleep(0.05)
        time.sleep(1 if workers > 1 else 0)  # every worker listening, not only the first
        return wrk_single(url, "-", tmp)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Granian:
    """``granian --interface asgi --factory bench.servers:granian_app`` as a child process."""

    def __init__(self, data: Path, port: int, workers: int, env: dict[str, str]) -> None:
        self.data, self.port, self.workers = data, port, workers
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "GRISTMILL_PACKS_DIR": str(PACKS), **env}
        self.env["GRISTMILL_DATA_DIR"] = str(data)
        self.env["GM_BENCH_URL"] = self.url
        self.log = open(data.parent / f"granian-{port}.log", "ab")  # noqa: SIM115 - closed in stop
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 120) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "granian",
                "--interface",
                "asgi",
                "--factory",
                "--loop",
                "uvloop",
                "--http",
                "1",
                "--no-ws",
                "--log-level",
                "warning",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
                *os.environ.get("GM_BENCH_GRANIAN_ARGS", "").split(),
                "bench.servers:granian_app",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers are stopped with it, by process group
        )
        deadline = time.monotonic() + timeout_s
        while not self._healthy():
            if self.proc.poll() is not None:
                raise RuntimeError(f"granian exited with {self.proc.returncode}: {self.log.name}")
            if time.monotonic() > deadline:
                raise TimeoutError("granian did not become healthy")
            time.sleep(0.05)
        if self.env.get("GM_BENCH_ROLE") == "collect":
            # Healthy means one worker listens: wait until every worker holds its partition.
            while not all(_held(self.data / CLAIM.format(i)) for i in range(self.workers)):
                if time.monotonic() > deadline:
                    raise TimeoutError("not every granian worker started")
                time.sleep(0.05)
            time.sleep(1)  # the app is built before the worker listens

    def _healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # granian's main process stops its workers
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def _held(path: Path) -> bool:
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _keys(data: Path) -> tuple[str, str]:
    data.mkdir(parents=True, exist_ok=True)
    meta = MetaStore(f"sqlite:///{data / 'meta.sqlite'}")
    key = meta.create_key("write", "bench", pack="marketplace", source="bench")[1]
    op = meta.create_key("secret", "bench", role="operator")[1]
    meta.close()
    return key, op


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert m is not None, text
    return round(float(m.group(1)) * _UNITS[m.group(2)], 2)


def parse_wrk(out: str) -> dict[str, Any]:
    """Requests/s, p50/p99 latency (ms), requests, non-2xx and socket errors from wrk's
    ``--latency`` output."""
    r: dict[str, Any] = {"non_2xx": 0, "socket_errors": 0}
    for line in out.splitlines():
        s = line.split()
        if line.startswith("Requests/sec:"):
            r["requests_per_s"] = round(float(s[1]))
        elif s[:1] == ["50%"]:
            r["p50_ms"] = _ms(s[1])
        elif s[:1] == ["99%"]:
            r["p99_ms"] = _ms(s[1])
        elif len(s) > 2 and s[1] == "requests" and s[2] == "in":
            r["requests"] = int(s[0])
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            r["non_2xx"] = int(s[-1])
        elif line.strip().startswith("Socket errors:"):
            r["socket_errors"] = sum(int(x.rstrip(",")) for x in s[3::2])
    r["acked"] = r["requests"] - r["non_2xx"]
    return r


def wrk_single(url: str, key: str, tmp: Path, seconds: int = SECONDS) -> dict[str, Any]:
    """bench/dialects.py's native single-event request from wrk -t2 -c32, with latencies."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    body = native([{**_events("x", 1)[0], "id": "__ID__"}], key)
    script = wrk_script(tmp, "/v1/events", headers, body)
    busy0 = _cpu_times()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk is the only child reaped here
    busy1 = _cpu_times()
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    # The load generator's share of the machine's cores over the run (the rest is the server's,
    # the loader's and the OS's).
    return {
        **parse_wrk(out),
        "wrk_core_share": round(cpu / (seconds * (os.cpu_count() or 1)), 2),
        "machine_busy": round((busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 2),
    }


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat (busy: all but idle and
    iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return total - fields[3] - fields[4], total


def _conserved(served: Served, w: dict[str, Any]) -> dict[str, Any]:
    st = served.wait_loaded(timeout_s=300)
    t = st["totals"]
    received = int(t["received"])
    return {
        **w,
        "received": received,
        "loaded": int(t["loaded"]),
        "quarantined": int(t["quarantined"]),
        "duplicates": int(t["duplicates"]),
        "in_flight": int(t["in_flight"]),
        "conserved": bool(
            st["balanced"]
            and w["acked"] <= received <= w["acked"] + CONNECTIONS
            and received == int(t["loaded"])
            and int(t["quarantined"]) == 0
        ),
    }


def _tree(root: int) -> list[int]:
    """``root`` and its descendants (``serve --workers``: the supervisor, its collect workers
    and the loader process)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        with contextlib.suppress(FileNotFoundError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(FileNotFoundError):
                    todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def _cpu_by_role(pids: list[int]) -> dict[str, float]:
    """CPU seconds (user + system) so far per role: ``collect`` for collect-only workers,
    ``loader`` for the process that loads (``serve`` itself, or the loader process under
    ``--workers``)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        role = "collect" if b"collect" in cmd else "loader" if b"--workers" not in cmd else ""
        if role:
            out[role] = out.get(role, 0.0) + (int(stat[11]) + int(stat[12])) / tick
    return out


def _uvicorn(tmp: Path, workers: int, extra: dict[str, str] | None = None) -> dict[str, Any]:
    env = {"GRISTMILL_LOG__MAX_BYTES": str(8 << 30), **(extra or {})}
    s = serve(tmp, env=env, workers=workers)
    try:
        s.wait_loaded()
        pids = _tree(s.server.proc.pid)  # type: ignore[union-attr]
        before = _cpu_by_role(pids)
        w = wrk_single(s.server.url, s.write_key, tmp)
        after = _cpu_by_role(pids)
        # CPU per acknowledged request, by role: where the machine's time went.
        w["cpu_ms_per_request"] = {
            role: round((after[role] - before.get(role, 0.0)) * 1e3 / max(1, w["acked"]), 3)
            for role in after
        }
        r = _conserved(s, w)
    finally:
        s.server.stop()
    return {**r, "events_per_worker": _split(tmp, workers)}


def _split(tmp: Path, workers: int) -> list[int] | None:
    """Events each worker appended (its partition's count); None for one process."""
    if workers == 1:
        return None
    return [_received(tmp / "data" / "log" / f"p{i}.sqlite") for i in range(workers)]


def _granian(tmp: Path, workers: int) -> dict[str, Any]:
    data = tmp / "data"
    key, op = _keys(data)
    env = {"GRISTMILL_LOG__MAX_BYTES": str(8 << 30)}
    loader: ServerProcess | None = None
    api_url = ""
    if workers > 1:
        # The loader, API and UI in a `gristmill serve` of their own, as under --workers; it
        # creates the partition files before the collectors start.
        env["GRISTMILL_LOG__PARTITIONS"] = str(workers)
        loader = ServerProcess(data, free_port(), packs_dir=PACKS, env=env)
        loader.start(timeout_s=120)
        api_url = loader.url
        env["GM_BENCH_ROLE"] = "collect"
    g = Granian(data, free_port(), workers, env)
    try:
        g.start()
        s = Served(loader or g, key, op, api_url=api_url)  # type: ignore[arg-type]
        s.wait_loaded()
        r = _conserved(s, wrk_single(g.url, key, tmp))
    finally:
        g.stop()
        if loader is not None:
            loader.stop()
    return {**r, "events_per_worker": _split(tmp, workers)}


CASES = {
    "floor": (
        "floor: uvicorn + httptools with `serve`'s coalesced writes, bare ASGI app (202, no "
        "work), 1 process",
        lambda t: _floor(t, 1),
    ),
    "floor_plain": (
        "floor: the same with uvicorn's own protocol (head and body in two writes)",
        lambda t: _floor(t, 1, "httptools"),
    ),
    "floor_workers2": (
        "floor: coalesced, 2 worker processes",
        lambda t: _floor(t, 2),
    ),
    "uvicorn": ("`gristmill serve` (uvicorn + httptools, 1 process)", lambda t: _uvicorn(t, 1)),
    "uvicorn_plain": (
        "the same, without coalesced writes (`SERVER__COALESCE_WRITES=false`, as before "
        "2026-12-07 05:50)",
        lambda t: _uvicorn(t, 1, {"GRISTMILL_SERVER__COALESCE_WRITES": "false"}),
    ),
    "uvicorn_workers2": (
        "`gristmill serve --workers 2` (uvicorn, reuseport, + loader process)",
        lambda t: _uvicorn(t, 2),
    ),
    "uvicorn_workers2_nowait": (
        "the same, without the loader's saturated wait (`LOADER__SATURATED_WAIT_S=0`, "
        "as before 2026-12-07 03:00)",
        lambda t: _uvicorn(t, 2, {"GRISTMILL_LOADER__SATURATED_WAIT_S": "0"}),
    ),
    "granian": (
        "granian, 1 worker (collector + loader + API, as `serve`)",
        lambda t: _granian(t, 1),
    ),
    "granian_workers2": (
        "granian, 2 workers (collect only, a partition each, + loader process)",
        lambda t: _granian(t, 2),
    ),
}


def run(rounds: int = 3) -> dict[str, Any]:
    """Each case ``rounds`` times, the cases interleaved; the median round is reported (its
    latencies, counts and wrk's CPU share), errors and conservation over every round."""
    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed (make bench installs it as root)"}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CASES}
    for i in range(rounds):
        # Every other round in reverse: a case and its pair (PAIRS) run next to each other,
        # and neither always goes first.
        order = list(CASES.items())
        for name, (_, measure) in order if i % 2 == 0 else reversed(order):
            with tempfile.TemporaryDirectory() as tmp:
                r = measure(Path(tmp))
            print("servers", name, r, flush=True)
            runs[name].append(r)
    out: dict[str, Any] = {"seconds": SECONDS, "connections": CONNECTIONS, "cases": {}}
    for name, rs in runs.items():
        rates = [r["requests_per_s"] for r in rs]
        median = sorted(rs, key=lambda r: r["requests_per_s"])[len(rs) // 2]
        out["cases"][name] = {
            **median,
            "runs_per_s": rates,
            "median_per_s": round(statistics.median(rates)),
            "conserved_all": all(r.get("conserved", True) for r in rs),
            "errors_all": sum(r["non_2xx"] + r["socket_errors"] for r in rs),
        }
    with contextlib.suppress(Exception):
        import granian

        out["granian_version"] = granian.__version__
    return out


def _split_cpu(c: dict[str, Any]) -> str:
    """Under ``serve`` one process collects and loads: its CPU is all under ``loader``."""
    cpu = c.get("cpu_ms_per_request")
    if not cpu:
        return "—"
    if "collect" not in cpu:
        return f"{cpu['loader']} ms (one process)"
    return f"{cpu['collect']} / {cpu['loader']} ms"


def render(results: dict[str, Any]) -> str:
    r = results["servers"]
    if "skipped" in r:
        return f"Run {results['when']}: skipped ({r['skipped']})."
    lines = [
        f"Run {results['when']} on {results['machine']['cores']} cores; "
        f"wrk -t2 -c{r['connections']} for {r['seconds']} s per run, one native event per "
        f"POST; granian {r.get('granian_version', '?')}.",
        "",
        "| server | requests/s (median) | runs | p50 | p99 | non-2xx + socket errors (all runs) "
        "| acked → received → loaded | conserved | events per worker | CPU busy (wrk's share) "
        "| CPU per request: collecting / loading |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (label, _) in CASES.items():
        c = r["cases"].get(name)
        if c is None:  # results saved before this case existed
            continue
        runs = " / ".join(f"{x / 1000:.1f}k" for x in c["runs_per_s"])
        per = c.get("events_per_worker")
        split = " / ".join(f"{n:,}" for n in per) if per else "—"
        if "received" in c:
            counts = f"{c['acked']:,} → {c['received']:,} → {c['loaded']:,}"
            conserved = "yes" if c["conserved_all"] else "NO"
        else:  # the floor: nothing is stored
            counts, conserved = f"{c['acked']:,} answered, nothing stored", "—"
        lines.append(
            f"| {label} | {c['median_per_s']:,} | {runs} | {c['p50_ms']} ms | {c['p99_ms']} ms "
            f"| {c['errors_all']} | {counts} | {conserved} | {split} "
            f"| {c['machine_busy']:.0%} ({c['wrk_core_share']:.0%}) | {_split_cpu(c)} |"
        )
    lines.append("")
    for what, on, off in PAIRS:
        if on not in r["cases"] or off not in r["cases"]:
            continue
        lines.append(f"- {what}, this run: {_ratio(r['cases'][on], r['cases'][off])}.")
    return "\n".join(lines)


PAIRS = (
    ("The floor with coalesced writes against uvicorn's own protocol", "floor", "floor_plain"),
    ("`serve` with coalesced writes against without them", "uvicorn", "uvicorn_plain"),
    (
        "`serve --workers 2` with the loader's saturated wait against without it",
        "uvicorn_workers2",
        "uvicorn_workers2_nowait",
    ),
)
"""Cases measured with and without one change, in the same rounds: the ratios under the table."""


def _ratio(on: dict[str, Any], off: dict[str, Any]) -> str:
    pairs = zip(on["runs_per_s"], off["runs_per_s"], strict=True)
    return f"{on['median_per_s'] / off['median_per_s']:.2f}x on the medians; by round " + ", ".join(
        f"{a / b:.2f}x" for a, b in pairs
    )
