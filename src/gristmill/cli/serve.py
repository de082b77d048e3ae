"""``gristmill serve``: collector, loader and API in one process (the embedded mode)."""

from __future__ import annotations

import errno
import gc
import os
import socket
import threading
import time
from typing import Annotated

import typer
import uvicorn

from gristmill.api.app import create_app
from gristmill.api.protocol import CoalescingHttpToolsProtocol
from gristmill.cli.common import DataDirOpt, PacksOpt, console, fail, make_settings
from gristmill.cli.workers import check_layout, prepare_log, run_workers, watch_parent
from gristmill.config import Settings
from gristmill.runtime import Role, Runtime


def bind(host: str, port: int, *, reuse_port: bool = False, listen: bool = True) -> socket.socket:
    """The listening address, bound before anything else starts: a port in use is one clear
    line (and nothing opened), not a traceback after the warehouse was opened.

    ``reuse_port``: ``SO_REUSEPORT``, so each ``--workers`` worker binds the port itself and
    the kernel spreads connections across their sockets. The supervisor then binds without
    listening: that holds the port against other users and gets no connections itself."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            fail(f"{host}:{port} is already in use (another gristmill serve?): pick another --port")
        fail(f"cannot bind {host}:{port}: {exc.strerror or exc}")
    if listen:
        sock.listen(2048)  # held from now on: a second bind fails even with SO_REUSEADDR
    return sock


class AnnouncingServer(uvicorn.Server):
    """Prints the URL once uvicorn listens: a script waiting for that line can connect."""

    announcement = ""
    ready_fd: int | None = None
    """A pipe to a ``--workers`` supervisor: one byte once listening."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.announcement:
            console.print(self.announcement, soft_wrap=True)
        if self.started and self.ready_fd is not None:
            os.write(self.ready_fd, b"1")
            os.close(self.ready_fd)
            self.ready_fd = None


def build_server(settings: Settings, role: Role = "all") -> tuple[AnnouncingServer, Runtime]:
    rt = Runtime(settings, role)
    host, port = settings.server.host, settings.server.port
    app = create_app(rt, url=f"http://{host}:{port}")
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=CoalescingHttpToolsProtocol if settings.server.coalesce_writes else "httptools",
        access_log=settings.server.access_log,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )
    return AnnouncingServer(config), rt


def serve(
    data_dir: DataDirOpt = None,
    pack: PacksOpt = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8765).")] = None,
    role: Annotated[
        str,
        typer.Option(
            help="all: collector, loader and API (embedded). collect: ingest only, answering "
            "2xx once the log (a broker when scaled out) confirmed; loaders run elsewhere.",
        ),
    ] = "all",
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Collector processes sharing the port, worker i appending to partition i of "
            "the embedded log (needs GRISTMILL_LOG__PARTITIONS >= N); the loader, API and UI "
            "then run in one more process on --api-port.",
        ),
    ] = 1,
    api_port: Annotated[
        int | None,
        typer.Option(help="With --workers: port of the loader's API and UI (default port + 1)."),
    ] = None,
    balance: Annotated[
        str,
        typer.Option(
            help="With --workers, how connections reach the workers: reuseport (a socket "
            "each, SO_REUSEPORT: the kernel spreads connections evenly) or accept (one shared "
            "socket: whichever worker accepts first; under light load often one of them)."
        ),
    ] = "reuseport",
    reuse_port: Annotated[
        bool, typer.Option(hidden=True, help="Bind the port with SO_REUSEPORT (--workers).")
    ] = False,
    fd: Annotated[
        int | None,
        typer.Option(hidden=True, help="Serve on this inherited listening socket (--workers)."),
    ] = None,
    supervisor: Annotated[
        int | None,
        typer.Option(hidden=True, help="Stop when this process (the supervisor) is gone."),
    ] = None,
    ready_fd: Annotated[
        int | None,
        typer.Option(hidden=True, help="Write one byte here once listening (--workers)."),
    ] = None,
) -> None:
    """Serve ingest, the loader and the API until interrupted."""
    settings = make_settings(data_dir, pack)
    if host or port:
        settings.server = settings.server.model_copy(
            update={k: v for k, v in {"host": host, "port": port}.items() if v is not None}
        )
    if role not in ("all", "collect"):
        fail(f"--role must be all or collect (loaders run as `gristmill load`), not {role!r}")
    if workers > 1:
        _serve_workers(settings, role, workers, api_port, balance)
        return
    if fd is not None:
        sock = socket.socket(fileno=fd)
    else:
        sock = bind(settings.server.host, settings.server.port, reuse_port=reuse_port)
    server, _ = build_server(settings, "collect" if role == "collect" else "all")
    if supervisor is not None:
        # Started by a supervisor: stop when it is gone rather than serve on unsupervised.
        watch_parent(supervisor, lambda: setattr(server, "should_exit", True))
    server.ready_fd = ready_fd
    server.announcement = (
        f"gristmill ({role}) serving packs {', '.join(settings.packs)} on "
        f"http://{settings.server.host}:{settings.server.port} (data in {settings.data_dir})"
    )
    # Everything alive now (modules, packs, settings) lives for the whole process: move it out
    # of the collector's view so full collections stay short under load.
    gc.collect()
    gc.freeze()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def _serve_workers(
    settings: Settings, role: str, workers: int, api_port: int | None, balance: str
) -> None:
    if role != "all":
        fail("--workers starts its own collect and load processes: leave --role at all")
    if balance not in ("reuseport", "accept"):
        fail(f"--balance must be reuseport or accept, not {balance!r}")
    check_layout(settings, workers)
    host, port = settings.server.host, settings.server.port
    reuse = balance == "reuseport"
    sock = bind(host, port, reuse_port=reuse, listen=not reuse)
    api = bind(host, api_port if api_port is not None else port + 1)
    prepare_log(settings)
    try:
        run_workers(settings, workers, sock, api, reuse_port=reuse)
    finally:
        sock.close()
        api.close()


def start_in_thread(server: uvicorn.Server, url: str) -> threading.Thread:
    """Run ``server`` in a daemon thread (the demos keep working beside it) and wait until it
    listens; one line and exit when it does not within 30 s."""
    thread = threading.Thread(target=server.run, name="http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            fail(f"the server did not start on {url} (is the port in use?)")
        time.sleep(0.05)
    return thread


def serve_until_interrupted(server: uvicorn.Server, thread: threading.Thread, keep: bool) -> None:
    """Keep serving until Ctrl-C when ``keep``, else stop now; either way the server shuts down
    cleanly before returning."""
    try:
        if keep:
            console.print("[b]serving; press Ctrl-C to stop[/]")
            while thread.is_alive():
                thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.should_exit = True
        thread.join(30)
