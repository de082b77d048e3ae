"""Shared CLI plumbing: settings from flags + environment, and talking to a running server."""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import httpx
import orjson
import typer
from rich.console import Console
from rich.markup import escape

from gristmill.config import Settings
from gristmill.core.errors import ConfigError
from gristmill.runtime import Runtime, read_server_file

PIPE_WIDTH = 1000
"""Width of tables written to a pipe or file: wide enough that rich never truncates or wraps
a cell (a table is only as wide as its content), so ``gristmill status > out.txt`` and
``| grep`` see whole rows. A terminal, or ``COLUMNS``, keeps its own width."""


def _console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    interactive = hasattr(stream, "isatty") and stream.isatty()
    width = None if interactive or os.environ.get("COLUMNS") else PIPE_WIDTH
    return Console(stderr=stderr, width=width)


console = _console()
err_console = _console(stderr=True)

DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", "-d", help="Data directory (env GRISTMILL_DATA_DIR).", show_default=False
    ),
]
PacksOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--pack",
        "-p",
        help="Pack to serve; repeat for several (env GRISTMILL_PACKS).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def stop_on_signals(
    stop: threading.Event, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
) -> None:
    """SIGINT/SIGTERM set ``stop``; the process then finishes what it holds and exits.

    The handler does not call ``stop.set()`` itself. A handler runs in the main thread between
    two bytecodes, and that thread may be inside ``stop.wait()`` holding the event's internal
    lock; ``set()`` then waits for a lock its own thread holds, for ever (a relay hung this way
    on SIGTERM in CI). ``SimpleQueue.put`` is reentrant, so the handler only puts, and a
    thread that holds no lock sets the event."""
    signalled: queue.SimpleQueue[int] = queue.SimpleQueue()

    def forward() -> None:
        while True:
            signalled.get()
            stop.set()

    threading.Thread(target=forward, name="signals", daemon=True).start()
    for sig in signals:
        signal.signal(sig, lambda signum, _frame: signalled.put(signum))


def make_settings(
    data_dir: Path | None = None, packs: list[str] | None = None, **overrides: Any
) -> Settings:
    kwargs: dict[str, Any] = dict(overrides)
    if data_dir is not None:
        kwargs["data_dir"] = data_dir
    if packs:
        kwargs["packs"] = packs
    try:
        return Settings(**kwargs)
    except ConfigError as exc:  # pragma: no cover - settings raise pydantic errors
        fail(str(exc))
        raise


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr (never wrapped, whatever the width) and exit ``code``."""
    line = " ".join(str(message).split())
    err_console.print(f"[bold red]error:[/] {escape(line)}", soft_wrap=True)
    raise typer.Exit(code)


class ServerClient:
    """Calls a running ``gristmill serve`` as the local operator (see ``server.json``)."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.url = str(info["url"])
        self._headers = {"Authorization": f"Bearer {info['token']}"}

    def get(self, path: str, **params: Any) -> Any:
        r = httpx.get(
            self.url + path,
            headers=self._headers,
            timeout=60,
            params={k: v for k, v in params.items() if v is not None},
        )
        r.raise_for_status()
        return r.json()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A raw call (the caller reads the status and the body, e.g. a CSV)."""
        return httpx.request(method, self.url + path, headers=self._headers, timeout=600, **kwargs)

    def post(self, path: str, body: Any, params: dict[str, str] | None = None) -> Any:
        r = httpx.post(
            self.url + path, headers=self._headers, json=body, params=params, timeout=600
        )
        r.raise_for_status()
        return r.json()


def running_server(settings: Settings) -> ServerClient | None:
    info = read_server_file(settings.data_dir)
    return ServerClient(info) if info else None


T = TypeVar("T")


def one_line(text: object) -> str:
    """The first non-blank line (an error's message without its traceback-like tail)."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else ""


def api_call(call: Callable[[], T], client: ServerClient) -> T:
    """A server call; its errors as one line (the API's problem detail when it sent one)."""
    try:
        return call()
    except httpx.HTTPStatusError as exc:
        r = exc.response
        detail = ""
        try:
            body = r.json()
            if isinstance(body, dict):
                detail = str(body.get("detail") or body.get("title") or "")
        except ValueError:
            detail = r.text
        fail(f"the server answered {r.status_code}: {one_line(detail) or r.reason_phrase}")
    except httpx.TransportError as exc:
        fail(
            f"the server at {client.url} is not reachable ({type(exc).__name__}); "
            "if it is not running, remove server.json from the data directory"
        )


def missing_state(settings: Settings) -> Path | None:
    """The data directory, when this installation keeps everything in local files and none
    of them exists yet (no SQLite log, metadata database or DuckDB file / chdb folder); else
    None.

    Opening a :class:`Runtime` creates all of them (and builds the rollups, with a warning):
    read-only commands (status, query, quarantine list, ...) call this first and answer
    "nothing stored yet" instead, so pointing them at an empty or mistyped directory leaves
    it unchanged. With any remote store (a broker log, a PostgreSQL warehouse, ``meta_url``)
    there may be data without local files, so the command opens the stores as usual.
    """
    wh = settings.warehouse
    if (
        settings.log.type != "sqlite"
        or settings.meta_url is not None
        or wh.type not in ("duckdb", "clickhouse")
        or getattr(wh, "url", None) is not None
    ):
        return None
    stores = (
        settings.log_path,
        settings.log_parts_dir,
        settings.data_dir / "meta.sqlite",
        settings.warehouse_path,
    )
    return None if any(p.exists() for p in stores) else settings.data_dir


def nothing_stored(settings: Settings) -> str:
    return (
        f"nothing stored in {settings.data_dir} yet: "
        "start with `gristmill serve` or `gristmill demo`, or pass the right --data-dir"
    )


@contextmanager
def open_runtime(settings: Settings) -> Iterator[Runtime]:
    """The data directory's parts in this process (no server is running)."""
    try:
        rt = Runtime(settings)
    except Exception as exc:
        fail(f"cannot open {settings.data_dir}: {type(exc).__name__}: {one_line(exc)}")
    try:
        yield rt
    finally:
        rt.stop()


def print_json(data: Any) -> None:
    console.print_json(orjson.dumps(data).decode())
