"""Calls into a gRPC app (``--app-protocol grpc``): the app's ``AppCallback`` services.

daprd speaks to such an app through ``dapr.proto.runtime.v1.AppCallback`` instead of
HTTP: ``OnInvoke`` for service invocation (and for anything else that invokes a method,
such as configuration updates), ``ListTopicSubscriptions``/``OnTopicEvent`` for pub/sub,
``ListInputBindings``/``OnBindingEvent`` for input bindings and
``AppCallbackHealthCheck.HealthCheck`` for app health. Readiness is the same rule as for
HTTP apps: the channel is ready once the app's port accepts.

Only imported when the app protocol is grpc, so HTTP-only installs never load grpcio.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from urllib.parse import unquote

import grpc
import orjson
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import appcallback_pb2, appcallback_pb2_grpc
from google.protobuf import any_pb2, empty_pb2, json_format
from google.protobuf.message import DecodeError

from ..components.pubsub import Outcome
from ..errors import HTTP_BY_GRPC
from ..grpcapi.events import topic_event_request
from ..server.client import ClientError, ClientResponse
from .app_channel import AppChannel, AppUnavailable, HealthCheck

log = logging.getLogger("pillion.runtime.app")

_VERBS = dict(common_pb2.HTTPExtension.Verb.items())
# Kept out of the app's metadata: the body's own fields, HTTP/2 and gRPC reserved names.
_SKIP_METADATA = frozenset(("content-type", "content-length", "host", "te", "connection", "user-agent",
                            "transfer-encoding", "keep-alive", "upgrade"))
_METADATA_KEY = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
_STATUS_DETAILS = "grpc-status-details-bin"
_STATUSES = {0: Outcome.SUCCESS, 1: Outcome.RETRY, 2: Outcome.DROP}


class GrpcCallError(ClientError):
    """A callback RPC failed: transport trouble or an error status from the app."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"rpc error: code = {_code_name(code)} desc = {details}")
        self.code = code
        self.details = details


def _code_name(code: grpc.StatusCode) -> str:
    """Go's spelling of a code (``Unavailable``, ``DeadlineExceeded``) as daprd's messages show it."""
    return "".join(part.capitalize() for part in code.name.split("_")).replace("Cancelled", "Canceled")


def _metadata(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[str, str | bytes]]:
    """HTTP headers (or message metadata) as gRPC metadata: lower-case keys, invalid entries dropped."""
    out: list[tuple[str, str | bytes]] = []
    for key, value in headers:
        name = key.decode("latin-1").lower()
        if (not name or name in _SKIP_METADATA or name.startswith(("grpc-", ":"))
                or not set(name) <= _METADATA_KEY):
            continue
        if name.endswith("-bin"):
            out.append((name, bytes(value)))
            continue
        text = value.decode("latin-1")
        if all(" " <= ch <= "~" for ch in text):
            out.append((name, text))
    return out


def _response_headers(metadata) -> list[tuple[bytes, bytes]]:
    """daprd's conversion of the app's response metadata to HTTP headers: reserved names get ``dapr-``."""
    out = []
    for key, value in metadata or ():
        if key.endswith("-bin") or key in ("content-type", "traceparent", "tracestate"):
            continue
        if key.startswith("grpc-"):
            key = "dapr-" + key
        elif key.startswith(":"):
            key = "dapr-" + key[1:]
        out.append((key.encode(), value.encode("latin-1") if isinstance(value, str) else value))
    return out


def status_body(code: grpc.StatusCode, message: str, trailers) -> bytes:
    """The ``google.rpc.Status`` as JSON: the body daprd answers a failed call to a gRPC app with."""
    details: list = []
    for key, value in trailers or ():
        if key == _STATUS_DETAILS:
            try:
                from google.rpc import status_pb2

                status = status_pb2.Status.FromString(value)
                details = json_format.MessageToDict(status, preserving_proto_field_name=True).get("details", [])
            except (ImportError, DecodeError, json_format.Error, TypeError, KeyError):
                details = []  # details we cannot read: the code and message still say what failed
    return orjson.dumps({"code": code.value[0], "message": message or "", "details": details})


