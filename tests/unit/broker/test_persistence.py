"""Broker persistence through the sans-IO core: held acknowledgements, the journal and
restarts through a real ``BrokerStore`` (what ``server.Persistence`` does, done by hand).
"""

from __future__ import annotations

import pytest
from test_session import Client

from pillion.broker.broker import Broker
from pillion.broker.packets import (
    Connack,
    Connect,
    Disconnect,
    Pingreq,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    SubscriptionOptions,
)
from pillion.broker.store import (
    DEL_MESSAGE,
    DEL_RETAINED,
    DEL_SESSION,
    INFLIGHT,
    PUT_MESSAGE,
    PUT_SESSION,
    QUEUED,
    RELEASING,
    BrokerStore,
    Restored,
    message_key,
)

WALL = 1_000_000.0  # time.time() at broker time 0 in these tests
V5_PERSISTENT = {"session_expiry_interval": 3600}


class Rig:
    """A broker with persistence on, a real store, and the writer's job done by hand."""

    def __init__(self, path, now: float = 0.0, wall: float = WALL, **options):
        self.store = BrokerStore(str(path), map_size=1 << 20, max_map_size=64 << 20)
        self.options = options
        self.broker = Broker(**options)
        self.broker.restore(Restored({}, {}), now, wall)

    @property
    def journal(self):
        return self.broker.journal

    def commit(self) -> list:
        """One writer round: take the batch, apply it, release what it made durable."""
        ops, batch = self.journal.take()
        self.store.apply(ops)
        for session in self.journal.committed(batch):
            session.release_acks()
        return ops

    def crash(self, now: float = 0.0, wall: float = WALL) -> Broker:
        """Forget the broker (uncommitted ops included) and restore a new one from disk."""
        self.broker = Broker(**self.options)
        self.broker.restore(self.store.load(), now, wall)
        return self.broker

    def stored_messages(self, client_id: str) -> list:
        """``(seq, state, packet_id, payload)`` on disk for ``client_id``."""
        stored = self.store.load().sessions.get(client_id)
        if stored is None:
            return []
        return [(seq, state, packet_id, None if m is None else m.payload)
                for seq, state, packet_id, _, m in stored.messages]  # fmt: skip

    def client(self, level: int = 4, now: float = 0.0) -> Client:
        return Client(self.broker, level, now)


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path / "b")
    yield r
    r.store.close()


def reconnect(broker: Broker, client_id: str, level: int = 4, properties=None, now: float = 0.0):
    """A persistent reconnect; returns the client and everything the broker sent with CONNACK."""
    client = Client(broker, level, now)
    packets = client.send(Connect(protocol_level=level, clean_start=False, client_id=client_id,
                                  properties=dict(properties or {})))  # fmt: skip
    assert isinstance(packets[0], Connack), packets
    return client, packets


def offline_subscriber(rig: Rig, client_id: str = "s", level: int = 4, qos: int = 1, topic: str = "t"):
    sub = rig.client(level)
    sub.connect(client_id, clean=False, properties=V5_PERSISTENT if level == 5 else None)
    assert sub.subscribe(topic, qos=qos) == [Suback(1, [qos])]
    sub.lost()
    rig.commit()
    return sub


# -- 1. QoS 1: PUBACK only once the routed message is on disk ----------------------------------


@pytest.mark.parametrize("level", [4, 5])
def test_puback_waits_for_the_message_to_be_durable(rig, level):
    offline_subscriber(rig)
    pub = rig.client(level)
    pub.connect("p")
    assert pub.send(Publish("t", b"m", qos=1, packet_id=7)) == []
    assert rig.stored_messages("s") == []  # not on disk yet: the PUBACK must not be out
    ops = rig.commit()
    assert [op for op, *_ in ops] == [PUT_MESSAGE]
    assert pub.pending() == [Puback(7)]
    assert rig.stored_messages("s") == [(1, QUEUED, 0, b"m")]


def test_puback_is_immediate_when_nothing_changes_on_disk(rig):
    pub = rig.client()
    pub.connect("p")
    assert pub.send(Publish("nobody/listens", b"m", qos=1, packet_id=3)) == [Puback(3)]
    # A clean (non-persistent) subscriber does not write either.
    live = rig.client()
    live.connect("live")
    live.subscribe("t", qos=1)
    assert pub.send(Publish("t", b"m", qos=1, packet_id=4)) == [Puback(4)]
    assert rig.journal.ops == [] and rig.journal.waiting == set()


