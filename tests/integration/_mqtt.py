"""Shared helpers for the broker tests: a `pillion broker` process, a paho client, raw packets.

Import with ``from _mqtt import ...`` (tests/integration is on sys.path, like ``_http``).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import sys
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt

from pillion._testing import Process, free_port, wait_for

V311, V5 = mqtt.MQTTv311, mqtt.MQTTv5


def can_connect(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class BrokerProcess(Process):
    """`python -m pillion broker` on a free port, debug logging to ``log_dir/broker.log``,
    PILLION_HOME and PILLION_DATA_DIR under ``log_dir``."""

    def __init__(self, log_dir: Path, *extra: str):
        self.port = free_port()
        super().__init__([sys.executable, "-m", "pillion", "broker", "--host", "127.0.0.1", "--port", str(self.port),
                          "--log-level", "debug", *extra], log_dir / "broker.log", env=self._env(log_dir))
        try:
            wait_for(lambda: self._listening(), what="broker listening")
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _env(log_dir: Path) -> dict[str, str]:
        # Any state the broker persists stays in this test's directory, not ~/.pillion.
        env = dict(os.environ)
        env["PILLION_HOME"] = str(log_dir / "home")
        env["PILLION_DATA_DIR"] = str(log_dir / "data")
        return env

    def _listening(self) -> bool:
        if not self.alive():
            raise RuntimeError(f"broker exited with {self.proc.returncode}:\n{self.output()}")
        return can_connect(self.port)

    def tracebacks(self) -> list[str]:
        """Log lines with a traceback (the log formatter keeps a record on one line)."""
        return [line for line in self.output().splitlines() if "Traceback" in line]

    def check_healthy(self) -> None:
        """The process is alive and logged no traceback."""
        assert self.alive(), f"broker exited with {self.proc.returncode}:\n{self.output()[-5000:]}"
        assert not self.tracebacks(), "\n".join(self.tracebacks())

    def rss_kib(self) -> int:
        """Resident set size of the broker process (VmRSS, KiB)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line")


@contextlib.contextmanager
def running_broker(log_dir: Path, *extra: str):
    """A broker for the ``with`` body; on a clean exit it must still be alive without tracebacks."""
    proc = BrokerProcess(log_dir, *extra)
    try:
        yield proc
        proc.check_healthy()
    finally:
        proc.stop()


class Client:
    """A paho client on its own network thread; received messages land in a queue."""

    def __init__(self, port: int, protocol: int, client_id: str | None = None, clean: bool = True,
                 will: tuple | None = None, keepalive: int = 30, username: str | None = None,
                 password: str | None = None):
        self.messages: queue.Queue = queue.Queue()
        self.subscribed: queue.Queue = queue.Queue()
        self.client_id = client_id or f"t-{uuid.uuid4().hex[:8]}"
        kwargs = {"clean_session": clean} if protocol == V311 else {}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=protocol, **kwargs)
        self.c.on_message = lambda client, userdata, msg: self.messages.put(msg)
        self.c.on_subscribe = lambda client, userdata, mid, codes, props: self.subscribed.put(codes)
        if will:
            self.c.will_set(*will)
        if username is not None:
            self.c.username_pw_set(username, password)
        connect_kwargs = {"keepalive": keepalive}
        if protocol == V5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

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


@contextlib.contextmanager
def client_pool():
    """A list to append `Client`s to; all are closed when the ``with`` ends."""
    made: list[Client] = []
    try:
        yield made
    finally:
        for client in made:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - teardown of a client the test may have broken
                pass


# -- raw packets (hand-built bytes, independent of the broker's codec) ------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_str(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return len(data).to_bytes(2, "big") + data


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def connect(client_id: str, level: int = 4, clean: bool = True, keepalive: int = 0) -> bytes:
    props = b"\x00" if level == 5 else b""
    flags = 0x02 if clean else 0x00
    return packet(0x10, mqtt_str("MQTT") + bytes([level, flags]) + keepalive.to_bytes(2, "big") + props
                  + mqtt_str(client_id))


def publish(topic: str, payload: bytes, qos: int = 0, packet_id: int = 0, level: int = 4, dup: bool = False,
            retain: bool = False) -> bytes:
    first = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    body = mqtt_str(topic) + (packet_id.to_bytes(2, "big") if qos else b"") + (b"\x00" if level == 5 else b"")
    return packet(first, body + payload)


def subscribe(packet_id: int, topic_filter: str, qos: int = 0, level: int = 4) -> bytes:
    props = b"\x00" if level == 5 else b""
    return packet(0x82, packet_id.to_bytes(2, "big") + props + mqtt_str(topic_filter) + bytes([qos]))


def pubrel(packet_id: int) -> bytes:
    return packet(0x62, packet_id.to_bytes(2, "big"))


def read_packet(sock: socket.socket) -> bytes:
    """One whole packet (fixed header included); b"" when the peer closed first."""
    head = sock.recv(1)
    if not head:
        return b""
    length, shift, raw = 0, 0, b""
    while True:
        byte = recv_exact(sock, 1)
        raw += byte
        length += (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    return head + raw + recv_exact(sock, length)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the broker sends until it closes; a socket timeout (hang) propagates."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def raw_client(port: int, client_id: str, level: int = 4, timeout: float = 5.0) -> socket.socket:
    """A connected raw socket that sent CONNECT and read a successful CONNACK."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(connect(client_id, level))
    ack = read_packet(sock)
    assert ack[:1] == b"\x20" and ack[3] == 0, ack
    return sock


# -- a real Mosquitto (the external-broker path) ------------------------------------------

MOSQUITTO = "/usr/sbin/mosquitto"


class Mosquitto:
    """A real Mosquitto with persistence under ``tmp``, restartable on the same port."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.port = free_port()
        (tmp / "data").mkdir()
        self.conf = tmp / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {tmp}/data/\nlog_dest stdout\n"
                             "max_queued_messages 100000\n")  # its default, 1000, drops silently
        self.runs = 0
        self.start()

    def start(self) -> None:
        self.runs += 1
        self.proc = Process([MOSQUITTO, "-c", str(self.conf)], self.tmp / f"mosquitto-{self.runs}.log")
        wait_for(lambda: can_connect(self.port), 5, what="mosquitto listening")

    def kill(self) -> None:
        self.proc.stop(signal.SIGKILL)

    def stop(self) -> None:
        self.proc.stop()
