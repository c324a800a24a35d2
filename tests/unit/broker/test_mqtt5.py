"""MQTT 5.0 features of the sans-IO core: message expiry, topic aliases, subscription
identifiers, enhanced auth refusal, the client's maximum packet size and property
forwarding. Driven with encoded packets through ``Session`` objects, no sockets."""

from __future__ import annotations

import pytest
from test_session import Client

from pillion.broker import codec
from pillion.broker.broker import Broker
from pillion.broker.packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Pingreq,
    Puback,
    Publish,
    Suback,
    Subscribe,
    SubscriptionOptions,
    Unsuback,
    Unsubscribe,
    Will,
)
from pillion.broker.session import ExpiringPublish

EXPIRY = "message_expiry_interval"


@pytest.fixture
def broker():
    return Broker()


def at(client: Client, now: float) -> Client:
    """Move ``client``'s clock; a PINGREQ hands the time to the broker."""
    client.now = now
    client.send(Pingreq())
    return client


def subscriber(broker, client_id="s", level=5, qos=1, topic="t", **connect):
    sub = Client(broker, level)
    sub.connect(client_id, **connect)
    sub.subscribe(topic, qos=qos)
    return sub


def publisher(broker, client_id="p", level=5):
    pub = Client(broker, level)
    pub.connect(client_id)
    return pub


# -- message expiry (§3.3.2.3.3) ------------------------------------------------------------


def test_expiry_interval_forwarded_unchanged_when_sent_at_once(broker):
    sub, pub = subscriber(broker), publisher(broker)
    pub.now = 123.456  # 123.456 + 10 - 123.456 is a bit more than 10 in floating point
    pub.send(Publish("t", b"m", qos=1, packet_id=1, properties={EXPIRY: 10}))
    (message,) = sub.pending()
    assert message.properties == {EXPIRY: 10}


def test_expiry_interval_reduced_by_the_time_the_message_waited(broker):
    sub, pub = subscriber(broker), publisher(broker)
    sub.session.pause_writing()
    pub.send(Publish("t", b"m", qos=1, packet_id=1, properties={EXPIRY: 10}))
    at(pub, 3.5)
    sub.session.resume_writing()
    raw = sub.session.data_to_send()
    assert b"\x02\x00\x00\x00\x07" in raw  # property 0x02, four-byte 7: 6.5 s left, rounded up
    (message,) = sub.decode(raw)
    assert message.properties == {EXPIRY: 7} and message.payload == b"m"


def test_expired_queued_message_is_dropped_not_sent(broker):
    sub, pub = subscriber(broker), publisher(broker)
    sub.session.pause_writing()
    pub.send(Publish("t", b"old", qos=1, packet_id=1, properties={EXPIRY: 10}),
             Publish("t", b"keeps", qos=1, packet_id=2))  # fmt: skip
    at(pub, 10.5)
    sub.session.resume_writing()
    assert [m.payload for m in sub.pending()] == [b"keeps"]
    state = broker.clients["s"]
    assert state.expired == 1 and state.dropped == 0 and len(state.inflight) == 1


def test_message_expires_in_an_offline_session(broker):
    props = {"session_expiry_interval": 3600}
    sub = subscriber(broker, clean=False, properties=props)
    pub = publisher(broker)
    sub.lost()
    pub.send(Publish("t", b"short", qos=1, packet_id=1, properties={EXPIRY: 5}),
             Publish("t", b"long", qos=1, packet_id=2, properties={EXPIRY: 100}))  # fmt: skip
    back = Client(broker, 5, now=30.0)
    packets = back.send(Connect(protocol_level=5, clean_start=False, client_id="s", properties=props))
    assert isinstance(packets[0], Connack) and packets[0].session_present
    assert [(m.payload, m.properties) for m in packets[1:]] == [(b"long", {EXPIRY: 70})]


