"""The gRPC transport over a fake socket: calls, statuses, deadlines, resets, limits, streams.

Every test runs against both twins of the per-connection protocol (``pillion._pure.grpcproto``
and ``pillion._ext.grpcproto``).
"""

from __future__ import annotations

import asyncio

import pytest

hpack = pytest.importorskip("hpack", reason="the grpc extra (pip install 'pillion[grpc]': hpack) is not installed")

from pillion._testing import import_twin  # noqa: E402
from pillion.grpcapi import h2, transport  # noqa: E402 - after the importorskip
from pillion.grpcapi.status import StatusCode  # noqa: E402


@pytest.fixture(params=["pure", "compiled"])
def twin(request):
    return import_twin("grpcproto", request.param)


class Socket:
    """The asyncio transport: what the server wrote, and whether it closed."""

    def __init__(self):
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


class Message:
    """A stand-in protobuf message: bytes in, bytes out."""

    def __init__(self, data: bytes):
        self.data = data

    def SerializeToString(self) -> bytes:  # noqa: N802 - protobuf's name
        return self.data


class Client:
    """The client side: builds requests and reads the server's frames back per stream."""

    def __init__(self, twin, rpcs: dict, max_message: int = 1024):
        self.socket = Socket()
        self.protocol = twin.GrpcProtocol(rpcs, max_message, set())
        self.protocol.connection_made(self.socket)
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.protocol.data_received(h2.PREFACE + h2.frame(h2.SETTINGS, 0, 0))
        self.read = 0

    def call(self, stream: int, path: bytes, *messages: bytes, end: bool = True, headers=(), raw: bytes | None = None):
        fields = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path), (b":authority", b"x"),
                  (b"content-type", b"application/grpc"), (b"te", b"trailers"), *headers]
        body = raw if raw is not None else b"".join(b"\x00" + len(m).to_bytes(4, "big") + m for m in messages)
        data = h2.frame(h2.HEADERS, h2.END_HEADERS, stream, self.encoder.encode(fields))
        data += h2.frame(h2.DATA, h2.END_STREAM if end else 0, stream, body)
        self.protocol.data_received(data)

    def frames(self) -> list[tuple[int, int, int, bytes]]:
        out, data, position = [], bytes(self.socket.data), self.read
        while len(data) - position >= 9:
            length = int.from_bytes(data[position:position + 3], "big")
            out.append((data[position + 3], data[position + 4], int.from_bytes(data[position + 5:position + 9], "big"),
                        data[position + 9:position + 9 + length]))
            position += 9 + length
        self.read = position
        return out

    def response(self, stream: int) -> tuple[dict, list[bytes], dict]:
        """(headers, messages, trailers) sent on ``stream`` so far; trailers-only answers fill both dicts."""
        blocks, data = [], b""
        for kind, _, sid, payload in self.frames():
            if sid != stream:
                continue
            if kind == h2.HEADERS:
                blocks.append(dict(self.decoder.decode(payload, raw=True)))
            elif kind == h2.DATA:
                data += payload
        messages = []
        while len(data) >= 5:
            length = int.from_bytes(data[1:5], "big")
            messages.append(data[5:5 + length])
            data = data[5 + length:]
        headers = blocks[0] if blocks else {}
        return headers, messages, blocks[-1] if blocks else {}


def status_of(trailers: dict) -> tuple[int, str]:
    from urllib.parse import unquote

    return int(trailers[b"grpc-status"]), unquote(trailers.get(b"grpc-message", b"").decode())


def rpc(twin, handler, client_streaming=False, server_streaming=False):
    return twin.Rpc(lambda data: data, handler, client_streaming, server_streaming)


def run(coro):
    return asyncio.run(coro)


def test_a_unary_call_answered_at_once_needs_no_task(twin):
    def echo(request, context):
        return Message(b"re:" + request)

    async def main():
        client = Client(twin, {b"/s/Echo": rpc(twin, echo)})
        client.call(1, b"/s/Echo", b"hi")
        assert not client.protocol.calls  # answered within data_received
        headers, messages, trailers = client.response(1)
        assert headers[b":status"] == b"200" and headers[b"content-type"] == b"application/grpc"
        assert messages == [b"re:hi"] and status_of(trailers) == (0, "")

    run(main())


def test_an_awaited_answer_and_an_abort_with_details_and_metadata(twin):
    async def slow(request, context):
        await asyncio.sleep(0.01)
        await context.send_initial_metadata((("x-first", "1"),))
        return Message(request * 2)

    async def refuse(request, context):
        await context.abort(StatusCode.PERMISSION_DENIED, "no: 100% sure", (("detail-bin", b"\x00\x01"),))

    async def main():
        client = Client(twin, {b"/s/Slow": rpc(twin, slow), b"/s/Refuse": rpc(twin, refuse)})
        client.call(1, b"/s/Slow", b"ab")
        client.call(3, b"/s/Refuse", b"x")
        await asyncio.sleep(0.05)
        frames = client.frames()
        client.read = 0
        headers, messages, trailers = client.response(1)
        assert headers[b"x-first"] == b"1" and messages == [b"abab"] and status_of(trailers) == (0, "")
        client.read = 0
        _, messages, trailers = client.response(3)
        assert messages == [] and status_of(trailers) == (7, "no: 100% sure")
        assert trailers[b"detail-bin"] == b"AAE"  # base64 without padding, as gRPC sends binary metadata
        assert frames

    run(main())


