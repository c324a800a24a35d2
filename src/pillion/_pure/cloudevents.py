"""CloudEvents 1.0 envelopes as Dapr builds them for pub/sub; pure twin of ``pillion._ext.cloudevents``.

This module is the specification: the compiled twin has the same names and signatures and
returns the same bytes and raises the same errors. Contract: dapr-api.md §4.2 (publish) and
§4.6 (delivery). It takes bytes and strings and returns bytes; no clock, no uuid, no I/O:
``id``, ``time`` and ``now`` are passed in.

Wire rules worth knowing (where Dapr's Go code and this module differ, it says so):

- Payload by content type (``datacontenttype``; none or empty means ``text/plain``). The media
  type is the part before ``;``, without surrounding spaces/tabs, compared case-insensitively.
  JSON (``application/json``, ``application/*+json`` except ``application/cloudevents+json``):
  a body that is one valid JSON value is embedded *verbatim* as ``data`` (only surrounding JSON
  whitespace is stripped), so numbers keep their exact text, as Dapr's ``UseNumber`` does; any
  other body becomes ``data`` as a JSON string. ``application/octet-stream`` and
  ``application/cloudevents+protobuf``: ``data_base64``. Anything else: ``data`` is the body
  decoded as UTF-8 with U+FFFD for invalid bytes (Go's ``string(data)`` marshalled).
- Field order is fixed (``envelope``: id, source, type, specversion, datacontenttype, topic,
  pubsubname, traceid, traceparent, tracestate, time, [expiration], data|data_base64). Go
  marshals a map, so Dapr's own bytes have sorted keys; no JSON reader can tell.
- ``traceid``/``traceparent``/``tracestate`` are always present in ``envelope`` (empty strings
  when there is no trace), as in Dapr's ``NewCloudEventsEnvelope``.
- ``wrap`` keeps the app's members and their text verbatim (keys, values, order); a key given
  twice keeps its first position and its last value (Go's map keeps the last value).
- Strings are escaped by ``orjson.dumps`` (Go escapes ``<>&`` and U+2028/9 too; both are JSON).
"""

from __future__ import annotations

import binascii
import json
import re
from datetime import datetime, timedelta, timezone

import orjson

from pillion.cloudevents_errors import EnvelopeError

__all__ = ["envelope", "wrap", "raw", "parse", "expired", "is_cloudevent", "EnvelopeError"]

_dumps = orjson.dumps
_JSON_WS = b" \t\n\r"

# Payload kinds, from the media type.
_TEXT, _JSON, _BINARY, _CLOUDEVENT = 0, 1, 2, 3
_BINARY_TYPES = ("application/octet-stream", "application/cloudevents+protobuf")
_CLOUDEVENT_TYPE = "application/cloudevents+json"


def _kind(content_type: str) -> int:
    base = content_type.partition(";")[0].strip(" \t").lower()
    if base == "application/json":
        return _JSON
    if base == _CLOUDEVENT_TYPE:
        return _CLOUDEVENT
    if base.startswith("application/") and base.endswith("+json"):
        return _JSON
    if base in _BINARY_TYPES:
        return _BINARY
    return _TEXT


