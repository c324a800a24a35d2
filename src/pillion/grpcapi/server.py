"""The gRPC server: grpc.aio on the sidecar's own event loop, one handler per RPC.

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

import grpc
from dapr.proto.runtime.v1 import dapr_pb2
from google.protobuf import any_pb2, message_factory
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from ..api.access import serves
from ..errors import DaprError, grpc_code
from . import all_methods

log = logging.getLogger("pillion.grpcapi")

SERVICE = dapr_pb2.DESCRIPTOR.services_by_name["Dapr"]

# daprd's default gRPC message size limit is 4 MiB each way (--max-body-size).
_MESSAGE_OPTIONS = ("grpc.max_receive_message_length", "grpc.max_send_message_length")


class GrpcApi:
    """The ``dapr.proto.runtime.v1.Dapr`` service; ``shutdown`` and ``ports`` as ``HttpServer``'s."""

    def __init__(self, sidecar, api_token: str | None, max_message: int, hooks=()):
        self._server = grpc.aio.server(options=[(name, max_message) for name in _MESSAGE_OPTIONS])
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            SERVICE.full_name, method_handlers(sidecar, api_token, hooks)),))
        self._ports: list[int] = []

    async def listen(self, address: str, port: int) -> None:
        try:
            bound = self._server.add_insecure_port(f"{address}:{port}")
        except RuntimeError as exc:  # grpcio reports a taken port this way
            raise OSError(f"cannot listen for gRPC on {address}:{port}: {exc}") from None
        self._ports.append(bound)

    async def start(self) -> None:
        await self._server.start()

    def ports(self) -> list[int]:
        return self._ports

    async def shutdown(self, grace: float) -> None:
        await self._server.stop(grace)


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


def _serialize(message) -> bytes:
    return message.SerializeToString()


def method_handlers(sidecar, api_token: str | None, hooks=()) -> dict:
    """RPC name -> grpc handler for every RPC ``all_methods()`` implements and ``spec.api`` lets
    this front serve; gRPC answers UNIMPLEMENTED for the rest.

    Built from the service descriptor, so the streaming shape and message types are daprd's.
    Each hook's ``begin(method, context)`` runs before every call and its ``end(method, state,
    context)`` after it (``CallTiming``, tracing's ``GrpcServerSpans``).
    """
    token = api_token.encode() if api_token else None
    unknown = set(all_methods()) - set(SERVICE.methods_by_name)
    if unknown:
        raise RuntimeError(f"not RPCs of {SERVICE.full_name}: {sorted(unknown)}")
    handlers = {}
    for name, handler in all_methods(partial(serves, sidecar.configuration, "grpc")).items():
        method = SERVICE.methods_by_name[name]
        parse = _parser(message_factory.GetMessageClass(method.input_type))
        if method.client_streaming:
            make = grpc.stream_stream_rpc_method_handler if method.server_streaming else grpc.stream_unary_rpc_method_handler
        else:
            make = grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        wrap = _streaming if method.server_streaming else _unary
        call = wrap(sidecar, handler, token, method.client_streaming)
        if hooks:
            call = _hooked(call, f"/{SERVICE.full_name}/{name}", hooks, method.server_streaming)
        handlers[name] = make(call, request_deserializer=parse, response_serializer=_serialize)
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
    async def call(request, context):
        try:
            _check_token(context, token)
            result = handler(sidecar, _request(request, client_streaming), context)
            if inspect.isawaitable(result):
                result = await result
            return result
        except DaprError as exc:
            await _abort(context, exc)
        except Exception as exc:  # noqa: BLE001 - one failing call must not take the front down
            if isinstance(exc, (grpc.aio.AbortError, grpc.RpcError)):
                raise
            log.exception("gRPC %s failed", handler.__name__)
            await _abort(context, DaprError("ERROR", f"{type(exc).__name__}: {exc}"))

    return call


def _streaming(sidecar, handler, token, client_streaming):
    async def call(request, context):
        try:
            _check_token(context, token)
            async for message in handler(sidecar, _request(request, client_streaming), context):
                yield message
        except DaprError as exc:
            await _abort(context, exc)
        except Exception as exc:  # noqa: BLE001
            if isinstance(exc, (grpc.aio.AbortError, grpc.RpcError)):
                raise
            log.exception("gRPC %s failed", handler.__name__)
            await _abort(context, DaprError("ERROR", f"{type(exc).__name__}: {exc}"))

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


def _hooked(call, method: str, hooks, streaming: bool):
    """``call`` between its hooks' ``begin`` and ``end`` (in reverse order)."""
    if streaming:
        async def hooked_stream(request, context):
            states = [hook.begin(method, context) for hook in hooks]
            try:
                async for message in call(request, context):
                    yield message
            finally:
                for hook, state in zip(reversed(hooks), reversed(states)):
                    hook.end(method, state, context)

        return hooked_stream

    async def hooked(request, context):
        states = [hook.begin(method, context) for hook in hooks]
        try:
            return await call(request, context)
        finally:
            for hook, state in zip(reversed(hooks), reversed(states)):
                hook.end(method, state, context)

    return hooked


def _check_token(context, token: bytes | None) -> None:
    if token is None:
        return
    for key, value in context.invocation_metadata() or ():
        if key == "dapr-api-token":
            given = value.encode() if isinstance(value, str) else value
            if hmac.compare_digest(given, token):
                return
            break
    raise DaprError("ERR_API_TOKEN", "authentication error: api token mismatch", 401)


async def _abort(context, error: DaprError) -> None:
    code = getattr(grpc.StatusCode, grpc_code(error))
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=error.code, domain="dapr.io"))
    status = status_pb2.Status(code=code.value[0], message=error.message, details=[detail])
    await context.abort(code, error.message,
                        trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),))
