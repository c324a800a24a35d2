"""`python -m pillion broker` under hostile or heavy input: fuzzed streams, oversized and
out-of-order packets, a consumer that never reads, a thousand connections.

Every raw connection ends by the broker closing it (or by our close after the broker
answered); a socket timeout means the broker hung, and fails the test.
"""

from __future__ import annotations

import resource
import selectors
import socket
import threading
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _mqtt import (
    V5,
    V311,
    Client,
    client_pool,
    connect,
    mqtt_str,
    packet,
    publish,
    raw_client,
    read_packet,
    read_until_closed,
    recv_exact,
    running_broker,
    subscribe,
    varint,
)

pytestmark = pytest.mark.timeout(60)

MAX_PACKET = 64 * 1024
CLIENTS = 1000


def _raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """One broker for the module, with a 64 KiB packet limit; it inherits a file limit that
    allows the thousand-connection test (raised before it starts)."""
    _raise_nofile(2 * CLIENTS + 200)
    with running_broker(tmp_path_factory.mktemp("broker"), "--max-packet-size", "64Ki") as proc:
        yield proc


@pytest.fixture
def clients():
    with client_pool() as made:
        yield made


class Healthy:
    """A paho client connected for the whole module that publishes to itself."""

    def __init__(self, port: int):
        self.client = Client(port, V5)
        self.topic = f"healthy/{uuid.uuid4().hex}"
        self.client.subscribe(self.topic, 1)
        self.count = 0

    def check(self, proc) -> None:
        assert proc.alive(), f"broker exited with {proc.proc.returncode}:\n{proc.output()[-5000:]}"
        self.count += 1
        payload = f"ping-{self.count}".encode()
        self.client.publish(self.topic, payload, qos=1)
        assert self.client.get().payload == payload


@pytest.fixture(scope="module")
def healthy(broker):
    probe = Healthy(broker.port)
    yield probe
    probe.client.close()


def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data``, half-close, and read until the broker closes; a hang raises."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return b""
        return read_until_closed(sock)


# -- fuzzing ----------------------------------------------------------------------------------


def _connect5_with_everything() -> bytes:
    props = bytes([0x11]) + (60).to_bytes(4, "big") + bytes([0x21]) + (10).to_bytes(2, "big")  # expiry, receive max
    will_props = bytes([0x18]) + (0).to_bytes(4, "big")  # will delay 0
    flags = 0x02 | 0x04 | 0x08 | 0x20 | 0x80 | 0x40  # clean, will, will qos 1, will retain, user, password
    body = (mqtt_str("MQTT") + bytes([5, flags]) + (30).to_bytes(2, "big") + varint(len(props)) + props
            + mqtt_str("fz5") + varint(len(will_props)) + will_props + mqtt_str("fz/will") + mqtt_str(b"bye")
            + mqtt_str("user") + mqtt_str(b"pw"))
    return packet(0x10, body)


def _subscribe5_options() -> bytes:
    props = bytes([0x0B, 0x05])  # subscription identifier 5
    body = (7).to_bytes(2, "big") + varint(len(props)) + props + mqtt_str("fz/+/x") + bytes([0x2E]) + \
        mqtt_str("$share/g/fz/#") + bytes([0x01])
    return packet(0x82, body)


VALID_STREAMS = [
    connect("fz4"),
    connect("fz4", clean=False, keepalive=5),
    connect("fz5", level=5),
    _connect5_with_everything(),
    connect("fz4") + subscribe(1, "fz/#", 2) + publish("fz/a", b"x" * 40, qos=1, packet_id=3, retain=True),
    connect("fz5", level=5) + subscribe(1, "fz/#", 1, level=5) + publish("fz/a", b"payload", 2, 9, level=5),
    _connect5_with_everything() + _subscribe5_options() + packet(0xA2, (8).to_bytes(2, "big") + b"\x00" + mqtt_str("fz/#")),
    connect("fz4") + packet(0xC0, b"") + packet(0x62, b"\x00\x09") + packet(0x40, b"\x00\x01") + packet(0xE0, b""),
    connect("fz5", level=5) + publish("fz/q2", b"q2", 2, 1, level=5) + packet(0x62, b"\x00\x01") +
    packet(0xE0, b"\x04\x00"),
    publish("fz/early", b"before connect"),
]