def test_acks_leave_in_order_behind_a_held_one(rig):
    offline_subscriber(rig)
    pub = rig.client()
    pub.connect("p")
    # The first one writes, the next two would be immediate but must not overtake it.
    assert pub.send(Publish("t", b"m", qos=1, packet_id=1), Publish("other", b"x", qos=1, packet_id=2),
                    Publish("other", b"y", qos=2, packet_id=3)) == []  # fmt: skip
    rig.commit()
    assert pub.pending() == [Puback(1), Puback(2), Pubrec(3)]
    # Once nothing is held, acks are immediate again.
    assert pub.send(Publish("other", b"z", qos=1, packet_id=4)) == [Puback(4)]


def test_ack_behind_a_held_one_is_released_when_no_more_writes_come(rig):
    offline_subscriber(rig)
    pub = rig.client()
    pub.connect("p")
    assert pub.send(Publish("t", b"m", qos=1, packet_id=1)) == []
    ops, batch = rig.journal.take()  # the writer took the batch; the commit is in flight
    assert pub.send(Publish("other", b"x", qos=1, packet_id=2)) == []  # held behind packet 1: fine
    rig.store.apply(ops)
    for session in rig.journal.committed(batch):
        session.release_acks()
    # ``Persistence`` flushes only a non-empty journal: no further batch will ever commit.
    assert rig.journal.ops == []
    assert pub.pending() == [Puback(1), Puback(2)]


# -- 2. QoS 2: PUBREC and PUBCOMP --------------------------------------------------------------


def test_pubrec_waits_for_the_routed_message(rig):
    offline_subscriber(rig, qos=2)
    pub = rig.client()
    pub.connect("p")  # clean: its inbound QoS 2 ids are not stored
    assert pub.send(Publish("t", b"m", qos=2, packet_id=9)) == []
    ops = rig.commit()
    assert [op for op, *_ in ops] == [PUT_MESSAGE]
    assert pub.pending() == [Pubrec(9)]
    assert pub.send(Pubrel(9)) == [Pubcomp(9)]  # a clean publisher's release writes nothing


def test_pubrec_is_immediate_when_nothing_changes_on_disk(rig):
    pub = rig.client()
    pub.connect("p")
    assert pub.send(Publish("t", b"m", qos=2, packet_id=9)) == [Pubrec(9)]
    assert pub.send(Pubrel(9)) == [Pubcomp(9)]
    assert rig.journal.ops == []


@pytest.mark.parametrize("level", [4, 5])
def test_persistent_publisher_holds_pubrec_and_pubcomp(rig, level):
    pub = rig.client(level)
    pub.connect("p", clean=False, properties=V5_PERSISTENT if level == 5 else None)
    rig.commit()
    assert pub.send(Publish("nobody", b"m", qos=2, packet_id=5)) == []  # its session record changes
    ops = rig.commit()
    assert [op for op, key, _ in ops] == [PUT_SESSION]
    assert pub.pending() == [Pubrec(5)]
    assert rig.store.load().sessions["p"].record["q2"] == [5]
    assert pub.send(Pubrel(5)) == []
    rig.commit()
    assert pub.pending() == [Pubcomp(5)]
    assert rig.store.load().sessions["p"].record["q2"] == []


def test_inbound_qos2_id_survives_a_restart(rig):
    watcher = rig.client()
    watcher.connect("w")
    pub = rig.client(5)
    pub.connect("p", clean=False, properties=V5_PERSISTENT)
    pub.send(Publish("t", b"once", qos=2, packet_id=5))
    rig.commit()
    pub.lost()
    broker = rig.crash()
    watcher = Client(broker)
    watcher.connect("w")
    watcher.subscribe("t", qos=2)
    pub, packets = reconnect(broker, "p", 5, V5_PERSISTENT)
    assert packets[0].session_present is True
    # The resent PUBLISH was routed before the crash: exactly once means not again.
    assert pub.send(Publish("t", b"once", qos=2, dup=True, packet_id=5)) == [Pubrec(5)]
    assert watcher.pending() == []
    assert pub.send(Pubrel(5)) == []
    rig.commit()
    assert pub.pending() == [Pubcomp(5)]


# -- 3. a full round trip through the store ----------------------------------------------------