def topic_subscription(sub: appcallback_pb2.TopicSubscription):
    """One ``ListTopicSubscriptions`` entry as the record runtime/pubsub.py builds from ``/dapr/subscribe``."""
    from .pubsub import TopicSubscription

    if not sub.pubsub_name or not sub.topic:
        raise ValueError("pubsub_name and topic are required")
    rules = [(rule.match, rule.path) for rule in sub.routes.rules]
    default = sub.routes.default or None
    if not rules and not default:
        rules = [("", "")]  # daprd: "gRPC automatically specifies a default route if none are returned"
    if sub.bulk_subscribe.enabled:
        log.warning("subscription to %s/%s: bulkSubscribe is delivered one event per OnTopicEvent for gRPC apps",
                    sub.pubsub_name, sub.topic)
    return TopicSubscription(sub.pubsub_name, sub.topic, rules, default, dict(sub.metadata),
                             sub.dead_letter_topic or None, None, "PROGRAMMATIC")


class GrpcAppChannel(AppChannel):
    """The app channel of a gRPC app: typed callback RPCs, plus ``call`` for anything HTTP-shaped."""

    protocol = "grpc"

    def __init__(self, pool, host: str, port: int, *, api_token: str | None = None, max_concurrency: int = -1,
                 health: HealthCheck | None = None, on_ready=None, pipeline: Sequence = (),
                 max_message: int = 4 * 1024 * 1024):
        super().__init__(pool, host, port, api_token=api_token, max_concurrency=max_concurrency, health=health,
                         on_ready=on_ready)
        if pipeline:
            log.warning("appHttpPipeline is ignored: the app speaks gRPC (as in daprd)")
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        limit = max(max_message, 4 * 1024 * 1024) + 64 * 1024  # room for the envelope around a full body
        self._channel = grpc.aio.insecure_channel(target, options=[
            ("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)])
        self._stub = appcallback_pb2_grpc.AppCallbackStub(self._channel)
        self._health_stub = appcallback_pb2_grpc.AppCallbackHealthCheckStub(self._channel)
        self._md: list[tuple[str, str]] = [("dapr-api-token", api_token)] if api_token else []

    async def close(self) -> None:
        await super().close()
        await self._channel.close()

    def _usable(self) -> None:
        if not self.ready.is_set():
            raise AppUnavailable("app channel is not initialized")
        if not self.healthy:
            raise AppUnavailable("app is not in a healthy state")

    async def _rpc(self, method, request, metadata=(), timeout: float | None = None):
        """One unary call within the concurrency limit; the call object, awaited."""
        call = method(request, metadata=tuple(self._md) + tuple(metadata), timeout=timeout)
        if self._limit is None:
            return call, await call
        async with self._limit:
            return call, await call

    async def _probe(self) -> bool:
        """daprd's gRPC probe: ``HealthCheck`` answering OK is healthy; any error is a failed probe."""
        try:
            await self._health_stub.HealthCheck(empty_pb2.Empty(), metadata=tuple(self._md), timeout=self.health.timeout)
        except grpc.aio.AioRpcError:
            return False
        return True

    def _probe_name(self) -> str:
        return "HealthCheck"

    # -- invocation ---------------------------------------------------------------------

    def call(self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes,
             timeout: float | None = None):
        """An HTTP-shaped call as daprd makes it to a gRPC app: ``OnInvoke`` with an HTTP extension."""
        self._usable()
        path, _, query = target.partition("?")
        return self.invoke(method, unquote(path.removeprefix("/")), query, headers, body, timeout)

    async def invoke(self, verb: str, method: str, query: str, headers: list[tuple[bytes, bytes]], body: bytes,
                     timeout: float | None = None) -> ClientResponse:
        """``OnInvoke``; the answer as an HTTP response, a gRPC error mapped as daprd maps it."""
        self._usable()
        content_type = ""
        for key, value in headers:
            if key.lower() == b"content-type":
                content_type = value.decode("latin-1")
        request = common_pb2.InvokeRequest(
            method=method, data=any_pb2.Any(value=body), content_type=content_type,
            http_extension=common_pb2.HTTPExtension(verb=_VERBS.get(verb.upper(), 0), querystring=query))
        try:
            call, reply = await self._rpc(self._stub.OnInvoke, request, _metadata(headers), timeout)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            out = _response_headers(exc.initial_metadata()) + [(b"Content-Type", b"application/json")]
            return ClientResponse(HTTP_BY_GRPC.get(code.name, 500), code.name.encode(), out,
                                  status_body(code, exc.details(), exc.trailing_metadata()))
        out = _response_headers(await call.initial_metadata())
        if reply.content_type:
            out.append((b"Content-Type", reply.content_type.encode("latin-1")))
        return ClientResponse(200, b"OK", out, reply.data.value)

    # -- pub/sub --------------------------------------------------------------------------

    async def list_subscriptions(self) -> list:
        """``ListTopicSubscriptions`` as subscription records; Unimplemented means none. Retried 5 times."""
        from .pubsub import backoff

        for attempt in range(5):
            try:
                self._usable()
                _, reply = await self._rpc(self._stub.ListTopicSubscriptions, empty_pb2.Empty(), timeout=10.0)
                break
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    return []
                log.warning("ListTopicSubscriptions failed (%s); trying again", exc.details())
            except AppUnavailable as exc:
                log.warning("ListTopicSubscriptions: %s; trying again", exc)
            await asyncio.sleep(backoff(attempt + 1))
        else:
            log.error("ListTopicSubscriptions failed five times; no programmatic subscriptions")
            return []
        out = []
        for index, sub in enumerate(reply.subscriptions):
            try:
                out.append(topic_subscription(sub))
            except ValueError as exc:
                log.warning("ListTopicSubscriptions entry %d ignored: %s", index, exc)
        return out

    async def topic_event(self, event: dict, pubsub: str, topic: str, path: str, metadata: dict[str, str],
                          timeout: float | None = None) -> Outcome | None:
        """``OnTopicEvent``: the app's SUCCESS/RETRY/DROP; an error retries; None when the app does not
        implement it (daprd acknowledges such a message without a dead letter)."""
        self._usable()
        request = topic_event_request(event, pubsub, topic, path)
        md = _metadata([(k.encode(), v.encode()) for k, v in metadata.items()])
        try:
            _, reply = await self._rpc(self._stub.OnTopicEvent, request, md, timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                log.warning("%s/%s: non-retriable error from the app (%s); message dropped", pubsub, topic,
                            exc.details())
                return None
            log.warning("%s/%s: error returned from app while processing pub/sub event %s: %s", pubsub, topic,
                        request.id, exc.details())
            return Outcome.RETRY
        outcome = _STATUSES.get(reply.status)
        if outcome is None:
            log.warning("%s/%s: unknown status %d from the app; retrying", pubsub, topic, reply.status)
            return Outcome.RETRY
        return outcome

    # -- input bindings -------------------------------------------------------------------

    async def list_input_bindings(self) -> list[str] | None:
        """``ListInputBindings``: the binding names the app takes; None when the call failed."""
        self._usable()
        try:
            _, reply = await self._rpc(self._stub.ListInputBindings, empty_pb2.Empty(), timeout=10.0)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return []
            log.error("ListInputBindings failed: %s", exc.details())
            return None
        return list(reply.bindings)

    async def binding_event(self, name: str, data: bytes, metadata: dict[str, str],
                            timeout: float | None = None) -> bytes:
        """``OnBindingEvent``; raises GrpcCallError when the app answers an error (the component then
        decides about retrying). The reply's state/output-binding fields are not acted upon."""
        self._usable()
        request = appcallback_pb2.BindingEventRequest(name=name, data=data, metadata=metadata)
        try:
            _, reply = await self._rpc(self._stub.OnBindingEvent, request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise GrpcCallError(exc.code(), exc.details() or "") from None
        return reply.data
