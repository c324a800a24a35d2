"""The publish API (dapr-api.md §4.1-§4.3): envelope, metadata, errors, bulk publish.

No sockets: a ``Request`` is built directly with its router ``params``; the component
is a fake that records what it is handed.
"""

from __future__ import annotations

import asyncio
import base64
import calendar
import time
import types
from urllib.parse import urlencode

import orjson
import pytest

from pillion.api.pubsub import bulk_publish, publish
from pillion.components.pubsub import PublishError, PubSub
from pillion.errors import DaprError
from pillion.runtime.pubsub import PubSubBinding
from pillion.server.http import Request


class _Component(PubSub):
    def __init__(self, features=(), fail_on=None):
        self.features = frozenset(features)
        self.published = []
        self.fail_on = fail_on or (lambda topic, data: False)

    async def publish(self, topic, data, metadata):
        if self.fail_on(topic, data):
            raise PublishError("broker refused")
        self.published.append((topic, data, dict(metadata)))

    async def subscribe(self, topic, handler, options):
        pass


def _sidecar(component=None, metadata=None, pubsubs=None):
    component = component or _Component()
    if pubsubs is None:
        pubsubs = {"ps": PubSubBinding("ps", component, metadata or {}, "myapp")}
    return types.SimpleNamespace(app_id="myapp", pubsubs=pubsubs), component


def _request(body=b"", content_type=None, query=None, headers=(), pubsub="ps", topic="orders"):
    hdrs = list(headers)
    if content_type is not None:
        hdrs.append((b"Content-Type", content_type.encode()))
    request = Request("POST", f"/v1.0/publish/{pubsub}/{topic}", urlencode(query or {}), hdrs, body, True)
    request.params = {"pubsubname": pubsub, "topic": topic}
    return request


def _publish(body=b"", content_type=None, query=None, headers=(), sidecar=None, **kw):
    sidecar, component = sidecar or _sidecar()
    response = asyncio.run(publish(sidecar, _request(body, content_type, query, headers, **kw)))
    return response, component


def _error(call):
    with pytest.raises(DaprError) as err:
        call()
    return err.value.status, err.value.code


def _only_event(component):
    [(topic, data, metadata)] = component.published
    return topic, orjson.loads(data), metadata


# -- single publish ---------------------------------------------------------------------


def test_envelope_defaults():
    response, component = _publish(b'{"a": 1}', "application/json")
    assert response.status == 204
    topic, event, metadata = _only_event(component)
    assert topic == "orders" and metadata == {}
    assert event["source"] == "myapp"
    assert event["type"] == "com.dapr.event.sent"
    assert event["specversion"] == "1.0"
    assert event["datacontenttype"] == "application/json"
    assert (event["topic"], event["pubsubname"]) == ("orders", "ps")
    assert event["data"] == {"a": 1}
    assert event["id"] and event["time"].endswith("Z")
    assert "expiration" not in event


def test_topic_with_slashes():
    _, component = _publish(b"x", topic="a/b/c")
    topic, event, _ = _only_event(component)
    assert topic == event["topic"] == "a/b/c"


@pytest.mark.parametrize("content_type, body, key, value", [
    (None, b"hello", "data", "hello"),
    ("text/plain", b"hello", "data", "hello"),
    ("application/json; charset=utf-8", b"[1, 2]", "data", [1, 2]),
    ("application/json", b"not json", "data", "not json"),
    ("application/octet-stream", b"\x00\x01", "data_base64", base64.b64encode(b"\x00\x01").decode()),
])
def test_payload_by_content_type(content_type, body, key, value):
    _, component = _publish(body, content_type)
    _, event, _ = _only_event(component)
    assert event[key] == value
    assert event["datacontenttype"] == (content_type or "text/plain")


def test_cloudevent_overrides_and_component_metadata():
    query = {"metadata.cloudevent.id": "id-1", "metadata.cloudevent.source": "src",
             "metadata.cloudevent.type": "my.type", "metadata.cloudevent.traceparent": "00-tp-01",
             "metadata.cloudevent.traceid": "00-ignored-01", "metadata.cloudevent.tracestate": "k=v",
             "metadata.partitionKey": "p1", "metadata.rawPayload": "false", "other": "x"}
    _, component = _publish(b"x", query=query, headers=[(b"traceparent", b"00-header-01")])
    _, event, metadata = _only_event(component)
    assert (event["id"], event["source"], event["type"]) == ("id-1", "src", "my.type")
    assert event["traceparent"] == event["traceid"] == "00-tp-01"
    assert event["tracestate"] == "k=v"
    assert metadata == {"partitionKey": "p1"}          # no cloudevent.*, no rawPayload


def test_traceid_override_without_traceparent():
    _, component = _publish(b"x", query={"metadata.cloudevent.traceid": "00-tid-01"})
    _, event, _ = _only_event(component)
    assert event["traceparent"] == "00-tid-01"


