# cython: embedsignature=True, embedsignature.format=clinic
"""The per-connection HTTP/1.1 protocol over httptools; compiled twin of ``pillion._pure.httpproto``.

The pure module is the specification: same names, same bytes written, same closes,
same handler calls (tests/parity/test_httpproto_parity.py). A ``cdef class`` cannot
inherit ``asyncio.Protocol`` (a Python class); the event loop only calls the methods.
"""

cimport cython
from cpython.time cimport monotonic as _c_monotonic
from libc.string cimport memchr

# Declarations stay in this file: a sibling httpproto.pxd is silently ignored for a
# module named pillion._ext.httpproto (ext/README.md, "Sharing declarations").

import asyncio
import collections
import logging

from urllib.parse import parse_qsl

import httptools
import orjson

from pillion.errors import DaprError, render
from pillion.server.response import Response, status_line

__all__ = ["HttpProtocol", "Request", "error_bytes"]

log = logging.getLogger("pillion.server.http")

# Bound once: module globals typed as C objects, no dict lookups per request.
cdef object _log = log
# _c_monotonic is CPython's own monotonic clock, the one time.monotonic() reads.
cdef object _parse_qsl = parse_qsl
cdef object _orjson_loads = orjson.loads
cdef object _JSONDecodeError = orjson.JSONDecodeError
cdef object _get_running_loop = asyncio.get_running_loop
cdef object _CancelledError = asyncio.CancelledError
cdef object _deque = collections.deque
cdef object _HttpRequestParser = httptools.HttpRequestParser
cdef object _ParserCallbackError = httptools.HttpParserCallbackError
cdef object _ParserUpgrade = httptools.HttpParserUpgrade
cdef object _ParserError = httptools.HttpParserError
cdef object _DaprError = DaprError
cdef object _render = render
cdef object _Response = Response
cdef object _status_line = status_line

# How long a connection answered with an error is kept half-closed, reading and
# discarding what the client still sends, before it is closed (see _fail).
cdef double _LINGER = 2.0
cdef bytes _CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
cdef dict _METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE")}
cdef bytes _JSON_CT = b"Content-Type: application/json\r\n"
cdef bytes _EMPTY = b""


