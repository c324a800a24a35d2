"""The compiled HttpProtocol and its pure twin: same bytes out, same closes, same handler calls.

Both protocols get the same random sequence of events (request bytes split at random
offsets, pauses of the writer, half-closes, clock ticks) on recording fake transports,
with the same handlers, and must leave identical records.
"""

from __future__ import annotations

import asyncio
import inspect
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pillion.errors import DaprError
from pillion._testing import import_twin
from pillion.server.http import Response
from pillion.server.protocol import HttpServer, Limits

DATE = b"Date: Thu, 01 Jan 2026 00:00:00 GMT\r\n"
LIMITS = dict(max_body=64, max_header=220, header_timeout=5.0, body_timeout=5.0, keepalive_timeout=5.0, max_pipeline=4)


@pytest.fixture(scope="module")
def twins():
    return import_twin("httpproto", "pure"), import_twin("httpproto", "compiled")


# -- the recording side ------------------------------------------------------------


class Transport:
    def __init__(self, log: list, eof: bool = True):
        self.log = log
        self.closed = False
        self.eof = eof  # whether the transport can half-close
        self.eof_written = False

    def write(self, data: bytes):
        # asyncio's transports refuse a write after write_eof(): so does this one.
        assert not self.eof_written, "write() after write_eof()"
        self.log.append(("write", bytes(data)))

    def can_write_eof(self) -> bool:
        return self.eof

    def write_eof(self):
        assert self.eof, "write_eof() on a transport that cannot"
        self.log.append(("write_eof",))
        self.eof_written = True

    def close(self):
        self.log.append(("close",))
        self.closed = True

    def abort(self):
        self.log.append(("abort",))
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self):
        self.log.append(("pause_reading",))

    def resume_reading(self):
        self.log.append(("resume_reading",))

    def get_extra_info(self, name, default=None):
        return ("192.0.2.7", 40000) if name == "peername" else default


def make_handler(log: list):
    def echo(req) -> Response:
        return Response(
            200,
            b"%s %s ? %s | %d" % (req.method.encode(), req.path.encode(), req.query.encode(), len(req.body)),
            [(b"X-Keep", b"1" if req.keep_alive else b"0")],
        )

    async def slow(req):
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return echo(req)

    async def araise():
        await asyncio.sleep(0)
        raise DaprError("ERR_BAD_REQUEST", "x")

    async def aboom():
        await asyncio.sleep(0)
        raise RuntimeError("boom")

    def handle(req):
        log.append(("handler", req.method, req.path, req.query, list(req.headers), req.body, req.keep_alive, req.peer))
        path = req.path
        if path == "/slow":
            return slow(req)
        if path == "/raise":
            raise DaprError("ERR_BAD_REQUEST", "x")
        if path == "/araise":
            return araise()
        if path == "/boom":
            raise RuntimeError("boom")
        if path == "/aboom":
            return aboom()
        if path == "/empty":
            return Response(204)
        if path == "/ok":
            return Response(200)
        if path == "/head-len":
            return Response(200, b"abc", [(b"content-length", b"3")])
        return echo(req)

    return handle


async def _drive(module, events, eof: bool = True) -> list:
    log: list = []
    server = HttpServer(make_handler(log), Limits(**LIMITS), protocol=module.HttpProtocol)
    server.date_header = DATE  # the ticker is not running (no loop at construction): a fixed clock
    proto = module.HttpProtocol(server)
    transport = Transport(log, eof)
    proto.connection_made(transport)
    for event in events:
        if transport.closed:
            break
        kind = event[0]
        if kind == "data":
            proto.data_received(event[1])
        elif kind == "pause_writing":
            log.append(("event", kind))
            proto.pause_writing()
        elif kind == "resume_writing":
            log.append(("event", kind))
            proto.resume_writing()
        elif kind == "eof":
            keep_open = proto.eof_received()
            log.append(("eof", keep_open))
            if not keep_open:
                transport.close()  # what asyncio does when eof_received() returns a false value
        elif kind == "run":
            for _ in range(event[1]):
                await asyncio.sleep(0)
        log.append(("state", proto.is_idle(), bool(proto.read_deadline), proto in server.connections))
    for _ in range(8):
        await asyncio.sleep(0)
    log.append(("final", proto.is_idle(), bool(proto.read_deadline)))
    if not transport.closed:
        proto.check_time(server.now + 1e6)  # past every deadline: a 408, or the idle close
    if not transport.closed:
        proto.shutdown()
    log.append(("after", transport.closed, proto.is_idle()))
    proto.connection_lost(None)
    for _ in range(4):
        await asyncio.sleep(0)
    log.append(("lost", proto.transport is None, proto in server.connections))
    return log


