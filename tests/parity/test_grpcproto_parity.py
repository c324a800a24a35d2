"""The compiled GrpcProtocol and its pure twin: same bytes out, same closes, same handler calls.

Both protocols get the same random client traffic (calls to unary, aborting, awaiting,
server- and client-streaming methods and to unknown ones; well-formed, compressed, oversized,
truncated and doubled messages; extra DATA, resets and garbage), on recording fake sockets
with recording handlers, and must leave identical records after every step.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

hpack = pytest.importorskip("hpack", reason="the grpc extra (pip install 'pillion[grpc]': hpack) is not installed")

from pillion._testing import import_twin  # noqa: E402 - after the importorskip
from pillion.grpcapi import h2  # noqa: E402
from pillion.grpcapi.status import StatusCode  # noqa: E402

MAX_MESSAGE = 32
PATHS = [b"/s/Echo", b"/s/Refuse", b"/s/Later", b"/s/Ticks", b"/s/Total", b"/s/Broken", b"/s/Nope"]


@pytest.fixture(scope="module")
def twins():
    return import_twin("grpcproto", "pure"), import_twin("grpcproto", "compiled")


class Socket:
    def __init__(self, log: list):
        self.log = log
        self.closed = False

    def write(self, data: bytes) -> None:
        self.log.append(("write", bytes(data)))

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self.log.append(("close",))
        self.closed = True


class Message:
    def __init__(self, data: bytes):
        self.data = data

    def SerializeToString(self) -> bytes:  # noqa: N802 - protobuf's name
        return self.data


def rpcs(twin, log: list) -> dict:
    def echo(request, context):
        log.append(("echo", request, context.invocation_metadata()))
        return Message(b"re:" + request)

    def refuse(request, context):
        log.append(("refuse", request))
        context.fail(StatusCode.PERMISSION_DENIED, "no: 100%", (("why-bin", request),))

    async def later(request, context):
        await asyncio.sleep(0)
        log.append(("later", request))
        return Message(request * 40 if request[:1] == b"L" else request)  # "L..." answers over the limit

    async def ticks(request, context):
        for n in range(2):
            yield Message(b"%s-%d" % (request, n))

    async def total(requests, context):
        seen = [message async for message in requests]
        log.append(("total", seen))
        return Message(b"+".join(seen))

    async def broken(request, context):
        raise ValueError("a bug")  # what server.py's wrappers never let through: the transport's last guard

    return {path: twin.Rpc(lambda data: data, handler, path == b"/s/Total", path == b"/s/Ticks")
            for path, handler in zip(PATHS, (echo, refuse, later, ticks, total, broken))}


messages = st.lists(st.tuples(st.sampled_from([0, 0, 0, 1]), st.binary(max_size=40)), max_size=3)
any_call = st.tuples(
    st.just("call"), st.integers(0, 7), st.sampled_from(PATHS),
    st.sampled_from([b"application/grpc", b"application/grpc+proto", b"text/plain"]),
    st.sampled_from([None, b"1S", b"20m", b"bogus"]), messages, st.booleans(),
)
good_call = st.tuples(  # one whole message: what reaches a handler
    st.just("call"), st.integers(0, 7), st.sampled_from(PATHS), st.just(b"application/grpc"), st.just(None),
    st.binary(max_size=12).map(lambda data: [(0, data)]), st.just(True),
)
calls = st.one_of(good_call, any_call)
more = st.tuples(st.just("data"), st.integers(0, 7), messages, st.booleans())
resets = st.tuples(st.just("reset"), st.integers(0, 7))
garbage = st.tuples(st.just("raw"), st.binary(min_size=1, max_size=20))
# Garbage ends the connection (a GOAWAY, then a close), so it comes last when it comes at all.
steps = st.tuples(st.lists(st.one_of(calls, calls, calls, more, resets), min_size=1, max_size=12),
                  st.lists(garbage, max_size=1)).map(lambda parts: parts[0] + parts[1])


def body(parts) -> bytes:
    return b"".join(bytes([flag]) + len(data).to_bytes(4, "big") + data for flag, data in parts)


class Client:
    def __init__(self, twin):
        self.log: list = []
        self.socket = Socket(self.log)
        self.protocol = twin.GrpcProtocol(rpcs(twin, self.log), MAX_MESSAGE, set())
        self.protocol.connection_made(self.socket)
        self.encoder = hpack.Encoder()
        self.protocol.data_received(h2.PREFACE + h2.frame(h2.SETTINGS, 0, 0))

    def step(self, step) -> None:
        if self.socket.closed:
            return
        kind = step[0]
        if kind == "call":
            _, n, path, content_type, timeout, parts, end = step
            fields = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path), (b":authority", b"x"),
                      (b"content-type", content_type), (b"te", b"trailers"), (b"x-n", b"%d" % n)]
            if timeout:
                fields.append((b"grpc-timeout", timeout))
            stream = 2 * n + 1 + 16 * len(self.log)  # always a new, higher stream
            data = h2.frame(h2.HEADERS, h2.END_HEADERS, stream, self.encoder.encode(fields))
            self.protocol.data_received(data + h2.frame(h2.DATA, h2.END_STREAM if end else 0, stream, body(parts)))
            self.last = stream
        elif kind == "data":
            _, n, parts, end = step
            stream = getattr(self, "last", None)
            if stream is None:
                return
            self.protocol.data_received(h2.frame(h2.DATA, h2.END_STREAM if end else 0, stream, body(parts)))
        elif kind == "reset":
            stream = getattr(self, "last", None)
            if stream is None:
                return
            self.protocol.data_received(h2.frame(h2.RST_STREAM, 0, stream, h2.CANCEL.to_bytes(4, "big")))
        else:
            self.protocol.data_received(step[1])
        self.log.append(("calls", sorted(self.protocol.calls)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps)
def test_same_traffic_same_records(twins, steps):
    async def main():
        clients = [Client(twin) for twin in twins]
        for step in steps:
            for client in clients:
                client.step(step)
            for _ in range(6):  # let tasks (awaited answers, streams) run their course
                await asyncio.sleep(0)
            assert clients[0].log == clients[1].log
        for client in clients:
            client.protocol.close()
            client.protocol.connection_lost(None)
        await asyncio.sleep(0)
        assert clients[0].log == clients[1].log

    asyncio.run(main())
