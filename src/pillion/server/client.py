"""Outbound HTTP/1.1: the one client the sidecar uses to call its app and other sidecars.

Owns TCP connections, keep-alive pooling per (host, port), response framing (httptools
does the parsing), timeouts and the stale keep-alive retry. It knows nothing about
Dapr: callers build the target, drop hop-by-hop headers and map these exceptions to
Dapr error codes.

This is on the service-invocation hot path, so a request costs one future and one
timer handle: no task per request, one parser per connection.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Sequence

import httptools

from ..errors import PillionError

__all__ = [
    "ClientError",
    "ClientResponse",
    "ConnectError",
    "HttpClientPool",
    "ProtocolError",
    "ResponseTimeout",
]

# Methods a stale keep-alive failure may replay (RFC 9110 9.2.2; Go's net/http rule).
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Methods that always carry Content-Length, even with an empty body.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Framing headers this module writes itself; callers' copies would duplicate or lie.
_OWN_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"host", b"connection"})
# Bodies up to this size go out with the head in one write; larger ones in slices
# that wait for the transport to drain.
_ONE_WRITE_MAX = 256 * 1024
_WRITE_SLICE = 256 * 1024
# Control characters or a space in the method or target would split the request line.
_BAD_REQUEST_LINE = re.compile(r"[\x00-\x20\x7f]")


class ClientError(PillionError):
    """An outbound HTTP request failed; the subclass says where."""


class ConnectError(ClientError):
    """The TCP connection could not be made: refused, unreachable or connect timeout."""


class ResponseTimeout(ClientError):
    """No complete response arrived within the request's timeout."""


class ProtocolError(ClientError):
    """The peer sent a malformed or oversized response, or closed the connection early."""


