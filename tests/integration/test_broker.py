"""`python -m pillion broker` against real paho-mqtt clients (3.1.1 and 5.0)."""

from __future__ import annotations

import os
import socket
import uuid

import pytest
from _mqtt import V5, V311, Client

from pillion._testing import wait_for


@pytest.mark.parametrize("protocol", [V311, V5], ids=["3.1.1", "5.0"])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_pub_sub(broker, clients, protocol, qos):
    sub = Client(broker, protocol)
    pub = Client(broker, protocol)
    clients += [sub, pub]
    topic = f"it/{uuid.uuid4().hex}/x"
    sub.subscribe(topic.rsplit("/", 1)[0] + "/+", qos)
    for i in range(5):
        pub.publish(topic, f"m{i}".encode(), qos=qos)
    got = [sub.get() for _ in range(5)]
    assert [m.payload for m in got] == [f"m{i}".encode() for i in range(5)]
    assert {m.qos for m in got} == {qos}
    assert sub.nothing()


@pytest.mark.parametrize("protocol", [V311, V5], ids=["3.1.1", "5.0"])
def test_retained(broker, clients, protocol):
    topic = f"ret/{uuid.uuid4().hex}"
    pub = Client(broker, protocol)
    clients.append(pub)
    pub.publish(topic, b"state", qos=1, retain=True)
    sub = Client(broker, protocol)
    clients.append(sub)
    sub.subscribe(topic, 1)
    message = sub.get()
    assert (message.payload, message.retain) == (b"state", True)
    pub.publish(topic, b"", qos=1, retain=True)  # clear
    assert sub.get().payload == b""
    late = Client(broker, protocol)
    clients.append(late)
    late.subscribe(topic, 1)
    assert late.nothing()


def test_will_on_abrupt_close(broker, clients):
    topic = f"will/{uuid.uuid4().hex}"
    watcher = Client(broker, V5)
    clients.append(watcher)
    watcher.subscribe(topic, 1)
    dying = Client(broker, V311, will=(topic, b"offline", 1))
    dying.c.loop_stop()
    dying.c.socket().close()  # no DISCONNECT
    message = watcher.get()
    assert message.payload == b"offline"


@pytest.mark.parametrize("protocol", [V311, V5], ids=["3.1.1", "5.0"])
def test_persistent_session_gets_offline_messages(broker, clients, protocol):
    client_id = f"persist-{uuid.uuid4().hex[:8]}"
    topic = f"persist/{client_id}"
    sub = Client(broker, protocol, client_id=client_id, clean=False)
    sub.subscribe(topic, 1)
    sub.close()
    pub = Client(broker, protocol)
    clients.append(pub)
    for i in range(3):
        pub.publish(topic, f"offline-{i}".encode(), qos=1)
    back = Client(broker, protocol, client_id=client_id, clean=False)
    clients.append(back)
    assert [back.get().payload for _ in range(3)] == [b"offline-0", b"offline-1", b"offline-2"]


def test_garbage_does_not_affect_other_clients(broker, clients):
    topic = f"robust/{uuid.uuid4().hex}"
    sub = Client(broker, V5)
    pub = Client(broker, V311)
    clients += [sub, pub]
    sub.subscribe(topic, 1)
    for garbage in (os.urandom(512), b"\x10\xff\xff\xff\xff\x7f", b"\x30\x05\x00\x01"):
        with socket.create_connection(("127.0.0.1", broker), timeout=5) as sock:
            sock.sendall(garbage)
            sock.settimeout(5)
            try:
                while sock.recv(4096):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass
    pub.publish(topic, b"still here", qos=1)
    assert sub.get().payload == b"still here"


def test_shared_subscription_balances(broker, clients):
    topic = f"jobs/{uuid.uuid4().hex}"
    members = [Client(broker, V5) for _ in range(2)]
    pub = Client(broker, V311)
    clients += members + [pub]
    for member in members:
        member.subscribe(f"$share/workers/{topic}", 1)
    for i in range(10):
        pub.publish(topic, str(i).encode(), qos=1)
    wait_for(lambda: sum(m.messages.qsize() for m in members) == 10, what="10 deliveries")
    assert [m.messages.qsize() for m in members] == [5, 5]


def test_oversized_packet_gets_disconnect_reason(broker):

    with socket.create_connection(("127.0.0.1", broker), timeout=5) as sock:
        # CONNECT, level 5, clean start, keep-alive 0, no properties, client id "big".
        body = b"\x00\x04MQTT\x05\x02\x00\x00\x00\x00\x03big"
        sock.sendall(bytes([0x10, len(body)]) + body)
        assert sock.recv(2)[:1] == b"\x20"
        sock.recv(4096)
        # A PUBLISH header announcing 2 MiB, past the default 1 MiB limit.
        sock.sendall(b"\x30\x80\x80\x80\x01")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        assert data == b"\xe0\x01\x95"