def test_messages_to_311_clients_expire_too(broker):
    sub = subscriber(broker, level=4, clean=False)
    pub = publisher(broker)
    sub.lost()
    pub.send(Publish("t", b"gone", qos=1, packet_id=1, properties={EXPIRY: 5}),
             Publish("t", b"here", qos=1, packet_id=2, properties={EXPIRY: 60}))  # fmt: skip
    back = Client(broker, 4, now=6.0)
    packets = back.send(Connect(clean_start=False, client_id="s"))
    assert [(m.payload, m.properties) for m in packets[1:]] == [(b"here", {})]
    assert broker.clients["s"].expired == 1


def test_retained_message_expires(broker):
    pub = publisher(broker)
    pub.send(Publish("r", b"soon", retain=True, properties={EXPIRY: 5}))
    early = Client(broker, 5, now=3.0)
    early.connect("early")
    out = early.subscribe("r")
    assert out[0] == Suback(1, [0])
    assert [(m.payload, m.retain, m.properties) for m in out[1:]] == [(b"soon", True, {EXPIRY: 2})]
    late = Client(broker, 5, now=6.0)
    late.connect("late")
    assert late.subscribe("r") == [Suback(1, [0])]
    assert "r" not in broker.retained


def test_message_without_expiry_is_not_wrapped(broker):
    sub, pub = subscriber(broker), publisher(broker)
    sub.session.pause_writing()
    pub.send(Publish("t", b"a", qos=1, packet_id=1), Publish("t", b"b", qos=1, packet_id=2, properties={EXPIRY: 9}))
    assert [type(m) for m in broker.clients["s"].queue] == [Publish, ExpiringPublish]


def test_will_message_expiry_counts_from_publication(broker):
    sub = subscriber(broker, topic="wills/#")
    sub.session.pause_writing()
    dying = Client(broker, 5, now=100.0)
    dying.connect("d", will=Will("wills/d", b"bye", 1, properties={EXPIRY: 10}))
    dying.lost()
    at(publisher(broker), 104.0)
    sub.session.resume_writing()
    (will,) = sub.pending()
    assert will.properties == {EXPIRY: 6}


# -- topic aliases (§3.3.2.3.4) --------------------------------------------------------------


def test_connack_advertises_topic_alias_maximum(broker):
    assert Client(broker, 5).connect().properties["topic_alias_maximum"] == 10
    quiet = Broker(topic_alias_maximum=0)
    assert "topic_alias_maximum" not in Client(quiet, 5).connect().properties


def test_topic_alias_set_used_and_replaced(broker):
    sub = subscriber(broker, topic="#", qos=0)
    pub = publisher(broker)
    pub.send(Publish("a/b", b"1", properties={"topic_alias": 1}), Publish("", b"2", properties={"topic_alias": 1}),
             Publish("c", b"3", properties={"topic_alias": 1}), Publish("", b"4", properties={"topic_alias": 1}))
    got = sub.pending()
    assert [(m.topic, m.payload) for m in got] == [("a/b", b"1"), ("a/b", b"2"), ("c", b"3"), ("c", b"4")]
    assert all("topic_alias" not in m.properties for m in got)
    assert pub.closed is None


def test_topic_alias_with_qos2_is_resolved_before_routing(broker):
    sub = subscriber(broker, qos=2, topic="x")
    pub = publisher(broker)
    pub.send(Publish("x", b"1", qos=2, packet_id=1, properties={"topic_alias": 2}))
    pub.send(Publish("", b"2", qos=2, packet_id=2, properties={"topic_alias": 2}))
    assert [(m.topic, m.payload) for m in sub.pending()] == [("x", b"1"), ("x", b"2")]


def test_unknown_topic_alias_is_protocol_error(broker):
    pub = publisher(broker)
    out = pub.send(Publish("", b"x", properties={"topic_alias": 3}))
    assert pub.closed and out == [Disconnect(0x82)]


def test_topic_alias_zero_is_refused(broker):
    # The codec rejects it before the session sees it: a protocol error.
    pub = publisher(broker)
    out = pub.send(Publish("t", b"x", properties={"topic_alias": 0}))
    assert pub.closed and out == [Disconnect(0x82)]


def test_topic_alias_when_maximum_is_zero():
    broker = Broker(topic_alias_maximum=0)
    pub = publisher(broker)
    out = pub.send(Publish("t", b"x", properties={"topic_alias": 1}))
    assert pub.closed and out == [Disconnect(0x94)]


