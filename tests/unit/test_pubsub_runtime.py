"""The pub/sub runtime: Dapr's answer table, scopes, subscriptions, delivery, bulk, in-memory broker.

Contract: dapr-api.md §4.4-§4.8 and daprd's ``postman/http/http.go``. No sockets: the app
channel and the component are fakes that record what they are given.
"""

from __future__ import annotations

import asyncio
import base64
import types

import orjson
import pytest

from pillion.components.pubsub import Message, Outcome, PubSub, SubscribeOptions
from pillion.components.pubsub.memory import MemoryPubSub
from pillion.runtime import pubsub as rt
from pillion.runtime.app_channel import AppUnavailable
from pillion.runtime.pubsub import (
    DEAD_LETTER_AFTER,
    BulkDelivery,
    PubSubBinding,
    Subscriptions,
    _outcome,
    backoff,
    from_json,
)
from pillion.server.client import ClientError

S, R, D = Outcome.SUCCESS, Outcome.RETRY, Outcome.DROP


# -- the app's answer (§4.6 table) ------------------------------------------------------


@pytest.mark.parametrize("status, body, expected", [
    (200, b"", S),                                   # 2xx, empty body
    (204, b"", S),
    (200, b"   \n", S),                              # whitespace only is empty
    (200, b"not json", S),                           # unparsable JSON
    (200, b"{", S),
    (200, b'{"status":"SUCCESS"}', S),
    (200, b'{"status":""}', S),
    (200, b"{}", S),                                 # no status
    (200, b'{"status":null}', S),
    (200, b'{"other":"RETRY"}', S),
    (200, b"[1,2]", S),                              # JSON but not an object
    (200, b'"RETRY"', S),
    (200, b'{"status":"RETRY"}', R),
    (299, b'{"status":"RETRY"}', R),
    (200, b'{"status":"DROP"}', D),
    (201, b'{"status":"DROP"}', D),
    (200, b'{"status":"whatever"}', R),              # other string: error, retried
    (200, b'{"status":"OK"}', R),
    (404, b"", D),                                   # 404: dropped
    (404, b'{"status":"SUCCESS"}', D),
    (500, b"", R),
    (503, b'{"status":"SUCCESS"}', R),               # body ignored outside 2xx
    (302, b"", R),
    (400, b"", R),
    (199, b"", R),
    (300, b'{"status":"DROP"}', R),
])
def test_outcome_table(status, body, expected):
    assert _outcome(status, body) is expected


@pytest.mark.parametrize("body", [b'{"status":200}', b'{"status":true}', b'{"status":["RETRY"]}'])
def test_outcome_status_not_a_string_is_success_like_daprd(body):
    assert _outcome(200, body) is S


@pytest.mark.parametrize("body", [b'{"status":"success"}', b'{"status":"drop"}', b'{"status":"Success"}'])
def test_outcome_status_is_case_sensitive_like_daprd(body):
    assert _outcome(200, body) is R


def test_outcome_field_name_case_insensitive_like_daprd():
    assert _outcome(200, b'{"Status":"RETRY"}') is R


def test_backoff_doubles_and_caps():
    assert [backoff(n) for n in (0, 1, 2, 3, 4)] == [0.5, 0.5, 1.0, 2.0, 4.0]
    assert backoff(30) == rt.MAX_BACKOFF


# -- scopes (§4.8) ----------------------------------------------------------------------


def _binding(metadata=None, component=None, app_id="app1", name="ps"):
    return PubSubBinding(name, component or _Recorder(), metadata or {}, app_id)


def test_no_scopes_allow_everything():
    b = _binding()
    assert b.may_publish("app1", "t") and b.may_subscribe("app1", "t")
    assert b.consumer_group == "app1"


@pytest.mark.parametrize("key", ["consumerID", "consumerid", "CONSUMERID"])
def test_consumer_group_from_metadata(key):
    assert _binding({key: "grp"}).consumer_group == "grp"


def test_publishing_scopes():
    b = _binding({"publishingScopes": "app1=t1,t2;app2=;app3 = t3 "})
    assert b.may_publish("app1", "t1") and b.may_publish("app1", "t2")
    assert not b.may_publish("app1", "t3")
    assert not b.may_publish("app2", "t1")           # "app2=": nothing
    assert b.may_publish("app3", "t3") and not b.may_publish("app3", "t1")
    assert b.may_publish("other", "anything")        # unlisted app: unrestricted
    assert b.may_subscribe("app2", "t1")             # publishing scopes only