def run(module, events, eof: bool = True) -> list:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_drive(module, events, eof))
    finally:
        loop.close()


# -- the inputs ----------------------------------------------------------------------

PATHS = ["/", "/a", "/slow", "/raise", "/araise", "/boom", "/aboom", "/empty", "/ok", "/head-len", "/a%20b"]
ODD_PATHS = ["/é", "/a b", "*"]
METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"]
ODD_METHODS = [b"CONNECT", b"BREW", b"get"]
HEADERS = [
    b"Host: x", b"Connection: close", b"Connection: keep-alive", b"Expect: 100-continue",
    b"Upgrade: websocket", b"Connection: Upgrade", b"X-A: " + b"a" * 80, b"Content-Type: application/json",
    b"expect: 100-Continue", b"X-Empty:",
]  # fmt: skip


@st.composite
def request_bytes(draw) -> bytes:
    odd = draw(st.integers(0, 15))  # mostly well-formed, so that pipelines get far
    method = draw(st.sampled_from(ODD_METHODS if odd == 0 else METHODS))
    path = draw(st.sampled_from(ODD_PATHS if odd == 1 else PATHS)).encode()
    if draw(st.booleans()):
        path += b"?" + draw(st.sampled_from([b"", b"a=1", b"metadata.k=v&x", b"q#frag", b"%zz"]))
    elif draw(st.integers(0, 5)) == 0:
        path += b"#frag"
    version = b"1.0" if odd == 3 else b"1.1"
    headers = draw(st.lists(st.sampled_from(HEADERS), max_size=3)) if draw(st.integers(0, 2)) == 0 else [b"Host: x"]
    body = draw(st.binary(max_size=90))
    framing = draw(st.sampled_from(["length", "length", "chunked", "none", "none", "none", "bad-length" if odd == 2 else "none"]))
    if framing == "length":
        headers.append(b"Content-Length: %d" % len(body))
    elif framing == "chunked":
        headers.append(b"Transfer-Encoding: chunked")
        pieces, pos = [], 0
        while pos < len(body):
            size = draw(st.integers(1, 40))
            pieces.append(b"%x\r\n%s\r\n" % (len(body[pos : pos + size]), body[pos : pos + size]))
            pos += size
        body = b"".join(pieces) + b"0\r\n\r\n"
    elif framing == "bad-length":
        headers.append(draw(st.sampled_from([b"Content-Length: x", b"Content-Length: 99999", b"Content-Length: 1_0"])))
    else:
        body = b""
    return method + b" " + path + b" HTTP/" + version + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


streams = st.lists(
    st.one_of(*[request_bytes()] * 30, st.binary(min_size=1, max_size=30)), min_size=1, max_size=8
).map(b"".join)


@st.composite
def events(draw) -> list:
    data = draw(streams)
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=6))))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)]) if data[a:b]]
    out: list = [("pause_writing",)] if draw(st.integers(0, 3)) == 0 else []
    for chunk in chunks:
        out.append(("data", chunk))
        extra = draw(st.sampled_from([None, None, None, "pause_writing", "resume_writing", "run", "run"]))
        if extra == "run":
            out.append(("run", draw(st.integers(1, 4))))
        elif extra:
            out.append((extra,))
    if draw(st.booleans()):
        out.append(("eof",))
    if draw(st.booleans()):
        out.append(("resume_writing",))
    return out


# -- the tests ---------------------------------------------------------------------------


def test_same_public_names(twins):
    pure, compiled = twins
    assert pure.__all__ == compiled.__all__ == ["HttpProtocol", "Request", "error_bytes"]
    for cls in ("HttpProtocol", "Request"):
        names = {n for n in dir(getattr(pure, cls)) if not n.startswith("_") and n not in dir(object)}
        names -= {"__slots__"}
        missing = {n for n in names if not hasattr(getattr(compiled, cls), n)}
        # asyncio.Protocol's own hooks the pure class inherits but never overrides.
        assert missing <= {"get_buffer", "buffer_updated"} or missing == set(), missing


