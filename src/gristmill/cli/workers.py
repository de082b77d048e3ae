"""``gristmill serve --workers N``: collect on every core.

One Python process parses, validates and appends on one core. With ``--workers N`` this
process becomes a supervisor that starts

* N collector processes (``serve --role collect``) on one port: by default each binds it
  with ``SO_REUSEPORT`` and the kernel hashes connections across their sockets
  (``--balance reuseport``); or all accept on **one** socket the supervisor bound and hands
  down (``--balance accept``: whichever worker accepts first, which under light load is
  often the same one — measured, see BENCHMARKS.md). Worker ``i`` appends to partition
  ``i`` of the embedded log (``log.partitions`` >= N), each file with its own writer and
  group commit;
* one loader process (``serve --role all`` on ``--api-port``): the loader pool over every
  partition, the operator API and UI, governance and exports. It writes ``server.json``, so
  ``gristmill status`` and the other local commands talk to it.

The supervisor serves nothing itself. It restarts a child that dies (reporting it on stderr,
with a back-off), records who runs where in ``workers.json``, and on Ctrl-C or SIGTERM stops
every child (SIGTERM, then SIGKILL after a grace period). A child whose supervisor died stops
by itself (see :func:`watch_parent`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gristmill.cli.common import console, err_console, fail, stop_on_signals
from gristmill.config import Settings, SQLiteLogSettings

WORKERS_FILE = "workers.json"
STOP_GRACE_S = 30.0


@dataclass(slots=True)
class Child:
    """One supervised process and what it takes to start it again."""

    name: str
    role: str
    argv: list[str]
    env: dict[str, str]
    fd: int | None
    """An inherited listening socket, or None (the child binds with ``SO_REUSEPORT``)."""
    partition: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start: float = 0.0
    ready: bool = False
    """The child listens: it wrote to its ready pipe once its server started."""
    _ready_r: int | None = None

    def start(self) -> None:
        """Start it with the write end of a pipe it writes one byte to once listening: with
        ``SO_REUSEPORT`` the port answering says only that *some* worker listens."""
        self._close_pipe()
        r, w = os.pipe()
        os.set_blocking(r, False)
        fds = (w,) if self.fd is None else (self.fd, w)
        try:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
                [*self.argv, "--ready-fd", str(w)], env=self.env, pass_fds=fds
            )
        finally:
            os.close(w)
        self._ready_r = r
        self.ready = False
        self.started_at = time.monotonic()

    def poll_ready(self) -> bool:
        if not self.ready and self._ready_r is not None:
            with contextlib.suppress(BlockingIOError):
                if os.read(self._ready_r, 1):
                    self.ready = True
                    self._close_pipe()
        return self.ready

    def _close_pipe(self) -> None:
        if self._ready_r is not None:
            os.close(self._ready_r)
            self._ready_r = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "partition": self.partition,
            "pid": self.proc.pid if self.proc is not None else None,
            "restarts": self.restarts,
            "ready": self.ready,
        }


def check_layout(settings: Settings, workers: int) -> None:
    """``--workers`` needs the embedded log split into at least as many partitions."""
    cfg = settings.log
    if not isinstance(cfg, SQLiteLogSettings):
        fail(
            f"--workers is for the embedded (sqlite) log; with a {cfg.type} log run "
            "`gristmill serve --role collect` processes and `gristmill load` instead"
        )
    if cfg.partitions < workers:
        fail(
            f"--workers {workers} needs the log split into at least {workers} partitions "
            f"(one per worker): set GRISTMILL_LOG__PARTITIONS={workers} (now {cfg.partitions})"
        )
    if cfg.append_partition is not None:
        fail("GRISTMILL_LOG__APPEND_PARTITION is set per worker by --workers: unset it")


def prepare_log(settings: Settings) -> None:
    """Create the partition files once, before workers race to (and refuse a layout change or
    a single-file log still holding data with one clear line)."""
    from gristmill.log.registry import open_log

    try:
        open_log(settings).close()
    except ValueError as exc:
        fail(str(exc))


def child_argv(settings: Settings, role: str, port: int, fd: int | None) -> list[str]:
    argv = [sys.executable, "-m", "gristmill", "serve", "--role", role]
    argv += ["--host", settings.server.host, "--port", str(port)]
    argv += ["--reuse-port"] if fd is None else ["--fd", str(fd)]
    argv += ["--supervisor", str(os.getpid()), "--data-dir", str(settings.data_dir.resolve())]
    for p in settings.packs:
        argv += ["--pack", p]
    return argv


def plan(
    settings: Settings,
    workers: int,
    sock: socket.socket,
    api: socket.socket,
    *,
    reuse_port: bool,
) -> list[Child]:
    env = {k: v for k, v in os.environ.items() if k != "GRISTMILL_LOG__APPEND_PARTITION"}
    port, api_port = sock.getsockname()[1], api.getsockname()[1]
    fd = None if reuse_port else sock.fileno()
    children = [
        Child(
            f"collect-{i}",
            "collect",
            child_argv(settings, "collect", port, fd),
            env | {"GRISTMILL_LOG__APPEND_PARTITION": str(i)},
            fd,
            partition=i,
        )
        for i in range(workers)
    ]
    children.append(
        Child(
            "loader", "all", child_argv(settings, "all", api_port, api.fileno()), env, api.fileno()
        )
    )
    return children


class Supervisor:
    def __init__(self, settings: Settings, children: list[Child]) -> None:
        self.settings = settings
        self.children = children
        self.stopping = threading.Event()
        self.file = settings.data_dir / WORKERS_FILE

    def record(self) -> None:
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "supervisor": os.getpid(),
                    "ready": all(c.ready for c in self.children),
                    "children": [c.describe() for c in self.children],
                }
            )
        )
        tmp.replace(self.file)

    def start_all(self, timeout_s: float = 120.0) -> bool:
        """The loader first: it creates the metadata tables and provisions the warehouse,
        which workers starting together would race to do. Then the workers."""
        loader, workers = self.children[-1], self.children[:-1]
        loader.start()
        self.record()
        deadline = time.monotonic() + timeout_s
        while not self.stopping.is_set():
            if loader.poll_ready():  # listening, so its lifespan wrote server.json
                break
            if time.monotonic() > deadline:
                err_console.print("[bold red]the loader process did not start[/]")
                return False
            self.tend()
            time.sleep(0.1)
        for c in workers:
            c.start()
        self.record()
        return not self.stopping.is_set()

    def tend(self) -> None:
        """Restart children that exited, with a back-off: 1 s, doubling to 30 s, reset once a
        child lived a minute (a crash loop is reported, not spun)."""
        now = time.monotonic()
        changed = False
        for c in self.children:
            if c.proc is None:
                continue  # not started yet
            code = c.proc.poll()
            if code is None:
                if not c.ready and c.poll_ready():
                    changed = True
                continue
            if c.next_start == 0.0:
                c.ready = False
                changed = True
                lived = now - c.started_at
                delay = 1.0 if lived > 60 else min(30.0, 2.0 ** min(c.restarts, 5))
                c.next_start = now + delay
                how = f"signal {-code}" if code < 0 else f"exit code {code}"
                err_console.print(
                    f"[bold red]gristmill worker {c.name} (pid {c.proc.pid}) died ({how}) "
                    f"after {lived:.0f} s; restarting in {delay:.0f} s[/]",
                    soft_wrap=True,
                )
            elif now >= c.next_start:
                c.restarts += 1
                c.next_start = 0.0
                c.start()
                changed = True
        if changed:
            self.record()

    def stop_all(self) -> None:
        """Collectors first, then the loader: once no worker appends, the loader's drain on
        stop (``loader.stop_drain_s``) leaves the warehouse holding every acknowledged event."""
        for role in ("collect", "all"):
            self._stop_children([c for c in self.children if c.role == role])
        with contextlib.suppress(FileNotFoundError):
            self.file.unlink()

    @staticmethod
    def _stop_children(children: list[Child]) -> None:
        live = [c.proc for c in children if c.proc is not None and c.proc.poll() is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in live:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def wait_ready(self, timeout_s: float = 120.0) -> bool:
        """Until every child listens (``workers.json`` then says ``"ready": true``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.stopping.is_set():
            if all(c.poll_ready() for c in self.children):
                self.record()
                return True
            self.tend()
            time.sleep(0.05)
        return False


def run_workers(
    settings: Settings,
    workers: int,
    sock: socket.socket,
    api: socket.socket,
    *,
    reuse_port: bool = True,
) -> None:
    """Start the children and supervise them until SIGINT or SIGTERM."""
    sup = Supervisor(settings, plan(settings, workers, sock, api, reuse_port=reuse_port))
    stop_on_signals(sup.stopping)
    host = settings.server.host
    port, api_port = sock.getsockname()[1], api.getsockname()[1]
    try:
        if sup.start_all() and sup.wait_ready():
            console.print(
                f"gristmill serving packs {', '.join(settings.packs)} with {workers} collector "
                f"workers on http://{host}:{port}; loader, API and UI on "
                f"http://{host}:{api_port} (data in {settings.data_dir})",
                soft_wrap=True,
            )
        while not sup.stopping.is_set():
            sup.tend()
            sup.stopping.wait(0.2)
    finally:
        sup.stop_all()


def watch_parent(parent: int, on_orphaned: Any, every_s: float = 1.0) -> None:
    """Call ``on_orphaned`` once ``parent`` (the supervisor that started this process) is no
    longer its parent: a supervisor killed with SIGKILL cannot stop its children, so they stop
    themselves. The pid comes from the supervisor, not from ``getppid()`` at some point of the
    start-up, which after an early death would already name the adopting process."""

    def loop() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        on_orphaned()

    threading.Thread(target=loop, name="parent-watch", daemon=True).start()


def read_workers(data_dir: Path) -> dict[str, Any] | None:
    """``workers.json`` of a running supervisor (None when there is none)."""
    try:
        info: dict[str, Any] = json.loads((data_dir / WORKERS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    pid = int(info.get("supervisor", 0))
    try:
        if pid <= 0:
            return None
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return None
    return info