def test_subscription_scopes():
    b = _binding({"subscriptionScopes": "app1=t1;app2="})
    assert b.may_subscribe("app1", "t1") and not b.may_subscribe("app1", "t2")
    assert not b.may_subscribe("app2", "t1")
    assert b.may_publish("app1", "t2") and b.may_publish("app2", "t1")


def test_allowed_topics():
    b = _binding({"allowedTopics": "a, b"})
    assert b.may_publish("x", "a") and b.may_subscribe("x", "b")
    assert not b.may_publish("x", "c") and not b.may_subscribe("x", "c")


def test_protected_topics():
    b = _binding({"protectedTopics": "secret"})
    assert not b.may_publish("x", "secret") and not b.may_subscribe("x", "secret")
    assert b.may_publish("x", "open")


def test_scopes_grant_protected_and_unlisted_topics():
    b = _binding({"allowedTopics": "a", "protectedTopics": "p",
                  "publishingScopes": "app1=p,z", "subscriptionScopes": "app1=a"})
    assert b.may_publish("app1", "p")                # a scope grants a protected topic
    assert b.may_publish("app1", "z")                # and one outside allowedTopics (as daprd)
    assert not b.may_publish("app1", "a")            # the scope is the whole list for app1
    assert not b.may_publish("app2", "p")            # protected for others
    assert b.may_publish("app2", "a") and not b.may_publish("app2", "z")
    assert b.may_subscribe("app1", "a") and not b.may_subscribe("app1", "p")


def test_scope_metadata_names_case_insensitive():
    b = _binding({"PUBLISHINGSCOPES": "app1=t1", "allowedtopics": "t1,t2", "ProtectedTopics": "t2",
                  "SubscriptionScopes": "app1="})
    assert b.may_publish("app1", "t1") and not b.may_publish("app1", "t2")
    assert not b.may_publish("app9", "t2") and not b.may_publish("app9", "t3")
    assert not b.may_subscribe("app1", "t1")


# -- subscriptions (§4.4) ---------------------------------------------------------------


def test_from_json_v1_route():
    s = from_json({"pubsubname": "ps", "topic": "t", "route": "/orders"})
    assert (s.pubsubname, s.topic, s.rules, s.default_route) == ("ps", "t", [], "/orders")
    assert (s.metadata, s.dead_letter_topic, s.bulk, s.kind) == ({}, None, None, "PROGRAMMATIC")


def test_from_json_v2_rules_and_default():
    s = from_json({"pubsubname": "ps", "topic": "t", "route": "/ignored",
                   "routes": {"rules": [{"match": 'event.type == "a"', "path": "/a"},
                                        {"match": "", "path": "/any"}, {"path": "/nomatch"},
                                        {"match": "x"}, "junk"],
                              "default": "/d"}})
    assert s.rules == [('event.type == "a"', "/a"), ("", "/any"), ("", "/nomatch")]
    assert s.default_route == "/d"


def test_from_json_v2_without_default_keeps_route():
    s = from_json({"pubsubname": "ps", "topic": "t", "route": "/r", "routes": {"rules": [{"match": "", "path": "/a"}]}})
    assert s.default_route == "/r"


def test_from_json_field_names_case_insensitive():
    s = from_json({"PubsubName": "ps", "Topic": "t", "Route": "/r", "DeadLetterTopic": "dlq"})
    assert (s.pubsubname, s.topic, s.default_route, s.dead_letter_topic) == ("ps", "t", "/r", "dlq")


@pytest.mark.parametrize("entry", [
    None, [], "x",
    {"topic": "t", "route": "/r"},
    {"pubsubname": "ps", "route": "/r"},
    {"pubsubname": "", "topic": "t", "route": "/r"},
    {"pubsubname": "ps", "topic": "", "route": "/r"},
    {"pubsubname": 5, "topic": "t", "route": "/r"},
    {"pubsubname": "ps", "topic": "t"},
    {"pubsubname": "ps", "topic": "t", "route": ""},
    {"pubsubname": "ps", "topic": "t", "routes": {"rules": []}},
    {"pubsubname": "ps", "topic": "t", "routes": {"default": ""}},
])
def test_from_json_unusable(entry):
    with pytest.raises(ValueError):
        from_json(entry)