def test_topic_aliases_do_not_survive_a_reconnect(broker):
    props = {"session_expiry_interval": 60}
    first = Client(broker, 5)
    first.connect("p", clean=False, properties=props)
    first.send(Publish("t", b"x", properties={"topic_alias": 1}))
    first.lost()
    second = Client(broker, 5)
    second.connect("p", clean=False, properties=props)
    out = second.send(Publish("", b"y", properties={"topic_alias": 1}))
    assert second.closed and out == [Disconnect(0x82)]


# -- subscription identifiers (§3.8.2.1.2, §3.3.4) -------------------------------------------


def subscribe_with_id(client: Client, topic_filter: str, identifier: int | None, packet_id=1, qos=0):
    props = {} if identifier is None else {"subscription_identifier": [identifier]}
    return client.send(Subscribe(packet_id, [(topic_filter, SubscriptionOptions(qos))], props))


def test_connack_says_subscription_identifiers_available(broker):
    assert Client(broker, 5).connect().properties["subscription_identifier_available"] == 1


def test_delivery_carries_every_matching_identifier(broker):
    sub = Client(broker, 5)
    sub.connect("s")
    subscribe_with_id(sub, "a/+", 7)
    subscribe_with_id(sub, "a/#", 300, packet_id=2)  # 300: a two-byte variable byte integer
    subscribe_with_id(sub, "a/b", None, packet_id=3)
    pub = publisher(broker)
    pub.send(Publish("a/b", b"m"), Publish("a", b"parent"))
    first, second = sub.pending()
    assert sorted(first.properties["subscription_identifier"]) == [7, 300]
    assert second.properties["subscription_identifier"] == [300]


def test_resubscribe_replaces_the_identifier(broker):
    sub = Client(broker, 5)
    sub.connect("s")
    pub = publisher(broker)
    subscribe_with_id(sub, "t", 5)
    subscribe_with_id(sub, "t", 6, packet_id=2)
    pub.send(Publish("t", b"1"))
    assert [m.properties for m in sub.pending()] == [{"subscription_identifier": [6]}]
    subscribe_with_id(sub, "t", None, packet_id=3)
    pub.send(Publish("t", b"2"))
    assert [m.properties for m in sub.pending()] == [{}]


def test_identifier_is_per_receiver(broker):
    with_id, without = Client(broker, 5), Client(broker, 5)
    with_id.connect("a")
    without.connect("b")
    subscribe_with_id(with_id, "t", 42)
    subscribe_with_id(without, "t", None)
    publisher(broker).send(Publish("t", b"m", properties={"user_property": [("k", "v")]}))
    assert with_id.pending()[0].properties == {"user_property": [("k", "v")], "subscription_identifier": [42]}
    assert without.pending()[0].properties == {"user_property": [("k", "v")]}


def test_retained_and_shared_deliveries_carry_the_identifier(broker):
    publisher(broker).send(Publish("r", b"kept", retain=True))
    sub = Client(broker, 5)
    sub.connect("s")
    out = subscribe_with_id(sub, "r", 11)
    assert out[1].properties == {"subscription_identifier": [11]} and out[1].retain
    member = Client(broker, 5)
    member.connect("m")
    subscribe_with_id(member, "$share/g/jobs", 12)
    publisher(broker, "p2").send(Publish("jobs", b"j"))
    assert member.pending()[0].properties == {"subscription_identifier": [12]}


def test_identifier_from_311_client_is_never_sent(broker):
    sub = subscriber(broker, level=4, qos=0)
    publisher(broker).send(Publish("t", b"m", properties={"user_property": [("a", "b")]}))
    (message,) = sub.pending()
    assert message.properties == {}


def test_subscription_identifier_zero_is_protocol_error(broker):
    sub = Client(broker, 5)
    sub.connect("s")
    out = subscribe_with_id(sub, "t", 0)
    assert sub.closed and out == [Disconnect(0x82)]


def test_client_publish_with_subscription_identifier_is_protocol_error(broker):
    pub = publisher(broker)
    out = pub.send(Publish("t", b"m", properties={"subscription_identifier": [1]}))
    assert pub.closed and out == [Disconnect(0x82)]


