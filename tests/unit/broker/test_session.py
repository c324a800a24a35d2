"""The sans-IO broker core, driven with encoded packets; no sockets, no event loop."""

from __future__ import annotations

import pytest

from pillion.broker import codec
from pillion.broker.broker import Broker
from pillion.broker.packets import (
    Connack,
    Connect,
    Disconnect,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    SubscriptionOptions,
    Unsuback,
    Unsubscribe,
    Will,
)


class Client:
    """A fake client: encodes what it sends, decodes what the session returns."""

    def __init__(self, broker: Broker, level: int = 4, now: float = 0.0):
        self.broker = broker
        self.level = level
        self.session = broker.session(now)
        self.closed: str | None = None
        self.now = now

    def send(self, *packets, raw: bytes = b"") -> list:
        data = b"".join(codec.encode(p, self.level) for p in packets) + raw
        out, close = self.session.feed(data, self.now)
        if close:
            self.closed = close
        return self.decode(out)

    def decode(self, data: bytes) -> list:
        packets = []
        while data:
            packet, used = codec.decode(data, self.level, 1 << 20)
            assert packet is not None
            packets.append(packet)
            data = data[used:]
        return packets

    def pending(self) -> list:
        if self.session.close_reason:
            self.closed = self.session.close_reason
        return self.decode(self.session.data_to_send())

    def connect(self, client_id="c", clean=True, keepalive=0, will=None, properties=None) -> Connack:
        packets = self.send(Connect(protocol_name="MQTT", protocol_level=self.level, clean_start=clean,
                                    keepalive=keepalive, client_id=client_id, will=will,
                                    properties=properties or {}))
        assert isinstance(packets[0], Connack), packets
        return packets[0]

    def subscribe(self, *filters, qos=0, packet_id=1) -> list:
        return self.send(Subscribe(packet_id, [(f, SubscriptionOptions(qos)) for f in filters]))

    def lost(self):
        self.session.connection_lost(self.now)


@pytest.fixture
def broker():
    return Broker()


@pytest.mark.parametrize("level", [4, 5])
def test_connect_connack(broker, level):
    client = Client(broker, level)
    ack = client.connect("dev1")
    assert ack.reason_code == 0 and ack.session_present is False
    if level == 5:
        assert ack.properties["receive_maximum"] == broker.receive_maximum
    assert client.send(Pingreq()) == [Pingresp()]


def test_empty_client_id_assigned(broker):
    v5 = Client(broker, 5)
    ack = v5.connect("")
    assert ack.properties["assigned_client_identifier"] in broker.clients
    v4 = Client(broker, 4)
    assert v4.connect("").reason_code == 0
    assert len(broker.clients) == 2


def test_empty_client_id_without_clean_session_rejected_311(broker):
    client = Client(broker, 4)
    ack = client.connect("", clean=False)
    assert ack.reason_code == 2 and client.closed


def test_unsupported_protocol_level_gets_return_code_1(broker):
    client = Client(broker, 4)
    raw = bytearray(codec.encode(Connect(client_id="x"), 4))
    raw[8] = 9  # protocol level byte
    out, close = client.session.feed(bytes(raw), 0)
    assert out == b"\x20\x02\x00\x01" and close


def test_first_packet_must_be_connect(broker):
    client = Client(broker, 4)
    assert client.send(Pingreq()) == [] and client.closed


def test_garbage_closes(broker):
    client = Client(broker, 5)
    client.connect()
    out = client.send(raw=b"\x00\x01\x02\x03")
    assert client.closed and out == [Disconnect(0x81)]


def test_oversized_packet_closes_with_reason():
    broker = Broker(max_packet_size=100)
    client = Client(broker, 5)
    client.connect()
    out = client.send(Publish("t", b"x" * 100))
    assert client.closed and out == [Disconnect(0x95)]


def test_second_connect_is_protocol_error(broker):
    client = Client(broker, 5)
    client.connect()
    out = client.send(Connect(protocol_level=5, client_id="c"))
    assert client.closed and out == [Disconnect(0x82)]


@pytest.mark.parametrize("level", [4, 5])
def test_fan_out_wildcards_and_dollar_topics(broker, level):
    a, b, pub = Client(broker, level), Client(broker, level), Client(broker, level)
    a.connect("a")
    b.connect("b")
    pub.connect("p")
    assert a.subscribe("sensors/+/temp") == [Suback(1, [0])]
    assert b.subscribe("#", "$app/#") == [Suback(1, [0, 0])]
    pub.send(Publish("sensors/k/temp", b"21"), Publish("$app/x", b"s"), Publish("other", b"o"))
    assert [m.topic for m in a.pending()] == ["sensors/k/temp"]
    assert [m.topic for m in b.pending()] == ["sensors/k/temp", "$app/x", "other"]


