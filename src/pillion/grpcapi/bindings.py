"""InvokeBinding: the output binding API's functions with daprd's gRPC differences.

Over gRPC the data goes to the component as the raw bytes sent (HTTP re-serialises its
JSON ``data``), the call's gRPC metadata is added to the request metadata (reserved
keys get a ``dapr-`` prefix), and every failure is INTERNAL with the message
``error invoking output binding <name>: <cause>`` (daprd's ``ErrInvokeOutputBinding``).
"""

from __future__ import annotations

from dapr.proto.runtime.v1 import binding_pb2

from ..api import bindings as http_bindings
from ..errors import DaprError
from .invoke import dapr_prefixed


async def invoke_binding(sidecar, request, context):
    name, operation = request.name, request.operation
    metadata = dict(request.metadata)
    for key, value in context.invocation_metadata() or ():
        if not key.endswith("-bin"):
            metadata[dapr_prefixed(key)] = value
    try:
        if not operation:
            raise DaprError("ERR_INVOKE_OUTPUT_BINDING", "operation field is missing from request")
        binding = http_bindings.output_binding(sidecar, name, operation)
    except DaprError as exc:
        raise DaprError(exc.code, f"error invoking output binding {name}: {exc.message}") from None
    response = await http_bindings.invoke_output(binding, name, operation, request.data, metadata)
    return binding_pb2.InvokeBindingResponse(data=response.data,
                                             metadata={k: str(v) for k, v in response.metadata.items()})


METHODS = {"InvokeBinding": invoke_binding}
