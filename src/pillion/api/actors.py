"""Actor API: ``/v1.0/actors/{type}/{id}/...`` method calls, state, reminders and timers.

Shapes and codes follow daprd (../shared/reference/dapr-api.md §6). Actor state keys are
``appId||type||id||key`` in the store marked ``actorStateStore: "true"``.
"""

from __future__ import annotations

import time

import orjson

from ..components.state import DeleteRequest, ETagError, SetRequest, StoreError
from ..errors import DaprError
from ..runtime.reminders import Reminder, TimeSpecError, reminder_key
from ..server.http import NO_CONTENT, Response
from . import Endpoint

_BAD_NAME = set('/\\?#') | {chr(c) for c in range(32)} | {"\x7f"}


def check_names(*values: str) -> None:
    """Actor types, ids and reminder/timer names may not hold path or control characters."""
    for value in values:
        if _BAD_NAME.intersection(value):
            raise DaprError("ERR_BAD_REQUEST", f"invalid character in {value!r}")


def _actor(sidecar, request) -> tuple[str, str]:
    actor_type, actor_id = request.params["actorType"], request.params["actorId"]
    check_names(actor_type, actor_id, request.params.get("name", ""))
    return actor_type, actor_id


async def call_method(sidecar, actor_type: str, actor_id: str, method: str, body: bytes,
                      headers: list[tuple[bytes, bytes]], query: str = ""):
    """The app's answer to a method call (200 only); other answers as daprd's errors."""
    response = await sidecar.actors.call(actor_type, actor_id, f"method/{method}", body, headers, query)
    if response.status == 200:
        return response
    if response.status == 404:
        raise DaprError("ERR_ACTOR_INVOKE_METHOD", f"actor method not found: {method}")
    raise DaprError("ERR_ACTOR_INVOKE_METHOD", "error invoke actor method: error from actor service: "
                    f"({response.status}) {response.body.decode(errors='replace')}")


async def invoke_method(sidecar, request):
    actor_type, actor_id = _actor(sidecar, request)
    response = await call_method(sidecar, actor_type, actor_id, request.params["method"], request.body,
                                 request.headers, request.query)  # fmt: skip
    return Response(200, response.body, _reply_headers(response))


_HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"date", b"server"}


def _reply_headers(response) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in response.headers if k.lower() not in _HOP_BY_HOP]


# -- state ---------------------------------------------------------------------------------


def _store(sidecar, code: str):
    binding = sidecar.actors.state_store()
    if binding is None:
        raise DaprError(code, "actors: state store does not exist or incorrectly configured")
    return binding


def _state_key(sidecar, actor_type: str, actor_id: str, key: str) -> str:
    return f"{sidecar.app_id}||{actor_type}||{actor_id}||{key}"


async def read_state(sidecar, actor_type: str, actor_id: str, key: str):
    """The stored item of one actor state key, or None."""
    binding = _store(sidecar, "ERR_ACTOR_STATE_GET")
    try:
        return await binding.store.get(_state_key(sidecar, actor_type, actor_id, key))
    except StoreError as exc:
        raise DaprError("ERR_ACTOR_STATE_GET", f"error getting actor state: {exc}") from None


async def get_state(sidecar, request):
    actor_type, actor_id = _actor(sidecar, request)
    item = await read_state(sidecar, actor_type, actor_id, request.params["key"])
    if item is None:
        return NO_CONTENT
    return Response(200, item.value, [(b"Content-Type", b"application/json")])


def check_active(sidecar, actor_type: str, actor_id: str) -> None:
    """Actor state is written only for an actor active on this host (inside its turns)."""
    if (actor_type, actor_id) not in sidecar.actors.active:
        raise DaprError("ERR_ACTOR_INSTANCE_MISSING", "actor instance is missing")


def transaction_store(sidecar):
    return _store(sidecar, "ERR_ACTOR_STATE_TRANSACTION_SAVE")


def upsert_request(sidecar, actor_type: str, actor_id: str, key: str, value: bytes, etag, metadata) -> SetRequest:
    """One upsert of a transaction; ``value`` is stored as given (raw bytes)."""
    ttl = (metadata or {}).get("ttlInSeconds")
    return SetRequest(_state_key(sidecar, actor_type, actor_id, key), value, etag,
                      ttl_seconds=int(ttl) if ttl not in (None, "") else None)  # fmt: skip


