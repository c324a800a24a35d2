"""The gRPC API's RPCs: the handler table over ``transport.py``, one handler per RPC.

Handlers are ``handler(sidecar, request, context)``: a plain function or coroutine for an
RPC that answers once, an async generator for one that answers with a stream; for a client
stream ``request`` is an async iterator of its messages. They raise ``DaprError`` as the HTTP
handlers do; ``_abort`` turns it into the gRPC status daprd answers with, plus a
``google.rpc.ErrorInfo`` detail whose reason is the ``ERR_*`` code.
"""

from __future__ import annotations

import hmac
import inspect
import logging
import time
from functools import partial
from types import GeneratorType

from dapr.proto.runtime.v1 import dapr_pb2
from google.protobuf import any_pb2, message_factory
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from ..api.access import serves
from ..errors import DaprError, grpc_code
from . import all_methods
from .status import AbortError, StatusCode
from .transport import GrpcServer, Rpc

log = logging.getLogger("pillion.grpcapi")

SERVICE = dapr_pb2.DESCRIPTOR.services_by_name["Dapr"]


class GrpcApi:
    """The ``dapr.proto.runtime.v1.Dapr`` service; ``shutdown`` and ``ports`` as ``HttpServer``'s.

    Messages are limited to ``max_message`` bytes each way (daprd: 4 MiB, ``--max-body-size``).
    """

    def __init__(self, sidecar, api_token: str | None, max_message: int, hooks=()):
        self._server = GrpcServer(method_handlers(sidecar, api_token, hooks), max_message)
        self._ports: list[int] = []

    async def listen(self, address: str, port: int) -> None:
        try:
            self._ports.append(await self._server.listen(address, port))
        except OSError as exc:
            raise OSError(f"cannot listen for gRPC on {address}:{port}: {exc.strerror or exc}") from None

    async def start(self) -> None:
        """Listening starts in ``listen``; kept for the sidecar's start-up order."""

    def ports(self) -> list[int]:
        return self._ports

    async def shutdown(self, grace: float) -> None:
        await self._server.shutdown(grace)