cdef class Request:
    """One parsed HTTP request; ``params`` are filled by the router."""

    cdef public object method, path, query, headers, body, params, keep_alive, endpoint, peer

    def __init__(self, method, path, query, headers, body, keep_alive):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.params = {}
        self.endpoint = None
        self.peer = ""

    def header(self, name):
        """First value of header ``name`` (give it lower-case)."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def query_params(self):
        return _parse_qsl(self.query, keep_blank_values=True)

    def metadata(self):
        """``metadata.<k>`` query parameters as component metadata (first value wins)."""
        cdef dict out = {}
        for key, value in self.query_params():
            if key.startswith("metadata.") and key[9:] not in out:
                out[key[9:]] = value
        return out

    def json(self):
        """The body as JSON, or ERR_MALFORMED_REQUEST naming the parse problem."""
        try:
            return _orjson_loads(self.body)
        except _JSONDecodeError as exc:
            raise _DaprError("ERR_MALFORMED_REQUEST", f"failed deserializing HTTP body: {exc}") from None


class _Reject(Exception):
    """Raised inside a parser callback to answer ``status`` and close."""

    def __init__(self, status, code, message):
        self.status = status
        self.code = code
        self.message = message


def error_bytes(status, code, message, close):
    body = _render(code, message)
    return b"".join(
        (
            _status_line(status),
            _JSON_CT,
            b"Content-Length: %d\r\n" % len(body),
            b"Connection: close\r\n\r\n" if close else b"\r\n",
            body,
        )
    )


cdef inline object _too_large_body(Py_ssize_t limit):
    return _Reject(413, "ERR_BODY_READ", f"request body larger than the limit of {limit} bytes")


cdef class HttpProtocol:
    cdef public object server, limits, handler, transport, parser, peer
    cdef dict _bare  # server._bare: bare_response's cache, read without the call
    cdef public double read_deadline, idle_since
    cdef bytes _url
    cdef list _headers
    cdef Py_ssize_t _header_size, _max_header, _max_body
    cdef double _header_timeout, _body_timeout
    cdef object _body
    cdef readonly object _queue
    cdef object _task
    cdef object _loop
    cdef readonly bint _busy, _reading_paused, _writing_paused, _closing, _lingering
    cdef bint _continue, _expect_continue, _budget_paused
    cdef Py_ssize_t _declared, _admitted
    cdef object _budget

    def __init__(self, server):
        self.server = server
        self.limits = server.limits
        self.handler = server.handler
        self._bare = server._bare
        self.transport = None
        self.peer = ""
        self.parser = _HttpRequestParser(self)
        limits = server.limits
        self._max_header = limits.max_header
        self._max_body = limits.max_body
        self._header_timeout = limits.header_timeout
        self._body_timeout = limits.body_timeout
        self._url = _EMPTY
        self._headers = []
        self._header_size = 0
        self._body = _EMPTY
        self._queue = _deque()
        self._busy = False
        self._task = None
        self._loop = None
        self._reading_paused = False
        self._writing_paused = False
        self._closing = False
        self._continue = False
        self._expect_continue = False
        self._lingering = False
        self.read_deadline = 0.0
        self.idle_since = 0.0
        self._budget = server.budget
        self._declared = 0
        self._admitted = 0
        self._budget_paused = False

    # -- transport events -------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        address = transport.get_extra_info("peername")
        self.peer = address[0] if isinstance(address, tuple) else ""
        self.idle_since = _c_monotonic()
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
                self.read_deadline = max(self.read_deadline, _c_monotonic() + grace)

    def resume_writing(self):
        self._writing_paused = False
        self._next()

    def data_received(self, data):
        if self._lingering:
            return  # the parser is dead after an error: discard what the client still sends
        try:
            self.parser.feed_data(data)
        except _ParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self._fail(cause.status, cause.code, cause.message)
            else:
                _log.error("HTTP parser callback failed", exc_info=cause)
                self._fail(500, "ERROR", "internal error while reading the request")
        except _ParserUpgrade:
            # RFC 9110 §7.8: a server may ignore Upgrade. The request has been answered
            # (or queued) as plain HTTP/1.1; llhttp reads no further, so close after it.
            self._closing = True
            if self.transport is not None and self._idle():
                self.transport.close()
        except _ParserError as exc:
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

    def on_message_begin(self):
        self._url = _EMPTY
        self._headers = []
        self._header_size = 0
        self._body = _EMPTY
        self._expect_continue = False
        self._declared = 0
        # The real clock, not the ticker's cached one (see the pure twin).
        self.read_deadline = _c_monotonic() + self._header_timeout

    def on_url(self, bytes url):
        self._url += url
        self._header_size += len(url)
        if self._header_size > self._max_header:
            raise _Reject(431, "ERR_MALFORMED_REQUEST", "request line and headers too large")

    def on_header(self, bytes name, bytes value):
        cdef Py_ssize_t n = len(name)
        cdef Py_ssize_t size = self._header_size + n + len(value) + 4
        self._header_size = size
        if size > self._max_header:
            raise _Reject(431, "ERR_MALFORMED_REQUEST", "request line and headers too large")
        self._headers.append((name, value))
        if n == 14 or n == 6:
            self._framing_header(name.lower(), value)

    cdef object _framing_header(self, bytes name, bytes value):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None  # llhttp rejects it with a 400 of its own
            if length > self._max_body:
                raise _too_large_body(self._max_body)
            self._declared = length
        elif name == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True
        return None

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

    def on_body(self, bytes body):
        if len(self._body) + len(body) > self._max_body:
            raise _too_large_body(self._max_body)
        if not self._body:
            # The header deadline ran until the first body byte; the body gets its own.
            self.read_deadline = _c_monotonic() + self._body_timeout
            self._body = body
        elif type(self._body) is bytes:
            self._body = bytearray(self._body) + body
        else:
            self._body += body

    def on_message_complete(self):
        cdef bytes url = self._url
        cdef const char *s = url
        cdef Py_ssize_t n = len(url)
        cdef const char *mark
        cdef const char *hash_
        cdef Py_ssize_t start, end
        self.read_deadline = 0.0
        self._continue = False
        mark = <const char *>memchr(s, c"?", n)
        if mark == NULL:
            path = s[:n].decode("latin-1")
            query = ""
        else:
            start = mark - s
            path = s[:start].decode("latin-1")
            start += 1
            hash_ = <const char *>memchr(s + start, c"#", n - start)
            end = n if hash_ == NULL else hash_ - s
            query = s[start:end].decode("latin-1")
        parser = self.parser
        method = parser.get_method()
        if parser.should_upgrade():
            # RFC 9110 §7.8: ignore Upgrade and answer in HTTP/1.1 (see the pure twin).
            if method not in (b"GET", b"HEAD", b"OPTIONS") or self._body:
                raise _Reject(400, "ERR_MALFORMED_REQUEST", f"{method.decode('latin-1')} with Upgrade is not supported")
            self._closing = True
        body = self._body
        name = _METHODS.get(method)
        # Request.__init__ without the call: the same fields, in the same order.
        cdef Request request = Request.__new__(Request)
        request.method = name if name is not None else method.decode("latin-1")
        request.path = path
        request.query = query
        request.headers = self._headers
        request.body = body if type(body) is bytes else bytes(body)
        request.keep_alive = parser.should_keep_alive()
        request.params = {}
        request.endpoint = None
        request.peer = self.peer
        if self._busy or self._queue or self._writing_paused:
            self._queue.append(request)
            if len(self._queue) >= self.limits.max_pipeline and not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()
        else:
            self._run(request)

    # -- dispatch -----------------------------------------------------------

    cdef _run(self, request):
        try:
            result = self.handler(request)
        except _DaprError as err:
            result = _Response.error(err)
        except Exception:
            _log.exception("handler failed for %s %s", request.method, request.path)
            result = _Response(500, _render("ERROR", "internal error"), [(b"Content-Type", b"application/json")])
        if type(result) is _Response:
            self._write(request, result)
        else:
            self._busy = True
            # loop.create_task, not ensure_future: that looks the loop up per call, and
            # CPython 3.11 pays a getpid() system call for it.
            if self._loop is None:
                self._loop = _get_running_loop()
            self._task = self._loop.create_task(_await(self, request, result))

    cdef _write(self, request, response):
        cdef Py_ssize_t done
        if self._admitted:
            done = min(self._admitted, len(request.body))
            self._admitted -= done
            self._budget.release(done)
        elif self._budget_paused:  # its body came with the reads already made: stop waiting
            self._budget_paused = False
            self._budget.leave(self, 0)
            if not self._reading_paused:
                self.transport.resume_reading()
        body = response.body
        headers = response.headers
        cdef bint keep_alive = request.keep_alive and not (self._closing and not self._queue)
        if not body and not headers and keep_alive:
            status = response.status
            bare = self._bare.get(status)
            self.transport.write(bare if bare is not None else self.server.bare_response(status))
            self.idle_since = _c_monotonic()
            return
        parts = [_status_line(response.status)]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        status = response.status
        if status >= 200 and status != 204 and status != 304 and not (
            request.method == "HEAD" and any(k.lower() == b"content-length" for k, _ in headers)
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
        self.idle_since = _c_monotonic()

    cdef _next(self):
        while self._queue and not self._busy and not self._writing_paused and self.transport is not None:
            self._run(self._queue.popleft())
        if self._reading_paused and len(self._queue) <= self.limits.max_pipeline // 4 and self.transport is not None:
            self._reading_paused = False
            if not self._budget_paused:
                self.transport.resume_reading()
            if self.read_deadline:
                # The time we did not read is ours, not the client's: start the clock again.
                grace = min(self.limits.header_timeout, self.limits.body_timeout)
                self.read_deadline = max(self.read_deadline, _c_monotonic() + grace)
        if not self._queue and not self._busy and self._continue and self.transport is not None:
            self._continue = False
            self.transport.write(_CONTINUE)

    cdef _fail(self, status, code, message):
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
        self.read_deadline = _c_monotonic() + _LINGER
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()

    cdef bint _idle(self):
        return not self._busy and not self._queue and self.read_deadline == 0.0

    # -- called by the server ------------------------------------------------

    def is_idle(self):
        return self._idle()

    def check_time(self, double now):
        if self.transport is None:
            return
        if self._lingering:
            if now > self.read_deadline:
                self.transport.close()
        elif self.read_deadline:
            if now > self.read_deadline and not self._reading_paused and not self._budget_paused:
                self._fail(408, "ERR_BODY_READ", "timed out reading the request")
        elif self._idle() and now - self.idle_since > self.limits.keepalive_timeout:
            self._closing = True
            self.transport.close()

    def shutdown(self):
        """Drain: finish what is in flight, then close; close at once when idle."""
        self._closing = True
        if self.transport is not None and (self._idle() or self._lingering):
            self.transport.close()


async def _await(HttpProtocol proto, request, pending):
    try:
        response = await pending
    except _DaprError as err:
        response = _Response.error(err)
    except _CancelledError:
        raise
    except Exception:
        _log.exception("handler failed for %s %s", request.method, request.path)
        response = _Response(500, _render("ERROR", "internal error"), [(b"Content-Type", b"application/json")])
    proto._busy = False
    proto._task = None
    if proto.transport is not None:
        proto._write(request, response)
        # The queue is drained here and by _next's loop, never from _write:
        # _next -> _run -> _write -> _next recursed once per queued request.
        if not proto.transport.is_closing():
            proto._next()