def test_from_json_metadata_dead_letter_bulk():
    bulk = {"enabled": True, "maxMessagesCount": 10, "maxAwaitDurationMs": 50}
    s = from_json({"pubsubname": "ps", "topic": "t", "route": "/r",
                   "metadata": {"rawPayload": "true", "n": 5, "b": False},
                   "deadLetterTopic": "dead", "bulkSubscribe": bulk})
    assert s.metadata == {"rawPayload": "true", "n": "5", "b": "False"}
    assert all(isinstance(v, str) for v in s.metadata.values())
    assert s.raw and s.dead_letter_topic == "dead" and s.bulk == bulk


def test_from_json_empty_dead_letter_is_none():
    assert from_json({"pubsubname": "ps", "topic": "t", "route": "/r", "deadLetterTopic": ""}).dead_letter_topic is None


@pytest.mark.parametrize("value, raw", [("true", True), ("TRUE", True), ("True", True), ("false", False),
                                        ("", False), ("yes", False)])
def test_raw_payload_flag(value, raw):
    assert _sub(metadata={"rawPayload": value}).raw is raw


@pytest.mark.parametrize("value", ["1", "t", "T"])
def test_raw_payload_flag_parsebool(value):
    assert _sub(metadata={"rawPayload": value}).raw


def test_route_rules_in_order_then_default():
    s = from_json({"pubsubname": "ps", "topic": "t",
                   "routes": {"rules": [{"match": 'event.type == "a"', "path": "/a"},
                                        {"match": 'event.type == "a" || event.type == "b"', "path": "/ab"},
                                        {"match": "event.data.n > 3", "path": "/big"}],
                              "default": "/d"}})
    s.compile()
    assert s.route({"type": "a"}) == "/a"
    assert s.route({"type": "b"}) == "/ab"
    assert s.route({"type": "c", "data": {"n": 5}}) == "/big"
    assert s.route({"type": "c", "data": {"n": 1}}) == "/d"
    assert s.route({}) == "/d"


def test_route_without_default_may_match_nothing():
    s = from_json({"pubsubname": "ps", "topic": "t", "routes": {"rules": [{"match": 'event.type == "a"', "path": "/a"}]}})
    s.compile()
    assert s.route({"type": "z"}) is None


def test_route_empty_match_matches_all_before_later_rules():
    s = from_json({"pubsubname": "ps", "topic": "t",
                   "routes": {"rules": [{"match": "  ", "path": "/all"}, {"match": "true", "path": "/never"}],
                              "default": "/d"}})
    s.compile()
    assert s.route({"type": "x"}) == "/all"


def test_bad_cel_is_reported_at_compile():
    s = from_json({"pubsubname": "ps", "topic": "t", "routes": {"rules": [{"match": "event.type ==", "path": "/a"}]}})
    with pytest.raises(ValueError):
        s.compile()


def test_describe_programmatic():
    s = from_json({"pubsubname": "ps", "topic": "t", "metadata": {"k": "v"}, "deadLetterTopic": "dlq",
                   "routes": {"rules": [{"match": 'event.type == "a"', "path": "/a"}], "default": "/d"}})
    d = s.describe()
    assert (d["pubsubname"], d["topic"], d["metadata"], d["type"], d["deadLetterTopic"]) == \
        ("ps", "t", {"k": "v"}, "PROGRAMMATIC", "dlq")
    assert "rules" in d
    orjson.dumps(d)


def test_describe_matches_daprd_http_shape():
    s = from_json({"pubsubname": "ps", "topic": "t", "routes": {"rules": [{"match": 'event.type == "a"', "path": "/a"}],
                                                                 "default": "/d"}})
    d = s.describe()
    assert d["rules"] == [{"match": 'event.type == "a"', "path": "/a"}, {"path": "/d"}]
    assert d["deadLetterTopic"] == ""


def test_describe_declarative_without_dead_letter():
    resource = types.SimpleNamespace(pubsubname="ps", topic="t", routes=[("", "/x")], default_route=None,
                                     metadata={"a": "b"}, dead_letter_topic=None, bulk_subscribe=None)
    s = rt.from_resource(resource)
    assert s.kind == "DECLARATIVE"
    d = s.describe()
    assert d["type"] == "DECLARATIVE" and d["deadLetterTopic"] == ""
    s.compile()
    assert s.route({}) == "/x"


# -- fakes ------------------------------------------------------------------------------


