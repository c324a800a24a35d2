"""Output bindings: ``POST|PUT /v1.0/bindings/{name}`` with ``{data, metadata, operation}``."""

from __future__ import annotations

import orjson

from ..components.bindings import BindingError
from ..errors import DaprError
from ..server.http import NO_CONTENT, Response
from . import Endpoint


async def invoke_binding(sidecar, request):
    name = request.params["name"]
    body = request.json() if request.body.strip() else {}
    if not isinstance(body, dict):
        raise DaprError("ERR_MALFORMED_REQUEST", "the body must be a JSON object")
    fields = {k.lower(): v for k, v in body.items()}
    metadata = fields.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise DaprError("ERR_MALFORMED_REQUEST", "metadata must be an object of strings")
    metadata = {str(k): str(v) for k, v in metadata.items()}
    for header in (b"traceparent", b"tracestate", b"baggage"):
        value = request.header(header)
        if value:
            metadata.setdefault(header.decode(), value.decode("latin-1"))
    binding = output_binding(sidecar, name, fields.get("operation"))
    # daprd hands the component the data re-serialised as JSON: a string keeps its quotes.
    data = orjson.dumps(fields["data"]) if fields.get("data") is not None else b""
    response = await invoke_output(binding, name, fields.get("operation"), data, metadata)
    headers = [(f"metadata.{k}".encode(), str(v).encode()) for k, v in response.metadata.items()]
    if not response.data:
        return Response(204, b"", headers) if headers else NO_CONTENT
    return Response(200, response.data, [(b"Content-Type", b"application/json"), *headers])


def output_binding(sidecar, name: str, operation):
    """The output binding ``name``, if it supports ``operation``; both fronts call this."""
    binding = sidecar.bindings.bindings.get(name)
    if binding is None or not binding.output:
        raise DaprError("ERR_INVOKE_OUTPUT_BINDING", f"couldn't find output binding {name}")
    operations = binding.component.operations()
    if not isinstance(operation, str) or operation not in operations:
        raise DaprError("ERR_INVOKE_OUTPUT_BINDING", f"binding {name} does not support operation {operation}. "
                        f"supported operations: {' '.join(operations)}")
    return binding


async def invoke_output(binding, name: str, operation: str, data: bytes, metadata: dict[str, str]):
    """The component's ``BindingResponse``; a failure is ERR_INVOKE_OUTPUT_BINDING with its metadata as headers."""
    try:
        return await binding.component.invoke(operation, data, metadata)
    except BindingError as exc:  # its metadata (an HTTP status, say) goes out as headers, as daprd sends them
        raise DaprError("ERR_INVOKE_OUTPUT_BINDING", f"error invoking output binding {name}: {exc}").with_headers(
            [(f"metadata.{k}".encode(), str(v).encode()) for k, v in (exc.metadata or {}).items()]) from None


ENDPOINTS = (
    Endpoint(("POST", "PUT"), "/v1.0/bindings/{name}", "InvokeBinding", "bindings", invoke_binding),
)
