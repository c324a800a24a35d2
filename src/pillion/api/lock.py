"""Distributed lock API (alpha): ``/v1.0-alpha1/lock/{store}`` and ``/unlock/{store}``.

Dapr serves these through its universal (protobuf) handlers: bodies are decoded
with protojson (lowerCamel or proto field names, unknown fields ignored, an empty
body is an empty request), the checks run in Dapr's order, and the answers always
carry their field (``{"success": false}``, ``{"status": 0}``). The runtime, not the
store, applies ``keyPrefix`` (``pkg/components/lock/lock_config.go``).
"""

from __future__ import annotations

from ..components.lock import StoreError
from ..errors import DaprError
from ..server.http import Response
from . import Endpoint

_INT32_MAX = 2**31 - 1
_SEPARATOR = "||"


class LockStoreBinding:
    """A configured lock store as the API sees it: the store and its key prefix."""

    __slots__ = ("name", "prefix", "store")

    def __init__(self, name: str, store, prefix: str):
        self.name = name
        self.store = store
        self.prefix = prefix

    def key(self, resource_id: str) -> str:
        """The stored key; ValueError (Dapr's text) when the id contains ``||``."""
        if _SEPARATOR in resource_id:
            raise ValueError(f"input key/keyPrefix '{resource_id}' can't contain '{_SEPARATOR}'")
        return self.prefix + resource_id


def lock_key_prefix(strategy: str | None, *, app_id: str, store: str) -> str:
    """Dapr's lock keyPrefix: ``lock||`` then appid (default), name, none, or the lower-cased literal."""
    choice = (strategy or "").lower() or "appid"
    if choice == "none" or (choice == "appid" and not app_id):
        return f"lock{_SEPARATOR}"
    if choice == "appid":
        return f"lock{_SEPARATOR}{app_id}{_SEPARATOR}"
    if choice == "name":
        return f"lock{_SEPARATOR}{store}{_SEPARATOR}"
    return f"lock{_SEPARATOR}{choice}{_SEPARATOR}"


def _body(request) -> dict:
    """The request object, as protojson would accept it."""
    if not request.body:
        return {}
    value = request.json()
    if not isinstance(value, dict):
        raise DaprError("ERR_MALFORMED_REQUEST", "failed deserializing HTTP body: expected a JSON object")
    return value


def _field(body: dict, camel: str, snake: str):
    return body[camel] if body.get(camel) is not None else body.get(snake)


def _string(body: dict, camel: str, snake: str) -> str:
    value = _field(body, camel, snake)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DaprError("ERR_MALFORMED_REQUEST", f"failed deserializing HTTP body: {camel} must be a string")
    return value


def _int32(body: dict, camel: str, snake: str) -> int:
    value = _field(body, camel, snake)
    if value is None:
        return 0
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    if number is None or not -_INT32_MAX - 1 <= number <= _INT32_MAX:
        raise DaprError("ERR_MALFORMED_REQUEST", f"failed deserializing HTTP body: {camel} must be an int32")
    return number


def _binding(sidecar, name: str, resource_id: str, owner: str) -> LockStoreBinding:
    """Dapr's ``lockValidateRequest``: configured, resourceId, lockOwner, then the store."""
    stores = sidecar.lock_stores
    if not stores:
        raise DaprError("ERR_LOCK_STORE_NOT_CONFIGURED", "lock store is not configured")
    if not resource_id:
        raise DaprError("ERR_MALFORMED_REQUEST", f"ResourceId is empty in lock store {name}")
    if not owner:
        raise DaprError("ERR_MALFORMED_REQUEST", f"LockOwner is empty in lock store {name}")
    binding = stores.get(name)
    if binding is None:
        raise DaprError("ERR_LOCK_STORE_NOT_FOUND", f"lock store {name} not found")
    return binding


async def acquire(sidecar, name: str, resource_id: str, owner: str, expiry: int) -> bool:
    """TryLock on store ``name``, with Dapr's checks in Dapr's order; both fronts call this."""
    if expiry <= 0:  # Dapr checks this before anything else, even the store
        raise DaprError("ERR_MALFORMED_REQUEST", f"ExpiryInSeconds is not positive in lock store {name}")
    binding = _binding(sidecar, name, resource_id, owner)
    try:
        return bool(await binding.store.try_lock(binding.key(resource_id), owner, expiry))
    except (ValueError, StoreError) as exc:
        raise DaprError("ERR_TRY_LOCK", f"failed to try acquiring lock: {exc}") from None


async def release(sidecar, name: str, resource_id: str, owner: str) -> int:
    """Unlock on store ``name``: the status number of Dapr's ``UnlockResponse.Status``."""
    binding = _binding(sidecar, name, resource_id, owner)
    try:
        return int(await binding.store.unlock(binding.key(resource_id), owner))
    except (ValueError, StoreError) as exc:
        raise DaprError("ERR_UNLOCK", f"failed to release lock: {exc}") from None


async def try_lock(sidecar, request):
    body = _body(request)
    resource_id = _string(body, "resourceId", "resource_id")
    owner = _string(body, "lockOwner", "lock_owner")
    expiry = _int32(body, "expiryInSeconds", "expiry_in_seconds")
    success = await acquire(sidecar, request.params["storeName"], resource_id, owner, expiry)
    return Response.json({"success": success})


async def unlock(sidecar, request):
    body = _body(request)
    resource_id = _string(body, "resourceId", "resource_id")
    owner = _string(body, "lockOwner", "lock_owner")
    return Response.json({"status": await release(sidecar, request.params["storeName"], resource_id, owner)})


ENDPOINTS = (
    Endpoint(("POST",), "/v1.0-alpha1/lock/{storeName}", "TryLock", "lock", try_lock),
    Endpoint(("POST",), "/v1.0-alpha1/unlock/{storeName}", "Unlock", "unlock", unlock),
)