class _Recorder(PubSub):
    """A component that records publishes; ``fail`` makes them raise."""

    def __init__(self, fail=False):
        self.published = []
        self.fail = fail

    async def publish(self, topic, data, metadata):
        if self.fail:
            raise RuntimeError("broker down")
        self.published.append((topic, data, dict(metadata)))

    async def subscribe(self, topic, handler, options):
        pass


class _Reply:
    def __init__(self, status, body=b""):
        self.status = status
        self.body = body


class _App:
    """The app channel: answers from a list (the last repeats); records the calls."""

    protocol = "http"

    def __init__(self, *answers):
        self.answers = list(answers) or [_Reply(200)]
        self.calls = []

    async def call(self, method, target, headers, body, timeout=None):
        self.calls.append((method, target, list(headers), body))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer


def _sidecar(app, pubsubs=None):
    return types.SimpleNamespace(app=app, pubsubs=pubsubs or {}, app_id="app1",
                                 options=types.SimpleNamespace(app_max_concurrency=-1),
                                 resources=types.SimpleNamespace(subscriptions=[]))


def _sub(route="/r", dead_letter=None, metadata=None, rules=None, bulk=None):
    entry = {"pubsubname": "ps", "topic": "t", "route": route, "metadata": metadata or {}}
    if rules is not None:
        entry["routes"] = {"rules": rules}
    if dead_letter:
        entry["deadLetterTopic"] = dead_letter
    if bulk:
        entry["bulkSubscribe"] = bulk
    s = from_json(entry)
    s.compile()
    return s


def _event(**extra):
    return orjson.dumps({"id": "1", "source": "s", "type": "com.dapr.event.sent", "specversion": "1.0",
                         "datacontenttype": "application/json", "topic": "t", "pubsubname": "ps",
                         "data": {"n": 1}, **extra})


@pytest.fixture
def no_wait(monkeypatch):
    waits = []

    def fake_backoff(attempts):
        waits.append(attempts)
        return 0

    monkeypatch.setattr(rt, "backoff", fake_backoff)
    return waits


def _deliver(app, subscription, message, component=None):
    component = component or _Recorder()
    binding = _binding(component=component)
    runtime = Subscriptions(_sidecar(app, {"ps": binding}))
    handler = runtime._handler(subscription, binding)
    outcome = asyncio.run(handler(message))
    assert runtime.in_flight == 0
    return outcome, component


# -- single delivery (§4.6) -------------------------------------------------------------


def test_success_posts_cloudevent_to_route():
    app = _App(_Reply(200, b'{"status":"SUCCESS"}'))
    data = _event(traceparent="00-abc-def-01")
    outcome, component = _deliver(app, _sub(route="orders"), Message("t", data, {"k": "v"}))
    assert outcome is S and component.published == []
    [(method, target, headers, body)] = app.calls
    assert (method, target, body) == ("POST", "/orders", data)
    assert (b"Content-Type", b"application/cloudevents+json") in headers
    assert (b"traceparent", b"00-abc-def-01") in headers
    assert (b"k", b"v") in headers


def test_unsafe_metadata_headers_skipped():
    app = _App(_Reply(200))
    meta = {"ok": "1", "bad\u00e9": "x", "nl": "a\nb", "cr": "a\rb", "colon:name": "x", "val": "\u00e9t\u00e9"}
    _deliver(app, _sub(), Message("t", _event(), meta))
    names = [k for k, _ in app.calls[0][2]]
    assert b"ok" in names
    for bad in ("bad\u00e9", "nl", "cr", "colon:name", "val"):
        assert bad.encode() not in names


def test_no_traceparent_header_without_one():
    app = _App(_Reply(200))
    _deliver(app, _sub(), Message("t", _event(traceparent="")))
    assert not [k for k, _ in app.calls[0][2] if k.lower() == b"traceparent"]


def test_retry_waits_and_counts_attempts(no_wait):
    app = _App(_Reply(200, b'{"status":"RETRY"}'))
    message = Message("t", _event())
    s = _sub()
    for attempt in range(1, DEAD_LETTER_AFTER + 3):
        outcome, component = _deliver(app, s, message)
        assert outcome is R and message.attempts == attempt
    assert no_wait == list(range(1, DEAD_LETTER_AFTER + 3))
    assert component.published == []                 # never dead-lettered without a topic


