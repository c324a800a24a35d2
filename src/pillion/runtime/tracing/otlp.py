"""OTLP/HTTP with the JSON encoding (``POST /v1/traces``, ``Content-Type: application/json``).

The body is the JSON mapping of ``ExportTraceServiceRequest``: ``resourceSpans`` ->
``scopeSpans`` -> ``spans``. Per the OTLP JSON rules ids are hex strings (not base64),
64-bit times are decimal strings, enums are integers and field names lowerCamelCase.
JSON rather than protobuf: every OTLP/HTTP receiver (the OpenTelemetry Collector,
Jaeger, Tempo) takes both, and JSON needs no protobuf runtime on the device.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from ..._version import __version__

CONTENT_TYPE = b"application/json"
DEFAULT_PATH = "/v1/traces"

# SpanKind and Status.StatusCode of opentelemetry/proto/trace/v1/trace.proto
KINDS = {"INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2


def _attributes(values: dict[str, str]) -> list[dict]:
    return [{"key": key, "value": {"stringValue": value}} for key, value in values.items()]


# Encoded ``{"key":..,"value":{"stringValue":..}}`` by (key, value): most attributes repeat from span
# to span (protocol, store, topic, status), and building two dicts per attribute was most of the cost.
_fragments: dict[tuple[str, str], bytes] = {}
_MAX_FRAGMENTS = 4096


def _attribute(key: str, value: str) -> bytes:
    fragment = _fragments.get((key, value))
    if fragment is None:
        fragment = b'{"key":' + orjson.dumps(key) + b',"value":{"stringValue":' + orjson.dumps(value) + b"}}"
        if len(_fragments) >= _MAX_FRAGMENTS:
            _fragments.clear()
        _fragments[(key, value)] = fragment
    return fragment


def _span(span) -> bytes:
    context = span.context
    error = span.error
    parts = [
        b'{"traceId":"', context.trace_id.encode(), b'","spanId":"', context.span_id.encode(),
        b'","name":', orjson.dumps(span.name),
        b',"kind":%d,"startTimeUnixNano":"%d","endTimeUnixNano":"%d","attributes":[' % (
            KINDS.get(span.kind, 1), span.start_ns, span.end_ns),
        b",".join([_attribute(k, v) for k, v in span.attributes.items()]),
        b"]",
    ]
    if span.parent_id:
        parts += (b',"parentSpanId":"', span.parent_id.encode(), b'"')
    if context.tracestate:
        parts += (b',"traceState":', orjson.dumps(context.tracestate))
    parts.append(b',"status":{"code":2,"message":' + orjson.dumps(error) + b"}}" if error else b',"status":{"code":0}}')
    return b"".join(parts)


def encode(spans: Sequence, service: str) -> bytes:
    """One ``ExportTraceServiceRequest`` (JSON) with every span under one resource and scope."""
    resource = _attributes({"service.name": service, "telemetry.sdk.name": "pillion", "telemetry.sdk.language": "python"})
    head = orjson.dumps({"resource": {"attributes": resource}})[:-1]  # the object, left open
    scope = orjson.dumps({"name": "pillion", "version": __version__})
    return b"".join((b'{"resourceSpans":[', head, b',"scopeSpans":[{"scope":', scope, b',"spans":[',
                     b",".join([_span(span) for span in spans]), b"]}]}]}"))
