# cython: embedsignature=True, embedsignature.format=clinic
# Clinic signatures make the functions introspectable for the parity test without binding=True.
"""CloudEvents 1.0 envelopes as Dapr builds them; compiled twin of ``pillion._pure.cloudevents``.

The pure module is the specification: same names, same bytes, same errors.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DATA, PyUnicode_GET_LENGTH
from libc.string cimport memcmp, memcpy

# Declarations stay in this file: a sibling .pxd is silently ignored for a module named
# pillion._ext.<name> (ext/README.md, "Sharing declarations").

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)

import binascii
import json
import re
from datetime import datetime, timedelta, timezone

import orjson

from pillion.cloudevents_errors import EnvelopeError

__all__ = ["envelope", "wrap", "raw", "parse", "expired", "is_cloudevent", "EnvelopeError"]

cdef object _dumps = orjson.dumps
cdef object _orjson_loads = orjson.loads
cdef object _OrjsonDecodeError = orjson.JSONDecodeError
cdef object _json_loads = json.loads
cdef object _b64 = binascii.b2a_base64
cdef object _EnvelopeError = EnvelopeError

cdef enum:
    _TEXT = 0
    _JSON = 1
    _BINARY = 2
    _CLOUDEVENT = 3


cdef int _kind(str content_type) except -1:
    cdef str base = content_type.partition(";")[0].strip(" \t").lower()
    if base == "application/json":
        return _JSON
    if base == "application/cloudevents+json":
        return _CLOUDEVENT
    if base.startswith("application/") and base.endswith("+json"):
        return _JSON
    if base == "application/octet-stream" or base == "application/cloudevents+protobuf":
        return _BINARY
    return _TEXT


def is_cloudevent(content_type):
    """True for ``application/cloudevents+json`` (any case, any parameters): publish with ``wrap``."""
    return bool(content_type) and _kind(content_type) == _CLOUDEVENT


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


cdef object _load(object body):
    try:
        return _orjson_loads(body)
    except _OrjsonDecodeError as exc:
        if "number" not in str(exc):
            raise
    return _json_loads(bytes(body).decode("utf-8"), parse_constant=_reject_constant)


cdef bint _is_json(bytes body):
    try:
        _load(body)
    except (ValueError, RecursionError):
        return False
    return True


cdef inline bint _json_space(unsigned char c) noexcept:
    return c == 0x20 or c == 0x09 or c == 0x0A or c == 0x0D


cdef enum:
    _MAX_SURE_DEPTH = 64


@cython.boundscheck(False)
@cython.wraparound(False)
cdef bint _surely_json(const unsigned char *p, Py_ssize_t i, Py_ssize_t n) noexcept:
    """True only if ``p[i:n]`` is JSON that ``orjson.loads`` accepts; False means "ask orjson".

    A conservative subset, so it can never disagree with orjson: ASCII only, no ``\\u``
    escapes (surrogate rules), numbers too small to overflow a double, depth at most 64.
    """
    cdef unsigned char stack[_MAX_SURE_DEPTH]
    cdef int depth = 0
    cdef int digits
    cdef unsigned char c
    while True:
        # A value starts at i (after whitespace).
        while i < n and _json_space(p[i]):
            i += 1
        if i >= n:
            return False
        c = p[i]
        if c == 0x7B or c == 0x5B:  # { [
            if depth == _MAX_SURE_DEPTH:
                return False
            stack[depth] = c
            depth += 1
            i += 1
            while i < n and _json_space(p[i]):
                i += 1
            if i < n and p[i] == c + 2:  # } is { + 2, ] is [ + 2
                depth -= 1
                i += 1
            elif c == 0x7B:
                i = _sure_key(p, i, n)
                if i < 0:
                    return False
                continue
            else:
                continue
        elif c == 0x22:
            i = _sure_string(p, i, n)
            if i < 0:
                return False
        elif c == 0x2D or 0x30 <= c <= 0x39:  # - 0-9
            if c == 0x2D:
                i += 1
            digits = 0
            while i < n and 0x30 <= p[i] <= 0x39:
                i += 1
                digits += 1
            if digits == 0 or digits > 20 or (digits > 1 and p[i - digits] == 0x30):
                return False
            if i < n and p[i] == 0x2E:  # .
                i += 1
                digits = 0
                while i < n and 0x30 <= p[i] <= 0x39:
                    i += 1
                    digits += 1
                if digits == 0 or digits > 40:
                    return False
            if i < n and (p[i] == 0x65 or p[i] == 0x45):  # e E
                i += 1
                if i < n and (p[i] == 0x2B or p[i] == 0x2D):
                    i += 1
                digits = 0
                while i < n and 0x30 <= p[i] <= 0x39:
                    i += 1
                    digits += 1
                if digits == 0 or digits > 2:
                    return False
        elif c == 0x74 and n - i >= 4 and memcmp(p + i, b"true", 4) == 0:
            i += 4
        elif c == 0x66 and n - i >= 5 and memcmp(p + i, b"false", 5) == 0:
            i += 5
        elif c == 0x6E and n - i >= 4 and memcmp(p + i, b"null", 4) == 0:
            i += 4
        else:
            return False
        # After a value: close containers, or a comma and the next value.
        while True:
            while i < n and _json_space(p[i]):
                i += 1
            if depth == 0:
                return i == n
            if i >= n:
                return False
            c = p[i]
            if c == stack[depth - 1] + 2:
                depth -= 1
                i += 1
                continue
            if c != 0x2C:
                return False
            i += 1
            if stack[depth - 1] == 0x7B:
                while i < n and _json_space(p[i]):
                    i += 1
                i = _sure_key(p, i, n)
                if i < 0:
                    return False
            break


@cython.boundscheck(False)
@cython.wraparound(False)
cdef Py_ssize_t _sure_string(const unsigned char *p, Py_ssize_t i, Py_ssize_t n) noexcept:
    """The index after the string at ``p[i]`` (a quote), or -1 if not surely valid."""
    cdef unsigned char c
    i += 1
    while i < n:
        c = p[i]
        if c == 0x22:
            return i + 1
        if c == 0x5C:
            if i + 1 >= n:
                return -1
            c = p[i + 1]
            if not (c == 0x22 or c == 0x5C or c == 0x2F or c == 0x62 or c == 0x66
                    or c == 0x6E or c == 0x72 or c == 0x74):
                return -1
            i += 2
        elif c < 0x20 or c >= 0x80:
            return -1
        else:
            i += 1
    return -1


cdef Py_ssize_t _sure_key(const unsigned char *p, Py_ssize_t i, Py_ssize_t n) noexcept:
    """After ``"key" :`` at ``p[i]``, the index of the value, or -1."""
    if i >= n or p[i] != 0x22:
        return -1
    i = _sure_string(p, i, n)
    if i < 0:
        return -1
    while i < n and _json_space(p[i]):
        i += 1
    if i >= n or p[i] != 0x3A:
        return -1
    return i + 1


@cython.boundscheck(False)
@cython.wraparound(False)
cdef bytes _jstr(object s):
    """``orjson.dumps(s)``, built here for ASCII strings with nothing to escape (ids, topics)."""
    cdef Py_ssize_t i, n
    cdef const unsigned char *src
    cdef unsigned char c
    cdef bytes out
    cdef char *dst
    if type(s) is not str or not PyUnicode_IS_ASCII(s):
        return _dumps(s)
    n = PyUnicode_GET_LENGTH(s)
    src = <const unsigned char *>PyUnicode_DATA(s)
    for i in range(n):
        c = src[i]
        if c < 0x20 or c == 0x22 or c == 0x5C:
            return _dumps(s)
    out = PyBytes_FromStringAndSize(NULL, n + 2)
    dst = PyBytes_AS_STRING(out)
    dst[0] = b'"'
    memcpy(dst + 1, src, n)
    dst[n + 1] = b'"'
    return out


cdef _check_bytes(object data):
    if type(data) is not bytes:
        raise TypeError(f"body must be bytes, not {type(data).__name__}")


@cython.boundscheck(False)
@cython.wraparound(False)
def envelope(data, content_type, *, id, source, type, topic, pubsubname,
             traceparent="", tracestate="", time, expiration=None):
    """The JSON bytes of a new CloudEvent around a published body (dapr-api.md §4.2)."""
    cdef bytes body, payload, trace
    cdef Py_ssize_t start, end
    cdef const unsigned char *p
    cdef int kind
    _check_bytes(data)
    if not content_type:
        content_type = "text/plain"
    kind = _kind(content_type)
    if kind == _JSON:
        body = <bytes>data
        p = <const unsigned char *>PyBytes_AS_STRING(body)
        start = 0
        end = PyBytes_GET_SIZE(body)
        while start < end and _json_space(p[start]):
            start += 1
        while end > start and _json_space(p[end - 1]):
            end -= 1
        if start or end != PyBytes_GET_SIZE(body):
            body = body[start:end]
        if _surely_json(p, start, end) or _is_json(body):
            payload = b',"data":' + body
        else:
            payload = b',"data":' + _dumps((<bytes>data).decode("utf-8", "replace"))
    elif kind == _BINARY:
        payload = b',"data_base64":"' + _b64(data, newline=False) + b'"'
    else:
        payload = b',"data":' + _dumps((<bytes>data).decode("utf-8", "replace"))
    trace = _jstr(traceparent)
    parts = [
        b'{"id":', _jstr(id),
        b',"source":', _jstr(source),
        b',"type":', _jstr(type),
        b',"specversion":"1.0","datacontenttype":', _jstr(content_type),
        b',"topic":', _jstr(topic),
        b',"pubsubname":', _jstr(pubsubname),
        b',"traceid":', trace,
        b',"traceparent":', trace,
        b',"tracestate":', _jstr(tracestate),
        b',"time":', _jstr(time),
    ]
    if expiration is not None:
        parts.append(b',"expiration":')
        parts.append(_jstr(expiration))
    parts.append(payload)
    parts.append(b"}")
    return b"".join(parts)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef Py_ssize_t _skip(const unsigned char *p, Py_ssize_t i) noexcept:
    while _json_space(p[i]):
        i += 1
    return i


@cython.boundscheck(False)
@cython.wraparound(False)
cdef Py_ssize_t _string_end(const unsigned char *p, Py_ssize_t i) noexcept:
    i += 1
    while p[i] != 0x22:
        i += 2 if p[i] == 0x5C else 1
    return i + 1


@cython.boundscheck(False)
@cython.wraparound(False)
cdef Py_ssize_t _value_end(const unsigned char *p, Py_ssize_t i, Py_ssize_t n) noexcept:
    # Only called on a body that already parsed as JSON, so the scan needs no checks.
    cdef unsigned char c = p[i]
    cdef Py_ssize_t depth = 0
    if c == 0x22:
        return _string_end(p, i)
    if c == 0x7B or c == 0x5B:
        while True:
            c = p[i]
            if c == 0x22:
                i = _string_end(p, i)
                continue
            if c == 0x7B or c == 0x5B:
                depth += 1
            elif c == 0x7D or c == 0x5D:
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
    while i < n and not (c == 0x2C or c == 0x7D or c == 0x5D or _json_space(c)):
        i += 1
        if i < n:
            c = p[i]
    return i


cdef str _key(bytes raw_key):
    cdef bytes inner = raw_key[1:-1]
    if b"\\" not in inner:
        return inner.decode("utf-8")
    return _json_loads(raw_key.decode("utf-8"))


cdef dict _members(bytes body):
    cdef dict members = {}
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(body)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(body)
    cdef Py_ssize_t i = _skip(p, 0) + 1
    cdef Py_ssize_t end
    cdef bytes raw_key, value
    cdef str key
    cdef list member
    while True:
        i = _skip(p, i)
        if p[i] == 0x7D:
            return members
        end = _string_end(p, i)
        raw_key = body[i:end]
        i = _skip(p, _skip(p, end) + 1)
        end = _value_end(p, i, n)
        value = body[i:end]
        key = _key(raw_key)
        member = members.get(key)
        if member is None:
            members[key] = [raw_key, value]
        else:
            member[1] = value
        i = _skip(p, end)
        if p[i] == 0x2C:
            i += 1
        else:
            return members


_JSON_NAMES = {list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


cdef dict _object(object data):
    try:
        event = _load(data)
    except (ValueError, RecursionError) as exc:
        raise _EnvelopeError(f"a CloudEvent must be JSON: {exc}") from None
    if not isinstance(event, dict):
        raise _EnvelopeError(f"a CloudEvent must be a JSON object, not {_JSON_NAMES[event.__class__]}")
    return event


def wrap(body, *, id, source, type, topic, pubsubname, traceparent="", tracestate="", time,
         expiration=None):
    """The app's own CloudEvent (``application/cloudevents+json``) completed as Dapr does (§4.2)."""
    cdef dict members
    cdef list member
    cdef int when
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
        member = members.get(name)
        if when == 3 or (member is not None and (when == 1 or (when == 2 and member[1] != b"null"))):
            continue
        if member is None:
            members[name] = [_dumps(name), _jstr(value)]
        else:
            member[1] = _jstr(value)
    return b"{" + b",".join([k + b":" + v for k, v in members.values()]) + b"}"


