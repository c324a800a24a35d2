"""Configuration API: get, subscribe and unsubscribe, on ``/v1.0/`` and ``/v1.0-alpha1/``.

As daprd 1.16: a get answers the found items keyed by name (204 when none), a
subscribe answers ``{"id": ...}`` and the app then receives
``POST /configuration/{store}/{key}`` per changed key (``runtime/configuration.py``),
an unsubscribe answers ``{"ok": true}``, or 500 with ``{"ok": false, "message"}``
rather than Dapr's usual error body.
"""

from __future__ import annotations

from ..components.configuration import StoreError
from ..components.state import WouldBlock
from ..errors import DaprError
from ..runtime.configuration import update_handler
from ..server.http import Response
from . import Endpoint


def find_store(sidecar, name: str):
    """The configuration store called ``name``, or daprd's error for none / an unknown one."""
    stores = sidecar.configuration_stores
    if not stores:
        raise DaprError("ERR_CONFIGURATION_STORE_NOT_CONFIGURED", "configuration stores not configured")
    store = stores.get(name)
    if store is None:
        raise DaprError("ERR_CONFIGURATION_STORE_NOT_FOUND", f"configuration store {name} not found")
    return store


def _store(sidecar, request):
    name = request.params["storeName"]
    return name, find_store(sidecar, name)


def _keys(request) -> list[str]:
    return [value for name, value in request.query_params() if name == "key"]


def get_configuration(sidecar, request):
    name, store = _store(sidecar, request)
    keys = _keys(request)
    if store.reads_without_waiting:
        # The hot path, as a state get: answered in this call, no coroutine, no task.
        try:
            body = store.get_json_now(keys)
            return Response(200, body, [(b"Content-Type", b"application/json")]) if body else Response(204)
        except WouldBlock:
            pass
        except StoreError as exc:
            raise _get_error(name, keys, exc) from None
    return _get_later(name, store, keys)


async def _get_later(name: str, store, keys: list[str]):
    return _items_response(await get_items(name, store, keys))


async def get_items(name: str, store, keys: list[str]) -> dict:
    """The found items among ``keys`` (all when empty), by key."""
    try:
        return await store.get(keys)
    except StoreError as exc:
        raise _get_error(name, keys, exc) from None


def _get_error(name: str, keys: list[str], exc: Exception) -> DaprError:
    return DaprError("ERR_CONFIGURATION_GET", f"failed to get {keys} from Configuration store {name}: {exc}")


def _items_response(items) -> Response:
    if not items:
        return Response(204)
    return Response.json({key: item.to_json() for key, item in items.items()})


async def subscribe_configuration(sidecar, request):
    if sidecar.app is None:
        raise DaprError("ERR_APP_CHANNEL_NIL", "app channel is not initialized: configuration updates "
                        "need an app port (--app-port)")
    name, store = _store(sidecar, request)
    subscription_id = await subscribe(name, store, _keys(request), update_handler(sidecar, name))
    return Response.json({"id": subscription_id})


async def subscribe(name: str, store, keys: list[str], handler) -> str:
    """Subscribe ``handler`` (an ``UpdateHandler``) to changes of ``keys``; the subscription id."""
    try:
        return await store.subscribe(keys, handler)
    except StoreError as exc:
        raise DaprError("ERR_CONFIGURATION_SUBSCRIBE",
                        f"failed to subscribe {keys} from Configuration store {name}: {exc}") from None


async def unsubscribe_configuration(sidecar, request):
    name, store = _store(sidecar, request)
    subscription_id = request.params["configurationSubscribeID"]
    if not await store.unsubscribe(subscription_id):
        return Response.json({"ok": False, "message": f"failed to unsubscribe subscription {subscription_id} "
                              f"from Configuration store {name}: subscription does not exist"}, status=500)
    return Response.json({"ok": True})


ENDPOINTS = tuple(
    endpoint
    for version in ("v1.0", "v1.0-alpha1")
    for endpoint in (
        Endpoint(("GET",), f"/{version}/configuration/{{storeName}}", "GetConfiguration", "configuration",
                 get_configuration),
        Endpoint(("GET",), f"/{version}/configuration/{{storeName}}/subscribe", "SubscribeConfiguration",
                 "configuration", subscribe_configuration),
        Endpoint(("GET",), f"/{version}/configuration/{{storeName}}/{{configurationSubscribeID}}/unsubscribe",
                 "UnsubscribeConfiguration", "configuration", unsubscribe_configuration),
    )
)
