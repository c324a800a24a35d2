"""A CloudEvent as daprd gives it to gRPC subscribers, for ``OnTopicEvent`` (gRPC apps) and
streaming subscriptions alike. No grpcio here: the gRPC front does not need it."""

from __future__ import annotations

import base64
import logging

import orjson
from dapr.proto.runtime.v1 import appcallback_pb2
from google.protobuf import struct_pb2

log = logging.getLogger("pillion.grpcapi")

_EXTENSION_SKIP = frozenset(("id", "source", "datacontenttype", "type", "specversion", "data", "data_base64"))


def topic_event_request(event: dict, pubsub: str, topic: str, path: str) -> appcallback_pb2.TopicEventRequest:
    """A CloudEvent as daprd gives it to gRPC subscribers: ``OnTopicEvent`` and streaming subscriptions."""
    try:
        data = _envelope_data(event)
    except ValueError as exc:  # a data_base64 that is not base64 (binascii.Error): retrying cannot help
        log.warning("event %s: %s; sent without data", event.get("id"), exc)
        data = b""
    extensions = struct_pb2.Struct()
    extensions.update({k: v for k, v in event.items() if k not in _EXTENSION_SKIP})
    return appcallback_pb2.TopicEventRequest(
        id=_text(event.get("id")), source=_text(event.get("source")), type=_text(event.get("type")),
        spec_version=_text(event.get("specversion")), data_content_type=_text(event.get("datacontenttype")),
        data=data, topic=topic, pubsub_name=pubsub, path=path, extensions=extensions)


def _text(value) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _envelope_data(event: dict) -> bytes:
    """daprd's ``TopicEventRequest.data``: data_base64 decoded, text as is, JSON re-encoded, else nothing."""
    if event.get("data_base64") is not None:
        return base64.b64decode(event["data_base64"], validate=True)
    data = event.get("data")
    if data is None:
        return b""
    content_type = str(event.get("datacontenttype") or "").split(";")[0].strip().lower()
    if content_type.startswith("text/") or content_type in ("application/xml",) or content_type.endswith("+xml"):
        return data.encode() if isinstance(data, str) else b""
    if content_type.startswith("application/json") or content_type.endswith("+json"):
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    return b""