def raw(data, *, id, topic, pubsubname, time=None, traceparent="", tracestate=""):
    """The CloudEvent Dapr delivers for a ``rawPayload`` message (§4.6): the bytes as ``data_base64``."""
    cdef bytes trace
    _check_bytes(data)
    parts = [
        b'{"id":', _jstr(id),
        b',"specversion":"1.0","datacontenttype":"application/octet-stream","source":"Dapr",'
        b'"type":"com.dapr.event.sent","topic":', _jstr(topic),
        b',"pubsubname":', _jstr(pubsubname),
    ]
    if time is not None:
        parts += (b',"time":', _jstr(time))
    if traceparent:
        trace = _jstr(traceparent)
        parts += (b',"traceid":', trace, b',"traceparent":', trace)
    if tracestate:
        parts += (b',"tracestate":', _jstr(tracestate))
    parts += (b',"data_base64":"', _b64(data, newline=False), b'"}')
    return b"".join(parts)


def parse(data):
    """A CloudEvent from the broker as a dict (§4.6); EnvelopeError if not a JSON object."""
    return _object(data)


cdef object _RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:Z|([+-])(\d\d):(\d\d))", re.ASCII
)
cdef object _UTC = timezone.utc


cdef object _parse_time(str text):
    m = _RFC3339.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, fraction, sign, oh, om = m.groups()
    try:
        tz = _UTC
        if sign is not None:
            if int(oh) > 23 or int(om) > 59:
                return None
            offset = timedelta(hours=int(oh), minutes=int(om))
            tz = timezone(-offset if sign == "-" else offset)
        micro = int((fraction or "").ljust(6, "0")[:6])
        return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tz)
    except ValueError:
        return None


def expired(event, now):
    """True when the event's ``expiration`` (RFC 3339) is before ``now`` (datetime or POSIX time)."""
    value = event.get("expiration")
    if not isinstance(value, str) or not value:
        return False
    at = _parse_time(value)
    if at is None:
        return False
    if not isinstance(now, datetime):
        now = datetime.fromtimestamp(now, _UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=_UTC)
    return at < now
