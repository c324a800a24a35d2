# cython: language_level=3
"""gRPC over the sans-IO HTTP/2 of ``h2``, per connection: compiled twin of ``pillion._pure.grpcproto``.

The pure module is the specification. This one types the per-call path of a unary call
(request head from the cache, one message straight out of the DATA frame, handler, one-write
answer) and keeps the streaming paths as they are there.
"""

import asyncio
import base64
import contextvars
import inspect
import logging
from urllib.parse import quote

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.genobject cimport PyGen_CheckExact
from libc.string cimport memcpy

from pillion.grpcapi import h2
from pillion.grpcapi.status import AbortError, StatusCode

__all__ = ["Rpc", "Context", "GrpcProtocol"]

log = logging.getLogger("pillion.grpcapi")

cdef object _H2Connection = h2.H2Connection
cdef object _H2Error = h2.H2Error
cdef object _AbortError = AbortError
cdef object _OK = StatusCode.OK
cdef object _UNKNOWN = StatusCode.UNKNOWN
cdef object _copy_context = contextvars.copy_context
cdef object _isawaitable = inspect.isawaitable
cdef object _Queue = asyncio.Queue
cdef str _HEADERS_EVENT = h2.HEADERS_EVENT
cdef str _DATA_EVENT = h2.DATA_EVENT

cdef tuple _RESPONSE_HEADERS = ((b":status", b"200"), (b"content-type", b"application/grpc"))
cdef bytes _RESPONSE_BLOCK = h2.encode_headers(_RESPONSE_HEADERS)
cdef bytes _OK_BLOCK = h2.encode_headers(((b"grpc-status", b"0"),))
cdef frozenset _NOT_METADATA = frozenset((b"te", b"content-type", b"grpc-timeout", b"grpc-encoding",
                                          b"grpc-accept-encoding"))
cdef dict _TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
cdef object _END = object()  # closes a client stream's queue


cdef set _PLAIN = set()  # types of answers seen not to be awaitable: protobuf message classes


cdef bint _awaitable(object value):
    """``inspect.isawaitable``, remembering the types that are not (its ABC check is slow)."""
    kind = type(value)
    if kind in _PLAIN:
        return False
    if _isawaitable(value):
        return True
    if not PyGen_CheckExact(value):  # a generator may or may not be a coroutine, one by one
        _PLAIN.add(kind)
    return False


cdef class Rpc:
    """How a method is served: its request parser, handler ``(request, context)`` and stream shape."""

    cdef readonly object parse, handler
    cdef readonly bint client_streaming, server_streaming

    def __init__(self, parse, handler, bint client_streaming, bint server_streaming):
        self.parse = parse
        self.handler = handler
        self.client_streaming = client_streaming
        self.server_streaming = server_streaming


cdef class Context:
    """What a handler may ask of its call: the part of ``grpc.aio.ServicerContext`` Pillion uses."""

    cdef GrpcProtocol _protocol  # and the stream, not the call: call -> context -> call would be a cycle
    cdef int _stream
    cdef tuple _metadata
    cdef readonly object _code
    cdef readonly str _details
    cdef readonly tuple _trailers

    def __init__(self, GrpcProtocol protocol, int stream, tuple metadata):
        self._protocol = protocol
        self._stream = stream
        self._metadata = metadata
        self._code = None
        self._details = ""
        self._trailers = ()

    def invocation_metadata(self):
        return self._metadata

    async def abort(self, code, details="", trailing_metadata=()):
        self.fail(code, details, trailing_metadata)

    def fail(self, code, details="", trailing_metadata=()):
        """``abort`` for code that is not a coroutine: the call ends with this status."""
        self._code, self._details, self._trailers = code, details, tuple(trailing_metadata)
        raise _AbortError(details)

    async def send_initial_metadata(self, metadata):
        cdef _Call call = self._protocol.calls.get(self._stream)
        if call is not None:  # else the call is over
            call.send_headers(metadata)

    def code(self):
        return self._code


