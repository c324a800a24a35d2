"""The compiled CloudEvents twin and its pure twin: same names, same bytes, same errors.

Bodies come from three places: real JSON (with big numbers, escapes and odd whitespace),
JSON-shaped noise from the JSON alphabet (to push the compiled twin's fast validator onto
every edge where it must defer to orjson), and arbitrary bytes.
"""

from __future__ import annotations

import inspect
import json
from datetime import datetime, timezone

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pillion._testing import import_twin

settings_ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAMES = ["envelope", "wrap", "raw", "parse", "expired", "is_cloudevent", "EnvelopeError"]


@pytest.fixture(scope="module")
def twins():
    return import_twin("cloudevents", "pure"), import_twin("cloudevents", "compiled")


def test_same_public_names(twins):
    pure, compiled = twins
    assert pure.__all__ == compiled.__all__ == NAMES
    assert pure.EnvelopeError is compiled.EnvelopeError


def _parameters(function):
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def test_same_signatures(twins):
    pure, compiled = twins
    for name in NAMES[:-1]:
        assert _parameters(getattr(pure, name)) == _parameters(getattr(compiled, name)), name


def outcome(call):
    try:
        return call(), None
    except (ValueError, TypeError) as exc:
        return None, (type(exc), str(exc))


def same(twins, name, *args, **kwargs):
    pure, compiled = twins
    expected = outcome(lambda: getattr(pure, name)(*args, **kwargs))
    assert outcome(lambda: getattr(compiled, name)(*args, **kwargs)) == expected
    event(f"{name}: {'error' if expected[1] else 'ok'}")
    return expected


# -- strategies ---------------------------------------------------------------------------------

WS = st.sampled_from(["", " ", "\n", "\t", "\r\n  "])
numbers = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["1e400", "-1e400", "1E+2", "0.5e-3", "-0", "0.0000000000000000000000000000001",
                     "123456789012345678901", "1" * 25, "1." + "0" * 45, "9e99", "9e100"]),
)  # fmt: skip
strings = st.text(max_size=6).map(lambda s: orjson.dumps(s).decode()) | st.sampled_from(
    ['"\\u00e9"', '"\\ud83d\\ude00"', '"\\ud800"', '"\\/"', '"a\\"b"', '"é"']
)
json_text = st.recursive(
    numbers | strings | st.sampled_from(["true", "false", "null"]),
    lambda inner: st.builds(
        lambda items, a, b: "[" + a + ("," + b).join(items) + b + "]", st.lists(inner, max_size=4), WS, WS
    ) | st.builds(
        lambda items, a, b: "{" + a + ("," + b).join(f"{k}{a}:{b}{v}" for k, v in items) + b + "}",
        st.lists(st.tuples(strings, inner), max_size=4), WS, WS,
    ),
    max_leaves=12,
)  # fmt: skip
json_bodies = st.builds(lambda a, j, b: (a + j + b).encode(), WS, json_text, WS)
noise = st.lists(
    st.sampled_from(list('{}[]",:-+.eE0123456789 \ttrue false null \\u \\" é') + ["\\ud800", "\x01", "01"]),
    max_size=24,
).map(lambda parts: "".join(parts).encode())
bodies = st.one_of(json_bodies, noise, st.binary(max_size=40), json_bodies.map(lambda b: b[:-1]))

content_types = st.one_of(
    st.none(),
    st.sampled_from([
        "", "application/json", "Application/JSON; charset=utf-8", "application/problem+json",
        "application/cloudevents+json", "application/octet-stream", "application/cloudevents+protobuf",
        "text/plain", "application/xml", "application/json ;x=1", " application/json", "application/+json",
    ]),
    st.text(max_size=12),
)  # fmt: skip
field_strings = st.one_of(
    st.sampled_from(["", "orders", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "a\"b", "\\"]),
    st.text(max_size=10),  # includes lone surrogates: orjson refuses them in both twins
)
fields = st.fixed_dictionaries(
    {name: field_strings for name in ("id", "source", "type", "topic", "pubsubname", "time")},
    optional={"traceparent": field_strings, "tracestate": field_strings,
              "expiration": st.none() | field_strings},
)  # fmt: skip

SPECIAL = ["id", "source", "type", "specversion", "topic", "pubsubname", "traceid", "traceparent",
           "tracestate", "time", "expiration", "data", "\\u0074opic"]  # fmt: skip
members = st.lists(
    st.tuples(st.sampled_from(SPECIAL) | st.text("abé😀", max_size=3), json_text | st.just("null")),
    max_size=8,
)
objects = st.builds(
    lambda items, a, b: ("{" + a + ",".join(f'{b}"{k}"{a}:{b}{v}{a}' for k, v in items) + "}" + b).encode(),
    members, WS, WS,
)


# -- properties ---------------------------------------------------------------------------------


@settings_
@given(data=bodies, content_type=content_types, fields=fields)
def test_envelope(twins, data, content_type, fields):
    out, error = same(twins, "envelope", data, content_type, **fields)
    if error is None:  # the stdlib also takes what the fallback let through (1e400, "\ud800")
        assert isinstance(json.loads(out), dict)


@settings_
@given(data=json_bodies, fields=fields)
def test_envelope_json(twins, data, fields):
    out, error = same(twins, "envelope", data, "application/json", **fields)
    if error is None:
        assert out.endswith(b',"data":' + data.strip(b" \t\n\r") + b"}") or b'"data":"' in out


@settings_
@given(body=objects | bodies, fields=fields)
def test_wrap(twins, body, fields):
    out, error = same(twins, "wrap", body, **fields)
    if error is None:
        assert isinstance(json.loads(out), dict)


@settings_
@given(data=st.binary(max_size=40), fields=fields, time=st.none() | field_strings)
def test_raw(twins, data, fields, time):
    keep = {k: fields[k] for k in ("id", "topic", "pubsubname", "traceparent", "tracestate") if k in fields}
    same(twins, "raw", data, time=time, **keep)


@settings_
@given(body=objects | bodies)
def test_parse(twins, body):
    same(twins, "parse", body)


expirations = st.one_of(
    st.datetimes(timezones=st.just(timezone.utc)).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")),
    st.from_regex(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,12})?(Z|[+-]\d\d:\d\d|z)?\Z"),
    st.text(max_size=25), st.integers(), st.none(),
)


@settings_
@given(expiration=expirations, now=st.floats(0, 2**33) | st.datetimes(timezones=st.just(timezone.utc)) | st.datetimes())
def test_expired(twins, expiration, now):
    pure, compiled = twins
    expected = outcome(lambda: pure.expired({"expiration": expiration}, now))
    assert outcome(lambda: compiled.expired({"expiration": expiration}, now)) == expected


@settings_
@given(content_type=content_types)
def test_is_cloudevent(twins, content_type):
    same(twins, "is_cloudevent", content_type)


def test_expired_boundary(twins):
    now = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for ce in twins:
        assert ce.expired({"expiration": "2023-12-31T23:59:59Z"}, now)
        assert not ce.expired({"expiration": "2024-01-01T00:00:00Z"}, now)


@settings_
@given(body=objects, expiration=st.none() | st.just("2030-01-01T00:00:00Z"))
def test_wrap_objects(twins, body, expiration):
    out, error = same(twins, "wrap", body, id="i", source="s", type="t", topic="tp", pubsubname="ps",
                      traceparent="00-x", tracestate="", time="2024-01-01T00:00:00Z", expiration=expiration)
    if error is None:
        wrapped = json.loads(out)
        assert wrapped["topic"] == "tp" and wrapped["pubsubname"] == "ps"
