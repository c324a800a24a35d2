"""Dapr's CloudEvents envelope (dapr-api.md §4.2, §4.6), run against both twins."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from pillion._testing import import_twin
from pillion.cloudevents_errors import EnvelopeError

FIELDS = dict(id="id-1", source="app-a", type="com.dapr.event.sent", topic="orders", pubsubname="pubsub",
              time="2024-05-01T12:00:00Z")  # fmt: skip
HEAD = ('{"id":"id-1","source":"app-a","type":"com.dapr.event.sent","specversion":"1.0",'
        '"datacontenttype":%s,"topic":"orders","pubsubname":"pubsub","traceid":"","traceparent":"",'
        '"tracestate":"","time":"2024-05-01T12:00:00Z"')  # fmt: skip


@pytest.fixture(params=("pure", "compiled"))
def ce(request):
    return import_twin("cloudevents", request.param)


def env(ce, data: bytes, content_type, **extra) -> bytes:
    return ce.envelope(data, content_type, **{**FIELDS, **extra})


def expect(content_type_json: str, payload: str) -> bytes:
    return (HEAD % content_type_json + "," + payload + "}").encode()


# -- envelope: layout ---------------------------------------------------------------------------


def test_field_order_and_trace_fields(ce):
    out = env(ce, b"hi", "text/plain", traceparent="00-abc-01", tracestate="k=v", expiration="2024-05-01T12:01:00Z")
    assert list(orjson.loads(out)) == [
        "id", "source", "type", "specversion", "datacontenttype", "topic", "pubsubname",
        "traceid", "traceparent", "tracestate", "time", "expiration", "data",
    ]  # fmt: skip
    event = orjson.loads(out)
    assert event["traceid"] == event["traceparent"] == "00-abc-01" and event["tracestate"] == "k=v"


def test_empty_trace_is_kept_as_empty_strings(ce):
    assert env(ce, b"hi", "text/plain") == expect('"text/plain"', '"data":"hi"')


@pytest.mark.parametrize("content_type", [None, ""])
def test_no_content_type_is_text_plain(ce, content_type):
    assert env(ce, b'{"a":1}', content_type) == expect('"text/plain"', '"data":"{\\"a\\":1}"')


def test_expiration_only_when_given(ce):
    assert b"expiration" not in env(ce, b"x", "text/plain")
    assert b',"expiration":"2030-01-01T00:00:00Z","data":"x"}' in env(ce, b"x", "text/plain",
                                                                       expiration="2030-01-01T00:00:00Z")


# -- envelope: content-type rules ---------------------------------------------------------------


@pytest.mark.parametrize("content_type", [
    "application/json", "APPLICATION/JSON", "application/json; charset=utf-8", "application/json;charset=UTF-8",
    "application/json ; charset=utf-8", "application/problem+json", "application/vnd.api+json; v=2",
    " application/json",
])  # fmt: skip
def test_json_types_embed_the_body(ce, content_type):
    out = env(ce, b'{"a": [1, 2.50, "x"]}', content_type)
    assert out.endswith(b',"data":{"a": [1, 2.50, "x"]}}')
    assert orjson.loads(out)["datacontenttype"] == content_type


@pytest.mark.parametrize("content_type", [
    "text/plain", "text/plain; charset=utf-8", "application/xml", "text/json", "application/jsonx",
    "application/cloudevents+json", "application/x-www-form-urlencoded", "image/png", "json",
])  # fmt: skip
def test_other_types_are_a_string(ce, content_type):
    assert orjson.loads(env(ce, b'{"a": 1}', content_type))["data"] == '{"a": 1}'


@pytest.mark.parametrize("content_type", [
    "application/octet-stream", "Application/Octet-Stream; x=1", "application/cloudevents+protobuf",
])  # fmt: skip
def test_binary_types_are_base64(ce, content_type):
    data = bytes(range(256))
    out = env(ce, data, content_type)
    event = orjson.loads(out)
    assert "data" not in event and base64.b64decode(event["data_base64"]) == data
    assert out.endswith(b',"data_base64":"' + base64.b64encode(data) + b'"}')


def test_empty_binary_body(ce):
    assert env(ce, b"", "application/octet-stream").endswith(b',"data_base64":""}')


@pytest.mark.parametrize("body", [
    b"123456789012345678901234567890", b"-18446744073709551617", b"[1e400, 0.1000000000000000055511151231257827]",
    b'{"n": 99999999999999999999999999999999999999}', b"1E+2", b"-0.0",
])  # fmt: skip
def test_numbers_keep_their_text(ce, body):
    assert env(ce, body, "application/json").endswith(b',"data":' + body + b"}")


@pytest.mark.parametrize("body, data", [
    (b'  {"a":1}\n\t\r ', b'{"a":1}'),
    (b'\n"text"\n', b'"text"'),
    (b" 1 ", b"1"),
    (b'{ "a" : [ 1 , 2 ] }', b'{ "a" : [ 1 , 2 ] }'),
    (b"null", b"null"),
    (b'"\\u00e9\\ud83d\\ude00"', b'"\\u00e9\\ud83d\\ude00"'),
    ("{\"é\": \"😀\"}".encode(), "{\"é\": \"😀\"}".encode()),
])  # fmt: skip
def test_valid_json_is_verbatim_without_surrounding_whitespace(ce, body, data):
    assert env(ce, body, "application/json").endswith(b',"data":' + data + b"}")


@pytest.mark.parametrize("body", [
    b"", b"   ", b"{", b'{"a":1} x', b'{"a":1}{}', b"[1,]", b"NaN", b"Infinity", b"-Infinity", b"01", b"'a'",
    b'"\\ud800"', b'"\x01"', b"\xef\xbb\xbf{}", b'"\xff"', b"tru", b"{'a':1}", b"[" * 70 + b"]" * 69,
    b'{"a":1,}', b"// c\n1", b'"\\x"', b"1.", b".5", b"+1", b"1e",
])  # fmt: skip
def test_invalid_json_is_a_string(ce, body):
    out = env(ce, body, "application/json")
    assert orjson.loads(out)["data"] == body.decode("utf-8", "replace")


def test_deep_nesting_is_what_orjson_says(ce):
    # The compiled twin's fast validator gives up past depth 64 and asks orjson.
    for depth in (63, 64, 65, 2000):
        body = b"[" * depth + b"]" * depth
        assert env(ce, body, "application/json").endswith(b',"data":' + body + b"}")


def test_big_integer_with_another_error_is_still_invalid(ce):
    body = b"[1e400, NaN]"
    assert orjson.loads(env(ce, body, "application/json"))["data"] == "[1e400, NaN]"


# -- envelope: escaping -------------------------------------------------------------------------


ODD = ['q"uote', "back\\slash", "ctl\x00\x01\x1f\x7f", "nl\n\r\t", "é", "😀 non-BMP", "\u2028\u2029", "</script>", ""]


@pytest.mark.parametrize("value", ODD)
def test_odd_strings_round_trip_in_every_field(ce, value):
    fields = {name: value for name in ("id", "source", "type", "topic", "pubsubname", "traceparent",
                                       "tracestate", "time")}  # fmt: skip
    out = ce.envelope(value.encode(), value or None, expiration=value, **fields)
    event = json.loads(out)
    for name in fields:
        assert event[name] == value
    assert event["expiration"] == value
    assert event["traceid"] == value
    assert orjson.dumps(value) in out


def test_invalid_utf8_text_becomes_replacement_characters(ce):
    out = env(ce, b"a\xffb\xc3(c\xed\xa0\x80", "text/plain")
    assert orjson.loads(out)["data"] == b"a\xffb\xc3(c\xed\xa0\x80".decode("utf-8", "replace")
    assert "\ufffd" in orjson.loads(out)["data"]


def test_text_with_control_characters_and_non_bmp(ce):
    text = 'line1\nline2\t"q"\\ \x00 😀'
    out = env(ce, text.encode(), "text/plain")
    assert out.endswith(b',"data":' + orjson.dumps(text) + b"}")


def test_lone_surrogate_in_a_field_is_a_type_error(ce):
    with pytest.raises(TypeError):
        env(ce, b"x", "text/plain", id="\ud800")


@pytest.mark.parametrize("data", ["text", bytearray(b"x"), memoryview(b"x"), None])
def test_body_must_be_bytes(ce, data):
    with pytest.raises(TypeError, match="body must be bytes"):
        ce.envelope(data, "text/plain", **FIELDS)


# -- wrap ---------------------------------------------------------------------------------------


def wrap(ce, body: bytes, **extra) -> bytes:
    return ce.wrap(body, **{**FIELDS, "traceparent": "00-t-01", "tracestate": "s=1", **extra})


def test_wrap_adds_missing_fields_in_envelope_order(ce):
    assert wrap(ce, b'{"data": {"a": 1}}') == (
        b'{"data":{"a": 1},"id":"id-1","source":"app-a","type":"com.dapr.event.sent","specversion":"1.0",'
        b'"topic":"orders","pubsubname":"pubsub","traceid":"00-t-01","traceparent":"00-t-01",'
        b'"tracestate":"s=1","time":"2024-05-01T12:00:00Z"}'
    )


def test_wrap_keeps_the_apps_fields_and_order(ce):
    body = (b'{"specversion":"1.1","type":"mine","source":"me","id":"e1","time":"2000-01-01T00:00:00Z",'
            b'"traceid":"a","traceparent":"b","tracestate":"c","extra":{"x":[1,2]},"data":"d"}')  # fmt: skip
    event = orjson.loads(wrap(ce, body))
    assert list(event) == ["specversion", "type", "source", "id", "time", "traceid", "traceparent", "tracestate",
                           "extra", "data", "topic", "pubsubname"]  # fmt: skip
    assert event["specversion"] == "1.1" and event["type"] == "mine" and event["source"] == "me"
    assert event["id"] == "e1" and event["time"] == "2000-01-01T00:00:00Z"
    assert (event["traceid"], event["traceparent"], event["tracestate"]) == ("a", "b", "c")


def test_wrap_always_overwrites_topic_and_pubsubname_in_place(ce):
    event = orjson.loads(wrap(ce, b'{"topic":"old","a":1,"pubsubname":"old"}'))
    assert list(event)[:3] == ["topic", "a", "pubsubname"]
    assert event["topic"] == "orders" and event["pubsubname"] == "pubsub"


def test_wrap_null_counts_as_missing_for_id_source_type_specversion_only(ce):
    body = b'{"id":null,"source":null,"type":null,"specversion":null,"time":null,"traceid":null,"tracestate":null}'
    event = orjson.loads(wrap(ce, body))
    assert event["id"] == "id-1" and event["source"] == "app-a"
    assert event["type"] == "com.dapr.event.sent" and event["specversion"] == "1.0"
    assert event["time"] is None and event["traceid"] is None and event["tracestate"] is None
    assert event["traceparent"] == "00-t-01"  # absent: added
    assert list(event)[:4] == ["id", "source", "type", "specversion"]  # replaced in place


def test_wrap_expiration_overwrites_when_given(ce):
    assert orjson.loads(wrap(ce, b'{"expiration":"x"}'))["expiration"] == "x"
    assert orjson.loads(wrap(ce, b'{"expiration":"x"}', expiration="2030-01-01T00:00:00Z"))["expiration"] == \
        "2030-01-01T00:00:00Z"
    assert list(orjson.loads(wrap(ce, b"{}", expiration="e")))[-1] == "expiration"


def test_wrap_keeps_values_verbatim(ce):
    body = b'{ "data" : {"big": 123456789012345678901234567890, "f": 1.50,\n "s": "a\\"}b"} , "n" : 1e400 }'
    out = wrap(ce, body)
    assert out.startswith(b'{"data":{"big": 123456789012345678901234567890, "f": 1.50,\n "s": "a\\"}b"},"n":1e400,')


def test_wrap_escaped_and_duplicate_keys(ce):
    # "\u0074opic" is "topic": overwritten in place, raw key kept; a repeated key keeps its
    # first position and its last value (Go's map keeps the last value).
    out = wrap(ce, b'{"\\u0074opic":"x","a":1,"b":2,"a":3}')
    assert out.startswith(b'{"\\u0074opic":"orders","a":3,"b":2,')


@pytest.mark.parametrize("body, message", [
    (b"[1]", "not an array"), (b'"s"', "not a string"), (b"1", "not a number"), (b"1.5", "not a number"),
    (b"true", "not a boolean"), (b"null", "not null"), (b"", "must be JSON"), (b"{", "must be JSON"),
    (b'{"a":1} x', "must be JSON"), (b'{"a":NaN}', "must be JSON"),
])  # fmt: skip
def test_wrap_rejects_non_objects(ce, body, message):
    with pytest.raises(EnvelopeError, match=message) as info:
        wrap(ce, body)
    assert isinstance(info.value, ValueError)


def test_wrap_empty_object(ce):
    assert orjson.loads(wrap(ce, b" {} "))["specversion"] == "1.0"


# -- raw, parse, expired ------------------------------------------------------------------------


def test_raw(ce):
    assert ce.raw(b"\x00hi", id="r1", topic="t", pubsubname="p") == (
        b'{"id":"r1","specversion":"1.0","datacontenttype":"application/octet-stream","source":"Dapr",'
        b'"type":"com.dapr.event.sent","topic":"t","pubsubname":"p","data_base64":"AGhp"}'
    )


def test_raw_with_time_and_trace(ce):
    event = orjson.loads(ce.raw(b"", id="r", topic="t", pubsubname="p", time="T", traceparent="tp", tracestate="ts"))
    assert list(event)[7:] == ["time", "traceid", "traceparent", "tracestate", "data_base64"]
    assert event["traceid"] == event["traceparent"] == "tp" and event["data_base64"] == ""


def test_parse(ce):
    assert ce.parse(b'{"id":"1","data":{"a":[1]}}') == {"id": "1", "data": {"a": [1]}}
    assert ce.parse(b'{"n": 1e400}') == {"n": float("inf")}
    for bad in (b"[]", b"nope", b""):
        with pytest.raises(EnvelopeError):
            ce.parse(bad)


NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("expiration, result", [
    ("2024-05-01T11:59:59Z", True), ("2024-05-01T12:00:00Z", False), ("2024-05-01T12:00:01Z", False),
    ("2024-05-01T11:59:59.999999999Z", True), ("2024-05-01T12:00:00.000001Z", False),
    ("2024-05-01T13:59:59+02:00", True), ("2024-05-01T10:00:01-02:00", False),
    ("", False), ("garbage", False), ("2024-05-01", False), ("2024-05-01 11:00:00Z", False),
    ("2024-05-01t11:00:00z", False), ("2024-13-01T11:00:00Z", False), ("2024-05-01T11:00:60Z", False),
    ("2024-05-01T11:00:00+24:00", False), (12, False), (None, False),
])  # fmt: skip
def test_expired(ce, expiration, result):
    assert ce.expired({"expiration": expiration}, NOW) is result
    assert ce.expired({"expiration": expiration}, NOW.timestamp()) is result
    assert ce.expired({"expiration": expiration}, NOW.replace(tzinfo=None)) is result


def test_no_expiration_never_expires(ce):
    assert ce.expired({}, NOW + timedelta(days=10**5)) is False


@pytest.mark.parametrize("content_type, result", [
    ("application/cloudevents+json", True), ("Application/CloudEvents+JSON; charset=utf-8", True),
    ("application/json", False), ("application/cloudevents+protobuf", False), (None, False), ("", False),
])  # fmt: skip
def test_is_cloudevent(ce, content_type, result):
    assert ce.is_cloudevent(content_type) is result


def test_facade_exports_the_loaded_twin():
    from pillion import _impl, cloudevents

    module = import_twin("cloudevents", _impl.loaded()["cloudevents"])
    assert cloudevents.envelope is module.envelope and cloudevents.EnvelopeError is EnvelopeError


def test_new_id_is_a_random_uuid4():
    import uuid

    from pillion.cloudevents import new_id

    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:200]:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