# -- enhanced authentication (§4.12) ---------------------------------------------------------


def test_connect_with_authentication_method_is_refused(broker):
    client = Client(broker, 5)
    out = client.send(Connect(protocol_level=5, client_id="x", properties={"authentication_method": "SCRAM-SHA-1"}))
    assert out == [Connack(False, 0x8C)] and client.closed
    assert "x" not in broker.clients


def test_refused_auth_does_not_take_over_a_session(broker):
    owner = Client(broker, 5)
    owner.connect("x")
    intruder = Client(broker, 5)
    intruder.send(Connect(protocol_level=5, client_id="x", properties={"authentication_method": "K"}))
    assert intruder.closed and owner.pending() == [] and broker.clients["x"].session is owner.session


def test_auth_after_connect_is_protocol_error(broker):
    client = Client(broker, 5)
    client.connect()
    out = client.send(Auth(0x18, {"authentication_method": "K"}))
    assert client.closed and out == [Disconnect(0x82)]


# -- request problem information (§3.1.2.11.7) -----------------------------------------------


def test_no_reason_strings_or_user_properties_on_acks(broker):
    sub = Client(broker, 5)
    sub.connect("s", properties={"request_problem_information": 0})
    assert sub.subscribe("t", qos=1) == [Suback(1, [1])]
    pub = publisher(broker)
    assert pub.send(Publish("t", b"m", qos=1, packet_id=3, properties={"user_property": [("k", "v")]})) == [Puback(3)]
    (message,) = sub.pending()
    assert message.properties == {"user_property": [("k", "v")]}  # PUBLISH keeps them
    assert sub.send(Unsubscribe(2, ["t"])) == [Unsuback(2, [0])]


# -- the client's maximum packet size (§3.1.2.11.4) -------------------------------------------


@pytest.mark.parametrize("qos", [0, 1])
def test_message_too_big_for_the_client_is_dropped_without_leaking(broker, qos):
    sub = subscriber(broker, qos=qos, properties={"maximum_packet_size": 64, "receive_maximum": 1})
    pub = publisher(broker)
    pub.send(Publish("t", b"x" * 100, qos=qos, packet_id=1 if qos else None),
             Publish("t", b"fits", qos=qos, packet_id=2 if qos else None))  # fmt: skip
    (message,) = sub.pending()
    state = broker.clients["s"]
    assert message.payload == b"fits" and state.dropped == 1
    if qos:
        assert list(state.inflight) == [message.packet_id]  # the window of 1 was not used up
        sub.send(Puback(message.packet_id))
        assert not state.inflight and not state.queue


# -- forwarding (§3.3.2.3) ---------------------------------------------------------------------


def test_request_response_properties_forwarded_unchanged(broker):
    sub = subscriber(broker, qos=1)
    pub = publisher(broker)
    props = {"payload_format_indicator": 1, "content_type": "application/json", "response_topic": "replies/p",
             "correlation_data": b"\x00\x01id", "user_property": [("a", "1"), ("a", "2"), ("b", "")]}
    sent = Publish("t", b"{}", qos=1, packet_id=4, properties=props)
    pub.send(sent)
    (message,) = sub.pending()
    assert message.properties == props
    # Byte for byte: the subscriber's PUBLISH differs from the publisher's only in the packet id.
    expected = codec.encode(Publish("t", b"{}", qos=1, packet_id=message.packet_id, properties=props), 5)
    assert codec.encode(message, 5) == expected


def test_will_properties_forwarded_without_the_delay(broker):
    watcher = subscriber(broker, topic="wills/#", qos=0)
    dying = Client(broker, 5)
    will_props = {"response_topic": "r", "correlation_data": b"c", "user_property": [("k", "v")],
                  "will_delay_interval": 0}
    dying.connect("d", will=Will("wills/d", b"bye", properties=will_props))
    dying.lost()
    (will,) = watcher.pending()
    assert will.properties == {"response_topic": "r", "correlation_data": b"c", "user_property": [("k", "v")]}
