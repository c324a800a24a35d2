"""Publish API: ``/v1.0/publish/{pubsub}/{topic...}`` and the alpha bulk publish.

Builds the CloudEvent (``pillion.cloudevents``) unless ``metadata.rawPayload`` is
true, checks the component's topic scopes, and answers 204 only once the component
reports the message taken: persisted by the embedded broker, or acknowledged by an
external one.
"""

from __future__ import annotations

import asyncio
import base64
import time

import orjson

from .. import cloudevents
from ..components.pubsub import PublishError, parse_bool
from ..errors import DaprError
from ..server.http import NO_CONTENT, Response
from . import Endpoint

_CLOUDEVENTS = "application/cloudevents+json"


def _binding(sidecar, request):
    return lookup(sidecar, request.params.get("pubsubname", ""), request.params.get("topic", ""))


def lookup(sidecar, name: str, topic: str, publishing: bool = True):
    """The binding and topic a publish (or a subscription) names, checked as daprd checks them."""
    if not sidecar.pubsubs:
        raise DaprError("ERR_PUBSUB_NOT_CONFIGURED", "no pubsub is configured")
    if not name:
        raise DaprError("ERR_PUBSUB_EMPTY", "pubsub name is empty")
    binding = sidecar.pubsubs.get(name)
    if binding is None:
        raise DaprError("ERR_PUBSUB_NOT_FOUND", f"pubsub {name} not found")
    if not topic:
        raise DaprError("ERR_TOPIC_NAME_EMPTY", f"topic is empty in pubsub {name}")
    allowed = binding.may_publish if publishing else binding.may_subscribe
    if not allowed(sidecar.app_id, topic):
        raise DaprError("ERR_PUBSUB_FORBIDDEN", f"topic {topic} is not allowed for app id {sidecar.app_id}")
    return binding, topic


def _raw_payload(metadata: dict[str, str]) -> bool:
    value = metadata.get("rawPayload")
    if value is None or value == "":
        return False
    raw = parse_bool(value)
    if raw is None:
        raise DaprError("ERR_PUBSUB_REQUEST_METADATA", f"rawPayload value must be a boolean, got {value!r}")
    return raw


def _ttl(metadata: dict[str, str]) -> int | None:
    text = metadata.get("ttlInSeconds")
    if not text:
        return None
    try:
        ttl = int(text)
    except ValueError:
        ttl = -1
    if ttl < 0:
        raise DaprError("ERR_PUBSUB_REQUEST_METADATA", f"ttlInSeconds must be a non-negative integer, got {text!r}")
    return ttl


def envelope(sidecar, binding, topic: str, body: bytes, content_type: str | None, metadata: dict[str, str],
             traceparent: str = "", tracestate: str = "") -> bytes:
    """The message bytes: ``body`` itself when raw, else the CloudEvent Dapr would build."""
    if _raw_payload(metadata):
        return body
    now = time.time()
    fields = {
        "id": metadata.get("cloudevent.id") or cloudevents.new_id(),
        "source": metadata.get("cloudevent.source") or sidecar.app_id,
        "type": metadata.get("cloudevent.type") or "com.dapr.event.sent",
        "topic": topic,
        "pubsubname": binding.name,
        "traceparent": metadata.get("cloudevent.traceparent") or metadata.get("cloudevent.traceid") or traceparent,
        "tracestate": metadata.get("cloudevent.tracestate") or tracestate,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
    }
    ttl = _ttl(metadata)
    if ttl is not None and "MESSAGE_TTL" not in binding.component.features:
        fields["expiration"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + ttl))
    try:
        if content_type and content_type.split(";", 1)[0].strip().lower() == _CLOUDEVENTS:
            return cloudevents.wrap(body, **fields)
        return cloudevents.envelope(body, content_type, **fields)
    except cloudevents.EnvelopeError as exc:
        raise DaprError("ERR_PUBSUB_CLOUD_EVENTS_SER", f"error when unmarshalling the request body: {exc}") from None


def _header(request, name: bytes) -> str:
    value = request.header(name)
    return value.decode("latin-1") if value else ""


def component_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """What goes to the component: everything but the envelope overrides."""
    return {k: v for k, v in metadata.items() if not k.startswith("cloudevent.") and k != "rawPayload"}


async def publish(sidecar, request):
    binding, topic = _binding(sidecar, request)
    metadata = request.metadata()
    content_type = _header(request, b"content-type") or None
    data = envelope(sidecar, binding, topic, request.body, content_type, metadata,
                    _header(request, b"traceparent"), _header(request, b"tracestate"))
    await send(binding, topic, data, metadata)
    return NO_CONTENT


async def send(binding, topic: str, data: bytes, metadata: dict[str, str]) -> None:
    """Hand one message to the component; its refusal is ERR_PUBSUB_PUBLISH_MESSAGE."""
    try:
        await binding.component.publish(topic, data, component_metadata(metadata))
    except PublishError as exc:
        raise DaprError("ERR_PUBSUB_PUBLISH_MESSAGE",
                        f"error when publish to topic {topic} in pubsub {binding.name}: {exc}") from None