@pytest.mark.parametrize("level", [4, 5])
def test_clients_cannot_publish_to_sys_topics(broker, level):
    watcher, pub = Client(broker, level), Client(broker, level)
    watcher.connect("w")
    pub.connect("p")
    watcher.subscribe("$SYS/#")
    assert pub.send(Publish("$SYS/broker/uptime", b"forged", qos=1, packet_id=3)) == [
        Puback(3, 0x87 if level == 5 else 0)]
    assert watcher.pending() == []


def test_overlapping_filters_deliver_once_at_max_qos(broker):
    a, pub = Client(broker), Client(broker)
    a.connect("a")
    pub.connect("p")
    a.send(Subscribe(1, [("t/#", SubscriptionOptions(0)), ("t/+", SubscriptionOptions(1))]))
    pub.send(Publish("t/x", b"1", qos=1, packet_id=5))
    (message,) = a.pending()
    assert message.qos == 1 and message.packet_id is not None


def test_invalid_filter_gets_failure_code(broker):
    a = Client(broker, 4)
    a.connect()
    assert a.subscribe("a/#/b", "ok") == [Suback(1, [0x80, 0])]
    b = Client(broker, 5)
    b.connect("b")
    assert b.subscribe("a+") == [Suback(1, [0x8F])]


def test_unsubscribe(broker):
    a, pub = Client(broker, 5), Client(broker)
    a.connect("a")
    pub.connect("p")
    a.subscribe("t")
    assert a.send(Unsubscribe(2, ["t", "u"])) == [Unsuback(2, [0, 0x11])]
    pub.send(Publish("t", b"x"))
    assert a.pending() == []
    assert broker.trie.node_count() == 0


def test_retained_set_replace_clear(broker):
    pub = Client(broker)
    pub.connect("p")
    pub.send(Publish("r/1", b"one", retain=True), Publish("r/1", b"uno", retain=True), Publish("r/2", b"two", retain=True))
    sub = Client(broker)
    sub.connect("s")
    out = sub.subscribe("r/#", qos=1)
    assert out[0] == Suback(1, [1])
    assert [(m.topic, m.payload, m.retain) for m in out[1:]] == [("r/1", b"uno", True), ("r/2", b"two", True)]
    pub.send(Publish("r/1", b"", retain=True))
    live = sub.pending()
    assert [(m.topic, m.retain) for m in live] == [("r/1", False)]  # 3.1.1: routed copies lose the flag
    late = Client(broker)
    late.connect("late")
    assert [m.topic for m in late.subscribe("r/#")[1:]] == ["r/2"]


@pytest.mark.parametrize("level", [4, 5])
def test_qos1_both_ways(broker, level):
    sub, pub = Client(broker, level), Client(broker, level)
    sub.connect("s")
    pub.connect("p")
    sub.subscribe("t", qos=1)
    assert pub.send(Publish("t", b"m", qos=1, packet_id=7)) == [Puback(7)]
    (message,) = sub.pending()
    assert message.qos == 1
    assert broker.clients["s"].inflight
    sub.send(Puback(message.packet_id))
    assert not broker.clients["s"].inflight


@pytest.mark.parametrize("level", [4, 5])
def test_qos2_exactly_once_with_duplicate_publish(broker, level):
    sub, pub = Client(broker, level), Client(broker, level)
    sub.connect("s")
    pub.connect("p")
    sub.subscribe("t", qos=2)
    assert pub.send(Publish("t", b"m", qos=2, packet_id=9)) == [Pubrec(9)]
    assert pub.send(Publish("t", b"m", qos=2, dup=True, packet_id=9)) == [Pubrec(9)]
    assert pub.send(Pubrel(9)) == [Pubcomp(9)]
    (message,) = sub.pending()
    assert message.qos == 2
    assert sub.send(Pubrec(message.packet_id)) == [Pubrel(message.packet_id)]
    assert sub.send(Pubcomp(message.packet_id)) == []
    assert not broker.clients["s"].inflight
    # A new message may reuse id 9 after PUBREL.
    pub.send(Publish("t", b"again", qos=2, packet_id=9), Pubrel(9))
    assert [m.payload for m in sub.pending()] == [b"again"]


