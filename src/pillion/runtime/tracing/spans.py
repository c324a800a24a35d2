"""Spans, the sampler and the three wrappers that make them: API requests, internal calls, app calls.

Each is a wrapper the sidecar puts around a handler (the API's, the internal listener's)
or around ``AppChannel.call``, outside the middleware pipelines: a wrapper answers with
what it wraps answers (a response or an awaitable), so an unsampled request costs no
extra coroutine. Without tracing there is no wrapper at all.

Every wrapper propagates, sampled or not, as Dapr does: it gives the request a new span id
under the incoming trace (or a new trace) and writes that ``traceparent`` into the
request's own headers. Everything downstream that forwards the request's
``traceparent`` (invocation, the CloudEvent of a publish, binding metadata, actor calls)
then carries the child context without knowing about tracing. Only a sampled request
builds a :class:`Span` and sets :data:`~.context.current`.
"""

from __future__ import annotations

from random import random
from time import time_ns
from urllib.parse import unquote

from ...errors import HTTP_BY_GRPC
from ...server.response import Response
from .context import SpanContext, current, new_root_ids, new_span_id, parse_traceparent

SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL = "SERVER", "CLIENT", "PRODUCER", "CONSUMER", "INTERNAL"

_TRACEPARENT = b"traceparent"
_TRACESTATE = b"tracestate"


class Span:
    """One finished (or running) operation; the exporters read its slots."""

    __slots__ = ("attributes", "context", "end_ns", "kind", "name", "parent_id", "start_ns", "status")

    def __init__(self, context: SpanContext, parent_id: str, name: str, kind: str, start_ns: int):
        self.context = context
        self.parent_id = parent_id
        self.name = name
        self.kind = kind
        self.start_ns = start_ns
        self.end_ns = start_ns
        self.attributes: dict[str, str] = {}
        self.status = 0  # the HTTP status; 0: none (the handler raised something that is not an HTTP error)

    @property
    def error(self) -> str:
        """Dapr's status description, ``Code(404): Not Found``; empty for success."""
        if 0 < self.status < 400:
            return ""
        if self.status == 0:
            return "failed without an HTTP answer"
        from http import HTTPStatus

        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Unknown"
        return f"Code({self.status}): {phrase}"

    def __repr__(self) -> str:
        return f"Span({self.kind} {self.name!r} {self.context.traceparent()} parent={self.parent_id!r})"


class Sampler:
    """Parent-based, else ``samplingRate`` as a probability (daprd: ``ParentBased(TraceIdRatioBased)``).

    Only the process that starts a trace decides about it, every other one follows the
    sampled flag, so a root's decision can come from ``random()`` before any id exists:
    an unsampled root then costs one formatted header and no objects.
    """

    __slots__ = ("rate",)

    def __init__(self, rate: float):
        self.rate = min(max(rate, 0.0), 1.0)

    def sampled(self, parent: SpanContext | None) -> bool:
        return parent.sampled if parent is not None else random() < self.rate


def _with_header(headers: list, name: bytes, value: bytes) -> list:
    """``headers`` with ``name`` set to ``value`` (replaced in place where it is, else appended)."""
    for index, (key, _) in enumerate(headers):
        if key.lower() == name:
            headers[index] = (key, value)
            return headers
    headers.append((name, value))
    return headers