# -- bulk publish (alpha) -----------------------------------------------------------------


_ENTRY_FIELDS = {"entryid": "entryId", "event": "event", "contenttype": "contentType", "metadata": "metadata"}


def _entry_fields(entry: dict) -> dict:
    """An entry's fields matched as daprd's Go JSON decoding matches them: case-insensitively.

    The Dapr JS SDK sends ``entryID``, which daprd accepts; as in Go, a later key wins.
    """
    fields = {}
    for key, value in entry.items():
        name = _ENTRY_FIELDS.get(key.lower())
        if name is not None:
            fields[name] = value
    return fields


def _entry_body(entry: dict, index: int) -> tuple[bytes, str]:
    """An entry's event as bytes, by its content type, as Dapr checks them."""
    content_type = entry.get("contentType") or ""
    event = entry.get("event")
    base = content_type.split(";", 1)[0].strip().lower()
    if base == "application/octet-stream":
        if not isinstance(event, str):
            raise DaprError("ERR_PUBSUB_EVENTS_SER", f"entry {index}: an octet-stream event must be a base64 string")
        try:
            return base64.b64decode(event, validate=True), content_type
        except ValueError:
            raise DaprError("ERR_PUBSUB_EVENTS_SER", f"entry {index}: event is not valid base64") from None
    if base.startswith("text/") or base == "application/xml":
        if not isinstance(event, str):
            raise DaprError("ERR_PUBSUB_EVENTS_SER", f"entry {index}: a {base} event must be a string")
        return event.encode(), content_type
    if base and base != _CLOUDEVENTS and not (base == "application/json" or base.endswith("+json")):
        raise DaprError("ERR_PUBSUB_EVENTS_SER", f"entry {index}: unsupported contentType {content_type!r}")
    return orjson.dumps(event), content_type or "application/json"


async def bulk_publish(sidecar, request):
    binding, topic = _binding(sidecar, request)
    entries = request.json()
    if not isinstance(entries, list):
        raise DaprError("ERR_PUBSUB_EVENTS_SER", "the body must be a JSON array of entries")
    query = request.metadata()
    trace = _header(request, b"traceparent"), _header(request, b"tracestate")
    seen: set[str] = set()
    prepared = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DaprError("ERR_PUBSUB_EVENTS_SER", f"entry {index} is not an object")
        entry = _entry_fields(entry)
        entry_id = check_entry_id(entry.get("entryId"), index, seen)
        entry_metadata = entry.get("metadata") or {}
        if not isinstance(entry_metadata, dict):
            raise DaprError("ERR_PUBSUB_EVENTS_SER", f"entry {entry_id}: metadata must be an object")
        metadata = {**query, **{str(k): str(v) for k, v in entry_metadata.items()}}
        body, content_type = _entry_body(entry, index)
        prepared.append(bulk_entry(sidecar, binding, topic, entry_id, body, content_type, metadata, *trace))
    failed = await bulk_send(binding, topic, prepared)
    if not failed:
        return NO_CONTENT
    body = orjson.dumps({"failedEntries": [{"entryId": entry_id, "error": error} for entry_id, error in failed],
                         "errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE"})
    return Response(500, body, [(b"Content-Type", b"application/json")])


def check_entry_id(entry_id, index: int, seen: set[str]) -> str:
    """A bulk entry's id: present and not used by an earlier entry of the request."""
    if not isinstance(entry_id, str) or not entry_id:
        raise DaprError("ERR_PUBSUB_EVENTS_SER", f"entry {index}: entryId is missing")
    if entry_id in seen:
        raise DaprError("ERR_PUBSUB_EVENTS_SER", f"entryId {entry_id} is duplicated")
    seen.add(entry_id)
    return entry_id


def bulk_entry(sidecar, binding, topic: str, entry_id: str, body: bytes, content_type: str | None,
               metadata: dict[str, str], traceparent: str = "", tracestate: str = "") -> tuple:
    """One checked bulk entry, ready for ``bulk_send``: (entry id, message bytes, component metadata)."""
    data = envelope(sidecar, binding, topic, body, content_type, metadata, traceparent, tracestate)
    return entry_id, data, component_metadata(metadata)


async def bulk_send(binding, topic: str, prepared: list[tuple]) -> list[tuple[str, str]]:
    """Publish every entry at once; the (entry id, error) of those the component refused."""
    results = await asyncio.gather(*(binding.component.publish(topic, data, metadata)
                                     for _, data, metadata in prepared), return_exceptions=True)  # fmt: skip
    return [(entry_id, str(result))
            for (entry_id, _, _), result in zip(prepared, results) if isinstance(result, BaseException)]


ENDPOINTS = (
    Endpoint(("POST", "PUT"), "/v1.0/publish/{pubsubname}/{topic...}", "PublishEvent", "publish", publish),
    Endpoint(("POST", "PUT"), "/v1.0/publish/{pubsubname}", "PublishEvent", "publish", publish),
    Endpoint(("POST", "PUT"), "/v1.0-alpha1/publish/bulk/{pubsubname}/{topic...}", "BulkPublishEvent", "publish",
             bulk_publish),
)
