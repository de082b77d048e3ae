"""The HTTP protocol ``gristmill serve`` runs under uvicorn: httptools, with a response's
writes coalesced into one ``send``.

uvicorn writes a response in two calls to its transport: the status line and headers when
the app sends ``http.response.start``, the body when it sends ``http.response.body``. On
uvloop each write is a ``send(2)`` right away (``TCP_NODELAY``), so a small answer leaves
as two segments: two system calls here, two wake-ups in the client, and on loopback the
kernel's receive path twice. An ingest answer is a few dozen bytes, so under single-event
traffic that second send is a fair part of what serving a request costs (bench/servers.py's
floor: ~1.15-1.3x the requests/s with one send, the same server and app).

:class:`CoalescingTransport` holds a write back until the end of the event loop's current
step, or until the next write arrives, whichever is first: the head and the body an app
sends back to back leave together, and a head whose body comes later (a stream, a slow
handler) still leaves at once, in the next loop step. Order is kept: every write of the
connection goes through it. ``close`` and ``write_eof`` send what is held first; ``abort``
drops it, as the transport's own buffer is dropped. It relies on uvicorn's httptools protocol
handing every request cycle the transport ``connection_made`` received
(tests/integration/test_http_protocol.py counts the writes per answer).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

JOIN_BELOW = 16 * 1024
"""Held writes up to this size in all are joined into one buffer; larger ones are handed over
as a list (``writelines``), so a large body is not copied."""


class CoalescingTransport:
    """A transport that sends a connection's writes of one loop step as one."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            self._held = [bytes(data)]
            self._loop.call_soon(self.flush)
        else:  # the second write of a step (a body after its head): both leave now
            self._held = None
            held.append(bytes(data))
            self._send(held)

    def _send(self, chunks: list[bytes]) -> None:
        if len(chunks) == 1:
            self._transport.write(chunks[0])
        elif sum(map(len, chunks)) <= JOIN_BELOW:
            self._transport.write(b"".join(chunks))
        else:  # a large body is not copied to join it: uvloop sends the list in one call
            self._transport.writelines(chunks)

    def flush(self) -> None:
        """Send what is held (the loop calls this at the end of the step that wrote it)."""
        held = self._held
        if held is None:
            return
        self._held = None
        if not self._transport.is_closing():
            self._send(held)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def get_write_buffer_size(self) -> int:
        held = sum(map(len, self._held)) if self._held is not None else 0
        return held + self._transport.get_write_buffer_size()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:  # the rest of the transport's interface
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a :class:`CoalescingTransport`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        coalescing = CoalescingTransport(cast(asyncio.Transport, transport), self.loop)
        super().connection_made(cast(asyncio.Transport, coalescing))