@pytest.mark.parametrize("failure", [_Reply(500), _Reply(503, b'{"status":"SUCCESS"}'), _Reply(200, b'{"status":"x"}'),
                                     AppUnavailable("app is not healthy"), ClientError("connection refused")])
def test_failures_retry(no_wait, failure):
    outcome, _ = _deliver(_App(failure), _sub(), Message("t", _event()))
    assert outcome is R and no_wait == [1]


def test_dead_letter_after_attempts(no_wait):
    app = _App(_Reply(500))
    component = _Recorder()
    data = _event()
    message = Message("t", data, {"m": "1"})
    s = _sub(dead_letter="dlq")
    outcomes = [_deliver(app, s, message, component)[0] for _ in range(DEAD_LETTER_AFTER)]
    assert outcomes == [R] * (DEAD_LETTER_AFTER - 1) + [S]
    assert component.published == [("dlq", data, {"m": "1"})]
    assert len(app.calls) == DEAD_LETTER_AFTER
    assert len(no_wait) == DEAD_LETTER_AFTER - 1


def test_dead_letter_publish_failure_retries(no_wait):
    message = Message("t", _event(), attempts=DEAD_LETTER_AFTER - 1)
    outcome, _ = _deliver(_App(_Reply(500)), _sub(dead_letter="dlq"), message, _Recorder(fail=True))
    assert outcome is R


def test_drop_goes_to_dead_letter():
    data = _event()
    outcome, component = _deliver(_App(_Reply(200, b'{"status":"DROP"}')), _sub(dead_letter="dlq"),
                                  Message("t", data))
    assert outcome is S and component.published == [("dlq", data, {})]


def test_drop_without_dead_letter():
    outcome, component = _deliver(_App(_Reply(200, b'{"status":"DROP"}')), _sub(), Message("t", _event()))
    assert outcome is D and component.published == []


def test_404_drops_without_dead_letter():
    outcome, component = _deliver(_App(_Reply(404)), _sub(dead_letter="dlq"), Message("t", _event()))
    assert outcome is D and component.published == []


@pytest.mark.parametrize("data", [b"plain text", b"[1,2]", b'"str"', b"{"])
def test_not_a_cloudevent(data):
    app = _App()
    outcome, component = _deliver(app, _sub(dead_letter="dlq"), Message("t", data))
    assert outcome is S and component.published == [("dlq", data, {})] and app.calls == []
    outcome, component = _deliver(app, _sub(), Message("t", data))
    assert outcome is D and component.published == [] and app.calls == []


def test_expired_event_dropped():
    app = _App()
    data = _event(expiration="2000-01-01T00:00:00Z")
    outcome, component = _deliver(app, _sub(), Message("t", data))
    assert outcome is D and app.calls == [] and component.published == []
    outcome, component = _deliver(app, _sub(dead_letter="dlq"), Message("t", data))
    assert outcome is S and app.calls == [] and component.published == [("dlq", data, {})]


def test_future_expiration_delivered():
    app = _App()
    outcome, _ = _deliver(app, _sub(), Message("t", _event(expiration="2999-01-01T00:00:00Z")))
    assert outcome is S and len(app.calls) == 1


def test_no_route_matches():
    rules = [{"match": 'event.type == "never"', "path": "/a"}]
    app = _App()
    data = _event()
    outcome, component = _deliver(app, _sub(route=None, rules=rules), Message("t", data))
    assert outcome is D and app.calls == [] and component.published == []
    outcome, component = _deliver(app, _sub(route=None, rules=rules, dead_letter="dlq"), Message("t", data))
    assert outcome is S and app.calls == [] and component.published == [("dlq", data, {})]


def test_rule_routes_to_its_path():
    rules = [{"match": 'event.type == "x"', "path": "/x"}, {"match": "event.data.n == 1", "path": "/one"}]
    app = _App()
    _deliver(app, _sub(rules=rules), Message("t", _event()))
    assert app.calls[0][1] == "/one"


def test_raw_subscription_builds_cloudevent():
    app = _App()
    payload = b"\x00\xffraw bytes"
    outcome, _ = _deliver(app, _sub(metadata={"rawPayload": "true"}), Message("t", payload))
    assert outcome is S
    [(_, _, headers, body)] = app.calls
    event = orjson.loads(body)
    assert base64.b64decode(event["data_base64"]) == payload
    assert (event["specversion"], event["datacontenttype"], event["source"], event["type"]) == \
        ("1.0", "application/octet-stream", "Dapr", "com.dapr.event.sent")
    assert (event["topic"], event["pubsubname"]) == ("t", "ps")
    assert event["id"] and "data" not in event
    assert (b"Content-Type", b"application/cloudevents+json") in headers


