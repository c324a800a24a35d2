"""The actor RPCs: method calls, state, reminders and timers, as the HTTP actor API does them.

The actor app itself stays an HTTP app; this is the client side only. Where daprd's gRPC
front differs from its HTTP one, this follows gRPC: state values are raw bytes (not
JSON-encoded again), GetActorState needs the actor active on this host as a transaction
does, and an unknown transaction operation is UNIMPLEMENTED.
"""

from __future__ import annotations

import base64

import orjson
from dapr.proto.runtime.v1 import actors_pb2
from google.protobuf import empty_pb2

from ..api import actors as http_actors
from ..errors import DaprError

_EMPTY = empty_pb2.Empty()


async def invoke_actor(sidecar, request, context):
    http_actors.check_names(request.actor_type, request.actor_id)
    headers = [(key.encode(), value.encode()) for key, value in request.metadata.items()]
    response = await http_actors.call_method(sidecar, request.actor_type, request.actor_id, request.method,
                                             request.data, headers)  # fmt: skip
    return actors_pb2.InvokeActorResponse(data=response.body)


async def get_actor_state(sidecar, request, context):
    http_actors.check_names(request.actor_type, request.actor_id)
    http_actors.check_active(sidecar, request.actor_type, request.actor_id)
    item = await http_actors.read_state(sidecar, request.actor_type, request.actor_id, request.key)
    return actors_pb2.GetActorStateResponse(data=b"" if item is None else item.value)


async def execute_actor_state_transaction(sidecar, request, context):
    actor_type, actor_id = request.actor_type, request.actor_id
    http_actors.check_names(actor_type, actor_id)
    requests = []
    for op in request.operations:
        if op.operationType == "upsert":
            requests.append(http_actors.upsert_request(sidecar, actor_type, actor_id, op.key, op.value.value, None,
                                                       dict(op.metadata)))  # fmt: skip
        elif op.operationType == "delete":
            requests.append(http_actors.delete_request(sidecar, actor_type, actor_id, op.key, None))
        else:
            raise DaprError("ERR_NOT_SUPPORTED_STATE_OPERATION", f"operation type {op.operationType} not supported")
    http_actors.check_active(sidecar, actor_type, actor_id)
    await http_actors.save_transaction(http_actors.transaction_store(sidecar), requests)
    return _EMPTY


def _named(request, kind: str) -> None:
    if not request.name:
        raise DaprError("ERR_BAD_REQUEST", f"invalid request: {kind} name cannot be empty")
    http_actors.check_names(request.actor_type, request.actor_id, request.name)


def _data(raw: bytes) -> bytes | None:
    """The raw JSON the app gets as ``data``: the bytes when they are JSON (the SDKs send
    JSON), else a JSON string of their base64, as Go's encoding of a byte slice."""
    if not raw:
        return None
    try:
        orjson.loads(raw)
        return raw
    except orjson.JSONDecodeError:
        return orjson.dumps(base64.b64encode(raw).decode())


async def register_actor_reminder(sidecar, request, context):
    _named(request, "reminder")
    await http_actors.check_reminder_host(sidecar, request.actor_type)
    reminder = http_actors.schedule(request.actor_type, request.actor_id, request.name, request.due_time,
                                    request.period, request.ttl, _data(request.data), "reminder")  # fmt: skip
    await http_actors.add_reminder(sidecar, reminder)
    return _EMPTY


async def unregister_actor_reminder(sidecar, request, context):
    _named(request, "reminder")
    await http_actors.remove_reminder(sidecar, request.actor_type, request.actor_id, request.name)
    return _EMPTY


async def register_actor_timer(sidecar, request, context):
    _named(request, "timer")
    await http_actors.check_timer_host(sidecar, request.actor_type)
    timer = http_actors.schedule(request.actor_type, request.actor_id, request.name, request.due_time,
                                 request.period, request.ttl, _data(request.data), "timer")  # fmt: skip
    sidecar.actors.set_timer(timer, request.callback)
    return _EMPTY


def unregister_actor_timer(sidecar, request, context):
    _named(request, "timer")
    sidecar.actors.delete_timer(request.actor_type, request.actor_id, request.name)
    return _EMPTY


METHODS = {
    "InvokeActor": invoke_actor,
    "GetActorState": get_actor_state,
    "ExecuteActorStateTransaction": execute_actor_state_transaction,
    "RegisterActorReminder": register_actor_reminder,
    "UnregisterActorReminder": unregister_actor_reminder,
    "RegisterActorTimer": register_actor_timer,
    "UnregisterActorTimer": unregister_actor_timer,
}