cdef class _Call:
    cdef GrpcProtocol protocol
    cdef readonly int stream
    cdef Rpc rpc
    cdef Context context
    cdef bytearray buffer
    cdef object queue
    cdef readonly object task
    cdef bint headers_sent
    cdef object timeout
    cdef bint done

    def __init__(self, GrpcProtocol protocol, int stream, Rpc rpc, tuple metadata, timeout):
        self.protocol = protocol
        self.stream = stream
        self.rpc = rpc
        self.context = Context(protocol, stream, metadata)
        self.buffer = bytearray()
        self.queue = _Queue() if rpc is not None and rpc.client_streaming else None
        self.task = None
        self.headers_sent = False
        self.timeout = timeout
        self.done = False

    cpdef send_headers(self, metadata=()):
        if self.headers_sent or self.done:
            return
        self.headers_sent = True
        if metadata:
            self.protocol.h2.send_headers(self.stream, _RESPONSE_HEADERS + _encode_metadata(metadata))
        else:
            self.protocol.h2.send_block(self.stream, _RESPONSE_BLOCK)

    cdef send_message(self, message):
        cdef bytes data = message.SerializeToString()
        cdef Py_ssize_t limit = self.protocol.max_message
        if len(data) > limit:
            raise _Status(StatusCode.RESOURCE_EXHAUSTED,
                          f"grpc: trying to send message larger than max ({len(data)} vs. {limit})")
        self.send_headers()
        self.protocol.h2.send_data(self.stream, _framed(data))

    cdef answer(self, message):
        """The whole answer of a unary call: in one write when it fits the windows, else as usual."""
        cdef bytes data = message.SerializeToString()
        if (not self.headers_sent and len(data) <= self.protocol.max_message
                and self.protocol.h2.send_unary(self.stream, _RESPONSE_BLOCK, _framed(data), _OK_BLOCK)):
            self.done = True
            self.protocol.calls.pop(self.stream, None)
            return
        self.send_message(message)
        self.finish(_OK)

    cdef finish(self, code, str details="", trailers=()):
        if self.done:
            return
        self.done = True
        self.protocol.calls.pop(self.stream, None)
        h2conn = self.protocol.h2
        if code is _OK and self.headers_sent and not details and not trailers:
            h2conn.send_trailers_block(self.stream, _OK_BLOCK)
            h2conn.abandon(self.stream)
            return
        status = [(b"grpc-status", str(code.value[0]).encode())]
        if details:
            status.append((b"grpc-message", quote(details, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode()))
        status += _encode_metadata(trailers)
        if self.headers_sent:
            h2conn.send_trailers(self.stream, status)
        else:  # trailers-only
            h2conn.send_headers(self.stream, list(_RESPONSE_HEADERS) + status, end_stream=True)
        h2conn.abandon(self.stream)

    cdef list messages(self, bint take=True):
        """Complete messages at the front of ``buffer`` (removed unless ``take`` is false, then only
        checked); raises _Status for a message that is compressed or too big, as soon as its prefix is in."""
        cdef list out = []
        cdef bytearray buffer = self.buffer
        cdef Py_ssize_t offset = 0, length, size = len(buffer)
        cdef const unsigned char[:] view
        if size < 5:
            return out
        view = buffer
        while size - offset >= 5:
            if view[offset]:
                raise _Status(StatusCode.UNIMPLEMENTED, "grpc: compressed messages are not supported")
            length = _length(view, offset + 1)
            if length > self.protocol.max_message:
                raise _Status(StatusCode.RESOURCE_EXHAUSTED,
                              f"grpc: received message larger than max ({length} vs. {self.protocol.max_message})")
            if size - offset < 5 + length:
                break
            out.append(bytes(buffer[offset + 5:offset + 5 + length]))
            offset += 5 + length
        view = None
        if take:
            del buffer[:offset]
        return out


cdef inline Py_ssize_t _length(const unsigned char[:] view, Py_ssize_t at):
    return (<Py_ssize_t>view[at] << 24) | (view[at + 1] << 16) | (view[at + 2] << 8) | view[at + 3]


cdef inline bint _one_message(bytes data, Py_ssize_t limit):
    """Whether ``data`` is exactly one uncompressed message within ``limit``."""
    cdef Py_ssize_t size = len(data), length
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(data)
    if size < 5 or p[0]:
        return False
    length = (<Py_ssize_t>p[1] << 24) | (p[2] << 16) | (p[3] << 8) | p[4]
    return length <= limit and length + 5 == size


cdef bytes _framed(bytes data):
    """A gRPC message: the uncompressed flag, the 4-byte length, then ``data``."""
    cdef Py_ssize_t size = len(data)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size + 5)
    cdef unsigned char *p = <unsigned char *>PyBytes_AS_STRING(out)
    p[0] = 0
    p[1] = (size >> 24) & 0xFF
    p[2] = (size >> 16) & 0xFF
    p[3] = (size >> 8) & 0xFF
    p[4] = size & 0xFF
    memcpy(p + 5, PyBytes_AS_STRING(data), size)
    return out