def test_unknown_methods_other_content_types_compression_and_big_messages(twin):
    async def main():
        client = Client(twin, {b"/s/Echo": rpc(twin, lambda request, context: Message(request))}, max_message=16)
        client.call(1, b"/s/Nope", b"x")
        assert status_of(client.response(1)[2]) == (12, "unknown method Nope for service s")
        client.call(3, b"/s/Echo", raw=b"\x01\x00\x00\x00\x01z")
        assert status_of(client.response(3)[2])[0] == StatusCode.UNIMPLEMENTED.value[0]
        client.call(5, b"/s/Echo", b"y" * 17)
        assert status_of(client.response(5)[2]) == (8, "grpc: received message larger than max (17 vs. 16)")
        client.call(7, b"/s/Echo", b"a", b"b")
        assert status_of(client.response(7)[2])[0] == StatusCode.INTERNAL.value[0]  # two messages on a unary call
        fields = [(b":method", b"POST"), (b":path", b"/s/Echo"), (b"content-type", b"text/plain")]
        client.protocol.data_received(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, 9,
                                               client.encoder.encode(fields)))
        assert client.response(9)[0] == {b":status": b"415"}

    run(main())


def test_a_deadline_ends_the_call_and_a_reset_cancels_it(twin):
    cancelled = []

    async def forever(request, context):
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(request)
            raise

    async def main():
        client = Client(twin, {b"/s/Wait": rpc(twin, forever)})
        client.call(1, b"/s/Wait", b"timed", headers=[(b"grpc-timeout", b"50m")])
        client.call(3, b"/s/Wait", b"reset")
        await asyncio.sleep(0.01)
        client.protocol.data_received(h2.frame(h2.RST_STREAM, 0, 3, h2.CANCEL.to_bytes(4, "big")))
        await asyncio.sleep(0.15)
        assert status_of(client.response(1)[2]) == (4, "context deadline exceeded")
        assert sorted(cancelled) == [b"reset", b"timed"] and not client.protocol.calls

    run(main())


def test_server_and_client_streams(twin):
    async def ticks(request, context):
        for n in range(3):
            yield Message(b"%s-%d" % (request, n))

    async def total(requests, context):
        seen = [message async for message in requests]
        return Message(b"+".join(seen))

    async def main():
        client = Client(twin, {b"/s/Ticks": rpc(twin, ticks, server_streaming=True),
                         b"/s/Total": rpc(twin, total, client_streaming=True)})
        client.call(1, b"/s/Ticks", b"t")
        client.call(3, b"/s/Total", b"a", b"b", end=False)
        client.protocol.data_received(h2.frame(h2.DATA, h2.END_STREAM, 3, b"\x00\x00\x00\x00\x01c"))
        await asyncio.sleep(0.05)
        frames = bytes(client.socket.data)
        client.read = 0
        assert client.response(1)[1] == [b"t-0", b"t-1", b"t-2"]
        client.read = 0
        _, messages, trailers = client.response(3)
        assert messages == [b"a+b+c"] and status_of(trailers) == (0, "") and frames

    run(main())


def test_shutdown_sends_goaway_lets_calls_finish_then_ends_the_rest(twin):
    async def quick(request, context):
        await asyncio.sleep(0.02)
        return Message(b"done")

    async def forever(request, context):
        await asyncio.sleep(30)

    async def main():
        server = transport.GrpcServer({b"/s/Quick": rpc(twin, quick), b"/s/Wait": rpc(twin, forever)}, 1024)
        client = Client(twin, server.rpcs)
        server.connections.add(client.protocol)
        client.call(1, b"/s/Quick", b"q")
        client.call(3, b"/s/Wait", b"w")
        await server.shutdown(0.2)
        kinds = [kind for kind, _, _, _ in client.frames()]
        assert h2.GOAWAY in kinds
        client.read = 0
        assert client.response(1)[1] == [b"done"]
        client.read = 0
        assert status_of(client.response(3)[2])[0] == StatusCode.UNAVAILABLE.value[0]
        assert client.socket.closed

    run(main())


def test_calls_leave_no_reference_cycles(twin):
    """A cycle per call (call -> context -> call, say) would be garbage only the collector frees."""
    import gc

    def echo(request, context):
        return Message(request)

    async def later(request, context):
        await context.send_initial_metadata((("x-a", "1"),))
        await asyncio.sleep(0)
        return Message(request)

    async def main():
        client = Client(twin, {b"/s/Echo": rpc(twin, echo), b"/s/Later": rpc(twin, later)})
        for stream in range(1, 41, 4):
            client.call(stream, b"/s/Echo", b"now")
            client.call(stream + 2, b"/s/Later", b"soon")
        await asyncio.sleep(0.02)
        assert not client.protocol.calls

    gc.collect()
    gc.disable()
    try:
        run(main())
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        calls = [o for o in gc.garbage if type(o).__name__ in ("_Call", "Context")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not calls
