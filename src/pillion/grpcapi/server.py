"""The gRPC server: grpc.aio on the sidecar's own event loop, one handler per RPC.

Handlers are ``handler(sidecar, request, context)``: a plain function or coroutine for a
unary call, an async generator for a streaming one. They raise ``DaprError`` as the HTTP
handlers do; ``_abort`` turns it into the gRPC status daprd answers with, plus a
``google.rpc.ErrorInfo`` detail whose reason is the ``ERR_*`` code.
"""

from __future__ import annotations

import hmac
import inspect
import logging

import grpc
from dapr.proto.runtime.v1 import dapr_pb2_grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from ..errors import DaprError, grpc_code
from . import all_methods

log = logging.getLogger("pillion.grpcapi")

# daprd's default gRPC message size limit is 4 MiB each way (--max-body-size).
_MESSAGE_OPTIONS = ("grpc.max_receive_message_length", "grpc.max_send_message_length")


class GrpcApi:
    """The ``dapr.proto.runtime.v1.Dapr`` service; ``shutdown`` and ``ports`` as ``HttpServer``'s."""

    def __init__(self, sidecar, api_token: str | None, max_message: int):
        self._server = grpc.aio.server(options=[(name, max_message) for name in _MESSAGE_OPTIONS])
        dapr_pb2_grpc.add_DaprServicer_to_server(servicer(sidecar, api_token), self._server)
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


def servicer(sidecar, api_token: str | None) -> dapr_pb2_grpc.DaprServicer:
    """A servicer whose every implemented RPC runs ``all_methods()``'s handler; the rest stay UNIMPLEMENTED."""
    front = dapr_pb2_grpc.DaprServicer()
    token = api_token.encode() if api_token else None
    for name, handler in all_methods().items():
        wrap = _streaming if inspect.isasyncgenfunction(handler) else _unary
        setattr(front, name, wrap(sidecar, handler, token))
    return front


def _unary(sidecar, handler, token):
    async def call(request, context):
        try:
            _check_token(context, token)
            result = handler(sidecar, request, context)
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


def _streaming(sidecar, handler, token):
    async def call(request, context):
        try:
            _check_token(context, token)
            async for message in handler(sidecar, request, context):
                yield message
        except DaprError as exc:
            await _abort(context, exc)
        except Exception as exc:  # noqa: BLE001
            if isinstance(exc, (grpc.aio.AbortError, grpc.RpcError)):
                raise
            log.exception("gRPC %s failed", handler.__name__)
            await _abort(context, DaprError("ERROR", f"{type(exc).__name__}: {exc}"))

    return call


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
