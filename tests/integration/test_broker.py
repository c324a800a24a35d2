"""`python -m pillion broker` against real paho-mqtt clients (3.1.1 and 5.0)."""

from __future__ import annotations

import os
import queue
import socket
import sys
import uuid

import pytest

mqtt = pytest.importorskip("paho.mqtt.client")

from pillion._testing import Process, free_port, wait_for  # noqa: E402

V311, V5 = mqtt.MQTTv311, mqtt.MQTTv5


def _can_connect(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    proc = Process([sys.executable, "-m", "pillion", "broker", "--port", str(port), "--log-level", "debug"],
                   log, env=dict(os.environ))
    try:
        wait_for(lambda: _can_connect(port), what="broker listening")
        yield port
        assert proc.proc.poll() is None, log.read_text()
        assert "Traceback" not in log.read_text(), log.read_text()
    finally:
        proc.stop()


class Client:
    """A paho client on its own network thread; received messages land in a queue."""

    def __init__(self, port: int, protocol: int, client_id: str | None = None, clean: bool = True,
                 will: tuple | None = None, keepalive: int = 30):
        self.messages: queue.Queue = queue.Queue()
        self.subscribed: queue.Queue = queue.Queue()
        self.client_id = client_id or f"t-{uuid.uuid4().hex[:8]}"
        kwargs = {"clean_session": clean} if protocol == V311 else {}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=protocol, **kwargs)
        self.c.on_message = lambda client, userdata, msg: self.messages.put(msg)
        self.c.on_subscribe = lambda client, userdata, mid, codes, props: self.subscribed.put(codes)
        if will:
            self.c.will_set(*will)
        connect_kwargs = {"keepalive": keepalive}
        if protocol == V5:
            from paho.mqtt.properties import Properties
            from paho.mqtt.packettypes import PacketTypes

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 0 if clean else 3600
            connect_kwargs.update(clean_start=clean, properties=props)
        self.c.connect("127.0.0.1", port, **connect_kwargs)
        self.c.loop_start()
        wait_for(self.c.is_connected, what=f"{self.client_id} connected")

    def subscribe(self, topic: str, qos: int = 0):
        self.c.subscribe(topic, qos)
        return self.subscribed.get(timeout=5)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False):
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=5)
        assert info.is_published()

    def get(self, timeout: float = 5.0):
        return self.messages.get(timeout=timeout)

    def nothing(self, timeout: float = 0.3) -> bool:
        try:
            self.messages.get(timeout=timeout)
        except queue.Empty:
            return True
        return False

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def clients():
    made = []
    yield made
    for client in made:
        try:
            client.close()
        except Exception:  # noqa: BLE001 - teardown of a client the test may have broken
            pass


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