def is_cloudevent(content_type: str | None) -> bool:
    """True for ``application/cloudevents+json`` (any case, any parameters): publish with ``wrap``."""
    return bool(content_type) and _kind(content_type) == _CLOUDEVENT


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _load(body):
    """``orjson.loads``; the stdlib only when orjson refused a number it cannot hold (e.g. 1e400).

    Raises ``ValueError`` (or ``RecursionError`` from the stdlib) for anything not JSON.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "number" not in str(exc):
            raise
    # Strict UTF-8 first: json.loads(bytes) would also accept UTF-16/32 and a BOM.
    return json.loads(bytes(body).decode("utf-8"), parse_constant=_reject_constant)


def _is_json(body: bytes) -> bool:
    try:
        _load(body)
    except (ValueError, RecursionError):
        return False
    return True


def _check_bytes(data) -> None:
    if type(data) is not bytes:
        raise TypeError(f"body must be bytes, not {type(data).__name__}")


def envelope(
    data: bytes,
    content_type: str | None,
    *,
    id: str,
    source: str,
    type: str,
    topic: str,
    pubsubname: str,
    traceparent: str = "",
    tracestate: str = "",
    time: str,
    expiration: str | None = None,
) -> bytes:
    """The JSON bytes of a new CloudEvent around a published body (dapr-api.md §4.2).

    Args:
        data: the request body.
        content_type: the request's Content-Type; ``None`` or ``""`` means ``text/plain``.
        id, source, type: the event's id (a UUID), source (the app id) and type.
        topic, pubsubname: where it is published.
        traceparent, tracestate: W3C trace context; ``traceid`` repeats ``traceparent``.
        time: RFC 3339, seconds precision. expiration: RFC 3339 UTC, only with a TTL.

    Raises:
        TypeError: ``data`` is not ``bytes``, or a field is not JSON-serialisable.
    """
    _check_bytes(data)
    if not content_type:
        content_type = "text/plain"
    kind = _kind(content_type)
    if kind == _JSON:
        body = data.strip(_JSON_WS)
        if _is_json(body):
            payload = b',"data":' + body
        else:
            payload = b',"data":' + _dumps(data.decode("utf-8", "replace"))
    elif kind == _BINARY:
        payload = b',"data_base64":"' + binascii.b2a_base64(data, newline=False) + b'"'
    else:
        payload = b',"data":' + _dumps(data.decode("utf-8", "replace"))
    trace = _dumps(traceparent)
    parts = [
        b'{"id":', _dumps(id),
        b',"source":', _dumps(source),
        b',"type":', _dumps(type),
        b',"specversion":"1.0","datacontenttype":', _dumps(content_type),
        b',"topic":', _dumps(topic),
        b',"pubsubname":', _dumps(pubsubname),
        b',"traceid":', trace,
        b',"traceparent":', trace,
        b',"tracestate":', _dumps(tracestate),
        b',"time":', _dumps(time),
    ]  # fmt: skip
    if expiration is not None:
        parts += (b',"expiration":', _dumps(expiration))
    parts += (payload, b"}")
    return b"".join(parts)


# Top-level members of a JSON object already known to be valid.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)
_SCALAR_END = re.compile(rb"[,}\] \t\n\r]")
_SPACE = re.compile(rb"[ \t\n\r]*")


def _value_end(body: bytes, i: int) -> int:
    c = body[i]
    if c == 0x22:  # "
        return _STRING.match(body, i).end()
    if c == 0x7B or c == 0x5B:  # { [
        depth = 0
        for token in _TOKEN.finditer(body, i):
            t = token.group()
            if t == b"{" or t == b"[":
                depth += 1
            elif t == b"}" or t == b"]":
                depth -= 1
                if depth == 0:
                    return token.end()
        raise AssertionError("unbalanced JSON passed validation")
    found = _SCALAR_END.search(body, i)
    return len(body) if found is None else found.start()


def _key(raw_key: bytes) -> str:
    inner = raw_key[1:-1]
    if b"\\" not in inner:
        return inner.decode("utf-8")
    return json.loads(raw_key.decode("utf-8"))


def _members(body: bytes) -> dict:
    """``{key: [raw key, raw value]}`` in first-seen order; a repeated key takes the last value."""
    members: dict = {}
    i = _SPACE.match(body, 0).end() + 1  # past "{"
    while True:
        i = _SPACE.match(body, i).end()
        if body[i] == 0x7D:  # }
            return members
        end = _STRING.match(body, i).end()
        raw_key = body[i:end]
        i = _SPACE.match(body, _SPACE.match(body, end).end() + 1).end()  # past ":"
        end = _value_end(body, i)
        value = body[i:end]
        key = _key(raw_key)
        member = members.get(key)
        if member is None:
            members[key] = [raw_key, value]
        else:
            member[1] = value
        i = _SPACE.match(body, end).end()
        if body[i] == 0x2C:  # ,
            i += 1
        else:
            return members


def _object(data) -> dict:
    try:
        event = _load(data)
    except (ValueError, RecursionError) as exc:
        raise EnvelopeError(f"a CloudEvent must be JSON: {exc}") from None
    if not isinstance(event, dict):
        raise EnvelopeError(f"a CloudEvent must be a JSON object, not {_JSON_NAMES[event.__class__]}")
    return event


_JSON_NAMES = {list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}  # fmt: skip


def wrap(
    body: bytes,
    *,
    id: str,
    source: str,
    type: str,
    topic: str,
    pubsubname: str,
    traceparent: str = "",
    tracestate: str = "",
    time: str,
    expiration: str | None = None,
) -> bytes:
    """The app's own CloudEvent (``application/cloudevents+json``) completed as Dapr does (§4.2).

    Always set: ``topic``, ``pubsubname``, and ``expiration`` when given. Added when the key is
    absent: ``time``, ``traceid`` and ``traceparent`` (both ``traceparent``), ``tracestate``.
    Added when absent or null: ``source``, ``type``, ``specversion`` ("1.0"), and ``id``
    (Dapr adds no id; CloudEvents 1.0 requires one). Every other member is kept verbatim, in
    place; new members follow in ``envelope``'s order.

    Raises:
        EnvelopeError: the body is not JSON, or not a JSON object.
        TypeError: ``body`` is not ``bytes``, or a field is not JSON-serialisable.
    """
    _check_bytes(body)
    _object(body)
    members = _members(body)
    for name, value, when in (
        ("id", id, 2),
        ("source", source, 2),
        ("type", type, 2),
        ("specversion", "1.0", 2),
        ("topic", topic, 0),
        ("pubsubname", pubsubname, 0),
        ("traceid", traceparent, 1),
        ("traceparent", traceparent, 1),
        ("tracestate", tracestate, 1),
        ("time", time, 1),
        ("expiration", expiration, 0 if expiration is not None else 3),
    ):
        # when: 0 always, 1 if absent, 2 if absent or null, 3 never
        member = members.get(name)
        if when == 3 or (member is not None and (when == 1 or (when == 2 and member[1] != b"null"))):
            continue
        if member is None:
            members[name] = [_dumps(name), _dumps(value)]
        else:
            member[1] = _dumps(value)
    return b"{" + b",".join([k + b":" + v for k, v in members.values()]) + b"}"


def raw(
    data: bytes,
    *,
    id: str,
    topic: str,
    pubsubname: str,
    time: str | None = None,
    traceparent: str = "",
    tracestate: str = "",
) -> bytes:
    """The CloudEvent Dapr delivers for a ``rawPayload`` message (§4.6): the bytes as ``data_base64``.

    Order: id, specversion, datacontenttype, source, type, topic, pubsubname, then ``time``
    when given, ``traceid``+``traceparent`` when ``traceparent`` is set, ``tracestate`` when
    set, and ``data_base64`` last.
    """
    _check_bytes(data)
    parts = [
        b'{"id":', _dumps(id),
        b',"specversion":"1.0","datacontenttype":"application/octet-stream","source":"Dapr",'
        b'"type":"com.dapr.event.sent","topic":', _dumps(topic),
        b',"pubsubname":', _dumps(pubsubname),
    ]  # fmt: skip
    if time is not None:
        parts += (b',"time":', _dumps(time))
    if traceparent:
        trace = _dumps(traceparent)
        parts += (b',"traceid":', trace, b',"traceparent":', trace)
    if tracestate:
        parts += (b',"tracestate":', _dumps(tracestate))
    parts += (b',"data_base64":"', binascii.b2a_base64(data, newline=False), b'"}')
    return b"".join(parts)


def parse(data: bytes) -> dict:
    """A CloudEvent from the broker as a dict (§4.6).

    Raises:
        EnvelopeError: not JSON, or not a JSON object (Dapr: dead-letter topic or error).
    """
    return _object(data)


_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:Z|([+-])(\d\d):(\d\d))", re.ASCII
)


def _parse_time(text: str) -> datetime | None:
    """RFC 3339 as Go's ``time.Parse(time.RFC3339, ...)`` takes it, or None."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, fraction, sign, oh, om = m.groups()
    try:
        tz = timezone.utc
        if sign is not None:
            if int(oh) > 23 or int(om) > 59:
                return None
            offset = timedelta(hours=int(oh), minutes=int(om))
            tz = timezone(-offset if sign == "-" else offset)
        micro = int((fraction or "").ljust(6, "0")[:6])
        return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tz)
    except ValueError:
        return None


def expired(event: dict, now: datetime | float) -> bool:
    """True when the event's ``expiration`` (RFC 3339) is before ``now``.

    ``now`` is an aware datetime (naive means UTC) or a POSIX timestamp. A missing, empty,
    non-string or unparsable ``expiration`` never expires (Dapr's ``HasExpired``).
    """
    value = event.get("expiration")
    if not isinstance(value, str) or not value:
        return False
    at = _parse_time(value)
    if at is None:
        return False
    if not isinstance(now, datetime):
        now = datetime.fromtimestamp(now, timezone.utc)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    return at < now