class Malformed:
    """A request whose bytes are not its protobuf message: answered INTERNAL, as grpc-go does."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason

    def error(self) -> DaprError:
        return DaprError("ERROR", f"grpc: error unmarshalling request: {self.reason}")


def _parser(cls):
    def parse(data: bytes):
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return Malformed(str(exc))

    return parse


def method_handlers(sidecar, api_token: str | None, hooks=()) -> dict[bytes, Rpc]:
    """``/package.Service/Method`` -> Rpc for every RPC ``all_methods()`` implements and ``spec.api``
    lets this front serve; the transport answers UNIMPLEMENTED for the rest.

    Built from the service descriptor, so the streaming shape and message types are daprd's.
    Each hook's ``begin(method, context)`` runs before every call and its ``end(method, state,
    context)`` after it (``CallTiming``, tracing's ``GrpcServerSpans``), in the order given.
    """
    token = api_token.encode() if api_token else None
    unknown = set(all_methods()) - set(SERVICE.methods_by_name)
    if unknown:
        raise RuntimeError(f"not RPCs of {SERVICE.full_name}: {sorted(unknown)}")
    handlers = {}
    for name, handler in all_methods(partial(serves, sidecar.configuration, "grpc")).items():
        method = SERVICE.methods_by_name[name]
        parse = _parser(message_factory.GetMessageClass(method.input_type))
        wrap = _streaming if method.server_streaming else _unary
        call = wrap(sidecar, handler, token, method.client_streaming)
        path = f"/{SERVICE.full_name}/{name}"
        for hook in reversed(hooks):  # the first hook outermost: it begins first and ends last
            call = _hooked(call, path, hook, method.server_streaming)
        handlers[path.encode()] = Rpc(parse, call, method.client_streaming, method.server_streaming)
    return handlers


async def _checked(requests):
    """A client stream's messages, stopping at the first malformed one."""
    async for message in requests:
        if type(message) is Malformed:
            raise message.error()
        yield message


def _request(request, client_streaming: bool):
    if client_streaming:
        return _checked(request)
    if type(request) is Malformed:
        raise request.error()
    return request


def _unary(sidecar, handler, token, client_streaming):
    """The handler as the transport calls it: the answer, or an awaitable of it (no coroutine of its
    own, so a handler that answers at once, as a state get does, costs no task)."""

    def call(request, context):
        try:
            if token is not None:
                _check_token(context, token)
            result = handler(sidecar, _request(request, client_streaming), context)
        except Exception as exc:
            _fail(context, exc, handler)
        return _later(result, context, handler) if awaitable(result) else result

    return call


_PLAIN: set[type] = set()  # types of answers seen not to be awaitable: protobuf message classes


def awaitable(value) -> bool:
    """``inspect.isawaitable``, remembering the types that are not: its ABC check costs as much
    as the rest of a state get's wrapping."""
    kind = type(value)
    if kind in _PLAIN:
        return False
    if inspect.isawaitable(value):
        return True
    if kind is not GeneratorType:  # a generator may or may not be a coroutine, one by one
        _PLAIN.add(kind)
    return False


async def _later(result, context, handler):
    try:
        return await result
    except Exception as exc:
        _fail(context, exc, handler)


def _fail(context, exc: Exception, handler) -> None:
    """Ends the call with ``exc`` as daprd would answer it; raises AbortError."""
    if isinstance(exc, AbortError):
        raise exc
    if not isinstance(exc, DaprError):  # one failing call must not take the front down
        log.error("gRPC %s failed", handler.__name__, exc_info=exc)
        exc = DaprError("ERROR", f"{type(exc).__name__}: {exc}")
    context.fail(*_status(exc))


def _streaming(sidecar, handler, token, client_streaming):
    async def call(request, context):
        try:
            if token is not None:
                _check_token(context, token)
            async for message in handler(sidecar, _request(request, client_streaming), context):
                yield message
        except Exception as exc:
            _fail(context, exc, handler)

    return call


def status_name(context) -> str:
    """The name of the status a call ended with (``OK`` unless it was aborted)."""
    code = context.code()
    return "OK" if code is None else code.name


class CallTiming:
    """A hook giving ``observe(method, status name, start time)`` every call once it ends (metrics, API log)."""

    def __init__(self, observe):
        self.observe = observe

    def begin(self, method: str, context) -> float:
        return time.perf_counter()

    def end(self, method: str, started: float, context) -> None:
        self.observe(method, status_name(context), started)


def _hooked(call, method: str, hook, streaming: bool):
    """``call`` between ``hook.begin(method, context)`` and ``hook.end(method, state, context)``."""
    begin, end = hook.begin, hook.end
    if streaming:
        async def hooked_stream(request, context):
            state = begin(method, context)
            try:
                async for message in call(request, context):
                    yield message
            finally:
                end(method, state, context)

        return hooked_stream

    def hooked(request, context):
        state = begin(method, context)
        try:
            result = call(request, context)
        except BaseException:
            end(method, state, context)
            raise
        if awaitable(result):
            return _end_later(result, end, method, state, context)
        end(method, state, context)
        return result

    return hooked


async def _end_later(result, end, method: str, state, context):
    try:
        return await result
    finally:
        end(method, state, context)


def _check_token(context, token: bytes) -> None:
    for key, value in context.invocation_metadata() or ():
        if key == "dapr-api-token":
            given = value.encode() if isinstance(value, str) else value
            if hmac.compare_digest(given, token):
                return
            break
    raise DaprError("ERR_API_TOKEN", "authentication error: api token mismatch", 401)


def _status(error: DaprError) -> tuple:
    """(code, message, trailing metadata) of daprd's answer to ``error``, with an ErrorInfo detail."""
    code = StatusCode[grpc_code(error)]
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=error.code, domain="dapr.io"))
    status = status_pb2.Status(code=code.value[0], message=error.message, details=[detail])
    return code, error.message, (("grpc-status-details-bin", status.SerializeToString()),)