def _header(headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _child(headers: list, raw: bytes | None, parent: SpanContext | None, rate: float) -> SpanContext | None:
    """Propagate: write this hop's ``traceparent`` into ``headers``; its context when it is sampled.

    ``raw`` is the ``traceparent`` found in ``headers`` (None: there is none, so it is appended
    without a second scan).
    """
    if parent is None:
        trace_id, span_id = new_root_ids()
        if random() >= rate:
            value = f"00-{trace_id}-{span_id}-00".encode()
            context = None
        else:
            context = SpanContext(trace_id, span_id, True)
            value = context.traceparent().encode()
    elif parent.sampled:
        context = SpanContext(parent.trace_id, new_span_id(), True, parent.tracestate)
        value = context.traceparent().encode()
    else:
        value = f"00-{parent.trace_id}-{new_span_id()}-00".encode()
        context = None
    if raw is None:
        headers.append((_TRACEPARENT, value))
    else:
        _with_header(headers, _TRACEPARENT, value)
    return context


class ServerSpans:
    """Server spans around a request handler: the API (daprd's HTTP spans) or the internal listener."""

    def __init__(self, tracer, handler, describe):
        self.tracer = tracer
        self.handler = handler
        self.describe = describe

    def __call__(self, request):
        """The handler's answer (or awaitable); a coroutine of ours only when the request is sampled."""
        if "/healthz" in request.path:  # daprd does not trace health probes
            return self.handler(request)
        raw = request.header(_TRACEPARENT)
        parent = parse_traceparent(raw, request.header(_TRACESTATE)) if raw else None
        context = _child(request.headers, raw, parent, self.tracer.sampler.rate)
        if context is None:
            return self.handler(request)
        return self._sampled(request, Span(context, parent.span_id if parent is not None else "", "", SERVER,
                                           time_ns()))

    async def _sampled(self, request, span: Span):
        token = current.set(span)
        try:
            response = self.handler(request)
            if not isinstance(response, Response):
                response = await response
            span.status = response.status
            return response
        except Exception as exc:
            span.status = getattr(exc, "status", 0) or 500
            raise
        finally:
            current.reset(token)
            span.end_ns = time_ns()
            self.describe(self.tracer, span, request)
            self.tracer.record(span)


def describe_api(tracer, span: Span, request) -> None:
    """daprd's span name and attributes for an API request (pkg/diagnostics, HTTP server spans)."""
    path = request.path
    attributes = span.attributes
    endpoint = request.endpoint
    params = request.params
    span.name = path
    group = endpoint.group if endpoint is not None else ("invoke" if params.get("id") else "")
    db = ""
    if group == "state" or group == "secrets" or group == "bindings":
        db = group
        attributes["db.name"] = params.get("storeName") or params.get("secretStoreName") or params.get("name", "")
    elif group == "invoke" or endpoint is None:
        target = params.get("id") or _dapr_app_id(request)
        if target:
            method = params.get("method") or path.lstrip("/")
            attributes["rpc.service"] = "ServiceInvocation"
            attributes["net.peer.name"] = target
            span.name = f"CallLocal/{target}/{method}"
    elif group == "publish":
        attributes["messaging.system"] = "pubsub"
        attributes["messaging.destination.name"] = params.get("topic", "")
        attributes["messaging.destination.kind"] = "topic"
    elif group == "actors":
        actor_type, actor_id = params.get("actorType", ""), params.get("actorId", "")
        if actor_type and actor_id:
            attributes["dapr.actor"] = f"{actor_type}.{actor_id}"
            if "method" in params:
                attributes["rpc.service"] = "ServiceInvocation"
                attributes["net.peer.name"] = attributes["dapr.actor"]
                span.name = f"CallActor/{actor_type}/{params['method']}"
            elif "/state" in path:
                db = "state"
                attributes["db.name"] = "actor"
    api = f"{request.method} {path}"
    if db:
        attributes["db.system"] = db
        attributes["db.statement"] = api
        attributes["db.connection_string"] = db
    attributes["dapr.protocol"] = "http"
    attributes["dapr.api"] = api
    attributes["dapr.status_code"] = str(span.status)


def _dapr_app_id(request) -> str:
    value = request.header(b"dapr-app-id")
    return value.decode("latin-1") if value else ""


def describe_internal(tracer, span: Span, request) -> None:
    """daprd's span for a call from another sidecar: ``CallLocal/<this app>/<method>``."""
    caller = request.header(b"dapr-caller-app-id")
    method = unquote(request.path.lstrip("/"))
    span.name = f"CallLocal/{tracer.service}/{method}"
    attributes = span.attributes
    attributes["rpc.service"] = "ServiceInvocation"
    if caller:
        attributes["net.peer.name"] = caller.decode("latin-1")
    attributes["dapr.invoke_method"] = method
    attributes["dapr.protocol"] = "http"
    attributes["dapr.api"] = f"{request.method} {request.path}"
    attributes["dapr.status_code"] = str(span.status)


class GrpcServerSpans:
    """Server spans around the gRPC front's calls: a hook of ``grpcapi.server`` (``begin``/``end``).

    The parent comes from the call's ``traceparent``/``tracestate`` metadata; the span is
    named by the full method, as daprd's gRPC server spans are, and is current while the
    call runs, so what it calls (the app, another sidecar) continues the trace.
    """

    def __init__(self, tracer):
        self.tracer = tracer

    def begin(self, method: str, context):
        raw = state = None
        for key, value in context.invocation_metadata() or ():
            if key == "traceparent":
                raw = value.encode() if isinstance(value, str) else value
            elif key == "tracestate":
                state = value.encode() if isinstance(value, str) else value
        parent = parse_traceparent(raw, state) if raw else None
        child = _child([], raw, parent, self.tracer.sampler.rate)
        if child is None:
            return None
        span = Span(child, parent.span_id if parent is not None else "", method, SERVER, time_ns())
        service, _, rpc = method.lstrip("/").rpartition("/")
        span.attributes.update({"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc,
                                "dapr.protocol": "grpc", "dapr.api": method})
        return span, current.set(span)

    def end(self, method: str, started, context) -> None:
        if started is None:
            return
        span, token = started
        current.reset(token)
        span.end_ns = time_ns()
        code = context.code()
        name = "OK" if code is None else code.name
        span.status = HTTP_BY_GRPC.get(name, 500)  # Dapr's exporters read HTTP codes
        span.attributes["dapr.status_code"] = name
        self.tracer.record(span)


class AppSpans:
    """Client spans around ``AppChannel.call``: every call into the app (invocation, deliveries, bindings, actors)."""

    def __init__(self, tracer, call, host: str, port: int):
        self.tracer = tracer
        self.call = call
        self.host = host
        self.port = port

    def __call__(self, method: str, target: str, headers: list, body: bytes, timeout: float | None = None):
        if method == "OPTIONS" or target.startswith("/dapr/"):
            # the sidecar's own probes (binding routes, subscriptions, actor config): daprd does not trace them
            return self.call(method, target, headers, body, timeout)
        active = current.get()
        raw = None
        if active is not None:
            parent = active.context
        else:
            raw = _header(headers, _TRACEPARENT)
            parent = parse_traceparent(raw, _header(headers, _TRACESTATE)) if raw else None
        headers = list(headers)
        context = _child(headers, raw if active is None else b"?", parent, self.tracer.sampler.rate)
        if parent is not None and parent.tracestate and _header(headers, _TRACESTATE) is None:
            headers.append((_TRACESTATE, parent.tracestate.encode("latin-1")))
        if context is None:
            return self.call(method, target, headers, body, timeout)
        span = Span(context, parent.span_id if parent is not None else "", "", CLIENT, time_ns())
        return self._sampled(span, method, target, headers, body, timeout)

    async def _sampled(self, span: Span, method, target, headers, body, timeout):
        try:
            response = await self.call(method, target, headers, body, timeout)
            span.status = response.status
            return response
        except Exception as exc:
            span.status = getattr(exc, "status", 0) or 0
            raise
        finally:
            span.end_ns = time_ns()
            span.name = f"{method} {target.partition('?')[0]}"
            attributes = span.attributes
            attributes["http.request.method"] = method
            attributes["server.address"] = self.host
            attributes["server.port"] = str(self.port)
            attributes["url.full"] = f"http://{self.host}:{self.port}{target}"
            attributes["dapr.protocol"] = "http"
            attributes["dapr.status_code"] = str(span.status)
            self.tracer.record(span)