def test_raw_subscription_dead_letters_original_bytes():
    payload = b"raw!"
    outcome, component = _deliver(_App(_Reply(200, b'{"status":"DROP"}')),
                                  _sub(metadata={"rawPayload": "true"}, dead_letter="dlq"), Message("t", payload))
    assert outcome is S and component.published == [("dlq", payload, {})]


# -- bulk delivery (§4.7) ---------------------------------------------------------------


class _BulkApp(_App):
    """Answers each bulk POST with statuses computed from the entries."""

    def __init__(self, decide):
        super().__init__()
        self.decide = decide

    async def call(self, method, target, headers, body, timeout=None):
        self.calls.append((method, target, list(headers), body))
        return self.decide(orjson.loads(body))


def _bulk(app, messages, subscription=None, component=None, max_count=None):
    component = component or _Recorder()
    binding = _binding(component=component)
    runtime = Subscriptions(_sidecar(app, {"ps": binding}))
    count = len(messages) if max_count is None else max_count
    subscription = subscription or _sub(dead_letter=None,
                                        bulk={"enabled": True, "maxMessagesCount": count, "maxAwaitDurationMs": 50})
    handler = runtime._handler(subscription, binding)
    assert isinstance(handler.__self__, BulkDelivery)

    async def run():
        return await asyncio.gather(*(handler(m) for m in messages))

    outcomes = asyncio.run(run())
    assert runtime.in_flight == 0
    return outcomes, component


def _bulk_sub(**kw):
    bulk = {"enabled": True, "maxMessagesCount": kw.pop("count", 3), "maxAwaitDurationMs": 50}
    return _sub(bulk=bulk, **kw)


def test_bulk_one_post_for_max_messages(no_wait):
    seen = []

    def decide(body):
        seen.append(body)
        return _Reply(200, orjson.dumps({"statuses": [{"entryId": e["entryId"], "status": "SUCCESS"}
                                                      for e in body["entries"]]}))

    app = _BulkApp(decide)
    messages = [Message("t", _event(id=str(i)), {"i": str(i)}) for i in range(3)]
    outcomes, _ = _bulk(app, messages, _bulk_sub(count=3))
    assert outcomes == [S, S, S]
    [(method, target, headers, _)] = app.calls
    assert (method, target) == ("POST", "/r")
    assert (b"Content-Type", b"application/json") in headers
    [body] = seen
    assert (body["type"], body["topic"], body["pubsubname"]) == ("com.dapr.event.sent.bulk", "t", "ps")
    assert body["id"]
    assert [e["event"]["id"] for e in body["entries"]] == ["0", "1", "2"]
    assert [e["metadata"] for e in body["entries"]] == [{"i": "0"}, {"i": "1"}, {"i": "2"}]
    assert {e["contentType"] for e in body["entries"]} == {"application/cloudevents+json"}
    assert len({e["entryId"] for e in body["entries"]}) == 3


def test_bulk_flushes_after_max_wait(no_wait):
    app = _BulkApp(lambda body: _Reply(200, orjson.dumps({"statuses": [{"entryId": e["entryId"], "status": "SUCCESS"}
                                                                       for e in body["entries"]]})))
    outcomes, _ = _bulk(app, [Message("t", _event())], _bulk_sub(count=100))
    assert outcomes == [S] and len(app.calls) == 1


def test_bulk_per_entry_statuses(no_wait):
    def decide(body):
        ids = [e["entryId"] for e in body["entries"]]
        return _Reply(200, orjson.dumps({"statuses": [
            {"entryId": ids[0], "status": "SUCCESS"},
            {"entryId": ids[1], "status": "RETRY"},
            {"entryId": ids[2], "status": "DROP"},
            {"entryId": ids[3], "status": ""},          # empty status: RETRY in bulk
            {"entryId": ids[4], "status": "bogus"},
            # ids[5] missing: RETRY
            {"entryId": "not-ours", "status": "DROP"},
        ]}))

    component = _Recorder()
    messages = [Message("t", _event(id=str(i))) for i in range(6)]
    outcomes, _ = _bulk(_BulkApp(decide), messages, _bulk_sub(count=6, dead_letter="dlq"), component)
    assert outcomes == [S, R, S, R, R, R]
    assert component.published == [("dlq", messages[2].data, {})]   # DROP to the DLQ
    assert [m.attempts for m in messages] == [0, 1, 0, 1, 1, 1]


