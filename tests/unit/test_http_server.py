"""HttpServer / HttpProtocol against raw sockets on 127.0.0.1, on a uvloop loop thread.

Every test talks bytes to a real server so framing, keep-alive, pipelining, limits,
timeouts, flow control and drain are checked exactly as a client sees them. Every
test runs twice: with the pure HttpProtocol and with the compiled one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import struct
import threading
import time
from http import HTTPStatus

import orjson
import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pillion._testing import import_twin
from pillion.errors import DaprError
from pillion.server.http import Response
from pillion.server.protocol import HttpServer, Limits

BIG = b"x" * (20 * 1024 * 1024)


def status(code: int) -> str:
    return f"HTTP/1.1 {code} {HTTPStatus(code).phrase}"


# -- the server under test -------------------------------------------------------


class _Capture(logging.Handler):
    def __init__(self, sink: list):
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record):
        self.sink.append(record)


@pytest.fixture(scope="module", params=("pure", "compiled"))
def protocol(request) -> type:
    """The HttpProtocol class under test; module-scoped so the fuzz server is shared per twin."""
    return import_twin("httpproto", request.param).HttpProtocol


class ServerThread:
    """An HttpServer on its own uvloop loop thread, with the test handler."""

    def __init__(self, limits: Limits | None = None, protocol: type | None = None):
        self.protocol = protocol
        self.events: list[str] = []
        self.loop_errors: list[dict] = []
        self.log_errors: list[logging.LogRecord] = []
        self._log = _Capture(self.log_errors)
        logging.getLogger("pillion").addHandler(self._log)
        self.loop = uvloop.new_event_loop()
        self.loop.set_exception_handler(lambda loop, ctx: self.loop_errors.append(ctx))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.server: HttpServer = self.call(self._start(limits))
        self.port = self.server.ports()[0]

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _start(self, limits):
        server = HttpServer(self.handle, limits, protocol=self.protocol)
        await server.listen("127.0.0.1", 0)
        return server

    def call(self, coro, timeout: float = 5.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self):
        try:
            self.call(self.server.shutdown(grace=0.5))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()
            logging.getLogger("pillion").removeHandler(self._log)

    # -- the handler -------------------------------------------------------------

    def handle(self, req):
        path = req.path
        if path == "/slow":
            return self._slow(req)
        if path == "/raise":
            raise DaprError("ERR_BAD_REQUEST", "x")
        if path == "/araise":
            return self._araise()
        if path == "/boom":
            raise RuntimeError("boom")
        if path == "/aboom":
            return self._aboom()
        if path == "/big":
            return Response(200, BIG, [(b"Content-Type", b"application/octet-stream")])
        return echo(req)

    async def _slow(self, req):
        self.events.append("slow-start")
        try:
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            self.events.append("slow-cancelled")
            raise
        self.events.append("slow-done")
        return echo(req)

    async def _araise(self):
        await asyncio.sleep(0)
        raise DaprError("ERR_BAD_REQUEST", "x")

    async def _aboom(self):
        await asyncio.sleep(0)
        raise RuntimeError("boom")


def echo(req) -> Response:
    return Response.json(
        {
            "method": req.method,
            "path": req.path,
            "query": req.query,
            "len": len(req.body),
            "sha": hashlib.sha1(req.body).hexdigest(),
        },
        headers=[(b"X-Method", req.method.encode("latin-1"))],
    )


@pytest.fixture
def serve(protocol):
    servers: list[ServerThread] = []

    def start(**limits) -> ServerThread:
        s = ServerThread(Limits(**limits), protocol)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()
    for s in servers:
        assert s.loop_errors == [], s.loop_errors
        assert [r.getMessage() for r in s.log_errors] == []


@pytest.fixture
def srv(serve) -> ServerThread:
    return serve()


# -- the client ------------------------------------------------------------------


class Resp:
    def __init__(self, status_line: str, headers: list[tuple[str, str]], body: bytes):
        self.status_line = status_line
        self.status = int(status_line.split(" ", 2)[1])
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def names(self) -> list[str]:
        return [k for k, _ in self.headers]

    def json(self):
        return orjson.loads(self.body)


class Client:
    def __init__(self, port: int, timeout: float = 3.0, rcvbuf: int | None = None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buf = bytearray()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _fill(self, size: int = 65536):
        chunk = self.sock.recv(size)
        if not chunk:
            raise EOFError(f"connection closed; unread {bytes(self.buf[:200])!r}")
        self.buf += chunk

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_head(self) -> tuple[str, list[tuple[str, str]]]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        end = self.buf.index(b"\r\n\r\n")
        head = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[: end + 4]
        line, *rest = head.split("\r\n")
        headers = []
        for h in rest:
            name, sep, value = h.partition(": ")
            assert sep, f"bad header line {h!r}"
            headers.append((name, value))
        return line, headers

    def read_response(self, head: bool = False) -> Resp:
        line, headers = self.read_head()
        resp = Resp(line, headers, b"")
        length = resp.header("Content-Length")
        if length is not None and not head:
            resp.body = self.read_exact(int(length))
        return resp

    def closed(self, within: float = 1.0) -> bool:
        """True when the peer closes (EOF or reset) within ``within`` s with no more bytes."""
        assert not self.buf, f"unexpected extra bytes {bytes(self.buf[:200])!r}"
        self.sock.settimeout(within)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        assert data == b"", f"unexpected extra bytes {data[:200]!r}"
        return True

    def reset(self):
        """Close with RST instead of FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def get(path: str = "/", extra: bytes = b"", version: bytes = b"1.1", method: bytes = b"GET") -> bytes:
    return method + b" " + path.encode() + b" HTTP/" + version + b"\r\nHost: t\r\n" + extra + b"\r\n"


