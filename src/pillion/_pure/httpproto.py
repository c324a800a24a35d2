"""The per-connection HTTP/1.1 protocol over httptools; pure twin of ``pillion._ext.httpproto``.

This module is the specification: ``pillion.server.protocol`` loads the compiled
twin when it is built, and the parity tests (tests/parity/test_httpproto_parity.py)
hold the two to the same bytes, closes and handler calls. What the protocol owns
is described in ``pillion.server.protocol``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from time import monotonic
from typing import Awaitable

import httptools
import orjson

from ..errors import DaprError, render
from ..server.response import Response, status_line

__all__ = ["HttpProtocol", "Request", "error_bytes"]

Headers = list[tuple[bytes, bytes]]


class Request:
    """One parsed HTTP request; ``params`` are filled by the router."""

    __slots__ = ("method", "path", "query", "headers", "body", "params", "keep_alive", "endpoint", "peer")

    def __init__(self, method: str, path: str, query: str, headers: Headers, body: bytes, keep_alive: bool):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.params: dict[str, str] = {}
        self.endpoint = None
        self.peer = ""  # the client's IP address, set by the protocol

    def header(self, name: bytes) -> bytes | None:
        """First value of header ``name`` (give it lower-case)."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def query_params(self) -> list[tuple[str, str]]:
        from urllib.parse import parse_qsl

        return parse_qsl(self.query, keep_blank_values=True)

    def metadata(self) -> dict[str, str]:
        """``metadata.<k>`` query parameters as component metadata (first value wins)."""
        out: dict[str, str] = {}
        for key, value in self.query_params():
            if key.startswith("metadata.") and key[9:] not in out:
                out[key[9:]] = value
        return out

    def json(self):
        """The body as JSON, or ERR_MALFORMED_REQUEST naming the parse problem."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise DaprError("ERR_MALFORMED_REQUEST", f"failed deserializing HTTP body: {exc}") from None



log = logging.getLogger("pillion.server.http")

# How long a connection answered with an error is kept half-closed, reading and
# discarding what the client still sends, before it is closed (see _fail).
_LINGER = 2.0
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE")}
_JSON_CT = b"Content-Type: application/json\r\n"


class _Reject(Exception):
    """Raised inside a parser callback to answer ``status`` and close."""

    def __init__(self, status: int, code: str, message: str):
        self.status = status
        self.code = code
        self.message = message


def error_bytes(status: int, code: str, message: str, close: bool) -> bytes:
    body = render(code, message)
    return b"".join(
        (
            status_line(status),
            _JSON_CT,
            b"Content-Length: %d\r\n" % len(body),
            b"Connection: close\r\n\r\n" if close else b"\r\n",
            body,
        )
    )


class HttpProtocol(asyncio.Protocol):
    __slots__ = (
        "server", "limits", "handler", "transport", "parser", "peer", "_url", "_headers", "_header_size",
        "_max_header", "_max_body", "_header_timeout", "_body_timeout",
        "_body", "_body_size", "_queue", "_busy", "_task", "_loop", "_reading_paused", "_writing_paused",
        "_closing", "_continue", "read_deadline", "idle_since", "_expect_continue", "_lingering",
        "_budget", "_declared", "_admitted", "_budget_paused",
    )

    def __init__(self, server):
        self.server = server
        self.limits = server.limits
        self.handler = server.handler
        self.transport = None
        self.peer = ""
        self.parser = httptools.HttpRequestParser(self)
        limits = server.limits
        self._max_header = limits.max_header
        self._max_body = limits.max_body
        self._header_timeout = limits.header_timeout
        self._body_timeout = limits.body_timeout
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_size = 0
        self._body: bytes | bytearray = b""
        self._queue: collections.deque[Request] = collections.deque()
        self._busy = False
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._closing = False
        self._continue = False
        self._expect_continue = False
        self._lingering = False
        self.read_deadline = 0.0
        self.idle_since = 0.0
        self._budget = server.budget  # body bytes in flight across the server (None: no limit)
        self._declared = 0  # this request's Content-Length
        self._admitted = 0  # body bytes of ours the budget counts
        self._budget_paused = False

    # -- transport events -------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        address = transport.get_extra_info("peername")
        self.peer = address[0] if isinstance(address, tuple) else ""
        self.idle_since = time.monotonic()
        self.server.connections.add(self)

    def connection_lost(self, exc):
        self.server.connections.discard(self)
        if self._budget is not None:
            self._budget.leave(self, self._admitted)
            self._admitted = 0
        self._queue.clear()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self.transport = None

    def pause_writing(self):
        self._writing_paused = True

    def budget_granted(self, length):
        """The server's body budget took ``length`` more bytes of ours: read again."""
        self._admitted += length
        self._budget_paused = False
        if self.transport is not None and not self._reading_paused:
            self.transport.resume_reading()
            if self.read_deadline:
                grace = min(self.limits.header_timeout, self.limits.body_timeout)
                self.read_deadline = max(self.read_deadline, time.monotonic() + grace)

    def resume_writing(self):
        self._writing_paused = False
        self._next()

    def data_received(self, data: bytes):
        if self._lingering:
            return  # the parser is dead after an error: discard what the client still sends
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self._fail(cause.status, cause.code, cause.message)
            else:
                log.error("HTTP parser callback failed", exc_info=cause)
                self._fail(500, "ERROR", "internal error while reading the request")
        except httptools.HttpParserUpgrade:
            # RFC 9110 §7.8: a server may ignore Upgrade. The request has been answered
            # (or queued) as plain HTTP/1.1; llhttp reads no further, so close after it.
            self._closing = True
            if self.transport is not None and self.is_idle():
                self.transport.close()
        except httptools.HttpParserError as exc:
            self._fail(400, "ERR_MALFORMED_REQUEST", f"malformed HTTP request: {exc}")

    def eof_received(self):
        if self._lingering:
            return False  # the client has read the error and closed: close our side too
        # A half-closed client still gets the responses to what it sent.
        if self._busy or self._queue:
            self._closing = True
            return True
        return False

    # -- httptools callbacks ----------------------------------------------

    # These run once per request or per header: keep them short (see bench/).

    def on_message_begin(self):
        self._url = b""
        self._headers = []
        self._header_size = 0
        self._body = b""
        self._expect_continue = False
        self._declared = 0
        # The real clock, not the ticker's cached one: that can be up to a tick old,
        # which would cut a sub-second limit short (or time a request out at once).
        self.read_deadline = monotonic() + self._header_timeout

    def on_url(self, url: bytes):
        self._url += url
        self._header_size += len(url)
        if self._header_size > self._max_header:
            raise _Reject(431, "ERR_MALFORMED_REQUEST", "request line and headers too large")

    def on_header(self, name: bytes, value: bytes):
        size = self._header_size + len(name) + len(value) + 4
        self._header_size = size
        if size > self._max_header:
            raise _Reject(431, "ERR_MALFORMED_REQUEST", "request line and headers too large")
        self._headers.append((name, value))
        if len(name) == 14 or len(name) == 6:
            self._framing_header(name.lower(), value)

    def _framing_header(self, name: bytes, value: bytes):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return  # llhttp rejects it with a 400 of its own
            if length > self._max_body:
                raise _Reject(413, "ERR_BODY_READ", f"request body larger than the limit of {self._max_body} bytes")
            self._declared = length
        elif name == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True

    def on_headers_complete(self):
        if self._budget is not None and self._declared:
            if self._budget.admit(self, self._declared):
                self._admitted += self._declared
            else:  # wait (not read) until bodies in flight leave room for this one
                self._budget_paused = True
                if not self._reading_paused:
                    self.transport.pause_reading()
        if self._expect_continue:
            if self.parser.get_http_version() != "1.1":
                return
            if self._busy or self._queue:
                self._continue = True
            else:
                self.transport.write(_CONTINUE)

    def on_body(self, body: bytes):
        if len(self._body) + len(body) > self._max_body:
            raise _Reject(413, "ERR_BODY_READ", f"request body larger than the limit of {self._max_body} bytes")
        if not self._body:
            # The header deadline ran until the first body byte; the body gets its own.
            self.read_deadline = monotonic() + self._body_timeout
            self._body = body
        elif type(self._body) is bytes:
            self._body = bytearray(self._body) + body
        else:
            self._body += body

    def on_message_complete(self):
        self.read_deadline = 0.0
        self._continue = False
        url = self._url
        mark = url.find(b"?")
        if mark < 0:
            path, query = url.decode("latin-1"), ""
        else:
            path = url[:mark].decode("latin-1")
            query = url[mark + 1 :].partition(b"#")[0].decode("latin-1")
        parser = self.parser
        method = parser.get_method()
        if parser.should_upgrade():
            # RFC 9110 §7.8: a server may ignore Upgrade and answer in HTTP/1.1. llhttp
            # stops reading after this message, so it is the connection's last one, and
            # only a bodiless GET/HEAD/OPTIONS can be answered (a body would be lost).
            if method not in (b"GET", b"HEAD", b"OPTIONS") or self._body:
                raise _Reject(400, "ERR_MALFORMED_REQUEST", f"{method.decode('latin-1')} with Upgrade is not supported")
            self._closing = True
        body = self._body
        request = Request(
            _METHODS.get(method) or method.decode("latin-1"),
            path,
            query,
            self._headers,
            body if type(body) is bytes else bytes(body),
            parser.should_keep_alive(),
        )
        request.peer = self.peer
        if self._busy or self._queue or self._writing_paused:
            self._queue.append(request)
            if len(self._queue) >= self.limits.max_pipeline and not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()
        else:
            self._run(request)

    # -- dispatch -----------------------------------------------------------

    def _run(self, request: Request):
        try:
            result = self.handler(request)
        except DaprError as err:
            result = Response.error(err)
        except Exception:
            log.exception("handler failed for %s %s", request.method, request.path)
            result = Response(500, render("ERROR", "internal error"), [(b"Content-Type", b"application/json")])
        if type(result) is Response:
            self._write(request, result)
        else:
            self._busy = True
            # loop.create_task, not ensure_future: that looks the loop up per call, and
            # CPython 3.11 pays a getpid() system call for it.
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._await(request, result))

    async def _await(self, request: Request, pending: Awaitable[Response]):
        try:
            response = await pending
        except DaprError as err:
            response = Response.error(err)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler failed for %s %s", request.method, request.path)
            response = Response(500, render("ERROR", "internal error"), [(b"Content-Type", b"application/json")])
        self._busy = False
        self._task = None
        if self.transport is not None:
            self._write(request, response)
            # The queue is drained here and by _next's loop, never from _write:
            # _next -> _run -> _write -> _next recursed once per queued request.
            if not self.transport.is_closing():
                self._next()

    def _write(self, request: Request, response: Response):
        if self._admitted:  # this request's body is no longer held
            done = min(self._admitted, len(request.body))
            self._admitted -= done
            self._budget.release(done)
        elif self._budget_paused:  # its body came with the reads already made: stop waiting
            self._budget_paused = False
            self._budget.leave(self, 0)
            if not self._reading_paused:
                self.transport.resume_reading()
        body = response.body
        keep_alive = request.keep_alive and not (self._closing and not self._queue)
        if not body and not response.headers and keep_alive:
            self.transport.write(self.server.bare_response(response.status))
            self.idle_since = monotonic()
            return
        parts = [status_line(response.status)]
        for name, value in response.headers:
            parts += (name, b": ", value, b"\r\n")
        status = response.status
        if status >= 200 and status != 204 and status != 304 and not (
            request.method == "HEAD" and any(k.lower() == b"content-length" for k, _ in response.headers)
        ):
            parts.append(b"Content-Length: %d\r\n" % len(body))
        parts.append(self.server.date_header)
        parts.append(b"\r\n" if keep_alive else b"Connection: close\r\n\r\n")
        if request.method != "HEAD" and body:
            parts.append(body)
        self.transport.write(b"".join(parts))
        if not keep_alive:
            self._closing = True
            self._queue.clear()
            self.transport.close()
            return
        self.idle_since = monotonic()

    def _next(self):
        while self._queue and not self._busy and not self._writing_paused and self.transport is not None:
            self._run(self._queue.popleft())
        if self._reading_paused and len(self._queue) <= self.limits.max_pipeline // 4 and self.transport is not None:
            self._reading_paused = False
            if not self._budget_paused:
                self.transport.resume_reading()
            if self.read_deadline:
                # The time we did not read is ours, not the client's: start the clock again.
                grace = min(self.limits.header_timeout, self.limits.body_timeout)
                self.read_deadline = max(self.read_deadline, time.monotonic() + grace)
        if not self._queue and not self._busy and self._continue and self.transport is not None:
            self._continue = False
            self.transport.write(_CONTINUE)

    def _fail(self, status: int, code: str, message: str):
        """Answer a request we could not read; the parser is dead after an error.

        Then half-close and linger (nginx's lingering_close) rather than close at once:
        a client still uploading its body would otherwise get a reset (unread data
        arriving after close) and never read the answer. Everything it still sends is
        discarded; the connection closes when the client closes its side
        (eof_received) or when the linger deadline passes (check_time). Close at once
        when the transport cannot half-close, or when a handler is in flight (nothing
        is written then).
        """
        if self.transport is None or self._lingering:
            return
        self._closing = True
        self._continue = False
        self._queue.clear()
        if self._busy:
            self.transport.close()
            return
        self.transport.write(error_bytes(status, code, message, close=True))
        if self.transport.is_closing() or not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._lingering = True
        self.read_deadline = monotonic() + _LINGER
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()

    # -- called by the server ------------------------------------------------

    def is_idle(self) -> bool:
        return not self._busy and not self._queue and self.read_deadline == 0.0

    def check_time(self, now: float):
        if self.transport is None:
            return
        if self._lingering:
            if now > self.read_deadline:
                self.transport.close()
        elif self.read_deadline:
            if now > self.read_deadline and not self._reading_paused and not self._budget_paused:
                self._fail(408, "ERR_BODY_READ", "timed out reading the request")
        elif self.is_idle() and now - self.idle_since > self.limits.keepalive_timeout:
            self._closing = True
            self.transport.close()

    def shutdown(self):
        """Drain: finish what is in flight, then close; close at once when idle."""
        self._closing = True
        if self.transport is not None and (self.is_idle() or self._lingering):
            self.transport.close()
