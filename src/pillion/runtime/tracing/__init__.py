"""Distributed tracing: W3C trace context, Dapr's spans, Zipkin and OTLP/HTTP export.

Configured as in daprd by a Configuration's ``spec.tracing``::

    tracing:
      samplingRate: "1"            # 0 (or no tracing section): off; default 0.0001
      zipkin: {endpointAddress: "http://zipkin:9411/api/v2/spans"}
      otel: {endpointAddress: "collector:4318", isSecure: false, protocol: http}

Why hand-written and not the OpenTelemetry SDK: what the sidecar needs is a header
parser, id generators, a ratio sampler, a bounded list and two JSON encoders: under
800 lines with orjson (already a dependency) doing the encoding, and no new runtime
dependency. The SDK with its OTLP exporter would add protobuf, googleapis-common-protos
and requests to what a small board installs, imports and keeps in memory, and its
per-span path (context objects, attribute validation, span processors behind locks)
does more work per span than a slotted object appended to a list; the per-span cost is
what decides the sampling-1 overhead (see bench/bench_observability.py). Nothing here
needs what the SDK adds (metrics, logs, a plug-in registry, gRPC export).

``from_configuration`` returns None when tracing is off; the sidecar then adds no
step anywhere and requests keep whatever ``traceparent`` they arrived with.
"""

from __future__ import annotations

import logging

from .context import SpanContext, current, parse_traceparent
from .export import Batcher, Destination
from .spans import AppSpans, GrpcServerSpans, Sampler, ServerSpans, Span, describe_api, describe_internal

__all__ = [
    "Sampler",
    "Span",
    "SpanContext",
    "Tracer",
    "current",
    "from_configuration",
    "from_spec",
    "parse_traceparent",
]

log = logging.getLogger("pillion.runtime.tracing")

DEFAULT_RATE = 0.0001  # daprd's default samplingRate


class Tracer:
    """One sidecar's tracing: its sampler, its span queue, and the steps for the pipelines."""

    def __init__(self, service: str, rate: float, destinations: list[Destination], **batching):
        self.service = service
        self.sampler = Sampler(rate)
        self.batcher = Batcher(destinations, service, **batching)
        self.record = self.batcher.add

    def api(self, handler) -> ServerSpans:
        """``handler`` (the API's) with daprd's HTTP server spans around it."""
        return ServerSpans(self, handler, describe_api)

    def internal(self, handler) -> ServerSpans:
        """``handler`` (the internal listener's) with ``CallLocal`` server spans around it."""
        return ServerSpans(self, handler, describe_internal)

    def grpc_spans(self) -> GrpcServerSpans:
        """The gRPC front's hook: a server span around each call."""
        return GrpcServerSpans(self)

    def app_call(self, call, host: str, port: int) -> AppSpans:
        """``AppChannel.call`` with client spans around each call into the app."""
        return AppSpans(self, call, host, port)

    def start(self) -> None:
        self.batcher.start()

    async def close(self) -> None:
        await self.batcher.close()


def _rate(value) -> float:
    if value is None or value == "":
        return DEFAULT_RATE
    try:
        rate = float(value)
    except (TypeError, ValueError):
        log.warning("tracing: samplingRate %r is not a number; using %g", value, DEFAULT_RATE)
        return DEFAULT_RATE
    return min(max(rate, 0.0), 1.0)


def _truthy(value) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"))


def destinations(spec: dict) -> list[Destination]:
    """The exporters ``spec.tracing`` names; a misconfigured one is logged and left out."""
    from . import otlp, zipkin

    out = []
    address = (spec.get("zipkin") or {}).get("endpointAddress")
    if address:
        if "://" not in address:
            address = "http://" + address
        if address.rstrip("/").count("/") < 3:  # no path: Zipkin's v2 one
            address = address.rstrip("/") + zipkin.DEFAULT_PATH
        try:
            out.append(Destination(address, zipkin.encode, zipkin.CONTENT_TYPE, "zipkin"))
        except ValueError as exc:
            log.warning("tracing: %s; no Zipkin export", exc)
    otel = spec.get("otel") or {}
    address = otel.get("endpointAddress")
    if address:
        protocol = str(otel.get("protocol") or "grpc").lower()
        if protocol not in ("http", "http/json", "http/protobuf"):
            log.warning("tracing: otel protocol %r is not supported (only http); no OTLP export", protocol)
        else:
            if "://" not in address:
                address = ("https://" if _truthy(otel.get("isSecure")) else "http://") + address
            if address.rstrip("/").count("/") < 3:
                address = address.rstrip("/") + otlp.DEFAULT_PATH
            try:
                out.append(Destination(address, otlp.encode, otlp.CONTENT_TYPE, "otel"))
            except ValueError as exc:
                log.warning("tracing: %s; no OTLP export", exc)
    return out


def from_spec(spec: dict | None, service: str, **batching) -> Tracer | None:
    """The tracer ``spec.tracing`` asks for, or None when tracing is off (no section, rate 0)."""
    if not spec:
        return None
    rate = _rate(spec.get("samplingRate"))
    if rate <= 0.0:
        return None
    tracer = Tracer(service, rate, destinations(spec), **batching)
    log.info("tracing: samplingRate %g, exporting to %s", rate,
             ", ".join(d.url for d in tracer.batcher.destinations) or "nowhere (spans are only propagated)")
    return tracer


def from_configuration(configuration, service: str) -> Tracer | None:
    return from_spec(configuration.spec.get("tracing") if configuration is not None else None, service)