def post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n%s" % (path.encode(), len(body), extra, body)


def chunked(path: str, chunks: list[bytes], trailer: bytes = b"") -> bytes:
    out = [b"POST %s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" % path.encode()]
    for c in chunks:
        out.append(b"%x\r\n%s\r\n" % (len(c), c))
    out.append(b"0\r\n" + trailer + b"\r\n")
    return b"".join(out)


def assert_echo(resp: Resp, method="GET", path="/", query="", body=b"", close=False):
    assert resp.status_line == status(200)
    expected = ["Content-Type", "X-Method", "Content-Length", "Date"] + (["Connection"] if close else [])
    assert resp.names() == expected
    assert resp.header("Content-Type") == "application/json"
    assert resp.header("X-Method") == method
    assert int(resp.header("Content-Length")) == len(resp.body)
    if close:
        assert resp.header("Connection") == "close"
    assert resp.json() == {
        "method": method,
        "path": path,
        "query": query,
        "len": len(body),
        "sha": hashlib.sha1(body).hexdigest(),
    }


def assert_error(resp: Resp, code: int, error_code: str, close: bool, message: str | None = None):
    assert resp.status_line == status(code)
    assert resp.header("Content-Type") == "application/json"
    assert int(resp.header("Content-Length")) == len(resp.body)
    assert (resp.header("Connection") == "close") is close
    body = resp.json()
    assert set(body) == {"errorCode", "message"}
    assert body["errorCode"] == error_code
    if message is not None:
        assert body["message"] == message


def assert_serves(port: int):
    """A fresh connection still gets a normal answer."""
    with Client(port) as c:
        c.send(get("/after?ok=1"))
        assert_echo(c.read_response(), path="/after", query="ok=1")


def wait_no_connections(server: HttpServer, within: float = 1.0):
    """The server forgets every connection whose client went away."""
    deadline = time.monotonic() + within
    while server.connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.connections == set()


def align_to_tick(server: HttpServer, phase: float):
    """Wait until ``phase`` seconds have passed since the server's last clock tick."""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        since = time.monotonic() - server.now
        if phase <= since < phase + 0.1:
            return
        time.sleep(0.005)
    raise AssertionError("could not align with the server tick")


# -- keep-alive ----------------------------------------------------------------------


def test_the_server_runs_the_protocol_under_test(srv, protocol):
    with Client(srv.port) as c:
        c.send(get("/a"))
        assert_echo(c.read_response(), path="/a")
        (conn,) = list(srv.server.connections)
        assert type(conn) is protocol


def test_keep_alive_two_requests_on_one_connection(srv):
    with Client(srv.port) as c:
        c.send(get("/one?a=1"))
        assert_echo(c.read_response(), path="/one", query="a=1")
        c.send(post("/two", b"hello"))
        assert_echo(c.read_response(), method="POST", path="/two", body=b"hello")
        assert not c.closed(within=0.2)


