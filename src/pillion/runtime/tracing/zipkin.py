"""Zipkin v2 JSON encoding (``POST /api/v2/spans``, ``Content-Type: application/json``).

A body is a JSON array of span objects: hex ``traceId``/``id``/``parentId``, ``kind``
in upper case, ``timestamp`` and ``duration`` in microseconds, ``localEndpoint`` with
the service name, and string ``tags``. A failed span carries the ``error`` tag, which is
how Zipkin marks errors.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

CONTENT_TYPE = b"application/json"
DEFAULT_PATH = "/api/v2/spans"


def encode(spans: Sequence, service: str) -> bytes:
    endpoint = {"serviceName": service}
    out = []
    for span in spans:
        context = span.context
        start_us = span.start_ns // 1000
        item = {
            "traceId": context.trace_id,
            "id": context.span_id,
            "name": span.name,
            "kind": span.kind,
            "timestamp": start_us,
            "duration": max(span.end_ns // 1000 - start_us, 1),  # Zipkin wants a positive duration
            "localEndpoint": endpoint,
            "tags": span.attributes,
        }
        if span.parent_id:
            item["parentId"] = span.parent_id
        if span.kind == "INTERNAL":
            del item["kind"]  # Zipkin has no INTERNAL kind: a local span has none
        error = span.error
        if error:
            item["tags"] = {**span.attributes, "error": error}
        out.append(item)
    return orjson.dumps(out)