def test_bulk_drop_without_dead_letter(no_wait):
    app = _BulkApp(lambda body: _Reply(200, orjson.dumps({"statuses": [{"entryId": e["entryId"], "status": "DROP"}
                                                                       for e in body["entries"]]})))
    outcomes, component = _bulk(app, [Message("t", _event())], _bulk_sub(count=1))
    assert outcomes == [D] and component.published == []


def test_bulk_404_drops_all(no_wait):
    outcomes, component = _bulk(_App(_Reply(404)), [Message("t", _event()) for _ in range(2)], _bulk_sub(count=2))
    assert outcomes == [D, D] and component.published == []


def test_bulk_404_not_dead_lettered(no_wait):
    outcomes, component = _bulk(_App(_Reply(404)), [Message("t", _event())], _bulk_sub(count=1, dead_letter="dlq"))
    assert component.published == []


@pytest.mark.parametrize("failure", [_Reply(500, b'{"statuses":[]}'), _Reply(302), _Reply(200, b"not json"),
                                     _Reply(200, b""), AppUnavailable("down"), ClientError("refused")])
def test_bulk_failure_retries_all(no_wait, failure):
    messages = [Message("t", _event()) for _ in range(2)]
    outcomes, component = _bulk(_App(failure), messages, _bulk_sub(count=2))
    assert outcomes == [R, R] and component.published == []
    assert [m.attempts for m in messages] == [1, 1]


def test_bulk_retry_dead_letters_after_attempts(no_wait):
    message = Message("t", _event(), attempts=DEAD_LETTER_AFTER - 1)
    outcomes, component = _bulk(_App(_Reply(500)), [message], _bulk_sub(count=1, dead_letter="dlq"))
    assert outcomes == [S] and component.published == [("dlq", message.data, {})]


def test_bulk_not_a_cloudevent_and_unroutable_are_dropped(no_wait):
    app = _BulkApp(lambda body: _Reply(200, orjson.dumps({"statuses": [{"entryId": e["entryId"], "status": "SUCCESS"}
                                                                       for e in body["entries"]]})))
    rules = [{"match": 'event.type == "ok"', "path": "/ok"}]
    messages = [Message("t", b"junk"), Message("t", _event(type="other")), Message("t", _event(type="ok"))]
    outcomes, component = _bulk(app, messages, _bulk_sub(count=3, route=None, rules=rules, dead_letter="dlq"))
    assert outcomes == [S, S, S]
    assert [p[1] for p in component.published] == [messages[0].data, messages[1].data]
    [(_, target, _, body)] = app.calls
    assert target == "/ok" and len(orjson.loads(body)["entries"]) == 1


def test_bulk_raw_entries_are_base64(no_wait):
    seen = []

    def decide(body):
        seen.append(body)
        return _Reply(200, orjson.dumps({"statuses": [{"entryId": e["entryId"], "status": "SUCCESS"}
                                                      for e in body["entries"]]}))

    outcomes, _ = _bulk(_BulkApp(decide), [Message("t", b"\x01\x02")], _bulk_sub(count=1, metadata={"rawPayload": "true"}))
    assert outcomes == [S]
    [entry] = seen[0]["entries"]
    assert entry["contentType"] == "application/octet-stream"
    assert base64.b64decode(entry["event"]) == b"\x01\x02"


def test_bulk_expired_event_dropped(no_wait):
    app = _BulkApp(lambda body: _Reply(200, orjson.dumps({"statuses": [{"entryId": e["entryId"], "status": "SUCCESS"}
                                                                       for e in body["entries"]]})))
    _bulk(app, [Message("t", _event(expiration="2000-01-01T00:00:00Z"))], _bulk_sub(count=1))
    assert app.calls == []


# -- discovery ----------------------------------------------------------------------------


