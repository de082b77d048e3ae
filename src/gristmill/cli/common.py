"""Shared CLI plumbing: settings from flags + environment, and talking to a running server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console

from gristmill.config import Settings
from gristmill.core.errors import ConfigError
from gristmill.runtime import read_server_file

console = Console()
err_console = Console(stderr=True)

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
    err_console.print(f"[bold red]error:[/] {message}")
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