def test_inflight_window_and_queue():
    broker = Broker()
    sub, pub = Client(broker, 5), Client(broker, 5)
    sub.connect("s", properties={"receive_maximum": 2})
    pub.connect("p")
    sub.subscribe("t", qos=1)
    for i in range(5):
        pub.send(Publish("t", str(i).encode(), qos=1, packet_id=i + 1))
    first = sub.pending()
    assert [m.payload for m in first] == [b"0", b"1"]
    more = sub.send(Puback(first[0].packet_id))
    assert [m.payload for m in more] == [b"2"]


def test_queue_bound_drops_oldest_qos0_then_refuses():
    broker = Broker(max_queued=3)
    sub, pub = Client(broker, 4), Client(broker, 4)
    sub.connect("s")
    pub.connect("p")
    sub.subscribe("t", qos=1)
    sub.session.pause_writing()
    pub.send(Publish("t", b"q0"), Publish("t", b"a", qos=1, packet_id=1), Publish("t", b"b", qos=1, packet_id=2),
             Publish("t", b"c", qos=1, packet_id=3), Publish("t", b"d", qos=1, packet_id=4))
    state = broker.clients["s"]
    assert [m.payload for m in state.queue] == [b"a", b"b", b"c"] and state.dropped == 2
    sub.session.resume_writing()
    assert [m.payload for m in sub.pending()] == [b"a", b"b", b"c"]


@pytest.mark.parametrize("level", [4, 5])
def test_a_refused_copy_is_reported_to_a_5_0_publisher(level):
    """The queue is full: a 5.0 publisher's PUBACK says 0x97 (quota exceeded); 3.1.1 cannot be told."""
    broker = Broker(max_queued=1)
    sub, pub = Client(broker, 4), Client(broker, level)
    sub.connect("s")
    pub.connect("p")
    sub.subscribe("t", qos=1)
    sub.session.pause_writing()
    assert pub.send(Publish("t", b"a", qos=1, packet_id=1)) == [Puback(1, 0)]
    assert pub.send(Publish("t", b"b", qos=1, packet_id=2)) == [Puback(2, 0x97 if level == 5 else 0)]
    assert broker.route(Publish("t", b"c", qos=1), None) == 1


@pytest.mark.parametrize("level", [4, 5])
def test_persistent_session_queues_and_redelivers(broker, level):
    props = {"session_expiry_interval": 3600} if level == 5 else {}
    sub, pub = Client(broker, level), Client(broker, level)
    sub.connect("s", clean=False, properties=props)
    pub.connect("p")
    sub.subscribe("t", qos=1)
    pub.send(Publish("t", b"inflight", qos=1, packet_id=1))
    assert [m.payload for m in sub.pending()] == [b"inflight"]
    sub.lost()
    pub.send(Publish("t", b"offline", qos=1, packet_id=2), Publish("t", b"dropped-qos0"))
    again = Client(broker, level)
    packets = again.send(Connect(protocol_level=level, clean_start=False, client_id="s", properties=props))
    assert packets[0] == Connack(True, 0, packets[0].properties)
    assert [(m.payload, m.dup) for m in packets[1:]] == [(b"inflight", True), (b"offline", False)]
    # Subscriptions survived too.
    pub.send(Publish("t", b"live"))
    assert [m.payload for m in again.pending()] == [b"live"]


def test_clean_session_discards_state(broker):
    sub = Client(broker)
    sub.connect("s", clean=False)
    sub.subscribe("t", qos=1)
    sub.lost()
    again = Client(broker)
    assert again.connect("s", clean=True).session_present is False
    assert broker.trie.node_count() == 0
    again.send(Disconnect())
    assert "s" not in broker.clients


def test_pubrel_resent_on_reconnect(broker):
    sub, pub = Client(broker), Client(broker)
    sub.connect("s", clean=False)
    pub.connect("p")
    sub.subscribe("t", qos=2)
    pub.send(Publish("t", b"m", qos=2, packet_id=1))
    (message,) = sub.pending()
    sub.send(Pubrec(message.packet_id))
    sub.lost()
    again = Client(broker)
    packets = again.send(Connect(clean_start=False, client_id="s"))
    assert packets[1:] == [Pubrel(message.packet_id)]


@pytest.mark.parametrize("level", [4, 5])
def test_takeover(broker, level):
    first, second = Client(broker, level), Client(broker, level)
    first.connect("same", will=Will("wills/same", b"gone"))
    watcher = Client(broker)
    watcher.connect("w")
    watcher.subscribe("wills/#")
    second.connect("same")
    out = first.pending()
    assert first.closed == "session taken over"
    assert out == ([Disconnect(0x8E)] if level == 5 else [])
    assert [m.payload for m in watcher.pending()] == [b"gone"]
    assert broker.clients["same"].session is second.session
    first.lost()  # the old transport closing later must not detach the new one
    assert broker.clients["same"].session is second.session