def test_http10_without_keep_alive_closes(srv):
    with Client(srv.port) as c:
        c.send(get("/old", version=b"1.0"))
        assert_echo(c.read_response(), path="/old", close=True)
        assert c.closed()


def test_http10_with_keep_alive_stays_open(srv):
    with Client(srv.port) as c:
        c.send(get("/old", extra=b"Connection: keep-alive\r\n", version=b"1.0"))
        assert_echo(c.read_response(), path="/old")
        c.send(get("/again", extra=b"Connection: keep-alive\r\n", version=b"1.0"))
        assert_echo(c.read_response(), path="/again")


def test_connection_close_closes_after_response(srv):
    with Client(srv.port) as c:
        c.send(get("/bye", extra=b"Connection: close\r\n"))
        assert_echo(c.read_response(), path="/bye", close=True)
        assert c.closed()


def test_connection_close_ignores_pipelined_requests_after_it(srv):
    """Nothing may follow the response that said ``Connection: close``."""
    with Client(srv.port) as c:
        c.send(get("/bye", extra=b"Connection: close\r\n") + get("/after") + b"GARBAGE\r\n\r\n")
        assert_echo(c.read_response(), path="/bye", close=True)
        assert c.closed()
    assert_serves(srv.port)


def test_upgrade_is_ignored_and_the_connection_closed(srv):
    """``Upgrade`` (h2c, websocket) is ignored (RFC 9110 §7.8): a plain HTTP/1.1 answer,
    ``Connection: close``, and nothing pipelined behind it is read."""
    upgrade = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
    for path in ("/up", "/slow"):
        with Client(srv.port) as c:
            c.send(get(path, extra=upgrade) + get("/after"))
            resp = c.read_response()
            assert_echo(resp, path=path, close=True)
            assert resp.header("connection") == "close"
            assert c.closed()


def test_upgrade_with_a_body_or_connect_is_refused_before_the_handler_runs(srv):
    with Client(srv.port) as c:
        c.send(post("/ws", b"abc", extra=b"Connection: upgrade\r\nUpgrade: websocket\r\n"))
        assert_error(c.read_response(), 400, "ERR_MALFORMED_REQUEST", close=True)
        assert c.closed()
    with Client(srv.port) as c:
        c.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        assert_error(c.read_response(), 400, "ERR_MALFORMED_REQUEST", close=True)
        assert c.closed()
    assert srv.events == []
    assert_serves(srv.port)


# -- pipelining ------------------------------------------------------------------------


def test_pipelined_slow_then_fast_answered_in_order(srv):
    with Client(srv.port) as c:
        c.send(get("/slow?n=1") + get("/fast?n=2"))
        assert_echo(c.read_response(), path="/slow", query="n=1")
        assert_echo(c.read_response(), path="/fast", query="n=2")
        assert srv.events == ["slow-start", "slow-done"]


def test_fifty_pipelined_requests_answered_in_order(serve):
    srv = serve(max_pipeline=4)
    with Client(srv.port) as c:
        c.send(get("/slow?i=0") + b"".join(get(f"/p?i={i}") for i in range(1, 50)))
        assert_echo(c.read_response(), path="/slow", query="i=0")
        for i in range(1, 50):
            assert_echo(c.read_response(), path="/p", query=f"i={i}")
        # the connection is still usable after the pause/resume cycle
        c.send(post("/tail", b"abc"))
        assert_echo(c.read_response(), method="POST", path="/tail", body=b"abc")


def test_fifty_pipelined_fast_requests_answered_in_order(serve):
    srv = serve(max_pipeline=4)
    with Client(srv.port) as c:
        c.send(b"".join(post(f"/p{i}", b"b" * i) for i in range(50)))
        for i in range(50):
            assert_echo(c.read_response(), method="POST", path=f"/p{i}", body=b"b" * i)


def test_many_pipelined_requests_behind_a_slow_one(srv):
    """A long queue behind an async handler drains without deep recursion."""
    n = 3000
    with Client(srv.port, timeout=5) as c:
        c.send(get("/slow") + b"".join(get(f"/q?i={i}") for i in range(n)))
        assert_echo(c.read_response(), path="/slow")
        for i in range(n):
            assert_echo(c.read_response(), path="/q", query=f"i={i}")