@pytest.mark.parametrize("reply, topics", [
    (_Reply(200, b'[{"pubsubname":"ps","topic":"a","route":"/a"},{"topic":"bad"},'
                 b'{"pubsubname":"ps","topic":"b","routes":{"default":"/b"}}]'), ["a", "b"]),
    (_Reply(404), []),
    (_Reply(500, b"[]"), []),
    (_Reply(200, b"{}"), []),
    (_Reply(200, b"nope"), []),
])
def test_discover(reply, topics):
    app = _App(reply)
    found = asyncio.run(Subscriptions(_sidecar(app))._discover())
    assert [s.topic for s in found] == topics
    method, target, headers, _ = app.calls[0]
    assert (method, target, headers) == ("GET", "/dapr/subscribe", [(b"dapr-app-id", b"app1")])


def test_discover_retries_connection_errors(no_wait):
    app = _App(AppUnavailable("x"), ClientError("y"), _Reply(200, b'[{"pubsubname":"ps","topic":"a","route":"/a"}]'))
    found = asyncio.run(Subscriptions(_sidecar(app))._discover())
    assert [s.topic for s in found] == ["a"] and len(app.calls) == 3


# -- pubsub.in-memory ---------------------------------------------------------------------


def _memory():
    return MemoryPubSub(types.SimpleNamespace(name="mem"), None)


async def _settle(component, rounds=50):
    for _ in range(rounds):
        await asyncio.sleep(0)
        if not component._tasks:
            return


def test_memory_each_group_gets_each_message_once():
    async def run():
        ps = _memory()
        got = {"g1": [], "g2": []}

        def handler(group):
            async def handle(message):
                got[group].append(message.data)
                return S
            return handle

        await ps.subscribe("t", handler("g1"), SubscribeOptions(group="g1"))
        await ps.subscribe("t", handler("g2"), SubscribeOptions(group="g2"))
        await ps.subscribe("t", handler("g1"), SubscribeOptions(group="g1"))   # same group: one handler
        await ps.publish("t", b"m1", {"k": "v"})
        await ps.publish("t", b"m2", {})
        await ps.publish("other", b"lost", {})                               # no subscriber: dropped
        await _settle(ps)
        return got

    assert asyncio.run(run()) == {"g1": [b"m1", b"m2"], "g2": [b"m1", b"m2"]}


def test_memory_retry_redelivers_and_drop_acks():
    async def run():
        ps = _memory()
        seen = []
        answers = [R, R, S]

        async def handle(message):
            seen.append((message.data, message.redelivered, dict(message.metadata)))
            return answers.pop(0) if answers else D

        await ps.subscribe("t", handle, SubscribeOptions(group="g"))
        await ps.publish("t", b"x", {"a": "b"})
        await _settle(ps)
        await ps.publish("t", b"y", {})
        await _settle(ps)
        return seen

    assert asyncio.run(run()) == [(b"x", False, {"a": "b"}), (b"x", True, {"a": "b"}), (b"x", True, {"a": "b"}),
                                  (b"y", False, {})]


def test_memory_stop_delivery_stops_retries():
    async def run():
        ps = _memory()
        calls = []

        async def handle(message):
            calls.append(message.data)
            if len(calls) == 3:
                await ps.stop_delivery()
            await asyncio.sleep(0)
            return R

        await ps.subscribe("t", handle, SubscribeOptions(group="g"))
        await ps.publish("t", b"x", {})
        await _settle(ps)
        assert not ps._tasks
        await ps.publish("t", b"later", {})
        await _settle(ps)
        return calls

    assert asyncio.run(run()) == [b"x"] * 3


def test_memory_max_in_flight():
    async def run():
        ps = _memory()
        running, peak = 0, 0
        gate = asyncio.Event()

        async def handle(message):
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await gate.wait()
            running -= 1
            return S

        await ps.subscribe("t", handle, SubscribeOptions(group="g", max_in_flight=2))
        for i in range(5):
            await ps.publish("t", b"%d" % i, {})
        for _ in range(10):
            await asyncio.sleep(0)
        gate.set()
        await _settle(ps)
        return peak

    assert asyncio.run(run()) == 2


# -- stop ------------------------------------------------------------------------------------


def test_stop_calls_stop_delivery_and_waits_for_idle():
    class Component(_Recorder):
        stopped = False

        async def stop_delivery(self):
            self.stopped = True

    async def run():
        component = Component()
        runtime = Subscriptions(_sidecar(_App(), {"ps": _binding(component=component)}))
        runtime._begin()
        asyncio.get_running_loop().call_later(0.01, runtime._end)
        await runtime.stop(5.0)
        return component.stopped, runtime.in_flight

    assert asyncio.run(run()) == (True, 0)