@st.composite
def mutated_streams(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID_STREAMS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "duplicate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if not data and op != "insert":
            op = "insert"
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255))]))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 4))]
        elif op == "truncate":
            del data[pos:]
        else:
            data[pos:pos] = data[pos:pos + draw(st.integers(1, 32))]
    return bytes(data)


FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(data=st.binary(max_size=1024))
def test_random_bytes(broker, healthy, data):
    exchange(broker.port, data)
    healthy.check(broker)
    assert not broker.tracebacks(), "\n".join(broker.tracebacks())


@FUZZ
@given(data=mutated_streams())
def test_mutated_packets(broker, healthy, data):
    exchange(broker.port, data)
    healthy.check(broker)
    assert not broker.tracebacks(), "\n".join(broker.tracebacks())


def test_valid_streams_are_valid(broker, clients):
    """The fuzz seeds themselves work (so the mutations start from packets the broker accepts)."""
    watcher = Client(broker.port, V311)
    clients.append(watcher)
    watcher.subscribe("fz/#", 1)
    replies = [exchange(broker.port, stream) for stream in VALID_STREAMS]
    for stream, reply in zip(VALID_STREAMS[:-1], replies):
        assert reply[:1] == b"\x20" and reply[3] == 0, (stream, reply)
    assert replies[-1] == b""  # PUBLISH before CONNECT
    got = []
    while len(got) < 5:
        message = watcher.get()
        if not message.retain:  # retained copies left by other tests come first; skip them
            got.append(message.topic)
    assert sorted(got) == ["fz/a", "fz/a", "fz/q2", "fz/will", "fz/will"]
    assert watcher.nothing()


# -- packet size --------------------------------------------------------------------------------


def _publish_of_total_size(topic: str, total: int) -> bytes:
    """A 3.1.1 QoS 0 PUBLISH whose encoded size (fixed header included) is ``total``."""
    for header in (2, 3, 4):
        remaining = total - 1 - (header - 1)
        if len(varint(remaining)) == header - 1:
            payload = b"p" * (remaining - 2 - len(topic.encode()))
            data = packet(0x30, mqtt_str(topic) + payload)
            assert len(data) == total
            return data
    raise AssertionError(total)


@pytest.mark.parametrize("level", [4, 5], ids=["3.1.1", "5.0"])
def test_oversized_publish_closes_only_that_connection(broker, healthy, clients, level):
    topic = f"big/{uuid.uuid4().hex}"
    watcher = Client(broker.port, V311)
    clients.append(watcher)
    watcher.subscribe(topic, 0)
    with raw_client(broker.port, f"big-{uuid.uuid4().hex[:6]}", level) as sock:
        # Exactly the limit (fixed header included) is accepted. (A 5.0 PUBLISH has one more byte
        # for its properties length, so build the 3.1.1 form and add it for 5.0.)
        if level == 5:
            at_limit = _publish_of_total_size(topic, MAX_PACKET - 1)
            body = at_limit[4:]  # after the 1 + 3 byte fixed header
            at_limit = packet(0x30, body[:2 + len(topic)] + b"\x00" + body[2 + len(topic):])
        else:
            at_limit = _publish_of_total_size(topic, MAX_PACKET)
        assert len(at_limit) == MAX_PACKET
        sock.sendall(at_limit)
        assert len(watcher.get().payload) == MAX_PACKET - 4 - 2 - len(topic) - (level == 5)
        # One byte more: only the fixed header is sent; the broker must not wait for the body.
        sock.sendall(b"\x30" + varint(MAX_PACKET - 3))
        data = read_until_closed(sock)
    if level == 5:
        assert data[:1] == b"\xe0" and data[2] == 0x95, data.hex()
        assert len(data) == 2 + data[1], data.hex()
    else:
        assert data == b""
    healthy.check(broker)
    assert watcher.nothing(0.1)