def test_persistent_sessions_survive_a_restart(rig):
    old = rig.client(4)
    old.connect("s4", clean=False)
    old.subscribe("a/#", qos=2)
    new = rig.client(5)
    new.connect("s5", clean=False, properties=V5_PERSISTENT)
    assert new.send(Subscribe(1, [("b/+", SubscriptionOptions(1, no_local=True, retain_as_published=True,
                                                                retain_handling=1))],
                              {"subscription_identifier": [7]})) == [Suback(1, [1])]  # fmt: skip
    old.lost()
    new.lost()
    pub = rig.client(5)
    pub.connect("p")
    pub.send(Publish("a/1", b"a-q1", qos=1, packet_id=1), Publish("a/2", b"a-q2", qos=2, packet_id=2),
             Publish("a/3", b"a-q0"), Publish("b/x", b"b-q2", qos=2, packet_id=3),
             Publish("b/y", b"b-q1", qos=1, packet_id=4, properties={"content_type": "text/plain"}),
             Publish("r/1", b"kept", qos=1, retain=True, packet_id=5))  # fmt: skip
    pub.send(Pubrel(2), Pubrel(3))
    rig.commit()
    assert [m.packet_id for m in pub.pending() if isinstance(m, Puback)] == [1, 4, 5]

    broker = rig.crash(now=100.0, wall=WALL + 5)
    assert sorted(broker.clients) == ["s4", "s5"]
    s4, packets = reconnect(broker, "s4", now=100.0)
    assert packets[0] == Connack(True, 0)
    assert [(m.topic, m.payload, m.qos, m.dup) for m in packets[1:]] == [
        ("a/1", b"a-q1", 1, False), ("a/2", b"a-q2", 2, False)]
    s5, packets = reconnect(broker, "s5", 5, V5_PERSISTENT, now=100.0)
    assert packets[0].session_present is True
    assert [(m.topic, m.payload, m.qos, m.properties) for m in packets[1:]] == [
        ("b/x", b"b-q2", 1, {"subscription_identifier": [7]}),
        ("b/y", b"b-q1", 1, {"content_type": "text/plain", "subscription_identifier": [7]})]

    # The subscriptions route new messages, with their options.
    pub = Client(broker, 5, now=100.0)
    pub.connect("p")
    pub.send(Publish("a/new", b"n1", qos=1, packet_id=1), Publish("b/new", b"n2", qos=1, retain=True, packet_id=2))
    assert [(m.topic, m.qos) for m in s4.pending()] == [("a/new", 1)]
    (message,) = s5.pending()
    assert (message.topic, message.retain, message.properties) == ("b/new", True, {"subscription_identifier": [7]})
    assert s5.send(Publish("b/own", b"mine", qos=1, packet_id=9)) == [Puback(9)]  # no_local: not to itself
    assert s5.pending() == []
    # Retained: delivered to a new subscriber after the restart.
    fresh = Client(broker, 4, now=100.0)
    fresh.connect("fresh")
    out = fresh.subscribe("r/#", qos=1)
    assert out[0] == Suback(1, [1])
    assert [(m.topic, m.payload, m.retain) for m in out[1:]] == [("r/1", b"kept", True)]


def test_no_local_survives_a_restart(rig):
    sub = rig.client(5)
    sub.connect("s", clean=False, properties=V5_PERSISTENT)
    sub.send(Subscribe(1, [("t", SubscriptionOptions(1, no_local=True))]))
    sub.lost()
    rig.commit()
    broker = rig.crash()
    sub, _ = reconnect(broker, "s", 5, V5_PERSISTENT)
    assert sub.send(Publish("t", b"own", qos=1, packet_id=1)) == [Puback(1)]
    other = Client(broker, 5)
    other.connect("o")
    other.send(Publish("t", b"theirs", qos=1, packet_id=1))
    assert [m.payload for m in sub.pending()] == [b"theirs"]


def test_uncommitted_changes_are_lost_in_a_crash(rig):
    offline_subscriber(rig)
    pub = rig.client()
    pub.connect("p")
    pub.send(Publish("t", b"never-acked", qos=1, packet_id=1))
    assert pub.pending() == []  # the publisher was not told, so it will send again
    broker = rig.crash()
    _, packets = reconnect(broker, "s")
    assert packets[1:] == []


# -- 4. QoS 2 in flight at the crash -----------------------------------------------------------