def test_keepalive_expiry_publishes_will(broker):
    client = Client(broker, 5, now=100.0)
    client.connect("dying", keepalive=10, will=Will("wills/dying", b"bye", qos=1))
    watcher = Client(broker)
    watcher.connect("w")
    watcher.subscribe("wills/+", qos=1)
    assert client.session.next_deadline() == 115.0
    assert client.session.on_timer(114.0) == (b"", None)
    out, close = client.session.on_timer(115.0)
    assert close and client.decode(out) == [Disconnect(0x8D)]
    (will,) = watcher.pending()
    assert (will.topic, will.payload, will.qos) == ("wills/dying", b"bye", 1)


def test_will_on_abrupt_close_not_on_disconnect(broker):
    watcher = Client(broker)
    watcher.connect("w")
    watcher.subscribe("wills/#")
    a = Client(broker)
    a.connect("a", will=Will("wills/a", b"a"))
    a.lost()
    b = Client(broker)
    b.connect("b", will=Will("wills/b", b"b"))
    b.send(Disconnect())
    b.lost()
    assert [m.payload for m in watcher.pending()] == [b"a"]


def test_connect_timeout(broker):
    client = Client(broker, now=5.0)
    assert client.session.next_deadline() == 5.0 + broker.connect_timeout
    out, close = client.session.on_timer(5.0 + broker.connect_timeout)
    assert close


def test_shared_subscription_round_robin(broker):
    members = [Client(broker, 5) for _ in range(3)]
    for index, member in enumerate(members):
        member.connect(f"m{index}")
        assert member.subscribe("$share/g/jobs/#") == [Suback(1, [0])]
    plain = Client(broker, 5)
    plain.connect("plain")
    plain.subscribe("jobs/#")
    pub = Client(broker, 5)
    pub.connect("p")
    for i in range(6):
        pub.send(Publish("jobs/x", str(i).encode()))
    got = [[m.payload for m in member.pending()] for member in members]
    assert sorted(len(g) for g in got) == [2, 2, 2]
    assert sorted(sum(got, [])) == [str(i).encode() for i in range(6)]
    assert len(plain.pending()) == 6


def test_topic_alias_above_maximum_refused():
    broker = Broker(topic_alias_maximum=2)
    client = Client(broker, 5)
    assert client.connect().properties["topic_alias_maximum"] == 2
    out = client.send(Publish("t", b"x", properties={"topic_alias": 3}))
    assert client.closed and out == [Disconnect(0x94)]


def test_split_packets_are_reassembled(broker):
    client = Client(broker)
    data = codec.encode(Connect(client_id="x"), 4) + codec.encode(Pingreq(), 4)
    outputs = [client.session.feed(data[i:i + 1], 0)[0] for i in range(len(data))]
    assert client.decode(b"".join(outputs)) == [Connack(False, 0), Pingresp()]


def test_will_delay_cancelled_by_reconnect_and_published_after(broker):
    watcher = Client(broker)
    watcher.connect("w")
    watcher.subscribe("wills/#")
    props = {"session_expiry_interval": 100}
    will = Will("wills/d", b"late", properties={"will_delay_interval": 10})
    first = Client(broker, 5, now=0.0)
    first.connect("d", clean=False, will=will, properties=props)
    first.lost()
    assert watcher.pending() == [] and broker.next_deadline() == 10.0
    back = Client(broker, 5, now=5.0)
    back.connect("d", clean=False, will=will, properties=props)
    broker.tick(20.0)
    assert watcher.pending() == []  # reconnected in time: the first will is gone
    back.now = 30.0
    back.session.connection_lost(30.0)
    broker.tick(39.0)
    assert watcher.pending() == []
    broker.tick(40.0)
    assert [m.payload for m in watcher.pending()] == [b"late"]


def test_session_expiry_drops_offline_state(broker):
    client = Client(broker, 5, now=0.0)
    client.connect("e", clean=False, properties={"session_expiry_interval": 60})
    client.subscribe("t", qos=1)
    client.lost()
    broker.tick(59.0)
    assert "e" in broker.clients
    broker.tick(60.0)
    assert "e" not in broker.clients and broker.trie.node_count() == 0


def test_disconnect_can_shorten_session_expiry(broker):
    client = Client(broker, 5)
    client.connect("e", clean=False, properties={"session_expiry_interval": 60})
    client.send(Disconnect(0, {"session_expiry_interval": 0}))
    client.lost()
    assert "e" not in broker.clients