def test_request_held_back_by_paused_reading_is_not_timed_out(serve):
    """While the server stops reading (queue full) the client is not the slow one."""
    srv = serve(max_pipeline=2, header_timeout=0.1)
    with Client(srv.port) as c:
        align_to_tick(srv.server, 0.85)  # a tick lands while /slow runs
        c.send(get("/slow") + get("/a") + get("/b") + b"GET /c HTTP/1.1\r\nHo")
        c.send(b"st: t\r\n\r\n")
        assert_echo(c.read_response(), path="/slow")
        assert_echo(c.read_response(), path="/a")
        assert_echo(c.read_response(), path="/b")
        assert_echo(c.read_response(), path="/c")


def test_pipelined_slow_requests_in_order(srv):
    with Client(srv.port) as c:
        c.send(get("/slow?i=1") + get("/raise") + get("/slow?i=2") + get("/x?i=3"))
        assert_echo(c.read_response(), path="/slow", query="i=1")
        assert_error(c.read_response(), 400, "ERR_BAD_REQUEST", close=False, message="x")
        assert_echo(c.read_response(), path="/slow", query="i=2")
        assert_echo(c.read_response(), path="/x", query="i=3")


# -- chunked request bodies --------------------------------------------------------------

CHUNKED = chunked("/c", [b"hello", b" ", b"chunked world" * 3], trailer=b"X-Trailer: t\r\n")
CHUNKED_BODY = b"hello chunked world" + b"chunked world" * 2


def test_chunked_body_in_one_send(srv):
    with Client(srv.port) as c:
        c.send(CHUNKED)
        assert_echo(c.read_response(), method="POST", path="/c", body=CHUNKED_BODY)
        c.send(chunked("/c2", [b"a" * 1000, b"b" * 3000]))
        assert_echo(c.read_response(), method="POST", path="/c2", body=b"a" * 1000 + b"b" * 3000)


def test_chunked_with_extension(srv):
    with Client(srv.port) as c:
        c.send(b"POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\n\r\n")
        assert_echo(c.read_response(), method="POST", path="/e", body=b"hello")


def test_chunked_body_split_at_every_offset(srv):
    with Client(srv.port) as c:
        for cut in range(1, len(CHUNKED)):
            c.send(CHUNKED[:cut])
            time.sleep(0.001)
            c.send(CHUNKED[cut:])
            assert_echo(c.read_response(), method="POST", path="/c", body=CHUNKED_BODY)


def test_chunked_body_one_byte_at_a_time(srv):
    with Client(srv.port) as c:
        for b in CHUNKED:
            c.send(bytes([b]))
            time.sleep(0.0005)
        assert_echo(c.read_response(), method="POST", path="/c", body=CHUNKED_BODY)


def test_content_length_body_one_byte_at_a_time(srv):
    req = post("/cl", b"0123456789")
    with Client(srv.port) as c:
        for b in req:
            c.send(bytes([b]))
            time.sleep(0.0005)
        assert_echo(c.read_response(), method="POST", path="/cl", body=b"0123456789")


# -- Expect: 100-continue -----------------------------------------------------------------


