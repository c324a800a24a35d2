"""The sidecar's HTTP/1.1 server: one asyncio Protocol per connection over httptools.

What it owns: framing, keep-alive, pipelining (responses leave in request order),
``Expect: 100-continue``, HEAD, size limits (413, 431), time limits (slow clients,
idle keep-alive), flow control both ways and graceful drain. What it must not do:
know about routes or building blocks; every complete request goes to one
``handler(request)`` callable that returns a ``Response`` or an awaitable of one.

Time limits are checked by one ticker per server instead of a timer per request:
each connection keeps a read deadline, and the ticker closes the ones past it.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Awaitable, Callable, Union

from .._impl import load
from .http import Request, Response, status_line

__all__ = ["BodyBudget", "Handler", "HttpProtocol", "HttpServer", "Limits", "error_bytes"]

# The per-connection protocol is a twin: pillion._ext.httpproto when built, else its
# pure specification pillion._pure.httpproto (see ext/README.md).
_httpproto = load("httpproto")
HttpProtocol = _httpproto.HttpProtocol
error_bytes = _httpproto.error_bytes

Handler = Callable[[Request], Union[Response, Awaitable[Response]]]


class Limits:
    """Size and time limits of one server; every one is a knob with a safe default."""

    __slots__ = ("max_body", "max_header", "header_timeout", "body_timeout", "keepalive_timeout", "max_pipeline",
                 "body_budget")

    def __init__(
        self,
        max_body: int = 4 * 1024 * 1024,
        max_header: int = 4 * 1024,
        header_timeout: float = 10.0,
        body_timeout: float = 60.0,
        keepalive_timeout: float = 60.0,
        max_pipeline: int = 16,
        body_budget: int = 0,
    ):
        self.body_budget = body_budget  # request body bytes in flight across connections; 0: no limit
        self.max_body = max_body
        self.max_header = max_header
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.keepalive_timeout = keepalive_timeout
        self.max_pipeline = max_pipeline


class BodyBudget:
    """Request body bytes held at once by all of a server's connections, at most ``limit``.

    A request declares its body with Content-Length; a connection whose request would
    take the total past the limit stops reading (the bytes wait in the kernel, not in
    our memory) until bodies of answered requests leave room, first come first served.
    When nothing is held, any one request is admitted, so a body up to ``max_body`` always
    gets through. Each body held costs several times its size while it is parsed and
    stored, which is what kills a small board when many large ones arrive together.
    """

    __slots__ = ("limit", "held", "waiting")

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0
        self.waiting: collections.deque = collections.deque()

    def admit(self, conn, length: int) -> bool:
        if self.held and (self.waiting or self.held + length > self.limit):
            self.waiting.append((conn, length))
            return False
        self.held += length
        return True

    def release(self, length: int) -> None:
        self.held -= length
        while self.waiting:
            conn, length = self.waiting[0]
            if self.held and self.held + length > self.limit:
                return
            self.waiting.popleft()
            self.held += length
            conn.budget_granted(length)

    def leave(self, conn, held: int) -> None:
        """A connection closed: its bytes are free and it waits for nothing."""
        if any(waiting is conn for waiting, _ in self.waiting):
            self.waiting = collections.deque((c, n) for c, n in self.waiting if c is not conn)
        self.release(held)


class HttpServer:
    """A listening HTTP server: connections, the clock tick, and graceful drain."""

    def __init__(self, handler: Handler, limits: Limits | None = None, protocol: type | None = None):
        self.handler = handler
        self.limits = limits or Limits()
        # The protocol class: the loaded twin unless a test picks one.
        self.protocol = protocol if protocol is not None else HttpProtocol
        self.budget = BodyBudget(self.limits.body_budget) if self.limits.body_budget else None
        self.connections: set[HttpProtocol] = set()
        self.servers: list[asyncio.AbstractServer] = []
        self.now = time.monotonic()
        self.date_header = b""
        # Cleared, never replaced: the compiled HttpProtocol keeps a reference to it
        # and reads it before calling bare_response().
        self._bare: dict[int, bytes] = {}
        self._tick_handle: asyncio.TimerHandle | None = None
        self._tick()

    def _tick(self):
        self.now = time.monotonic()
        date = time.strftime("Date: %a, %d %b %Y %H:%M:%S GMT\r\n", time.gmtime()).encode()
        if date != self.date_header:
            self.date_header = date
            self._bare.clear()
        for conn in list(self.connections):
            conn.check_time(self.now)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._tick_handle = loop.call_later(1.0, self._tick)

    def bare_response(self, status: int) -> bytes:
        """The whole keep-alive response for a status with no headers and no body (204s mostly)."""
        cached = self._bare.get(status)
        if cached is None:
            length = b"" if status in (204, 304) or status < 200 else b"Content-Length: 0\r\n"
            cached = self._bare[status] = status_line(status) + length + self.date_header + b"\r\n"
        return cached

    async def listen(self, host: str, port: int, **kwargs) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        if self._tick_handle is None:
            self._tick()
        server = await loop.create_server(lambda: self.protocol(self), host, port, reuse_address=True, **kwargs)
        self.servers.append(server)
        return server

    def ports(self) -> list[int]:
        return [sock.getsockname()[1] for s in self.servers for sock in s.sockets]

    async def shutdown(self, grace: float = 5.0):
        """Stop accepting, let in-flight requests finish for up to ``grace`` seconds, then close."""
        for server in self.servers:
            server.close()
        for conn in list(self.connections):
            conn.shutdown()
        deadline = time.monotonic() + grace
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        for server in self.servers:
            await server.wait_closed()
        self.servers.clear()