def delete_request(sidecar, actor_type: str, actor_id: str, key: str, etag) -> DeleteRequest:
    return DeleteRequest(_state_key(sidecar, actor_type, actor_id, key), etag)


async def save_transaction(binding, requests: list) -> None:
    try:
        await binding.store.transact(requests)
    except (ETagError, StoreError, ValueError) as exc:
        raise DaprError("ERR_ACTOR_STATE_TRANSACTION_SAVE", f"error saving actor transaction state: {exc}") from None


async def transact_state(sidecar, request):
    actor_type, actor_id = _actor(sidecar, request)
    check_active(sidecar, actor_type, actor_id)
    binding = transaction_store(sidecar)
    operations = request.json()
    if not isinstance(operations, list):
        raise DaprError("ERR_MALFORMED_REQUEST", "the body must be a JSON array of operations")
    requests = []
    for entry in operations:
        fields = {k.lower(): v for k, v in entry.items()} if isinstance(entry, dict) else {}
        inner = fields.get("request") if isinstance(fields.get("request"), dict) else {}
        inner = {k.lower(): v for k, v in inner.items()}
        key = inner.get("key")
        if not isinstance(key, str) or not key:
            raise DaprError("ERR_MALFORMED_REQUEST", "each operation needs request.key")
        operation = str(fields.get("operation", "")).lower()
        if operation == "upsert":
            requests.append(upsert_request(sidecar, actor_type, actor_id, key, orjson.dumps(inner.get("value")),
                                           inner.get("etag"), inner.get("metadata")))  # fmt: skip
        elif operation == "delete":
            requests.append(delete_request(sidecar, actor_type, actor_id, key, inner.get("etag")))
        else:
            raise DaprError("ERR_MALFORMED_REQUEST", f"operation type {fields.get('operation')!r} not supported")
    await save_transaction(binding, requests)
    return NO_CONTENT


# -- reminders and timers -------------------------------------------------------------------


def _schedule_body(request) -> dict:
    """``{dueTime, period, ttl, data, callback}``, names matched case-insensitively as Go does."""
    body = request.json() if request.body.strip() else {}
    if not isinstance(body, dict):
        raise DaprError("ERR_MALFORMED_REQUEST", "the body must be a JSON object")
    fields = {k.lower(): v for k, v in body.items()}
    for name in ("duetime", "period", "ttl", "callback"):
        if fields.get(name) is not None and not isinstance(fields[name], str):
            raise DaprError("ERR_MALFORMED_REQUEST", f"{name} must be a string")
    return fields


def schedule(actor_type: str, actor_id: str, name: str, due_time: str, period: str, ttl: str,
             data: bytes | None, kind: str) -> Reminder:
    """A reminder or timer from its textual times; ``data`` is its raw JSON (or None)."""
    try:
        return Reminder.create(actor_type, actor_id, name, due_time, period, ttl, data, kind=kind)
    except TimeSpecError as exc:
        code = "ERR_ACTOR_REMINDER_CREATE" if kind == "reminder" else "ERR_ACTOR_TIMER_CREATE"
        raise DaprError(code, f"error creating actor {kind}: {exc}") from None


def _schedule(actor_type: str, actor_id: str, name: str, fields: dict, kind: str) -> Reminder:
    data = orjson.dumps(fields["data"]) if fields.get("data") is not None else None
    return schedule(actor_type, actor_id, name, fields.get("duetime") or "", fields.get("period") or "",
                    fields.get("ttl") or "", data, kind)  # fmt: skip


async def check_reminder_host(sidecar, actor_type: str) -> None:
    """Reminders are kept only for actor types this app hosts (after the runtime is ready)."""
    await sidecar.actors.ready.wait()
    if not sidecar.actors.hosts(actor_type):
        raise DaprError("ERR_ACTOR_REMINDER_NON_HOSTED", f"operations on actor type {actor_type} are not supported "
                        "by this host: it hosts no such actor type")