def test_request_twins_agree(twins):
    pure, compiled = twins
    args = ("GET", "/p", "metadata.a=1&metadata.a=2&b=&metadata.c=3", [(b"Host", b"x"), (b"X-Y", b"z")], b'{"a": 1}', True)
    for module in twins:
        req = module.Request(*args)
        assert req.params == {} and req.endpoint is None and req.peer == ""
    p, c = pure.Request(*args), compiled.Request(*args)
    for attr in ("method", "path", "query", "headers", "body", "keep_alive"):
        assert getattr(p, attr) == getattr(c, attr)
    assert p.header(b"x-y") == c.header(b"x-y") == b"z"
    assert p.header(b"nope") is c.header(b"nope") is None
    assert p.query_params() == c.query_params()
    assert p.metadata() == c.metadata() == {"a": "1", "c": "3"}
    assert p.json() == c.json() == {"a": 1}
    c.params = {"k": "v"}
    c.endpoint = "e"
    assert (c.params, c.endpoint) == ({"k": "v"}, "e")
    for module in twins:
        with pytest.raises(DaprError) as info:
            module.Request("POST", "/", "", [], b"{nope", True).json()
        assert info.value.code == "ERR_MALFORMED_REQUEST"
    with pytest.raises(AttributeError):
        c.other = 1


def test_error_bytes_agree(twins):
    pure, compiled = twins
    for close in (True, False):
        assert pure.error_bytes(413, "ERR_BODY_READ", "too big", close) == compiled.error_bytes(
            413, "ERR_BODY_READ", "too big", close
        )
    assert list(inspect.signature(pure.error_bytes).parameters) == ["status", "code", "message", "close"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(script=events(), eof=st.booleans())
def test_same_bytes_closes_and_handler_calls(twins, script, eof):
    pure, compiled = twins
    logging.getLogger("pillion").disabled = True  # handler failures log tracebacks by design
    try:
        expected = run(pure, script, eof)
        got = run(compiled, script, eof)
    finally:
        logging.getLogger("pillion").disabled = False
    assert got == expected


@pytest.mark.parametrize(
    "script",
    [
        [("data", b"GET /slow HTTP/1.1\r\n\r\n" + b"GET /a HTTP/1.1\r\n\r\n" * 6), ("run", 3)],
        [("pause_writing",), ("data", b"GET /a HTTP/1.1\r\n\r\n" * 5), ("resume_writing",)],
        [("data", b"POST /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"), ("data", b"abc")],
        [("data", b"GET /slow HTTP/1.1\r\n\r\nPOST /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"),
         ("run", 4), ("data", b"x")],
        [("data", b"GET /a HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\nGET /b HTTP/1.1\r\n\r\n")],
        [("data", b"POST /a HTTP/1.1\r\nContent-Length: 65\r\n\r\n")],
        [("data", b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n" + b"x" * 65 + b"\r\n0\r\n\r\n")],
        [("data", b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n\r\n")],
        [("data", b"GET /slow HTTP/1.1\r\n\r\n"), ("eof",), ("run", 4)],
        [("data", b"HEAD /head-len HTTP/1.1\r\n\r\nHEAD /a HTTP/1.1\r\n\r\nGET /empty HTTP/1.0\r\n\r\n")],
        [("data", b"GET /a HTT")],
        [("data", b"\x00\x01garbage\r\n\r\n")],
        # an error answered, then lingering: what follows is discarded, EOF closes
        [("data", b"POST /a HTTP/1.1\r\nContent-Length: 65\r\n\r\n"), ("data", b"x" * 40), ("data", b"GET /a HTTP/1.1\r\n\r\n"),
         ("eof",)],
        [("pause_writing",), ("data", b"POST /a HTTP/1.1\r\nContent-Length: 65\r\n\r\nxx"), ("resume_writing",), ("data", b"y")],
        [("data", b"GET /a HTTP/1.1\r\n\r\n" * 6 + b"\x00bad\r\n\r\n"), ("run", 2), ("data", b"more")],
        [("data", b"GET /slow HTTP/1.1\r\n\r\n\x00bad\r\n\r\n"), ("run", 4)],
    ],  # fmt: skip
)
@pytest.mark.parametrize("eof", [True, False])
def test_known_scripts(twins, script, eof):
    pure, compiled = twins
    logging.getLogger("pillion").disabled = True
    try:
        assert run(compiled, script, eof) == run(pure, script, eof)
    finally:
        logging.getLogger("pillion").disabled = False


def test_requests_carry_the_client_address(twins):
    for module in twins:
        handled = [e for e in run(module, [("data", b"GET /a HTTP/1.1\r\n\r\n")]) if e[0] == "handler"]
        assert [e[-1] for e in handled] == ["192.0.2.7"]