def test_qos2_outbound_flow_survives_restarts(rig):
    sub = rig.client()
    sub.connect("s", clean=False)
    sub.subscribe("t", qos=2)
    pub = rig.client()
    pub.connect("p")
    pub.send(Publish("t", b"m", qos=2, packet_id=1))
    (message,) = [p for p in sub.pending() if isinstance(p, Publish)]
    packet_id = message.packet_id
    rig.commit()
    assert rig.stored_messages("s") == [(1, INFLIGHT, packet_id, b"m")]

    # Crash before PUBREC: the same PUBLISH again, DUP set, same packet id.
    broker = rig.crash()
    sub, packets = reconnect(broker, "s")
    assert packets[1:] == [Publish("t", b"m", 2, False, True, packet_id)]
    assert sub.send(Pubrec(packet_id)) == [Pubrel(packet_id)]
    rig.commit()
    assert rig.stored_messages("s") == [(1, RELEASING, packet_id, None)]

    # Crash after PUBREC: PUBREL again with that id.
    broker = rig.crash()
    sub, packets = reconnect(broker, "s")
    assert packets[1:] == [Pubrel(packet_id)]
    sub.send(Pubcomp(packet_id))
    ops = rig.commit()
    assert (DEL_MESSAGE, message_key("s", 1), None) in ops
    assert rig.stored_messages("s") == []
    broker = rig.crash()
    assert broker.clients["s"].inflight == {}
    _, packets = reconnect(broker, "s")
    assert packets[1:] == []


def test_qos1_in_flight_at_a_crash_is_sent_again(rig):
    sub = rig.client()
    sub.connect("s", clean=False)
    sub.subscribe("t", qos=1)
    pub = rig.client()
    pub.connect("p")
    pub.send(Publish("t", b"m", qos=1, packet_id=1))
    assert [p.payload for p in sub.pending()] == [b"m"]
    rig.commit()
    broker = rig.crash()
    _, packets = reconnect(broker, "s")
    assert [(m.payload, m.qos) for m in packets[1:]] == [(b"m", 1)]


# -- 5. QoS 1 acknowledged: gone from disk -----------------------------------------------------


def test_acknowledged_qos1_messages_are_deleted(rig):
    offline_subscriber(rig)
    pub = rig.client()
    pub.connect("p")
    pub.send(Publish("t", b"1", qos=1, packet_id=1), Publish("t", b"2", qos=1, packet_id=2))
    rig.commit()
    assert [m[3] for m in rig.stored_messages("s")] == [b"1", b"2"]
    sub, packets = reconnect(rig.broker, "s")
    ids = [m.packet_id for m in packets[1:]]
    assert len(ids) == 2
    sub.send(Puback(ids[0]))
    rig.commit()
    assert [m[3] for m in rig.stored_messages("s")] == [b"2"]
    sub.send(Puback(ids[1]))
    rig.commit()
    assert rig.stored_messages("s") == []
    assert "s" in rig.store.load().sessions  # the session itself stays


# -- 6. ending a session removes it from disk --------------------------------------------------


@pytest.mark.parametrize("level", [4, 5])
def test_clean_start_deletes_the_stored_session(rig, level):
    offline_subscriber(rig, level=level)
    pub = rig.client()
    pub.connect("p")
    pub.send(Publish("t", b"m", qos=1, packet_id=1))
    rig.commit()
    assert rig.stored_messages("s") != []
    again = rig.client(level)
    assert again.connect("s", clean=True).session_present is False
    ops = rig.commit()
    assert (DEL_SESSION, "s", None) in ops
    restored = rig.store.load()
    assert "s" not in restored.sessions and rig.stored_messages("s") == []
    again.send(Disconnect())
    assert rig.store.load().sessions == {}


def test_session_expiry_deletes_the_stored_session(rig):
    sub = rig.client(5)
    sub.connect("s", clean=False, properties={"session_expiry_interval": 60})
    sub.subscribe("t", qos=1)
    sub.lost()
    pub = rig.client()
    pub.connect("p")
    pub.send(Publish("t", b"m", qos=1, packet_id=1))
    rig.commit()
    rig.broker.tick(59.0)
    assert rig.journal.ops == []
    rig.broker.tick(60.0)
    assert rig.commit() == [(DEL_SESSION, "s", None)]
    assert rig.store.load().sessions == {}