def test_connack_announces_maximum_packet_size(broker):
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as sock:
        sock.sendall(connect("mps", level=5))
        ack = read_packet(sock)
    assert ack[:1] == b"\x20" and ack[3] == 0
    assert bytes([0x27]) + MAX_PACKET.to_bytes(4, "big") in ack[4:], ack.hex()


# -- packet order -------------------------------------------------------------------------------


@pytest.mark.parametrize("first", [
    publish("order/x", b"early"),
    publish("order/x", b"early", qos=1, packet_id=1),
    subscribe(1, "order/#"),
    packet(0xC0, b""),  # PINGREQ
    packet(0xE0, b""),  # DISCONNECT
    packet(0x20, b"\x00\x00"),  # CONNACK: a server packet
], ids=["publish", "publish-qos1", "subscribe", "pingreq", "disconnect", "connack"])
def test_packet_before_connect_closes(broker, healthy, first):
    assert exchange(broker.port, first + connect("late")) == b""
    healthy.check(broker)


@pytest.mark.parametrize("level", [4, 5], ids=["3.1.1", "5.0"])
def test_second_connect_closes(broker, healthy, clients, level):
    client_id = f"twice-{uuid.uuid4().hex[:6]}"
    topic = f"order/{client_id}"
    watcher = Client(broker.port, V311)
    clients.append(watcher)
    watcher.subscribe(topic, 0)
    with raw_client(broker.port, client_id, level) as sock:
        sock.sendall(connect(client_id, level) + publish(topic, b"after second connect", level=level))
        data = read_until_closed(sock)
    if level == 5:
        assert data[:1] == b"\xe0" and data[2] == 0x82 and len(data) == 2 + data[1], data.hex()
    else:
        assert data == b""
    assert watcher.nothing()
    healthy.check(broker)


def test_server_packets_from_client_close(broker, healthy):
    for bogus in (packet(0x20, b"\x00\x00"), packet(0x90, b"\x00\x01\x00"), packet(0xD0, b""),
                  packet(0xB0, b"\x00\x01")):
        with raw_client(broker.port, f"bogus-{uuid.uuid4().hex[:6]}", 5) as sock:
            sock.sendall(bogus)
            data = read_until_closed(sock)
        assert data[:1] == b"\xe0" and data[2] >= 0x80, (bogus.hex(), data.hex())
    healthy.check(broker)


# -- slow consumer ------------------------------------------------------------------------------