def test_expect_100_continue(srv):
    body = b"payload!"
    with Client(srv.port) as c:
        c.send(b"POST /exp HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 8\r\n\r\n")
        assert c.read_exact(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
        c.send(body)
        assert_echo(c.read_response(), method="POST", path="/exp", body=body)
        # no stray 100 on the next request
        c.send(get("/next"))
        assert_echo(c.read_response(), path="/next")


def test_expect_100_continue_over_limit_gets_413_without_100(serve):
    srv = serve(max_body=100)
    with Client(srv.port) as c:
        c.send(b"POST /exp HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 101\r\n\r\n")
        resp = c.read_response()
        assert_error(resp, 413, "ERR_BODY_READ", close=True)
        assert resp.names() == ["Content-Type", "Content-Length", "Connection"]
        assert c.closed()
    assert_serves(srv.port)


def test_expect_100_continue_behind_a_slow_request_waits_for_it(srv):
    with Client(srv.port) as c:
        c.send(get("/slow") + b"POST /exp HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        assert_echo(c.read_response(), path="/slow")
        assert c.read_exact(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
        c.send(b"abc")
        assert_echo(c.read_response(), method="POST", path="/exp", body=b"abc")


def test_expect_100_continue_ignored_for_http10(srv):
    with Client(srv.port) as c:
        c.send(b"POST /exp HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc")
        assert_echo(c.read_response(), method="POST", path="/exp", body=b"abc", close=True)
        assert c.closed()


# -- HEAD --------------------------------------------------------------------------------


def test_head_has_get_content_length_and_no_body(srv):
    with Client(srv.port) as c:
        c.send(get("/h?x=1"))
        g = c.read_response()
        c.send(get("/h?x=1", method=b"HEAD"))
        line, headers = c.read_head()
        assert line == status(200)
        h = dict(headers)
        assert [k for k, _ in headers] == ["Content-Type", "X-Method", "Content-Length", "Date"]
        # the echo body names the method, so compare with a GET body of the same length
        assert int(h["Content-Length"]) == len(g.body) + 1  # "HEAD" is one byte longer than "GET"
        # no body bytes follow: the next response starts right away
        c.send(get("/after"))
        assert_echo(c.read_response(), path="/after")


def test_head_of_big_resource(srv):
    with Client(srv.port) as c:
        c.send(get("/big", method=b"HEAD"))
        resp = c.read_response(head=True)
        assert resp.status_line == status(200)
        assert resp.header("Content-Length") == str(len(BIG))
        c.send(get("/after"))
        assert_echo(c.read_response(), path="/after")


# -- body limit -------------------------------------------------------------------------


def test_content_length_one_over_limit_is_413(serve):
    srv = serve(max_body=1000)
    with Client(srv.port) as c:
        c.send(post("/b", b"a" * 1001))
        resp = c.read_response()
        assert_error(resp, 413, "ERR_BODY_READ", close=True, message="request body larger than the limit of 1000 bytes")
        assert resp.names() == ["Content-Type", "Content-Length", "Connection"]
        assert c.closed()
    assert_serves(srv.port)


def test_over_limit_upload_still_reads_the_413_then_eof(serve):
    """Answered from the Content-Length while the client is still uploading: the server
    half-closes and discards the rest (lingering close), so the client reads the whole
    413 and then EOF, never a reset from unread data arriving after a close."""
    srv = serve(max_body=1000)
    with Client(srv.port) as c:
        c.send(b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (4 * 1024 * 1024))
        for _ in range(64):
            c.send(b"u" * 65536)  # would raise ECONNRESET / EPIPE once the server had closed
        resp = c.read_response()
        assert_error(resp, 413, "ERR_BODY_READ", close=True, message="request body larger than the limit of 1000 bytes")
        assert resp.names() == ["Content-Type", "Content-Length", "Connection"]
        assert not c.buf
        assert c.sock.recv(65536) == b""  # EOF, not ConnectionResetError
    wait_no_connections(srv.server)  # the client closed its side: so does the server
    assert_serves(srv.port)


def test_lingering_connection_is_closed_when_the_client_never_stops(serve):
    """The half-closed connection does not linger for ever: about 2 s after the answer
    (a tick later at most) the server closes it even though the client keeps sending."""
    srv = serve(max_body=1000)
    with Client(srv.port) as c:
        started = time.monotonic()
        c.send(b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (100 * 1024 * 1024))
        assert_error(c.read_response(), 413, "ERR_BODY_READ", close=True)
        c.sock.settimeout(0.5)
        assert c.sock.recv(65536) == b""  # half-closed: the response, then EOF
        cut_off = None
        while time.monotonic() - started < 6:
            try:
                c.send(b"u" * 4096)
            except OSError:  # the server closed: the kernel reset the connection
                cut_off = time.monotonic() - started
                break
            if not srv.server.connections:
                cut_off = time.monotonic() - started
                break
            time.sleep(0.02)
        assert cut_off is not None, "the server kept the connection open"
        assert 1.5 < cut_off < 3.5, cut_off
    wait_no_connections(srv.server)
    assert_serves(srv.port)


def test_content_length_exactly_limit_is_200(serve):
    srv = serve(max_body=1000)
    with Client(srv.port) as c:
        c.send(post("/b", b"a" * 1000))
        assert_echo(c.read_response(), method="POST", path="/b", body=b"a" * 1000)


def test_chunked_body_growing_past_limit_is_413(serve):
    srv = serve(max_body=1000)
    with Client(srv.port) as c:
        c.send(b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):
            c.send(b"190\r\n" + b"z" * 400 + b"\r\n")  # 1200 bytes in all
            time.sleep(0.01)
        resp = c.read_response()
        assert_error(resp, 413, "ERR_BODY_READ", close=True)
        assert c.closed()
    assert_serves(srv.port)


def test_chunked_body_exactly_limit_is_200(serve):
    srv = serve(max_body=1000)
    with Client(srv.port) as c:
        c.send(chunked("/b", [b"z" * 400, b"z" * 600]))
        assert_echo(c.read_response(), method="POST", path="/b", body=b"z" * 1000)


# -- header limit --------------------------------------------------------------------------


def _sized_request(total: int) -> bytes:
    """A request whose counted header size (url + name + value + 4 per header) is ``total``."""
    url = b"/hdr"
    fixed = len(url) + (len(b"Host") + len(b"t") + 4) + (len(b"X-Pad") + 4)
    pad = total - fixed
    assert pad > 0
    return b"GET " + url + b" HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"p" * pad + b"\r\n\r\n"


def test_header_block_at_limit_is_served(serve):
    srv = serve(max_header=512)
    with Client(srv.port) as c:
        c.send(_sized_request(512))
        assert_echo(c.read_response(), path="/hdr")


def test_header_block_one_byte_over_limit_is_431(serve):
    srv = serve(max_header=512)
    with Client(srv.port) as c:
        c.send(_sized_request(513))
        resp = c.read_response()
        assert_error(resp, 431, "ERR_MALFORMED_REQUEST", close=True)
        assert c.closed()
    assert_serves(srv.port)


def test_many_small_headers_over_limit_is_431(serve):
    srv = serve(max_header=512)
    with Client(srv.port) as c:
        c.send(b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(100)) + b"\r\n")
        assert_error(c.read_response(), 431, "ERR_MALFORMED_REQUEST", close=True)
        assert c.closed()
    assert_serves(srv.port)


def test_huge_url_is_431(srv):
    with Client(srv.port) as c:
        c.send(b"GET /" + b"u" * 20000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        assert_error(c.read_response(), 431, "ERR_MALFORMED_REQUEST", close=True)
        assert c.closed()
    assert_serves(srv.port)


# -- malformed input ---------------------------------------------------------------------------

MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"\x00\x01\x02\xff\xfe\r\n\r\n",
    b"GET /a b c HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1 extra\r\n\r\n",
    b"GET / HTTX/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
]


@pytest.mark.parametrize("data", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_request_is_400_and_closed(srv, data):
    with Client(srv.port) as c:
        c.send(data)
        resp = c.read_response()
        assert_error(resp, 400, "ERR_MALFORMED_REQUEST", close=True)
        assert resp.names() == ["Content-Type", "Content-Length", "Connection"]
        assert c.closed()
    assert_serves(srv.port)


def test_malformed_after_a_good_request_answers_both(srv):
    with Client(srv.port) as c:
        c.send(get("/good") + b"BAD REQUEST LINE\r\n\r\n")
        assert_echo(c.read_response(), path="/good")
        assert_error(c.read_response(), 400, "ERR_MALFORMED_REQUEST", close=True)
        assert c.closed()
    assert_serves(srv.port)


# -- handler errors -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/raise", "/araise"])
def test_handler_dapr_error(srv, path):
    with Client(srv.port) as c:
        c.send(get(path))
        resp = c.read_response()
        assert resp.status_line == status(400)
        assert resp.names() == ["Content-Type", "Content-Length", "Date"]
        assert resp.body == b'{"errorCode":"ERR_BAD_REQUEST","message":"x"}'
        c.send(get("/next"))
        assert_echo(c.read_response(), path="/next")


@pytest.mark.parametrize("path", ["/boom", "/aboom"])
def test_handler_exception_is_500_and_server_keeps_serving(srv, path):
    with Client(srv.port) as c:
        c.send(get(path))
        resp = c.read_response()
        assert resp.status_line == status(500)
        assert resp.names() == ["Content-Type", "Content-Length", "Date"]
        assert resp.json() == {"errorCode": "ERROR", "message": "internal error"}
        c.send(get("/next"))
        assert_echo(c.read_response(), path="/next")
    assert_serves(srv.port)
    assert [r.getMessage() for r in srv.log_errors] == [f"handler failed for GET {path}"]
    assert srv.log_errors[0].exc_info[0] is RuntimeError
    srv.log_errors.clear()


# -- client disconnects ------------------------------------------------------------------------


def test_client_disconnects_mid_body(srv):
    c = Client(srv.port)
    c.send(b"POST /b HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + b"a" * 10)
    time.sleep(0.05)
    c.close()
    c = Client(srv.port)
    c.send(b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
    time.sleep(0.05)
    c.reset()
    wait_no_connections(srv.server)
    assert_serves(srv.port)


def test_client_reset_mid_slow_cancels_the_task(srv):
    c = Client(srv.port)
    c.send(get("/slow"))
    time.sleep(0.05)
    c.reset()
    time.sleep(0.35)
    assert srv.events == ["slow-start", "slow-cancelled"]
    wait_no_connections(srv.server)
    assert_serves(srv.port)


def test_client_half_close_mid_slow_still_gets_the_answer(srv):
    with Client(srv.port) as c:
        c.send(get("/slow") + get("/second"))
        c.sock.shutdown(socket.SHUT_WR)
        assert_echo(c.read_response(), path="/slow")
        assert_echo(c.read_response(), path="/second", close=True)
        assert c.closed()
    assert_serves(srv.port)


# -- slow clients and idle connections --------------------------------------------------------------


def test_slow_headers_get_408(serve):
    srv = serve(header_timeout=0.5)
    with Client(srv.port) as c:
        t0 = time.monotonic()
        c.send(b"GET / HTTP/1.1\r\nHo")
        resp = c.read_response()
        assert time.monotonic() - t0 < 2.0
        assert_error(resp, 408, "ERR_BODY_READ", close=True, message="timed out reading the request")
        assert c.closed()
    assert_serves(srv.port)


def test_slow_body_gets_408(serve):
    srv = serve(body_timeout=0.5)
    with Client(srv.port) as c:
        t0 = time.monotonic()
        c.send(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
        resp = c.read_response()
        assert time.monotonic() - t0 < 2.0
        assert_error(resp, 408, "ERR_BODY_READ", close=True)
        assert c.closed()
    assert_serves(srv.port)


def test_header_timeout_is_not_cut_short_by_the_cached_clock(serve):
    """Headers that arrive 0.3 s apart with a 0.6 s limit are fine, whatever the tick phase."""
    srv = serve(header_timeout=0.6)
    align_to_tick(srv.server, 0.8)
    with Client(srv.port) as c:
        c.send(b"GET /late HTTP/1.1\r\nHost: t\r\n")
        time.sleep(0.3)
        c.send(b"\r\n")
        assert_echo(c.read_response(), path="/late")


def test_idle_keep_alive_connection_is_closed(serve):
    srv = serve(keepalive_timeout=0.5)
    with Client(srv.port) as c:
        c.send(get("/"))
        assert_echo(c.read_response())
        t0 = time.monotonic()
        assert c.closed(within=3.0)
        assert time.monotonic() - t0 < 2.0
    # a connection that never sends anything is closed too
    with Client(srv.port) as c:
        assert c.closed(within=3.0)
    assert_serves(srv.port)


def test_keep_alive_timeout_is_not_cut_short_by_the_cached_clock(serve):
    srv = serve(keepalive_timeout=0.6)
    with Client(srv.port) as c:
        align_to_tick(srv.server, 0.8)
        c.send(get("/"))
        assert_echo(c.read_response())
        time.sleep(0.3)
        c.send(get("/again"))
        assert_echo(c.read_response(), path="/again")


# -- write flow control ------------------------------------------------------------------------------


def test_big_response_to_slow_reader_with_pipelined_requests(srv):
    with Client(srv.port, timeout=10, rcvbuf=16384) as c:
        c.send(get("/big") + get("/p?i=1") + get("/slow?i=2") + get("/p?i=3"))
        time.sleep(0.2)
        # the server's buffer is full: it was told to stop writing and holds the queue
        (conn,) = list(srv.server.connections)
        assert conn._writing_paused
        line, headers = c.read_head()
        assert line == status(200)
        assert [k for k, _ in headers] == ["Content-Type", "Content-Length", "Date"]
        assert dict(headers)["Content-Length"] == str(len(BIG))
        remaining = len(BIG)
        got = len(c.buf)
        del c.buf[:]
        slow_reads = 0
        while got < remaining:
            chunk = c.sock.recv(min(262144, remaining - got))
            assert chunk
            assert chunk.count(b"x") == len(chunk)
            got += len(chunk)
            if slow_reads < 20:
                slow_reads += 1
                time.sleep(0.005)
        assert got == remaining
        assert_echo(c.read_response(), path="/p", query="i=1")
        assert_echo(c.read_response(), path="/slow", query="i=2")
        assert_echo(c.read_response(), path="/p", query="i=3")


# -- graceful drain -----------------------------------------------------------------------------------


def test_graceful_drain(srv):
    busy = Client(srv.port)
    idle = Client(srv.port)
    idle.send(get("/"))
    assert_echo(idle.read_response())
    busy.send(get("/slow"))
    time.sleep(0.05)
    t0 = time.monotonic()
    fut = asyncio.run_coroutine_threadsafe(srv.server.shutdown(grace=2), srv.loop)
    # the idle keep-alive connection is closed at once
    assert idle.closed(within=1.0)
    assert time.monotonic() - t0 < 0.15
    # the in-flight request still gets its answer, with Connection: close
    assert_echo(busy.read_response(), path="/slow", close=True)
    assert busy.closed()
    fut.result(3)
    assert time.monotonic() - t0 < 1.0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
    busy.close()
    idle.close()


def test_drain_gives_up_after_grace(srv):
    stuck = Client(srv.port)
    stuck.send(b"GET / HTTP/1.1\r\nHo")  # never finishes
    time.sleep(0.05)
    t0 = time.monotonic()
    srv.call(srv.server.shutdown(grace=0.3))
    assert 0.25 < time.monotonic() - t0 < 1.0
    assert stuck.closed(within=1.0)
    stuck.close()


# -- fuzzing ---------------------------------------------------------------------------------------------


def read_all(sock: socket.socket, within: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes; ``(data, closed)``."""
    deadline = time.monotonic() + within
    out = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return bytes(out), False
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return bytes(out), False
        except ConnectionResetError:
            return bytes(out), True
        if not chunk:
            return bytes(out), True
        out += chunk


def parse_responses(data: bytes) -> list[tuple[int, dict]]:
    """Split a byte stream into well-formed HTTP/1.1 responses; raise if it is not one."""
    out = []
    pos = 0
    while pos < len(data):
        end = data.index(b"\r\n\r\n", pos)
        head = data[pos:end].decode("latin-1").split("\r\n")
        line = head[0]
        proto, code, reason = line.split(" ", 2)
        assert proto == "HTTP/1.1"
        assert reason == HTTPStatus(int(code)).phrase
        headers = {}
        for h in head[1:]:
            k, sep, v = h.partition(": ")
            assert sep and k
            headers[k.lower()] = v
        pos = end + 4
        if int(code) >= 200 and headers.get("x-method") != "HEAD":
            length = int(headers["content-length"])
            assert pos + length <= len(data), "truncated body"
            body = data[pos : pos + length]
            if headers.get("content-type") == "application/json":
                orjson.loads(body)
            pos += length
        out.append((int(code), headers))
    return out


@pytest.fixture(scope="module")
def fuzz_server(protocol):
    s = ServerThread(
        Limits(max_body=2000, max_header=1000, header_timeout=0.5, body_timeout=0.5, max_pipeline=4), protocol
    )
    yield s
    s.stop()
    assert s.loop_errors == []


def _fuzz_once(srv: ServerThread, data: bytes):
    with Client(srv.port) as c:
        try:
            c.send(data)
            c.sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may already have answered and closed
        got, closed = read_all(c.sock, within=2.0)
        assert closed, f"connection neither answered nor closed: sent {data[:200]!r}, got {got[:200]!r}"
        parse_responses(got)
    assert_serves(srv.port)
    errors = [r for r in srv.log_errors if not r.getMessage().startswith("handler failed")]
    assert errors == []
    assert srv.loop_errors == []


VALID = [
    get("/a?b=c"),
    post("/p", b'{"k":"v"}'),
    chunked("/c", [b"hello", b"world"]),
    b"POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    get("/slow") + get("/x"),
    get("/raise") + get("/boom") + get("/h", method=b"HEAD"),
]


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=300))
def test_fuzz_random_bytes(fuzz_server, data):
    _fuzz_once(fuzz_server, data)


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[i : i + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[i:]
        elif op == "dup":
            data[i:i] = data[i : i + draw(st.integers(1, 20))]
    return bytes(data) or b"\r\n"


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mutated())
def test_fuzz_mutated_requests(fuzz_server, data):
    _fuzz_once(fuzz_server, data)
    fuzz_server.log_errors.clear()