async def add_reminder(sidecar, reminder: Reminder) -> None:
    try:
        await sidecar.actors.set_reminder(reminder)
    except OSError as exc:
        raise DaprError("ERR_ACTOR_REMINDER_CREATE", f"error creating actor reminder: {exc}") from None


async def create_reminder(sidecar, request):
    actor_type, actor_id = _actor(sidecar, request)
    await check_reminder_host(sidecar, actor_type)
    reminder = _schedule(actor_type, actor_id, request.params["name"], _schedule_body(request), "reminder")
    await add_reminder(sidecar, reminder)
    return NO_CONTENT


async def get_reminder(sidecar, request):
    actor_type, actor_id = _actor(sidecar, request)
    await sidecar.actors.ready.wait()
    reminder = sidecar.actors.reminders().get(reminder_key(actor_type, actor_id, request.params["name"]))
    if reminder is None:
        return Response.json({})
    out = {"actorID": actor_id, "actorType": actor_type, "name": reminder.name, "dueTime": reminder.due_time,
           "period": reminder.period}
    if reminder.data is not None:
        out["data"] = orjson.loads(reminder.data)
    if reminder.expires is not None:
        out["expirationTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(reminder.expires))
    return Response.json({k: v for k, v in out.items() if v not in ("", None)})


async def remove_reminder(sidecar, actor_type: str, actor_id: str, name: str) -> None:
    await sidecar.actors.ready.wait()
    try:
        await sidecar.actors.delete_reminder(reminder_key(actor_type, actor_id, name))
    except OSError as exc:
        raise DaprError("ERR_ACTOR_REMINDER_DELETE", f"error deleting actor reminder: {exc}") from None


async def delete_reminder(sidecar, request):
    actor_type, actor_id = _actor(sidecar, request)
    await remove_reminder(sidecar, actor_type, actor_id, request.params["name"])
    return NO_CONTENT


async def check_timer_host(sidecar, actor_type: str) -> None:
    """Timers run only for actor types this app hosts (after the runtime is ready)."""
    await sidecar.actors.ready.wait()
    if not sidecar.actors.hosts(actor_type):
        raise DaprError("ERR_ACTOR_TIMER_CREATE", f"error creating actor timer: actor type {actor_type} is not "
                        "hosted here")


async def create_timer(sidecar, request):
    actor_type, actor_id = _actor(sidecar, request)
    await check_timer_host(sidecar, actor_type)
    fields = _schedule_body(request)
    timer = _schedule(actor_type, actor_id, request.params["name"], fields, "timer")
    sidecar.actors.set_timer(timer, fields.get("callback") or "")
    return NO_CONTENT


async def delete_timer(sidecar, request):
    actor_type, actor_id = _actor(sidecar, request)
    sidecar.actors.delete_timer(actor_type, actor_id, request.params["name"])
    return NO_CONTENT


ENDPOINTS = (
    Endpoint(None, "/v1.0/actors/{actorType}/{actorId}/method/{method}", "InvokeActor", "actors", invoke_method),
    Endpoint(("GET",), "/v1.0/actors/{actorType}/{actorId}/state/{key}", "GetActorState", "actors", get_state),
    Endpoint(("POST", "PUT"), "/v1.0/actors/{actorType}/{actorId}/state", "ExecuteActorStateTransaction",
             "actors", transact_state),
    Endpoint(("POST", "PUT"), "/v1.0/actors/{actorType}/{actorId}/reminders/{name}", "RegisterActorReminder",
             "actors", create_reminder),
    Endpoint(("GET",), "/v1.0/actors/{actorType}/{actorId}/reminders/{name}", "GetActorReminder", "actors",
             get_reminder),
    Endpoint(("DELETE",), "/v1.0/actors/{actorType}/{actorId}/reminders/{name}", "UnregisterActorReminder",
             "actors", delete_reminder),
    Endpoint(("POST", "PUT"), "/v1.0/actors/{actorType}/{actorId}/timers/{name}", "RegisterActorTimer", "actors",
             create_timer),
    Endpoint(("DELETE",), "/v1.0/actors/{actorType}/{actorId}/timers/{name}", "UnregisterActorTimer", "actors",
             delete_timer),
)
