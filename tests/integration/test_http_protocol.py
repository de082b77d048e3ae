"""The coalescing HTTP protocol (``gristmill.api.protocol``) under a real uvicorn server on
loopback: a response's head and body leave in one write; a head whose body comes later
still leaves at once; pipelined requests are answered in order; ``Connection: close`` sends
the answer before the close. The same checks over uvicorn's own protocol show the
difference is the protocol's (two writes there)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gristmill.api.protocol import CoalescingHttpToolsProtocol
from gristmill.cli.serve import build_server
from gristmill.demo.process import free_port
from tests.conftest import make_settings
from tests.live import serving

WRITES: list[bytes] = []
"""Every write the protocol handed its socket's transport, in order (this test's server)."""


class Recording:
    """Forwards to the socket's transport, noting each write."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        WRITES.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class RecordedCoalescing(CoalescingHttpToolsProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(Recording(transport))  # type: ignore[arg-type]


class RecordedPlain(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(Recording(transport))  # type: ignore[arg-type]


release: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
"""Set by ``/later`` once its head is sent: the server's loop and the event its body awaits."""


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global release
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/later":  # the head now, the body once the test has seen the head
        event = asyncio.Event()
        release = (asyncio.get_running_loop(), event)  # before the head can reach the client
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await event.wait()
        await send({"type": "http.response.body", "body": b"late", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    body = scope["path"].encode()
    head = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 202, "headers": head})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(params=[RecordedCoalescing, RecordedPlain], ids=["coalescing", "uvicorn"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[int, bool]]:
    """The port of a server over the protocol, and whether it is the coalescing one."""
    global release
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=request.param, loop="uvloop", log_level="warning"
    )
    with serving(config, timeout_s=30):
        WRITES.clear()
        release = None
        yield port, request.param is RecordedCoalescing


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _until_closed(port: int, request: bytes) -> bytes:
    """Everything the server sends for ``request`` until it closes the connection."""
    got = b""
    with _connect(port) as s:
        s.sendall(request)
        while chunk := s.recv(65536):
            got += chunk
    return got


def _read_until(s: socket.socket, got: bytes, end: bytes) -> bytes:
    while end not in got:
        chunk = s.recv(65536)
        assert chunk, f"connection closed before {end!r}; got {got!r}"
        got += chunk
    return got


def _responses(s: socket.socket, n: int) -> list[bytes]:
    """n responses with a Content-Length body, read off one connection."""
    got, out = b"", list[bytes]()
    while len(out) < n:
        got = _read_until(s, got, b"\r\n\r\n")
        head, _, rest = got.partition(b"\r\n\r\n")
        length = int(
            next(
                ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")
            ).split(b":")[1]
        )
        while len(rest) < length:
            chunk = s.recv(65536)
            assert chunk
            rest += chunk
        out.append(head + b"\r\n\r\n" + rest[:length])
        got = rest[length:]
    return out


def test_a_head_and_its_body_leave_in_one_write(server: tuple[int, bool]) -> None:
    port, coalescing = server
    with _connect(port) as s:
        s.sendall(b"POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        (answer,) = _responses(s, 1)
    assert answer.startswith(b"HTTP/1.1 202")
    assert answer.endswith(b"\r\n\r\n/v1/events")
    if coalescing:
        assert [answer] == WRITES
    else:  # uvicorn's own protocol: the head, then the body
        assert len(WRITES) == 2
        assert b"".join(WRITES) == answer


def test_pipelined_requests_are_answered_in_order(server: tuple[int, bool]) -> None:
    port, coalescing = server
    paths = [f"/r{i}".encode() for i in range(5)]
    with _connect(port) as s:
        s.sendall(b"".join(b"GET %s HTTP/1.1\r\nhost: x\r\n\r\n" % p for p in paths))
        answers = _responses(s, len(paths))
    assert [a.rsplit(b"\r\n\r\n", 1)[1] for a in answers] == paths
    assert len(WRITES) == (len(paths) if coalescing else 2 * len(paths))


def test_a_head_leaves_before_a_body_that_comes_later(
    server: tuple[int, bool],
) -> None:
    port, _ = server
    with _connect(port) as s:
        s.sendall(b"GET /later HTTP/1.1\r\nhost: x\r\n\r\n")
        head = _read_until(s, b"", b"\r\n\r\n")  # the body is held back until we have this
        assert head.startswith(b"HTTP/1.1 200")
        assert b"transfer-encoding: chunked" in head
        assert release is not None
        loop, event = release
        loop.call_soon_threadsafe(event.set)
        rest = _read_until(s, head.partition(b"\r\n\r\n")[2], b"0\r\n\r\n")
    assert rest == b"4\r\nlate\r\n0\r\n\r\n"


def test_connection_close_sends_the_answer_first(server: tuple[int, bool]) -> None:
    port, _ = server
    got = _until_closed(port, b"GET /bye HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 202")
    assert got.endswith(b"\r\n\r\n/bye")
    assert b"connection: close" in got


def test_a_head_alone_is_sent_before_the_close(server: tuple[int, bool]) -> None:
    """HEAD with ``Connection: close``: the head is the only write, and the close that follows
    it at once must send it first (the held write goes out before the transport closes)."""
    port, _ = server
    got = _until_closed(port, b"HEAD /bye HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 202")
    assert got.endswith(b"\r\n\r\n")  # a head, no body
    assert b"content-length: 4" in got
    assert [got] == WRITES


def test_a_large_body_arrives_whole(server: tuple[int, bool]) -> None:
    """A body over ``JOIN_BELOW`` is handed over with its head as a list, not joined."""
    port, _ = server
    path = b"/" + b"x" * 40_000
    with _connect(port) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nhost: x\r\n\r\n" % path)
        (answer,) = _responses(s, 1)
    assert answer.endswith(b"\r\n\r\n" + path)


@pytest.mark.parametrize("on", [True, False])
def test_serve_runs_the_coalescing_protocol_unless_turned_off(tmp_path: Path, on: bool) -> None:
    server, rt = build_server(make_settings(tmp_path, server={"coalesce_writes": on}))
    try:
        assert server.config.http == (CoalescingHttpToolsProtocol if on else "httptools")
    finally:
        rt.stop()