class _Status(Exception):
    def __init__(self, code, details):
        super().__init__(details)
        self.code = code
        self.details = details


cdef tuple _encode_metadata(metadata):
    out = []
    for key, value in metadata:
        name = key.lower()
        if name.endswith("-bin"):
            raw = value if isinstance(value, bytes) else value.encode()
            out.append((name.encode(), base64.b64encode(raw).rstrip(b"=")))
        else:
            out.append((name.encode(), value if isinstance(value, bytes) else value.encode("latin-1")))
    return tuple(out)


cdef tuple _decode_metadata(headers):
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


cdef object _timeout(value):
    if not value or len(value) > 9 or value[-1:] not in _TIMEOUT_UNITS or not value[:-1].isdigit():
        return None
    return int(value[:-1]) * _TIMEOUT_UNITS[value[-1:]]


cdef class GrpcProtocol:
    """One client connection (an asyncio protocol: the loop only calls its methods)."""

    cdef dict rpcs
    cdef readonly Py_ssize_t max_message
    cdef object connections
    cdef readonly object h2
    cdef readonly dict calls
    cdef dict heads  # header block -> (its decoded fields, what _head made of them)
    cdef readonly object transport
    cdef object _loop

    def __init__(self, dict rpcs, Py_ssize_t max_message, connections):
        self.rpcs = rpcs
        self.max_message = max_message
        self.connections = connections
        self.h2 = _H2Connection()
        self.calls = {}
        self.heads = {}
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self._loop = asyncio.get_running_loop()  # looked up once: on 3.11 each lookup costs a getpid()
        self.connections.add(self)
        self.flush()

    def connection_lost(self, exc):
        cdef _Call call
        self.connections.discard(self)
        for call in list(self.calls.values()):
            call.done = True
            if call.task is not None:
                call.task.cancel()
        self.calls.clear()

    def pause_writing(self):
        pass

    def resume_writing(self):
        pass

    def eof_received(self):
        return None

    cpdef flush(self):
        out = self.h2.take()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def data_received(self, data):
        cdef tuple event
        cdef _Call call
        try:
            events = self.h2.receive(data)
        except _H2Error as exc:
            log.debug("gRPC connection closed: %s", exc)
            self.flush()
            self.transport.close()
            return
        for event in events:
            kind, stream = event[0], event[1]
            if kind == _HEADERS_EVENT:
                self._start(stream, event[2], event[3], event[4])
            elif kind == _DATA_EVENT:
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

    cdef tuple _head(self, list headers, bytes block):
        """(path, is gRPC, rpc, metadata, timeout) of a request head; the same head again (clients
        send one per call) comes from ``self.heads``."""
        cdef tuple cached = self.heads.get(block)
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

    cdef _start(self, int stream, list headers, bint end_stream, bytes block):
        cdef tuple head = self._head(headers, block)
        cdef Rpc rpc = head[2]
        if not head[1]:
            self.h2.send_headers(stream, ((b":status", b"415"),), end_stream=True)
            return
        call = _Call(self, stream, rpc, head[3], head[4])
        self.calls[stream] = call
        if rpc is None:
            service, _, method = head[0].decode("latin-1").lstrip("/").rpartition("/")
            call.finish(StatusCode.UNIMPLEMENTED, f"unknown method {method} for service {service}")
            return
        if rpc.client_streaming:
            call.task = self._loop.create_task(self._run(call, _requests(call)))
        if end_stream:
            self._data(call, b"", True)

    cdef _data(self, _Call call, bytes data, bint end_stream):
        cdef list messages
        cdef Rpc rpc = call.rpc
        if call.done:
            return
        if end_stream and not call.buffer and not rpc.client_streaming and _one_message(data, self.max_message):
            messages = [data[5:]]  # the common unary request: the whole message in one DATA frame
        else:
            call.buffer += data
            try:
                messages = call.messages(rpc.client_streaming or end_stream)
            except _Status as exc:
                if call.task is not None:
                    call.task.cancel()
                call.finish(exc.code, exc.details)
                return
        if rpc.client_streaming:
            for message in messages:
                call.queue.put_nowait(rpc.parse(message))
            if end_stream:
                call.queue.put_nowait(_END)
            return
        if not end_stream:  # a unary request is answered once it is complete
            return
        if len(messages) != 1 or call.buffer:
            call.finish(StatusCode.INTERNAL, "grpc: error unmarshalling request: a unary call carries one message")
            return
        request = rpc.parse(messages[0])
        if rpc.server_streaming:
            call.task = self._loop.create_task(self._run(call, request))
            return
        # A unary call runs at once in a context of its own; only an answer that has to wait gets a task.
        context = _copy_context()
        try:
            result = context.run(rpc.handler, request, call.context)
        except _AbortError:
            call.finish(call.context._code or _UNKNOWN, call.context._details, call.context._trailers)
            return
        if _awaitable(result):
            call.task = self._loop.create_task(self._run(call, result), context=context)
            return
        try:
            call.answer(result)
        except _Status as exc:
            call.finish(exc.code, exc.details)

    async def _run(self, _Call call, request):
        """A streaming call with its ``request``, or the rest of a unary one (``request`` its awaitable answer)."""
        context = call.context
        try:
            if call.timeout is None:  # asyncio.timeout costs a Timeout, a handle and a current_task() per call
                await self._serve(call, request)
            else:
                async with asyncio.timeout(call.timeout):
                    await self._serve(call, request)
        except _AbortError:
            call.finish(context._code or _UNKNOWN, context._details, context._trailers)
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

    async def _serve(self, _Call call, request):
        """The call's work, inside its deadline."""
        context = call.context
        rpc = call.rpc
        if rpc.server_streaming:
            async for message in rpc.handler(request, context):
                call.send_message(message)
                self.flush()
                await self._drained()
            call.finish(_OK)
        elif rpc.client_streaming:
            result = rpc.handler(request, context)
            call.answer(await result if _awaitable(result) else result)
        else:
            call.answer(await request)

    async def _drained(self):
        """Let a stream of answers wait while the socket's buffer is full."""
        transport = self.transport
        while transport is not None and not transport.is_closing() and transport.get_write_buffer_size() > 1 << 20:
            await asyncio.sleep(0.01)

    def close(self):
        """GOAWAY: no new calls; the ones in flight finish."""
        self.h2.goaway(h2.NO_ERROR)
        self.flush()


async def _requests(_Call call):
    """A client stream's messages, until it half-closes."""
    while True:
        message = await call.queue.get()
        if message is _END:
            return
        yield message
