"""Secrets API: ``GET /v1.0/secrets/{store}/{key}`` and ``/v1.0/secrets/{store}/bulk``.

Codes and messages follow daprd (``pkg/api/universal/secrets.go``): an unknown
store is 401, as daprd's code has it (its docs say 400); a secret the scopes deny
is 403 on a get and silently left out of bulk; a missing secret is ERR_SECRET_GET
(500), as daprd's local file store reports it.
"""

from __future__ import annotations

import json

from ..components.secretstores import SecretStoreError
from ..errors import DaprError
from ..server.http import Response
from . import Endpoint


def _store(sidecar, name: str):
    stores = sidecar.secret_stores
    if not stores:
        raise DaprError("ERR_SECRET_STORES_NOT_CONFIGURED", "secret store is not configured")
    store = stores.get(name)
    if store is None:
        raise DaprError("ERR_SECRET_STORE_NOT_FOUND", f"failed finding secret store with key {name}")
    return store


def read_secret(sidecar, name: str, key: str, metadata: dict[str, str]) -> dict:
    """The secret ``key`` of store ``name`` (its key -> value map); both fronts call this."""
    store = _store(sidecar, name)
    if not sidecar.secret_scopes.allows(name, key):
        raise DaprError("ERR_PERMISSION_DENIED", f"access denied by policy to get {_quote(key)} from {_quote(name)}")
    failed = f"failed getting secret with key {key} from secret store {name}"
    try:
        data = store.get(key, metadata)
    except SecretStoreError as exc:
        raise DaprError("ERR_SECRET_GET", f"{failed}: {exc}") from None
    if data is None:
        raise DaprError("ERR_SECRET_GET", f"{failed}: secret {key} not found")
    return data


def read_bulk(sidecar, name: str, metadata: dict[str, str]) -> dict:
    """Every secret of store ``name`` the scopes allow: secret name -> its key -> value map."""
    store = _store(sidecar, name)
    try:
        data = store.bulk(metadata)
    except SecretStoreError as exc:
        raise DaprError("ERR_SECRET_GET", f"failed getting secrets from secret store {name}: {exc}") from None
    scopes = sidecar.secret_scopes
    return {key: secret for key, secret in data.items() if scopes.allows(name, key)}


def _quote(text: str) -> str:
    """Go's %q, as daprd's message has it, for the names a client sends."""
    return json.dumps(text, ensure_ascii=False)


def get_secret(sidecar, request):
    params = request.params
    return Response.json(read_secret(sidecar, params["secretStoreName"], params["key"], request.metadata()))


def get_bulk_secret(sidecar, request):
    return Response.json(read_bulk(sidecar, request.params["secretStoreName"], request.metadata()))


ENDPOINTS = (
    Endpoint(("GET",), "/v1.0/secrets/{secretStoreName}/bulk", "GetBulkSecret", "secrets", get_bulk_secret),
    Endpoint(("GET",), "/v1.0/secrets/{secretStoreName}/{key}", "GetSecret", "secrets", get_secret),
)