class ClientResponse:
    """A complete response; headers keep the peer's order and case."""

    __slots__ = ("status", "reason", "headers", "body")

    def __init__(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def header(self, name: bytes) -> bytes | None:
        """First value of header ``name``, compared case-insensitively."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def __repr__(self) -> str:
        return f"<ClientResponse {self.status} {self.reason!r} body={len(self.body)}B>"


class _Connection(asyncio.Protocol):
    """One TCP connection with at most one request in flight.

    The parser's callbacks fill the response; ``on_message_complete`` resolves the
    request's future and hands the connection back to the pool or closes it.
    """

    __slots__ = (
        "_pool", "key", "label", "_transport", "_parser", "_waiter", "_timer",
        "_head_only", "_status", "_reason", "_headers", "_body", "_body_size",
        "_headers_done", "_head_bytes", "_got_bytes", "_wrote", "_write_done",
        "_replace_parser", "_paused", "_drain", "_error",
        "closed", "idle", "idle_since", "stale",
    )

    def __init__(self, pool: HttpClientPool, key: tuple[str, int], label: str):
        self._pool = pool
        self.key = key
        self.label = label
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[ClientResponse] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._head_only = False
        self._status = 0
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._headers_done = False
        self._head_bytes = 0
        self._got_bytes = False
        self._wrote = False
        self._write_done = False
        self._replace_parser = False
        self._paused = False
        self._drain: asyncio.Future[None] | None = None
        self._error: ProtocolError | None = None
        self.closed = False
        self.idle = False
        self.idle_since = 0.0
        # True after a failure where the peer closed without sending a response byte.
        self.stale = False

    # -- request ----------------------------------------------------------------

    async def send(self, head: bytes, body: bytes, head_only: bool, timeout: float) -> ClientResponse:
        """Write one request and wait for its response."""
        loop = self._pool._loop
        waiter = loop.create_future()
        self._waiter = waiter
        self._head_only = head_only
        self._headers_done = False
        self._head_bytes = 0
        self._got_bytes = False
        self._wrote = False
        self._write_done = False
        self.stale = False
        transport = self._transport
        if self.closed or transport.is_closing():
            self.stale = True
            self._fail(ProtocolError(f"{self.label}: connection closed before the request was written"))
            return await waiter
        # Armed before writing, so a peer that stops reading a large body cannot hang us.
        self._timer = loop.call_later(timeout, self._on_timeout, timeout)
        try:
            self._wrote = True
            if len(body) <= _ONE_WRITE_MAX:
                transport.write(head + body)
                self._write_done = True
            else:
                await self._write_slices(head, body, waiter)
            return await waiter
        except asyncio.CancelledError:
            if self._waiter is waiter:
                self._fail(None)
            raise

    async def _write_slices(self, head: bytes, body: bytes, waiter: asyncio.Future[ClientResponse]) -> None:
        """Write a large body, waiting for the transport's buffer to drain in between."""
        transport = self._transport
        transport.write(head)
        view = memoryview(body)
        for start in range(0, len(view), _WRITE_SLICE):
            if self._paused:
                self._drain = self._pool._loop.create_future()
                await self._drain
            if self._waiter is not waiter:
                return  # answered early or failed: stop sending
            transport.write(view[start:start + _WRITE_SLICE])
        self._write_done = True

    # -- transport callbacks ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Bytes nobody asked for: the stream is out of step with our requests.
            self._fail(None)
            return
        self._got_bytes = True
        if not self._headers_done:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError(f"{self.label}: unexpected protocol switch in response"))
            return
        except httptools.HttpParserError as exc:
            error, self._error = self._error, None
            if error is None:
                error = ProtocolError(f"{self.label}: malformed response: {exc}")
                error.__cause__ = exc
            self._fail(error)
            return
        if self._replace_parser:
            # httptools cannot be told a response answers HEAD; its parser still
            # expects a body, so the next response gets a fresh one.
            self._replace_parser = False
            self._parser = httptools.HttpResponseParser(self)
        if self._waiter is not None and not self._headers_done and self._head_bytes > self._pool._max_header_size:
            self._fail(ProtocolError(
                f"{self.label}: response head larger than {self._pool._max_header_size} bytes"))

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost decides what it meant

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool._forget(self)
        self._wake_writer()
        if self._waiter is None:
            return
        if self._headers_done and self._reads_until_close():
            self._finish(False)
            return
        self.stale = not self._got_bytes
        cause = f": {exc}" if exc is not None else ""
        self._fail(ProtocolError(f"{self.label}: connection closed before a complete response{cause}"))

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_writer()

    # -- parser callbacks (exceptions are stored in _error, see data_received) --

    def on_message_begin(self) -> None:
        if self._waiter is None and not self._replace_parser:
            self._error = ProtocolError(f"{self.label}: response without a request")
            raise self._error
        self._status = 0
        self._reason = b""
        self._headers = []
        self._body = []
        self._body_size = 0
        self._headers_done = False

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._status = self._parser.get_status_code()
        if self._head_only and self._status >= 200 and self._waiter is not None:
            self._replace_parser = True
            self._finish(self._parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        if self._waiter is None:
            return  # a body the peer wrongly sent after a HEAD response
        self._body_size += len(body)
        if self._body_size > self._pool._max_response_size:
            self._error = ProtocolError(
                f"{self.label}: response body larger than {self._pool._max_response_size} bytes")
            raise self._error
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._waiter is None or self._status < 200:
            return  # after HEAD, or an interim 1xx; 101 never gets here (upgrade raises)
        self._finish(self._parser.should_keep_alive())

    # -- outcomes ---------------------------------------------------------------

    def _reads_until_close(self) -> bool:
        """True when the response body is delimited by the peer closing the connection."""
        if self._head_only or self._status < 200 or self._status in (204, 304):
            return False
        for name, value in self._headers:
            lower = name.lower()
            if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
                return False
        return True

    def _finish(self, keep_alive: bool) -> None:
        waiter, self._waiter = self._waiter, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        if not waiter.done():
            waiter.set_result(ClientResponse(self._status, self._reason, self._headers, body))
        if keep_alive and self._write_done and not self.closed:
            self._pool._release(self)
        else:
            self.close()

    def _fail(self, error: ClientError | None) -> None:
        """Fail the request in flight, if any, and abort the connection."""
        waiter, self._waiter = self._waiter, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if waiter is not None and not waiter.done() and error is not None:
            waiter.set_exception(error)
        self._wake_writer()
        if not self.closed:
            self.closed = True
            self._transport.abort()

    def _on_timeout(self, timeout: float) -> None:
        self._timer = None
        self._fail(ResponseTimeout(f"{self.label}: no complete response within {timeout:g} s"))

    def _wake_writer(self) -> None:
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def close(self) -> None:
        """Close gracefully; used for idle connections and finished `Connection: close` ones."""
        if not self.closed:
            self.closed = True
            self._transport.close()


class HttpClientPool:
    """HTTP/1.1 client with a keep-alive pool per (host, port).

    Args:
        connect_timeout: seconds allowed for the TCP connect.
        read_timeout: default seconds from starting to write a request until its
            response is complete; ``request(timeout=...)`` overrides it.
        max_idle_per_host: idle connections kept per (host, port); the oldest goes first.
        idle_timeout: seconds an idle connection is kept before it is closed.
        max_response_size: largest response body accepted, in bytes.
        max_header_size: largest response head (status line and headers) accepted.
    """

    __slots__ = (
        "_connect_timeout", "_read_timeout", "_max_idle", "_idle_timeout",
        "_max_response_size", "_max_header_size", "_idle", "_loop", "_sweeper", "_closed",
    )

    def __init__(self, *, connect_timeout: float = 5.0, read_timeout: float = 60.0,
                 max_idle_per_host: int = 64, idle_timeout: float = 30.0,
                 max_response_size: int = 64 * 1024 * 1024, max_header_size: int = 64 * 1024):
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_idle = max_idle_per_host
        self._idle_timeout = idle_timeout
        self._max_response_size = max_response_size
        self._max_header_size = max_header_size
        # (host, port) -> idle connections, oldest on the left, reused from the right.
        self._idle: dict[tuple[str, int], deque[_Connection]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(self, host: str, port: int, method: str, target: str,
                      headers: Sequence[tuple[bytes, bytes]] = (), body: bytes = b"",
                      *, timeout: float | None = None) -> ClientResponse:
        """Send one request and return the complete response.

        Args:
            host, port: the peer; also written as ``Host: host:port``.
            method: the request method, as it goes on the wire.
            target: the request-target, path plus ``?query``.
            headers: sent as given, except Host, Content-Length, Transfer-Encoding and
                Connection, which this method writes itself. Dropping other
                hop-by-hop headers is the caller's job.
            body: the request body; sent with Content-Length.
            timeout: seconds for the whole exchange; defaults to ``read_timeout``.

        Raises:
            ConnectError, ResponseTimeout, ProtocolError; ClientError for a closed pool
            or a method or target that would break the request line.
        """
        if self._closed:
            raise ClientError("HTTP client pool is closed")
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        head = _request_head(host, port, method, target, headers, body)
        wait = self._read_timeout if timeout is None else timeout
        head_only = method == "HEAD"
        key = (host, port)
        conn = self._acquire(key)
        if conn is not None:
            try:
                return await conn.send(head, body, head_only, wait)
            except ProtocolError:
                # The peer closed a reused connection without answering: it had
                # probably timed it out. Replay only what is safe to replay.
                if not conn.stale or (conn._wrote and method not in _IDEMPOTENT):
                    raise
        conn = await self._connect(host, port, key)
        return await conn.send(head, body, head_only, wait)

    async def close(self) -> None:
        """Close idle connections; busy ones close when their response completes."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        idle, self._idle = self._idle, {}
        for stack in idle.values():
            for conn in stack:
                conn.idle = False
                conn.close()
        if idle:
            await asyncio.sleep(0)  # let the transports run connection_lost

    # -- pool internals ---------------------------------------------------------

    async def _connect(self, host: str, port: int, key: tuple[str, int]) -> _Connection:
        loop = self._loop
        label = f"{host}:{port}"
        task = asyncio.current_task()
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = loop.call_later(self._connect_timeout, expire)
        try:
            _, conn = await loop.create_connection(lambda: _Connection(self, key, label), host, port)
        except asyncio.CancelledError:
            if not expired or (hasattr(task, "uncancel") and task.uncancel() > 0):
                raise
            raise ConnectError(
                f"connect to {label} failed: timed out after {self._connect_timeout:g} s") from None
        except OSError as exc:
            raise ConnectError(f"connect to {label} failed: {exc.strerror or exc}") from exc
        finally:
            timer.cancel()
        return conn

    def _acquire(self, key: tuple[str, int]) -> _Connection | None:
        stack = self._idle.get(key)
        while stack:
            conn = stack.pop()
            conn.idle = False
            if not conn.closed:
                return conn
        return None

    def _release(self, conn: _Connection) -> None:
        if self._closed or self._max_idle <= 0:
            conn.close()
            return
        stack = self._idle.get(conn.key)
        if stack is None:
            stack = self._idle[conn.key] = deque()
        elif len(stack) >= self._max_idle:
            oldest = stack.popleft()
            oldest.idle = False
            oldest.close()
        conn.idle = True
        conn.idle_since = self._loop.time()
        stack.append(conn)
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(self._idle_timeout, self._sweep)

    def _forget(self, conn: _Connection) -> None:
        """Drop a connection the peer closed while it sat idle."""
        if conn.idle:
            conn.idle = False
            self._idle[conn.key].remove(conn)

    def _sweep(self) -> None:
        """Close connections idle past idle_timeout; one pool-wide timer, not one each."""
        self._sweeper = None
        cutoff = self._loop.time() - self._idle_timeout
        earliest: float | None = None
        for key in list(self._idle):
            stack = self._idle[key]
            while stack and stack[0].idle_since <= cutoff:
                conn = stack.popleft()
                conn.idle = False
                conn.close()
            if stack:
                since = stack[0].idle_since
                earliest = since if earliest is None else min(earliest, since)
            else:
                del self._idle[key]
        if earliest is not None:
            self._sweeper = self._loop.call_at(earliest + self._idle_timeout, self._sweep)


def _request_head(host: str, port: int, method: str, target: str,
                  headers: Sequence[tuple[bytes, bytes]], body: bytes) -> bytes:
    """Request line, Host, the caller's headers minus framing ones, Content-Length."""
    if (not method or not target or not target.isascii()
            or _BAD_REQUEST_LINE.search(method) or _BAD_REQUEST_LINE.search(target)):
        raise ClientError(f"invalid request line {method!r} {target!r}")
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    parts = [f"{method} {target} HTTP/1.1\r\nHost: {authority}\r\n".encode("latin-1")]
    for name, value in headers:
        if name.lower() in _OWN_HEADERS:
            continue
        parts += (name, b": ", value, b"\r\n")
    if body or method in _BODY_METHODS:
        parts.append(b"Content-Length: %d\r\n\r\n" % len(body))
    else:
        parts.append(b"\r\n")
    return b"".join(parts)