def test_disconnect_with_session_expiry_zero_deletes_the_stored_session(rig):
    sub = rig.client(5)
    sub.connect("s", clean=False, properties=V5_PERSISTENT)
    sub.subscribe("t", qos=1)
    rig.commit()
    assert "s" in rig.store.load().sessions
    sub.send(Disconnect(0, {"session_expiry_interval": 0}))
    assert rig.commit() == [(DEL_SESSION, "s", None)]
    assert rig.store.load().sessions == {}


def test_resuming_with_session_expiry_zero_removes_the_stored_session(rig):
    offline_subscriber(rig, level=5)  # stored with expiry 3600
    sub, packets = reconnect(rig.broker, "s", 5, {})  # resumes, but the session now ends with the connection
    assert packets[0].session_present is True
    rig.commit()
    broker = rig.crash()  # the connection ended in the crash: so did the session
    assert "s" not in broker.clients
    assert "s" not in rig.store.load().sessions


def test_session_expiry_restarts_from_the_restore(rig):
    offline_subscriber(rig, level=5)  # expiry 3600
    broker = rig.crash(now=10.0)
    broker.tick(3609.0)
    assert "s" in broker.clients
    broker.tick(3610.0)
    assert "s" not in broker.clients
    assert rig.commit() == [(DEL_SESSION, "s", None)]


# -- 7. message expiry across a restart --------------------------------------------------------


def _expiring_message_for_offline_client(rig):
    offline_subscriber(rig, level=5)
    pub = rig.client(5)
    pub.connect("p")
    pub.send(Publish("t", b"short-lived", qos=1, packet_id=1, properties={"message_expiry_interval": 10}))
    rig.commit()
    ((_, _, _, expires, _),) = rig.store.load().sessions["s"].messages
    assert expires == WALL + 10


def test_message_expired_during_the_downtime_is_dropped(rig):
    _expiring_message_for_offline_client(rig)
    broker = rig.crash(now=500.0, wall=WALL + 20)
    assert len(broker.clients["s"].queue) == 0
    assert rig.commit() == [(DEL_MESSAGE, message_key("s", 1), None)]
    assert rig.stored_messages("s") == []
    _, packets = reconnect(broker, "s", 5, V5_PERSISTENT, now=500.0)
    assert packets[1:] == []


def test_message_still_alive_after_a_restart_keeps_its_remaining_interval(rig):
    _expiring_message_for_offline_client(rig)
    broker = rig.crash(now=500.0, wall=WALL + 3)
    _, packets = reconnect(broker, "s", 5, V5_PERSISTENT, now=500.0)
    (message,) = packets[1:]
    assert message.payload == b"short-lived"
    assert 0 < message.properties["message_expiry_interval"] <= 7


def test_queued_message_expires_after_a_restart(rig):
    _expiring_message_for_offline_client(rig)
    broker = rig.crash(now=500.0, wall=WALL + 3)
    broker.tick(508.0)  # 3 + 8 > 10
    _, packets = reconnect(broker, "s", 5, V5_PERSISTENT, now=508.0)
    assert packets[1:] == []
    assert broker.clients["s"].expired == 1
    assert (DEL_MESSAGE, message_key("s", 1), None) in rig.commit()
    assert rig.stored_messages("s") == []


def test_retained_message_expiry_survives_a_restart(rig):
    pub = rig.client(5)
    pub.connect("p")
    pub.send(Publish("r", b"x", retain=True, properties={"message_expiry_interval": 10}))
    rig.commit()
    broker = rig.crash(now=0.0, wall=WALL + 20)
    assert broker.retained == {}
    assert rig.commit() == [(DEL_RETAINED, "r", None)]
    assert rig.store.load().retained == {}


# -- 8. retained clear, $SYS -------------------------------------------------------------------


def test_clearing_a_retained_message_deletes_it_on_disk(rig):
    pub = rig.client()
    pub.connect("p")
    pub.send(Publish("r/1", b"one", retain=True), Publish("r/2", b"two", retain=True))
    rig.commit()
    assert sorted(rig.store.load().retained) == ["r/1", "r/2"]
    pub.send(Publish("r/1", b"", retain=True))
    assert rig.commit() == [(DEL_RETAINED, "r/1", None)]
    assert sorted(rig.store.load().retained) == ["r/2"]
    pub.send(Publish("r/1", b"", retain=True))  # nothing to clear: nothing written
    assert rig.journal.ops == []


