"""The state building block over gRPC: the HTTP API's functions with protobuf in and out.

Where daprd's gRPC API differs from its HTTP one, this follows the gRPC side: values are
raw bytes both ways (no JSON encoding; ``metadata.contentType: application/json`` only
checks that they are JSON), ETags travel as ``common.v1.Etag``, write options as the
``StateOptions`` enums, and a missing key reads as an empty ``GetStateResponse``.
"""

from __future__ import annotations

import orjson
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import state_pb2
from google.protobuf import empty_pb2

from ..api import state as api
from ..components.state import DeleteRequest, WouldBlock
from ..errors import DaprError

_EMPTY = empty_pb2.Empty()
_OPTIONS = common_pb2.StateOptions
# Enum numbers daprd does not know (proto3 keeps them) read as unspecified, as in daprd.
_CONCURRENCY = {_OPTIONS.CONCURRENCY_FIRST_WRITE: "first-write", _OPTIONS.CONCURRENCY_LAST_WRITE: "last-write"}
_CONSISTENCY = {_OPTIONS.CONSISTENCY_EVENTUAL: "eventual", _OPTIONS.CONSISTENCY_STRONG: "strong"}


def _first_write(message) -> bool:
    if not message.HasField("options"):
        return False
    options = message.options
    return api.first_write(_CONCURRENCY.get(options.concurrency), _CONSISTENCY.get(options.consistency))


def _etag(message) -> str | None:
    """The ``etag`` field's value; an empty ETag is no ETag, as over HTTP."""
    return message.etag.value or None if message.HasField("etag") else None


def _metadata(item) -> dict:
    """A state item's metadata map, with the item's TTL (ttlExpireTime) when it has one."""
    return {"ttlExpireTime": api.expire_text(item.expire_time)} if item.expire_time else {}


def _state_response(item) -> state_pb2.GetStateResponse:
    if item is None:
        return state_pb2.GetStateResponse()
    if item.expire_time:
        return state_pb2.GetStateResponse(data=item.value, etag=item.etag or "", metadata=_metadata(item))
    return state_pb2.GetStateResponse(data=item.value, etag=item.etag or "")  # an empty map costs a Python update


def get_state(sidecar, request, context):
    binding = api.store_binding(sidecar, request.store_name)
    full = binding.key(request.key)
    if binding.store.reads_without_waiting:
        try:  # answered in this call, as the HTTP GET's hot path
            return _state_response(api.read_now(binding, request.key, full))
        except WouldBlock:
            pass
    return _get_later(binding, request.key, full)


async def _get_later(binding, key: str, full: str):
    return _state_response(await api.read(binding, key, full))


async def get_bulk_state(sidecar, request, context):
    """Items in the order asked; ``parallelism`` bounds nothing here (one store read serves all keys)."""
    binding = api.store_binding(sidecar, request.store_name)
    keys = list(request.keys)
    if not keys:
        return state_pb2.GetBulkStateResponse()
    items = await api.bulk_get(binding, [binding.key(k) for k in keys])
    out = state_pb2.GetBulkStateResponse()
    for key, item in zip(keys, items):
        entry = out.items.add(key=key)
        if item is not None:
            entry.data = item.value
            if item.etag is not None:
                entry.etag = item.etag
            entry.metadata.update(_metadata(item))
    return out


def _value(item) -> bytes:
    """The bytes to store: raw, but they must be JSON when the item says they are (daprd decodes them)."""
    value = item.value
    if item.metadata.get("contentType") == "application/json":
        try:
            return orjson.dumps(orjson.loads(value))
        except orjson.JSONDecodeError as exc:
            raise DaprError("ERR_MALFORMED_REQUEST", f"state value of key {item.key} is not JSON: {exc}") from None
    return value


async def save_state(sidecar, request, context):
    binding = api.store_binding(sidecar, request.store_name)
    if not request.states:
        return _EMPTY
    requests = []
    for item in request.states:
        if not item.key:
            raise DaprError("ERR_MALFORMED_REQUEST", "state key cannot be empty")
        full = binding.key(item.key)
        requests.append(api.set_request(full, _value(item), _etag(item), _first_write(item), dict(item.metadata)))
    await api.save(binding, requests)
    return _EMPTY


async def delete_state(sidecar, request, context):
    binding = api.store_binding(sidecar, request.store_name)
    full = binding.key(request.key)
    await api.delete(binding, request.key, DeleteRequest(full, _etag(request), _first_write(request)))
    return _EMPTY


async def delete_bulk_state(sidecar, request, context):
    binding = api.store_binding(sidecar, request.store_name)
    requests = [DeleteRequest(binding.key(item.key), _etag(item), _first_write(item)) for item in request.states]
    await api.delete_bulk(binding, requests)
    return _EMPTY


async def execute_state_transaction(sidecar, request, context):
    """daprd's order: transactional store, each key, each operation type, then the size limit."""
    binding = api.store_binding(sidecar, request.storeName)  # this message's field is camelCase
    api.check_transactional(binding)
    shared = dict(request.metadata)
    ops = []
    for op in request.operations:
        item = op.request
        full = binding.key(item.key)
        if op.operationType == "upsert":
            # Request-level metadata wins over the item's, as the HTTP API's query metadata does.
            ops.append(api.set_request(full, item.value, _etag(item), _first_write(item), {**item.metadata, **shared}))
        elif op.operationType == "delete":
            ops.append(DeleteRequest(full, _etag(item), _first_write(item)))
        else:
            raise api.unsupported_operation(op.operationType)
    api.check_transaction_size(binding, len(ops))
    await api.transact(binding, ops)
    return _EMPTY


async def query_state(sidecar, request, context):
    binding = api.store_binding(sidecar, request.store_name)
    api.check_queryable(binding)
    try:
        body = orjson.loads(request.query)
    except orjson.JSONDecodeError as exc:
        raise api.query_error(binding, f"failed to parse JSON query body: {exc}") from None
    if not isinstance(body, dict):
        raise api.query_error(binding, "failed to parse JSON query body: not a JSON object")
    results, token = await api.query(binding, body)
    out = state_pb2.QueryStateResponse()
    if not results:
        return out
    for key, value, etag in results:
        out.results.add(key=key, data=value, etag=etag or "")
    if token is not None:
        out.token = token
    return out


METHODS = {
    "GetState": get_state,
    "GetBulkState": get_bulk_state,
    "SaveState": save_state,
    "DeleteState": delete_state,
    "DeleteBulkState": delete_bulk_state,
    "ExecuteStateTransaction": execute_state_transaction,
    "QueryStateAlpha1": query_state,
}
