"""gRPC over the sans-IO HTTP/2 of ``h2``, per connection: the pure twin of ``pillion._ext.grpcproto``.

Each HTTP/2 stream is one call: the request's messages (length-prefixed, uncompressed) go
to the RPC's handler, its answers go back as DATA and the status as trailers. A call whose
stream the client resets, or whose connection drops, is cancelled; one past its
``grpc-timeout`` ends DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import inspect
import logging
from urllib.parse import quote

from pillion.grpcapi import h2
from pillion.grpcapi.status import AbortError, StatusCode

__all__ = ["Rpc", "Context", "GrpcProtocol"]

log = logging.getLogger("pillion.grpcapi")

_RESPONSE_HEADERS = ((b":status", b"200"), (b"content-type", b"application/grpc"))
_RESPONSE_BLOCK = h2.encode_headers(_RESPONSE_HEADERS)
_OK_BLOCK = h2.encode_headers(((b"grpc-status", b"0"),))
_NOT_METADATA = frozenset((b"te", b"content-type", b"grpc-timeout", b"grpc-encoding", b"grpc-accept-encoding"))
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
_END = object()  # closes a client stream's queue


class Rpc:
    """How a method is served: its request parser, handler ``(request, context)`` and stream shape."""

    __slots__ = ("parse", "handler", "client_streaming", "server_streaming")

    def __init__(self, parse, handler, client_streaming: bool, server_streaming: bool):
        self.parse = parse
        self.handler = handler
        self.client_streaming = client_streaming
        self.server_streaming = server_streaming


class Context:
    """What a handler may ask of its call: the part of ``grpc.aio.ServicerContext`` Pillion uses."""

    __slots__ = ("_protocol", "_stream", "_metadata", "_code", "_details", "_trailers")

    def __init__(self, protocol: GrpcProtocol, stream: int, metadata: tuple):
        # The connection and the stream, not the call: a call holding a context holding the call
        # would be a cycle, left to the garbage collector once per call.
        self._protocol = protocol
        self._stream = stream
        self._metadata = metadata
        self._code: StatusCode | None = None
        self._details = ""
        self._trailers: tuple = ()

    def invocation_metadata(self) -> tuple:
        return self._metadata

    async def abort(self, code: StatusCode, details: str = "", trailing_metadata=()) -> None:
        self.fail(code, details, trailing_metadata)

    def fail(self, code: StatusCode, details: str = "", trailing_metadata=()) -> None:
        """``abort`` for code that is not a coroutine: the call ends with this status."""
        self._code, self._details, self._trailers = code, details, tuple(trailing_metadata)
        raise AbortError(details)

    async def send_initial_metadata(self, metadata) -> None:
        call = self._protocol.calls.get(self._stream)
        if call is not None:  # else the call is over
            call.send_headers(metadata)

    def code(self) -> StatusCode | None:
        return self._code


class _Call:
    __slots__ = ("protocol", "stream", "rpc", "context", "buffer", "queue", "task", "headers_sent", "timeout", "done")

    def __init__(self, protocol: GrpcProtocol, stream: int, rpc: Rpc, metadata: tuple, timeout: float | None):
        self.protocol = protocol
        self.stream = stream
        self.rpc = rpc
        self.context = Context(protocol, stream, metadata)
        self.buffer = bytearray()
        self.queue: asyncio.Queue | None = asyncio.Queue() if rpc is not None and rpc.client_streaming else None
        self.task: asyncio.Task | None = None
        self.headers_sent = False
        self.timeout = timeout
        self.done = False

    def send_headers(self, metadata=()) -> None:
        if self.headers_sent or self.done:
            return
        self.headers_sent = True
        if metadata:
            self.protocol.h2.send_headers(self.stream, _RESPONSE_HEADERS + _encode_metadata(metadata))
        else:
            self.protocol.h2.send_block(self.stream, _RESPONSE_BLOCK)

    def send_message(self, message) -> None:
        data = message.SerializeToString()
        limit = self.protocol.max_message
        if len(data) > limit:
            raise _Status(StatusCode.RESOURCE_EXHAUSTED,
                          f"grpc: trying to send message larger than max ({len(data)} vs. {limit})")
        self.send_headers()
        self.protocol.h2.send_data(self.stream, b"\x00" + len(data).to_bytes(4, "big") + data)

    def answer(self, message) -> None:
        """The whole answer of a unary call: in one write when it fits the windows, else as usual."""
        data = message.SerializeToString()
        if (not self.headers_sent and len(data) <= self.protocol.max_message
                and self.protocol.h2.send_unary(self.stream, _RESPONSE_BLOCK,
                                                b"\x00" + len(data).to_bytes(4, "big") + data, _OK_BLOCK)):
            self.done = True
            self.protocol.calls.pop(self.stream, None)
            return
        self.send_message(message)
        self.finish(StatusCode.OK)

    def finish(self, code: StatusCode, details: str = "", trailers=()) -> None:
        if self.done:
            return
        self.done = True
        self.protocol.calls.pop(self.stream, None)
        if code is StatusCode.OK and self.headers_sent and not details and not trailers:
            self.protocol.h2.send_trailers_block(self.stream, _OK_BLOCK)
            self.protocol.h2.abandon(self.stream)
            return
        status = [(b"grpc-status", str(code.value[0]).encode())]
        if details:
            status.append((b"grpc-message", quote(details, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode()))
        status += _encode_metadata(trailers)
        h2conn = self.protocol.h2
        if self.headers_sent:
            h2conn.send_trailers(self.stream, status)
        else:  # trailers-only
            h2conn.send_headers(self.stream, list(_RESPONSE_HEADERS) + status, end_stream=True)
        h2conn.abandon(self.stream)

    def messages(self, take: bool = True) -> list[bytes]:
        """Complete messages at the front of ``buffer`` (removed unless ``take`` is false, then only
        checked); raises _Status for a message that is compressed or too big, as soon as its prefix is in."""
        out = []
        buffer, offset = self.buffer, 0
        while len(buffer) - offset >= 5:
            if buffer[offset]:
                raise _Status(StatusCode.UNIMPLEMENTED, "grpc: compressed messages are not supported")
            length = int.from_bytes(buffer[offset + 1:offset + 5], "big")
            if length > self.protocol.max_message:
                raise _Status(StatusCode.RESOURCE_EXHAUSTED,
                              f"grpc: received message larger than max ({length} vs. {self.protocol.max_message})")
            if len(buffer) - offset < 5 + length:
                break
            out.append(bytes(buffer[offset + 5:offset + 5 + length]))
            offset += 5 + length
        if take:
            del buffer[:offset]
        return out


class _Status(Exception):
    def __init__(self, code: StatusCode, details: str):
        super().__init__(details)
        self.code = code
        self.details = details


def _encode_metadata(metadata) -> tuple:
    out = []
    for key, value in metadata:
        name = key.lower()
        if name.endswith("-bin"):
            raw = value if isinstance(value, bytes) else value.encode()
            out.append((name.encode(), base64.b64encode(raw).rstrip(b"=")))
        else:
            out.append((name.encode(), value if isinstance(value, bytes) else value.encode("latin-1")))
    return tuple(out)


def _decode_metadata(headers) -> tuple:
    out = []
    for name, value in headers:
        if name[:1] == b":" or name in _NOT_METADATA:
            continue
        key = name.decode("latin-1")
        if key.endswith("-bin"):
            try:
                out.append((key, base64.b64decode(value + b"=" * (-len(value) % 4))))
            except ValueError:
                continue
        else:
            out.append((key, value.decode("latin-1")))
    return tuple(out)


def _timeout(value: bytes | None) -> float | None:
    if not value or len(value) > 9 or value[-1:] not in _TIMEOUT_UNITS or not value[:-1].isdigit():
        return None
    return int(value[:-1]) * _TIMEOUT_UNITS[value[-1:]]


class GrpcProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, rpcs: dict[bytes, Rpc], max_message: int, connections: set):
        self.rpcs = rpcs
        self.max_message = max_message
        self.connections = connections
        self.h2 = h2.H2Connection()
        self.calls: dict[int, _Call] = {}
        self.heads: dict[bytes, tuple] = {}  # header block -> (its decoded fields, what _head made of them)
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._loop = asyncio.get_running_loop()  # looked up once: on 3.11 each lookup costs a getpid()
        self.connections.add(self)
        self.flush()

    def connection_lost(self, exc) -> None:
        self.connections.discard(self)
        for call in list(self.calls.values()):
            call.done = True
            if call.task is not None:
                call.task.cancel()
        self.calls.clear()

    def flush(self) -> None:
        out = self.h2.take()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive(data)
        except h2.H2Error as exc:
            log.debug("gRPC connection closed: %s", exc)
            self.flush()
            self.transport.close()
            return
        for event in events:
            kind, stream = event[0], event[1]
            if kind == h2.HEADERS_EVENT:
                self._start(stream, event[2], event[3], event[4])
            elif kind == h2.DATA_EVENT:
                call = self.calls.get(stream)
                if call is not None:
                    self._data(call, event[2], event[3])
            else:  # the client reset the stream
                call = self.calls.pop(stream, None)
                if call is not None:
                    call.done = True
                    if call.task is not None:
                        call.task.cancel()
        self.flush()

    def _head(self, headers: list, block: bytes) -> tuple:
        """(path, is gRPC, rpc, metadata, timeout) of a request head; the same head again (clients
        send one per call) comes from ``self.heads``."""
        cached = self.heads.get(block)
        if cached is not None and cached[0] is headers:
            return cached[1]
        fields = dict(headers)
        path = fields.get(b":path", b"")
        head = (path, (fields.get(b"content-type") or b"").startswith(b"application/grpc"), self.rpcs.get(path),
                _decode_metadata(headers), _timeout(fields.get(b"grpc-timeout")))
        if len(self.heads) >= 64:
            self.heads.clear()
        self.heads[block] = (headers, head)
        return head

    def _start(self, stream: int, headers: list, end_stream: bool, block: bytes) -> None:
        path, is_grpc, rpc, metadata, timeout = self._head(headers, block)
        if not is_grpc:
            self.h2.send_headers(stream, ((b":status", b"415"),), end_stream=True)
            return
        call = _Call(self, stream, rpc, metadata, timeout)
        self.calls[stream] = call
        if rpc is None:
            service, _, method = path.decode("latin-1").lstrip("/").rpartition("/")
            call.finish(StatusCode.UNIMPLEMENTED, f"unknown method {method} for service {service}")
            return
        if rpc.client_streaming:
            call.task = self._loop.create_task(self._run(call, _requests(call)))
        if end_stream:
            self._data(call, b"", True)

    def _data(self, call: _Call, data: bytes, end_stream: bool) -> None:
        if call.done:
            return
        call.buffer += data
        try:
            messages = call.messages(take=call.rpc.client_streaming or end_stream)
        except _Status as exc:
            if call.task is not None:
                call.task.cancel()
            call.finish(exc.code, exc.details)
            return
        if call.rpc.client_streaming:
            for message in messages:
                call.queue.put_nowait(call.rpc.parse(message))
            if end_stream:
                call.queue.put_nowait(_END)
            return
        if not end_stream:  # a unary request is answered once it is complete
            return
        if len(messages) != 1 or call.buffer:
            call.finish(StatusCode.INTERNAL, "grpc: error unmarshalling request: a unary call carries one message")
            return
        request = call.rpc.parse(messages[0])
        if call.rpc.server_streaming:
            call.task = self._loop.create_task(self._run(call, request))
            return
        # A unary call runs at once in a context of its own; only an answer that has to wait gets a task.
        context = contextvars.copy_context()
        try:
            result = context.run(call.rpc.handler, request, call.context)
        except AbortError:
            call.finish(call.context._code or StatusCode.UNKNOWN, call.context._details, call.context._trailers)
            return
        if inspect.isawaitable(result):
            call.task = self._loop.create_task(self._run(call, result), context=context)
            return
        try:
            call.answer(result)
        except _Status as exc:
            call.finish(exc.code, exc.details)

    async def _run(self, call: _Call, request) -> None:
        """A streaming call with its ``request``, or the rest of a unary one (``request`` its awaitable answer)."""
        context = call.context
        try:
            if call.timeout is None:  # asyncio.timeout costs a Timeout, a handle and a current_task() per call
                await self._serve(call, request)
            else:
                async with asyncio.timeout(call.timeout):
                    await self._serve(call, request)
        except AbortError:
            call.finish(context._code or StatusCode.UNKNOWN, context._details, context._trailers)
        except _Status as exc:
            call.finish(exc.code, exc.details)
        except TimeoutError:
            call.finish(StatusCode.DEADLINE_EXCEEDED, "context deadline exceeded")
        except asyncio.CancelledError:
            if not call.done:  # cancelled here, not by the client: the sidecar is stopping
                call.finish(StatusCode.UNAVAILABLE, "the sidecar is shutting down")
            raise
        except Exception as exc:  # the handlers map what they expect: this is a bug
            log.exception("gRPC call on stream %d failed", call.stream)
            call.finish(StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}")
        finally:
            self.flush()

    async def _serve(self, call: _Call, request) -> None:
        """The call's work, inside its deadline."""
        context = call.context
        if call.rpc.server_streaming:
            async for message in call.rpc.handler(request, context):
                call.send_message(message)
                self.flush()
                await self._drained()
            call.finish(StatusCode.OK)
        elif call.rpc.client_streaming:
            result = call.rpc.handler(request, context)
            call.answer(await result if inspect.isawaitable(result) else result)
        else:
            call.answer(await request)

    async def _drained(self) -> None:
        """Let a stream of answers wait while the socket's buffer is full."""
        transport = self.transport
        while transport is not None and not transport.is_closing() and transport.get_write_buffer_size() > 1 << 20:
            await asyncio.sleep(0.01)

    def close(self) -> None:
        """GOAWAY: no new calls; the ones in flight finish."""
        self.h2.goaway(h2.NO_ERROR)
        self.flush()


async def _requests(call: _Call):
    """A client stream's messages, until it half-closes."""
    while True:
        message = await call.queue.get()
        if message is _END:
            return
        yield message
