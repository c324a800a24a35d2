"""State API: ``/v1.0/state/{store}`` save, get, delete, bulk get, transactions.

Parses Dapr's bodies (field names matched case-insensitively, as Go's encoding/json
does), applies the store's ``keyPrefix``, calls the store through the StateStore
interface and shapes Dapr's answers. Stores never see unprefixed keys.

The building-block steps (store lookup, write options, TTL, store calls and the errors
they raise) are the plain functions without a leading underscore; the gRPC front
(``grpcapi/state.py``) calls the same ones with the values from its protobuf messages.
"""

from __future__ import annotations

import time

import orjson

from ..components.state import DeleteRequest, ETagError, Feature, Item, SetRequest, StoreError, WouldBlock
from ..components.state.query import QueryError, parse_query
from ..errors import DaprError
from ..server.http import NO_CONTENT, Response
from . import Endpoint

_JSON = b"application/json"


class StateStoreBinding:
    """A configured store as the API sees it: the store and its key prefix."""

    __slots__ = ("name", "store", "prefix")

    def __init__(self, name: str, store, prefix: str):
        self.name = name
        self.store = store
        self.prefix = prefix

    def key(self, key) -> str:
        if not isinstance(key, str) or not key:
            raise DaprError("ERR_MALFORMED_REQUEST", '"key" is a required field')
        if "||" in key:
            raise DaprError("ERR_MALFORMED_REQUEST", f"input key/keyPrefix '{key}' can't contain '||'")
        return self.prefix + key


def key_prefix(strategy: str | None, *, app_id: str, store: str, namespace: str | None) -> str:
    """Dapr's keyPrefix: appid (default), name, namespace, none, or a literal."""
    choice = (strategy or "appid").strip()
    lowered = choice.lower()
    if lowered == "appid":
        return f"{app_id}||" if app_id else ""
    if lowered == "name":
        return f"{store}||"
    if lowered == "namespace":
        if namespace:
            return f"{namespace}.{app_id}||"
        return f"{app_id}||" if app_id else ""
    if lowered == "none":
        return ""
    return f"{choice}||"


def store_binding(sidecar, name: str) -> StateStoreBinding:
    """The configured store called ``name``, or Dapr's not-configured / not-found error."""
    stores = sidecar.state_stores
    if not stores:
        raise DaprError("ERR_STATE_STORE_NOT_CONFIGURED", "state store is not configured")
    binding = stores.get(name)
    if binding is None:
        raise DaprError("ERR_STATE_STORE_NOT_FOUND", f"state store {name} is not found")
    return binding


def _binding(sidecar, request) -> StateStoreBinding:
    return store_binding(sidecar, request.params["storeName"])


def _fields(value, what: str) -> dict:
    """A JSON object with lower-cased field names (Go decodes JSON case-insensitively)."""
    if not isinstance(value, dict):
        raise DaprError("ERR_MALFORMED_REQUEST", f"{what} must be a JSON object")
    return {k.lower(): v for k, v in value.items()}


