"""A live ``gristmill serve`` inside the test process (uvicorn on a thread, 127.0.0.1), with an
optional fault: answer 503 to the first N requests of a path *after* the app processed them,
the worst case for exactly-once (the events are durable, the client thinks they are not)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from gristmill.api.app import create_app
from gristmill.demo.process import free_port
from gristmill.runtime import Runtime

ASGIApp = Any


class FailFirst:
    """ASGI middleware: run the request, then replace its answer with 503 + Retry-After."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.remaining: dict[str, int] = {}
        self.failed: list[str] = []

    def arm(self, path_prefix: str, times: int = 1) -> None:
        self.remaining[path_prefix] = times

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        hit = next((p for p, n in self.remaining.items() if n > 0 and path.startswith(p)), None)
        if hit is None:
            await self.app(scope, receive, send)
            return
        self.remaining[hit] -= 1

        async def swallow(message: dict[str, Any]) -> None:
            return None

        await self.app(scope, receive, swallow)
        self.failed.append(path)
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [(b"retry-after", b"1"), (b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"code":"unavailable"}'})


@contextmanager
def serving(config: uvicorn.Config, timeout_s: float = 20) -> Iterator[uvicorn.Server]:
    """A uvicorn server on a thread of this process, from listening until the block ends."""
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        assert thread.is_alive(), "server thread died"
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        assert not thread.is_alive(), "server did not stop"


@contextmanager
def live(rt: Runtime) -> Iterator[tuple[str, FailFirst]]:
    port = free_port()
    app = FailFirst(create_app(rt, url=f"http://127.0.0.1:{port}"))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    with serving(config):
        yield f"http://127.0.0.1:{port}", app


def wait_loaded(rt: Runtime, received: int, timeout_s: float = 30) -> None:
    """Until the log has received ``received`` events and holds none in flight."""
    deadline = time.monotonic() + timeout_s
    while True:
        c = rt.conservation()
        if c.total("received") >= received and c.total("in_flight") == 0:
            return
        assert time.monotonic() < deadline, c.as_dict()
        time.sleep(0.05)