def test_traceparent_header_used():
    _, component = _publish(b"x", headers=[(b"traceparent", b"00-abc-def-01"), (b"tracestate", b"a=b")])
    _, event, _ = _only_event(component)
    assert event["traceparent"] == event["traceid"] == "00-abc-def-01"
    assert event["tracestate"] == "a=b"


@pytest.mark.parametrize("value", ["true", "True", "TRUE", "1"])
def test_raw_payload_passes_body_through(value):
    body = b"\x00not an envelope"
    _, component = _publish(body, "application/json", query={"metadata.rawPayload": value, "metadata.k": "v"})
    assert component.published == [("orders", body, {"k": "v"})]


@pytest.mark.parametrize("value", ["false", "0", ""])
def test_raw_payload_false_builds_envelope(value):
    _, component = _publish(b"x", query={"metadata.rawPayload": value})
    _, event, _ = _only_event(component)
    assert event["data"] == "x"


@pytest.mark.parametrize("value", ["yes", "2", "on"])
def test_raw_payload_invalid(value):
    sidecar, component = _sidecar()
    assert _error(lambda: asyncio.run(publish(sidecar, _request(b"x", query={"metadata.rawPayload": value})))) == \
        (400, "ERR_PUBSUB_REQUEST_METADATA")
    assert component.published == []


@pytest.mark.parametrize("value", ["t", "T"])
def test_raw_payload_parsebool_short_forms(value):
    _, component = _publish(b"raw", query={"metadata.rawPayload": value})
    assert component.published[0][1] == b"raw"


def _rfc3339(text):
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


def test_ttl_adds_expiration_without_native_ttl():
    before = time.time()
    _, component = _publish(b"x", query={"metadata.ttlInSeconds": "120"})
    _, event, metadata = _only_event(component)
    assert before + 118 <= _rfc3339(event["expiration"]) <= time.time() + 121
    assert metadata == {"ttlInSeconds": "120"}         # the component still sees it


def test_ttl_zero_expires_now():
    _, component = _publish(b"x", query={"metadata.ttlInSeconds": "0"})
    _, event, _ = _only_event(component)
    assert abs(_rfc3339(event["expiration"]) - time.time()) <= 2


def test_ttl_left_to_component_with_message_ttl():
    _, component = _publish(b"x", query={"metadata.ttlInSeconds": "120"}, sidecar=_sidecar(_Component(["MESSAGE_TTL"])))
    _, event, metadata = _only_event(component)
    assert "expiration" not in event and metadata == {"ttlInSeconds": "120"}


@pytest.mark.parametrize("value", ["-1", "abc", "1.5"])
def test_bad_ttl(value):
    sidecar, component = _sidecar()
    assert _error(lambda: asyncio.run(publish(sidecar, _request(b"x", query={"metadata.ttlInSeconds": value})))) == \
        (400, "ERR_PUBSUB_REQUEST_METADATA")
    assert component.published == []


def test_raw_payload_ignores_ttl_envelope():
    _, component = _publish(b"raw", query={"metadata.rawPayload": "true", "metadata.ttlInSeconds": "5"})
    assert component.published == [("orders", b"raw", {"ttlInSeconds": "5"})]


def test_cloudevents_body_wrapped():
    body = orjson.dumps({"id": "mine", "source": "app-src", "type": "t.x", "specversion": "1.0", "topic": "wrong",
                         "pubsubname": "wrong", "data": {"k": 1}, "custom": "kept"})
    _, component = _publish(body, "application/cloudevents+json; charset=utf-8",
                            headers=[(b"traceparent", b"00-h-01")])
    _, event, _ = _only_event(component)
    assert (event["topic"], event["pubsubname"]) == ("orders", "ps")       # always overwritten
    assert (event["id"], event["source"], event["type"]) == ("mine", "app-src", "t.x")  # kept
    assert event["custom"] == "kept" and event["data"] == {"k": 1}
    assert event["traceparent"] == "00-h-01" and "time" in event


def test_cloudevents_body_completed():
    _, component = _publish(b'{"data": 1}', "application/cloudevents+json")
    _, event, _ = _only_event(component)
    assert event["specversion"] == "1.0" and event["type"] == "com.dapr.event.sent"
    assert event["source"] and event["id"]


def test_cloudevents_body_gets_expiration():
    _, component = _publish(b'{"id":"1"}', "application/cloudevents+json", query={"metadata.ttlInSeconds": "60"})
    _, event, _ = _only_event(component)
    assert "expiration" in event


@pytest.mark.parametrize("body", [b"not json", b"[1]", b'"s"', b""])
def test_invalid_cloudevent_body(body):
    sidecar, component = _sidecar()
    call = lambda: asyncio.run(publish(sidecar, _request(body, "application/cloudevents+json")))  # noqa: E731
    assert _error(call) == (500, "ERR_PUBSUB_CLOUD_EVENTS_SER")
    assert component.published == []