def _metadata(value, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise DaprError("ERR_MALFORMED_REQUEST", f"{what} must be an object of strings")
    return value


def _ttl(metadata: dict[str, str]) -> int | None:
    text = metadata.get("ttlInSeconds")
    if text is None or text == "":
        return None
    try:
        ttl = int(text)
    except ValueError:
        ttl = -2
    if ttl < -1 or ttl == 0:
        raise DaprError("ERR_MALFORMED_REQUEST", f"ttlInSeconds must be a positive integer or -1, got {text!r}")
    return ttl


def _etag(value) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise DaprError("ERR_MALFORMED_REQUEST", "etag must be a string")
    return value


def _first_write(options) -> bool:
    if options is None:
        return False
    options = _fields(options, "options")
    return first_write(options.get("concurrency"), options.get("consistency"))


def first_write(concurrency: str | None, consistency: str | None) -> bool:
    """Validate Dapr's write options (empty: last-write, eventual); True for first-write."""
    concurrency = concurrency or "last-write"
    consistency = consistency or "eventual"
    if concurrency not in ("first-write", "last-write"):
        raise DaprError("ERR_MALFORMED_REQUEST", f"invalid concurrency {concurrency!r}: first-write or last-write")
    if consistency not in ("strong", "eventual"):
        raise DaprError("ERR_MALFORMED_REQUEST", f"invalid consistency {consistency!r}: strong or eventual")
    return concurrency == "first-write"


def _set_request(binding: StateStoreBinding, item, query_metadata: dict[str, str]) -> SetRequest:
    fields = _fields(item, "each state item")
    metadata = {**_metadata(fields.get("metadata"), "metadata"), **query_metadata}
    return set_request(binding.key(fields.get("key")), orjson.dumps(fields.get("value")),
                       _etag(fields.get("etag")), _first_write(fields.get("options")), metadata,
                       fields.get("contenttype"))


def set_request(key: str, value: bytes, etag: str | None, first: bool, metadata: dict[str, str],
                content_type: str | None = None) -> SetRequest:
    """An upsert of the stored ``key`` (prefixed already); TTL and content type from ``metadata``."""
    return SetRequest(
        key=key,
        value=value,
        etag=etag,
        first_write=first,
        ttl_seconds=_ttl(metadata),
        content_type=content_type or metadata.get("contentType"),
    )


def _delete_request(binding: StateStoreBinding, item) -> DeleteRequest:
    fields = _fields(item, "each delete request")
    return DeleteRequest(
        key=binding.key(fields.get("key")),
        etag=_etag(fields.get("etag")),
        first_write=_first_write(fields.get("options")),
    )


def _write_error(code: str, exc: Exception, message: str) -> DaprError:
    if isinstance(exc, ETagError):
        status = 409 if exc.kind == "mismatch" else 400
        return DaprError(code, f"{message}: {exc}", status)
    return DaprError(code, f"{message}: {exc}")


async def save_state(sidecar, request):
    binding = _binding(sidecar, request)
    items = request.json()
    if not isinstance(items, list):
        raise DaprError("ERR_MALFORMED_REQUEST", "the body must be a JSON array of state items")
    query = request.metadata()
    requests = [_set_request(binding, item, query) for item in items]
    if not requests:
        return NO_CONTENT
    await save(binding, requests)
    return NO_CONTENT


async def save(binding: StateStoreBinding, requests: list[SetRequest]) -> None:
    """Upsert all; an ETag failure is 409 (mismatch) or 400 (invalid) ``ERR_STATE_SAVE``."""
    try:
        await binding.store.set(requests)
    except (ETagError, StoreError) as exc:
        raise _write_error("ERR_STATE_SAVE", exc, f"failed saving state in state store {binding.name}") from None


def expire_text(expire_time: float) -> str:
    """``metadata.ttlExpireTime``'s value: RFC 3339 in UTC, as daprd formats it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expire_time))


def _expire_header(expire_time: float | None) -> list[tuple[bytes, bytes]]:
    if not expire_time:
        return []
    return [(b"metadata.ttlExpireTime", expire_text(expire_time).encode())]


def get_state(sidecar, request):
    binding = _binding(sidecar, request)
    key = binding.key(request.params["key"])
    if binding.store.reads_without_waiting:
        # The hot path: answered in this call, no coroutine, no task.
        try:
            return _get_response(binding.store.get_now(key))
        except WouldBlock:
            pass
        except StoreError as exc:
            raise get_error(binding, request.params["key"], exc) from None
    return _get_later(binding, request, key)


async def _get_later(binding: StateStoreBinding, request, key: str):
    try:  # ``read`` inlined: one coroutine less on the HTTP GET path
        return _get_response(await binding.store.get(key))
    except StoreError as exc:
        raise get_error(binding, request.params["key"], exc) from None


def read_now(binding: StateStoreBinding, key: str, full: str) -> Item | None:
    """The item of stored key ``full`` without waiting, or WouldBlock (the GET hot path)."""
    try:
        return binding.store.get_now(full)
    except StoreError as exc:
        raise get_error(binding, key, exc) from None


async def read(binding: StateStoreBinding, key: str, full: str) -> Item | None:
    """The item of stored key ``full`` (``key`` before the prefix), None when missing."""
    try:
        return await binding.store.get(full)
    except StoreError as exc:
        raise get_error(binding, key, exc) from None


def get_error(binding: StateStoreBinding, key: str, exc: StoreError) -> DaprError:
    return DaprError("ERR_STATE_GET", f"fail to get {key} from state store {binding.name}: {exc}")


def _get_response(item) -> Response:
    if item is None:
        return NO_CONTENT
    headers = [(b"Content-Type", item.content_type.encode() if item.content_type else _JSON)]
    if item.etag is not None:
        headers.append((b"ETag", item.etag.encode()))
    headers += _expire_header(item.expire_time)
    return Response(200, item.value, headers)


async def delete_state(sidecar, request):
    binding = _binding(sidecar, request)
    key = binding.key(request.params["key"])
    if_match = request.header(b"if-match")
    concurrency = None
    for name, value in request.query_params():
        if name == "concurrency":
            concurrency = value
    first = _first_write({"concurrency": concurrency} if concurrency else None)
    etag = if_match.decode("latin-1") if if_match else None
    await delete(binding, request.params["key"], DeleteRequest(key, etag, first))
    return NO_CONTENT


async def delete(binding: StateStoreBinding, key: str, request: DeleteRequest) -> None:
    """Delete one key (``key`` as the client named it, for the message); ETag errors as ``save``'s."""
    try:
        await binding.store.delete([request])
    except (ETagError, StoreError) as exc:
        raise _write_error("ERR_STATE_DELETE", exc, f"failed deleting state with key {key}") from None


async def delete_bulk(binding: StateStoreBinding, requests: list[DeleteRequest]) -> None:
    """Delete several keys at once (gRPC's DeleteBulkState; HTTP has no bulk delete)."""
    if not requests:
        return
    try:
        await binding.store.delete(requests)
    except (ETagError, StoreError) as exc:
        raise _write_error("ERR_STATE_DELETE", exc, f"failed deleting state in state store {binding.name}") from None


def _json_data(value: bytes) -> bytes:
    """A stored value for a JSON answer: spliced in when it is JSON text (the HTTP API
    stores JSON), as a JSON string when it is not (bytes saved over gRPC, for one)."""
    if not value:
        return b'""'
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return orjson.dumps(value.decode("utf-8", "replace"))
    return value


async def bulk_get_state(sidecar, request):
    binding = _binding(sidecar, request)
    body = _fields(request.json(), "the body")
    keys = body.get("keys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise DaprError("ERR_MALFORMED_REQUEST", '"keys" must be an array of strings')
    items = await bulk_get(binding, [binding.key(k) for k in keys])
    parts = []
    for key, item in zip(keys, items):
        entry = b'{"key":' + orjson.dumps(key)
        if item is not None:
            entry += b',"data":' + _json_data(item.value)
            if item.etag is not None:
                entry += b',"etag":' + orjson.dumps(item.etag)
        parts.append(entry + b"}")
    return Response(200, b"[" + b",".join(parts) + b"]", [(b"Content-Type", _JSON)])


async def bulk_get(binding: StateStoreBinding, full: list[str]) -> list[Item | None]:
    """Items of the stored keys ``full``, in order (None where missing)."""
    try:
        return await binding.store.bulk_get(full)
    except StoreError as exc:
        raise DaprError("ERR_STATE_BULK_GET", f"failed getting state in bulk from {binding.name}: {exc}") from None


async def transaction(sidecar, request):
    binding = _binding(sidecar, request)
    check_transactional(binding)
    body = _fields(request.json(), "the body")
    query = {**_metadata(body.get("metadata"), "metadata"), **request.metadata()}
    operations = body.get("operations") or []
    if not isinstance(operations, list):
        raise DaprError("ERR_MALFORMED_REQUEST", '"operations" must be an array')
    check_transaction_size(binding, len(operations))
    ops = []
    for op in operations:
        fields = _fields(op, "each operation")
        kind = fields.get("operation")
        if kind == "upsert":
            ops.append(_set_request(binding, fields.get("request"), query))
        elif kind == "delete":
            ops.append(_delete_request(binding, fields.get("request")))
        else:
            raise unsupported_operation(kind)
    await transact(binding, ops)
    return NO_CONTENT


def check_transactional(binding: StateStoreBinding) -> None:
    if Feature.TRANSACTIONAL not in binding.store.features():
        raise DaprError("ERR_STATE_STORE_NOT_SUPPORTED", f"state store {binding.name} doesn't support transactions")


def check_transaction_size(binding: StateStoreBinding, count: int) -> None:
    """Dapr's MultiMaxSize check: more operations than the store takes in one transaction."""
    limit = binding.store.max_transaction_operations
    if limit and count > limit:
        raise DaprError(
            "ERR_STATE_STORE_TOO_MANY_TRANSACTIONS",
            f"the transaction contains {count} operations, "
            f"which is more than what the state store {binding.name} supports: {limit}",
        )


def unsupported_operation(kind) -> DaprError:
    return DaprError("ERR_NOT_SUPPORTED_STATE_OPERATION", f"operation type {kind} not supported")


async def transact(binding: StateStoreBinding, ops: list[SetRequest | DeleteRequest]) -> None:
    """Apply all or nothing; any failure, ETag ones included, is ``ERR_STATE_TRANSACTION``."""
    if not ops:
        return
    try:
        await binding.store.transact(ops)
    except (ETagError, StoreError) as exc:
        raise DaprError("ERR_STATE_TRANSACTION", f"error while executing state transaction: {exc}") from None


async def query_state(sidecar, request):
    """Dapr's alpha query API over a store with QUERY_API; see ``components/state/query.py``."""
    binding = _binding(sidecar, request)
    check_queryable(binding)
    body = request.json()
    if not isinstance(body, dict):
        raise DaprError("ERR_MALFORMED_REQUEST", "the body must be a JSON object")
    results, token = await query(binding, body)
    if not results:
        return NO_CONTENT
    parts = []
    for key, value, etag in results:
        entry = b'{"key":' + orjson.dumps(key) + b',"data":' + _json_data(value)
        if etag is not None:
            entry += b',"etag":' + orjson.dumps(etag)
        parts.append(entry + b"}")
    out = b'{"results":[' + b",".join(parts) + b"]"
    if token is not None:
        out += b',"token":' + orjson.dumps(token)
    return Response(200, out + b"}", [(b"Content-Type", _JSON)])


def check_queryable(binding: StateStoreBinding) -> None:
    if Feature.QUERY_API not in binding.store.features():
        raise DaprError("ERR_STATE_STORE_NOT_SUPPORTED", f"state store {binding.name} doesn't support the query API")


async def query(binding: StateStoreBinding, body: dict) -> tuple[list[tuple[str, bytes, str | None]], str | None]:
    """Run a decoded query object: ``([(key, value bytes, etag)], next page token)``."""
    try:
        return await binding.store.query(binding.prefix, parse_query(body))
    except (QueryError, StoreError) as exc:
        raise query_error(binding, exc) from None


def query_error(binding: StateStoreBinding, exc) -> DaprError:
    return DaprError("ERR_STATE_QUERY", f"failed query in state store {binding.name}: {exc}")


ENDPOINTS = (
    Endpoint(("POST", "PUT"), "/v1.0/state/{storeName}", "SaveState", "state", save_state),
    Endpoint(("GET",), "/v1.0/state/{storeName}/{key}", "GetState", "state", get_state),
    Endpoint(("DELETE",), "/v1.0/state/{storeName}/{key}", "DeleteState", "state", delete_state),
    Endpoint(("POST", "PUT"), "/v1.0/state/{storeName}/bulk", "GetBulkState", "state", bulk_get_state),
    Endpoint(("POST", "PUT"), "/v1.0/state/{storeName}/transaction", "ExecuteStateTransaction", "state", transaction),
    Endpoint(("POST", "PUT"), "/v1.0-alpha1/state/{storeName}/query", "QueryState", "state", query_state),
)