def test_sys_messages_are_never_written(rig):
    watcher = rig.client()
    watcher.connect("w", clean=False)
    watcher.subscribe("$SYS/#", qos=1)
    offline = rig.client(5)
    offline.connect("o", clean=False, properties=V5_PERSISTENT)
    offline.subscribe("$SYS/#", qos=1)
    offline.lost()
    rig.commit()
    rig.broker.publish_internal(Publish("$SYS/broker/uptime", b"12", 0, True))
    assert rig.journal.ops == []
    assert [m.topic for m in watcher.pending()] == ["$SYS/broker/uptime"]
    assert "$SYS/broker/uptime" in rig.broker.retained
    rig.commit()
    assert rig.store.load().retained == {}


# -- 9. damaged session records ----------------------------------------------------------------


DAMAGED_SUBS = [
    b'{"expiry": null, "q2": []}',  # no "subs"
    b'{"expiry": null, "q2": [], "subs": [["t", 1]]}',  # a short subscription entry
    b'{"expiry": null, "q2": [], "subs": [["ok", 1, false, false, 0, null], ["a/#/b", 1, false, false, 0, null]]}',
]


def _damaged_session_is_dropped_and_deleted(rig, record):
    rig.store.apply([(PUT_SESSION, "bad", record),
                     (PUT_SESSION, "good", b'{"expiry": null, "q2": [], "subs": [["t", 1, false, false, 0, null]]}')])
    broker = rig.crash()
    assert "bad" not in broker.clients and "good" in broker.clients
    assert (DEL_SESSION, "bad", None) in broker.journal.ops
    rig.commit()
    assert sorted(rig.store.load().sessions) == ["good"]
    # The broker keeps working: the id connects afresh, routing reaches the good session.
    bad = Client(broker)
    assert bad.connect("bad", clean=False).session_present is False
    bad.send(Publish("t", b"m", qos=1, packet_id=1))
    rig.commit()
    assert bad.pending() == [Puback(1)]
    assert [m[3] for m in rig.stored_messages("good")] == [b"m"]


@pytest.mark.parametrize("record", [
    b'{"expiry": "x", "q2": [], "subs": []}',
    b'{"expiry": null, "q2": ["x"], "subs": []}',
    b'{"expiry": null, "q2": {"x": 1}, "subs": []}',
    b'{"expiry": null, "subs": []}',
    b'[]',
])
def test_damaged_session_is_dropped_and_deleted(rig, record):
    _damaged_session_is_dropped_and_deleted(rig, record)


@pytest.mark.parametrize("record", DAMAGED_SUBS)
def test_damaged_subscriptions_drop_and_delete_the_session(rig, record):
    _damaged_session_is_dropped_and_deleted(rig, record)


@pytest.mark.parametrize("record", DAMAGED_SUBS)
def test_damaged_subscriptions_drop_the_session_in_memory(rig, record):
    rig.store.apply([(PUT_SESSION, "bad", record)])
    broker = rig.crash()
    assert "bad" not in broker.clients and broker.trie.node_count() == 0
    bad = Client(broker)
    assert bad.connect("bad", clean=False).session_present is False
    assert bad.subscribe("t", qos=1) == [Suback(1, [1])]


def test_damaged_message_drops_the_session(rig):
    from pillion.broker.store import encode_message

    rig.store.apply([(PUT_SESSION, "bad", b'{"expiry": null, "q2": [], "subs": []}'),
                     (PUT_MESSAGE, message_key("bad", 1), encode_message(None, INFLIGHT, 3))])  # no body
    broker = rig.crash()
    assert "bad" not in broker.clients
    assert broker.journal.ops == [(DEL_SESSION, "bad", None)]
    rig.commit()
    assert rig.store.load().sessions == {} and rig.stored_messages("bad") == []


# -- 10. the queue limit -----------------------------------------------------------------------