def test_unknown_pubsub():
    sidecar, _ = _sidecar()
    assert _error(lambda: asyncio.run(publish(sidecar, _request(b"x", pubsub="nope")))) == (404, "ERR_PUBSUB_NOT_FOUND")


def test_no_pubsub_configured():
    sidecar, _ = _sidecar(pubsubs={})
    assert _error(lambda: asyncio.run(publish(sidecar, _request(b"x")))) == (400, "ERR_PUBSUB_NOT_CONFIGURED")


def test_empty_topic():
    sidecar, _ = _sidecar()
    assert _error(lambda: asyncio.run(publish(sidecar, _request(b"x", topic="")))) == (404, "ERR_TOPIC_NAME_EMPTY")


def test_empty_pubsub_name():
    sidecar, _ = _sidecar()
    assert _error(lambda: asyncio.run(publish(sidecar, _request(b"x", pubsub="")))) == (404, "ERR_PUBSUB_EMPTY")


@pytest.mark.parametrize("metadata, topic", [
    ({"publishingScopes": "myapp=other"}, "orders"),
    ({"publishingScopes": "myapp="}, "orders"),
    ({"allowedTopics": "other"}, "orders"),
    ({"protectedTopics": "orders"}, "orders"),
])
def test_scopes_forbid(metadata, topic):
    sidecar, component = _sidecar(metadata=metadata)
    assert _error(lambda: asyncio.run(publish(sidecar, _request(b"x", topic=topic)))) == (403, "ERR_PUBSUB_FORBIDDEN")
    assert component.published == []


def test_scopes_allow():
    sidecar = _sidecar(metadata={"publishingScopes": "myapp=orders", "protectedTopics": "orders"})
    response, component = _publish(b"x", sidecar=sidecar)
    assert response.status == 204 and len(component.published) == 1


def test_component_publish_error():
    sidecar, _ = _sidecar(_Component(fail_on=lambda topic, data: True))
    assert _error(lambda: asyncio.run(publish(sidecar, _request(b"x")))) == (500, "ERR_PUBSUB_PUBLISH_MESSAGE")


# -- bulk publish -------------------------------------------------------------------------


def _bulk(entries, query=None, sidecar=None, raw_body=None):
    sidecar, component = sidecar or _sidecar()
    body = raw_body if raw_body is not None else orjson.dumps(entries)
    request = Request("POST", "/v1.0-alpha1/publish/bulk/ps/orders", urlencode(query or {}),
                      [(b"Content-Type", b"application/json")], body, True)
    request.params = {"pubsubname": "ps", "topic": "orders"}
    return asyncio.run(bulk_publish(sidecar, request)), component


def test_bulk_entry_content_types():
    entries = [
        {"entryId": "1", "event": {"a": [1, 2]}, "contentType": "application/json"},
        {"entryId": "2", "event": "hello", "contentType": "text/plain"},
        {"entryId": "3", "event": base64.b64encode(b"\x00\xff").decode(), "contentType": "application/octet-stream"},
        {"entryId": "4", "event": 5},                                           # no contentType: JSON
        {"entryId": "5", "event": "<x/>", "contentType": "application/xml"},
        {"entryId": "6", "event": {"id": "ce", "data": 1}, "contentType": "application/cloudevents+json"},
        {"entryId": "7", "event": [1], "contentType": "application/vnd.x+json"},
    ]
    response, component = _bulk(entries)
    assert response.status == 204
    events = [orjson.loads(data) for _, data, _ in component.published]
    assert [e["topic"] for e in events] == ["orders"] * 7
    assert events[0]["data"] == {"a": [1, 2]} and events[0]["datacontenttype"] == "application/json"
    assert events[1]["data"] == "hello" and events[1]["datacontenttype"] == "text/plain"
    assert base64.b64decode(events[2]["data_base64"]) == b"\x00\xff"
    assert events[3]["data"] == 5 and events[3]["datacontenttype"] == "application/json"
    assert events[4]["data"] == "<x/>"
    assert events[5]["id"] == "ce" and events[5]["data"] == 1 and events[5]["pubsubname"] == "ps"
    assert events[6]["data"] == [1]
    assert len({e["id"] for e in events}) == 7


@pytest.mark.parametrize("entry", [
    {"entryId": "1", "event": {"a": 1}, "contentType": "application/octet-stream"},
    {"entryId": "1", "event": "!!!not base64", "contentType": "application/octet-stream"},
    {"entryId": "1", "event": {"a": 1}, "contentType": "text/plain"},
    {"entryId": "1", "event": 5, "contentType": "application/xml"},
    {"entryId": "1", "event": "x", "contentType": "image/png"},
])
def test_bulk_content_mismatch(entry):
    assert _error(lambda: _bulk([entry])) == (400, "ERR_PUBSUB_EVENTS_SER")