def _vm(proc, field: str) -> int:
    with open(f"/proc/{proc.pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(field)


class RawReader(threading.Thread):
    """Reads a raw socket in the background until ``marker`` has been seen."""

    def __init__(self, sock: socket.socket, marker: bytes):
        super().__init__(daemon=True)
        self.sock, self.marker = sock, marker
        self.received = 0
        self.seen = threading.Event()

    def run(self):
        tail = b""
        try:
            while not self.seen.is_set():
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    return
                self.received += len(chunk)
                tail = tail[-len(self.marker):] + chunk
                if self.marker in tail:
                    self.seen.set()
        except OSError:
            return


def test_slow_consumer_stays_bounded(broker, healthy):
    """Two floods of 20,000 x 1 KiB QoS 0 messages past a subscriber that never reads: the
    broker keeps at most its queue for it, so RSS stays flat across the second flood (an
    unbounded buffer would grow by ~20 MiB per flood)."""
    topic = f"flood/{uuid.uuid4().hex[:8]}"
    # The consumer that never reads, with a small receive buffer so the broker sees backpressure.
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.settimeout(5)
    stuck.connect(("127.0.0.1", broker.port))
    stuck.sendall(connect(f"stuck-{uuid.uuid4().hex[:6]}"))
    assert read_packet(stuck)[:1] == b"\x20"
    stuck.sendall(subscribe(1, topic, 0))
    assert read_packet(stuck)[:1] == b"\x90"
    # A consumer that reads everything.
    fast = raw_client(broker.port, f"fast-{uuid.uuid4().hex[:6]}")
    fast.sendall(subscribe(1, topic, 1))
    assert read_packet(fast)[:1] == b"\x90"
    fast.settimeout(10)
    rss = [_vm(broker, "VmRSS")]
    batch = publish(topic, b"m" * 1024) * 500
    try:
        with raw_client(broker.port, f"flooder-{uuid.uuid4().hex[:6]}") as pub:
            pub.settimeout(20)
            for round_ in range(2):
                marker = f"END-{round_}-{uuid.uuid4().hex}".encode()
                reader = RawReader(fast, marker)
                reader.start()
                for _ in range(20_000 // 500):
                    pub.sendall(batch)
                # The publisher still works: a QoS 1 marker is acknowledged.
                pub.sendall(publish(topic, marker, qos=1, packet_id=7))
                ack = read_packet(pub)
                assert ack[:1] == b"\x40" and ack[2:4] == b"\x00\x07", ack
                # The other subscriber still gets messages: the marker, after (most of) the flood.
                assert reader.seen.wait(10), f"fast subscriber never got the marker ({reader.received} bytes)"
                reader.join(5)
                assert reader.received > 1_000_000, reader.received
                healthy.check(broker)
                rss.append(_vm(broker, "VmRSS"))
            peak = _vm(broker, "VmHWM")
    finally:
        stuck.close()
        fast.close()
    mib = [round(value / 2**20, 1) for value in rss + [peak]]
    assert rss[2] - rss[0] < 50 * 2**20, f"RSS before/after flood 1/after flood 2/peak, MiB: {mib}"
    assert peak - rss[0] < 50 * 2**20, f"RSS before/after flood 1/after flood 2/peak, MiB: {mib}"
    assert rss[2] - rss[1] < 10 * 2**20, f"RSS before/after flood 1/after flood 2/peak, MiB: {mib}"


# -- many clients -------------------------------------------------------------------------------


def _read_each(socks: list[socket.socket], size: int, timeout: float = 10.0) -> list[bytes]:
    """Exactly ``size`` bytes from every socket, read with one selector."""
    got = {sock.fileno(): b"" for sock in socks}
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sel.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        pending = len(socks)
        while pending:
            left = deadline - time.monotonic()
            assert left > 0, f"{pending} of {len(socks)} sockets still waiting for {size} bytes"
            for key, _ in sel.select(left):
                sock = key.fileobj
                chunk = sock.recv(size - len(got[sock.fileno()]))
                assert chunk, f"socket closed after {got[sock.fileno()]!r}"
                got[sock.fileno()] += chunk
                if len(got[sock.fileno()]) == size:
                    sel.unregister(sock)
                    pending -= 1
    return [got[sock.fileno()] for sock in socks]


def test_thousand_clients(broker, healthy):
    tag = uuid.uuid4().hex[:6]
    topic = f"many/{tag}"
    socks: list[socket.socket] = []
    try:
        for start in range(0, CLIENTS, 100):  # batches of 100: stay under the listen backlog
            batch = []
            for i in range(start, start + 100):
                sock = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
                sock.sendall(connect(f"many-{tag}-{i}"))
                batch.append(sock)
            assert all(ack == b"\x20\x02\x00\x00" for ack in _read_each(batch, 4))
            socks += batch
        for sock in socks:
            sock.sendall(subscribe(1, topic, 0))
        assert set(_read_each(socks, 5)) == {b"\x90\x03\x00\x01\x00"}
        with raw_client(broker.port, f"many-pub-{tag}") as pub:
            pub.sendall(publish(topic, b"to everyone", qos=1, packet_id=1))
            assert read_packet(pub)[:1] == b"\x40"
        expected = publish(topic, b"to everyone")
        assert set(_read_each(socks, len(expected))) == {expected}
        healthy.check(broker)
    finally:
        for sock in socks:
            sock.close()
    # The broker let go of them all (the healthy client and any test leftovers remain).
    healthy.check(broker)


def test_recv_exact_helper_detects_close():
    """The raw helpers fail (not hang) when the peer closes early."""
    a, b = socket.socketpair()
    a.sendall(b"\x20")
    a.close()
    with pytest.raises(ConnectionError):
        recv_exact(b, 2)
    b.close()