def test_queue_limit_keeps_seqs_aligned_and_refused_messages_off_disk(tmp_path):
    rig = Rig(tmp_path / "b", max_queued=3)
    try:
        sub = rig.client()
        sub.connect("s", clean=False)
        sub.subscribe("t", qos=1)
        sub.session.pause_writing()
        pub = rig.client()
        pub.connect("p")
        pub.send(Publish("t", b"q0"), Publish("t", b"a", qos=1, packet_id=1), Publish("t", b"q0-2"),
                 Publish("t", b"b", qos=1, packet_id=2))  # full: drops the oldest QoS 0  # fmt: skip
        state = rig.broker.clients["s"]
        assert [m.payload for m in state.queue] == [b"a", b"q0-2", b"b"]
        assert len(state.seqs) == len(state.queue) and list(state.seqs) == [1, 0, 2]
        pub.send(Publish("t", b"c", qos=1, packet_id=3))  # drops q0-2
        pub.send(Publish("t", b"refused", qos=1, packet_id=4))  # full of QoS 1: refused
        assert [m.payload for m in state.queue] == [b"a", b"b", b"c"]
        assert len(state.seqs) == len(state.queue) and list(state.seqs) == [1, 2, 3]
        assert state.dropped == 3
        rig.commit()
        assert [(seq, payload) for seq, _, _, payload in rig.stored_messages("s")] == [(1, b"a"), (2, b"b"), (3, b"c")]
        assert [p for p in pub.pending() if isinstance(p, Puback)] == [Puback(1), Puback(2), Puback(3), Puback(4)]

        broker = rig.crash()
        restored = broker.clients["s"]
        assert [m.payload for m in restored.queue] == [b"a", b"b", b"c"]
        assert list(restored.seqs) == [1, 2, 3] and restored.next_seq == 4
        sub, packets = reconnect(broker, "s")
        assert [m.payload for m in packets[1:]] == [b"a", b"b", b"c"]
        for message in packets[1:]:
            sub.send(Puback(message.packet_id))
        rig.commit()
        assert rig.stored_messages("s") == []
    finally:
        rig.store.close()


def test_detach_drops_queued_qos0_and_keeps_seqs_aligned(rig):
    sub = rig.client()
    sub.connect("s", clean=False)
    sub.subscribe("t", qos=1)
    sub.session.pause_writing()
    pub = rig.client()
    pub.connect("p")
    pub.send(Publish("t", b"q0"), Publish("t", b"a", qos=1, packet_id=1), Publish("t", b"q0-2"))
    sub.lost()
    state = rig.broker.clients["s"]
    assert [m.payload for m in state.queue] == [b"a"] and list(state.seqs) == [1]
    rig.commit()
    _, packets = reconnect(rig.crash(), "s")
    assert [m.payload for m in packets[1:]] == [b"a"]


# -- 11. a failed commit -----------------------------------------------------------------------


def test_abort_discards_held_acks_and_disconnects_a_v5_client(rig):
    offline_subscriber(rig)
    pub = rig.client(5)
    pub.connect("p")
    assert pub.send(Publish("t", b"m", qos=1, packet_id=1), Publish("other", b"x", qos=1, packet_id=2)) == []
    ops, batch = rig.journal.take()
    waiting = rig.journal.committed(batch)  # the commit failed: the server aborts instead
    assert waiting == {pub.session}
    for session in waiting:
        session.abort("could not persist its messages: disk full")
    assert pub.pending() == [Disconnect(0x80)]
    assert pub.closed == "could not persist its messages: disk full"
    pub.session.release_acks()  # a late release sends nothing
    assert pub.pending() == []


def test_abort_of_a_311_client_just_closes(rig):
    offline_subscriber(rig)
    pub = rig.client(4)
    pub.connect("p")
    assert pub.send(Publish("t", b"m", qos=1, packet_id=1)) == []
    _, batch = rig.journal.take()
    for session in rig.journal.committed(batch):
        session.abort("store failed")
    assert pub.pending() == [] and pub.closed == "store failed"


def test_server_shutdown_discards_held_acks(rig):
    offline_subscriber(rig)
    pub = rig.client(5)
    pub.connect("p")
    pub.send(Publish("t", b"m", qos=1, packet_id=1))
    out, reason = pub.session.server_shutdown(1.0)
    assert pub.decode(out) == [Disconnect(0x8B)] and reason == "server shutting down"
    rig.commit()
    assert pub.pending() == []


def test_held_ack_is_not_sent_after_a_ping_before_commit(rig):
    offline_subscriber(rig)
    pub = rig.client()
    pub.connect("p")
    pub.send(Publish("t", b"m", qos=1, packet_id=1))
    assert pub.send(Pingreq()) != [] and pub.pending() == []
    rig.commit()
    assert pub.pending() == [Puback(1)]