@pytest.mark.parametrize("entries", [
    [{"entryId": "1", "event": 1}, {"entryId": "1", "event": 2}],      # duplicate
    [{"event": 1}],                                                       # missing
    [{"entryId": "", "event": 1}],
    [{"entryId": 7, "event": 1}],
    [{"entryId": "1", "event": 1, "metadata": "x"}],
    ["not an object"],
])
def test_bulk_bad_entries(entries):
    sidecar, component = _sidecar()
    assert _error(lambda: _bulk(entries, sidecar=(sidecar, component))) == (400, "ERR_PUBSUB_EVENTS_SER")
    assert component.published == []                  # validated before anything is published


def test_bulk_body_not_an_array():
    assert _error(lambda: _bulk({"entryId": "1"}))[1] == "ERR_PUBSUB_EVENTS_SER"


def test_bulk_body_not_json():
    assert _error(lambda: _bulk(None, raw_body=b"{nope"))[0] == 400


def test_bulk_entry_metadata_overrides_request_metadata():
    entries = [{"entryId": "1", "event": "a", "contentType": "text/plain", "metadata": {"k": "entry", "n": 3}},
               {"entryId": "2", "event": "b", "contentType": "text/plain"},
               {"entryId": "3", "event": "raw", "contentType": "text/plain", "metadata": {"rawPayload": "true"}},
               {"entryId": "4", "event": "c", "contentType": "text/plain",
                "metadata": {"cloudevent.type": "entry.type"}}]
    query = {"metadata.k": "request", "metadata.cloudevent.type": "req.type"}
    response, component = _bulk(entries, query)
    assert response.status == 204
    [(_, d1, m1), (_, d2, m2), (_, d3, m3), (_, d4, m4)] = component.published
    assert m1 == {"k": "entry", "n": "3"} and m2 == {"k": "request"} and m3 == {"k": "request"}
    assert orjson.loads(d1)["type"] == "req.type" and orjson.loads(d4)["type"] == "entry.type"
    assert d3 == b"raw"


def test_bulk_ttl_per_entry():
    entries = [{"entryId": "1", "event": "a", "contentType": "text/plain", "metadata": {"ttlInSeconds": "30"}},
               {"entryId": "2", "event": "b", "contentType": "text/plain"}]
    _, component = _bulk(entries)
    e1, e2 = (orjson.loads(d) for _, d, _ in component.published)
    assert "expiration" in e1 and "expiration" not in e2


def test_bulk_partial_failure_lists_failed_only():
    component = _Component(fail_on=lambda topic, data: b'"bad' in data)
    entries = [{"entryId": "ok1", "event": "good", "contentType": "text/plain"},
               {"entryId": "no1", "event": "bad-1", "contentType": "text/plain"},
               {"entryId": "ok2", "event": "good", "contentType": "text/plain"},
               {"entryId": "no2", "event": "bad-2", "contentType": "text/plain"}]
    response, component = _bulk(entries, sidecar=_sidecar(component))
    assert response.status == 500
    body = orjson.loads(response.body)
    assert body["errorCode"] == "ERR_PUBSUB_PUBLISH_MESSAGE"
    assert [f["entryId"] for f in body["failedEntries"]] == ["no1", "no2"]
    assert all("broker refused" in f["error"] for f in body["failedEntries"])
    assert len(component.published) == 2


def test_bulk_errors_like_single_publish():
    sidecar, _ = _sidecar(metadata={"protectedTopics": "orders"})
    assert _error(lambda: _bulk([{"entryId": "1", "event": 1}], sidecar=(sidecar, None))) == (403, "ERR_PUBSUB_FORBIDDEN")
    assert _error(lambda: _bulk([], sidecar=_sidecar(pubsubs={}))) == (400, "ERR_PUBSUB_NOT_CONFIGURED")


def test_bulk_empty_array():
    response, component = _bulk([])
    assert response.status == 204 and component.published == []


def test_bulk_entry_fields_match_case_insensitively_like_go():
    # The Dapr JS SDK sends "entryID"; daprd's Go JSON decoding folds key case, a later key winning.
    entries = [{"entryID": "a", "Event": {"n": 1}, "CONTENTTYPE": "application/json"},
               {"entryid": "x", "entryId": "b", "event": "t", "contentType": "text/plain", "Metadata": {"k": "v"}}]
    response, component = _bulk(entries)
    assert response.status == 204
    [(_, d1, _), (_, d2, m2)] = component.published
    assert orjson.loads(d1)["data"] == {"n": 1} and orjson.loads(d2)["data"] == "t" and m2 == {"k": "v"}
