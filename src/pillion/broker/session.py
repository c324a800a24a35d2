"""The broker's view of one client connection, and the client state that outlives it.

``Session`` owns packet ordering, the CONNECT handshake, QoS 1/2 handshakes in both
directions, packet ids, the outbound in-flight window and keep-alive. It takes bytes
and the current time and returns bytes and a close reason. No sockets, no asyncio, no
LMDB: the adapter (``protocol.py``) moves the bytes and runs the one timer.

``ClientState`` is what a client id keeps between connections: subscriptions, the
queue of messages waiting for the window, the in-flight outbound messages, and the
packet ids of inbound QoS 2 messages received but not yet released. A persistent
session (3.1.1 clean session 0, or 5.0 session expiry > 0) keeps it while the client
is away.

Persistence (when the broker has a ``store.Journal``): a persistent client state writes
its subscriptions, inbound QoS 2 packet ids and every QoS 1/2 message queued for it to
the journal, and removes each message when the client has acknowledged it. QoS 2
messages are written again when sent (their packet id must survive a restart) and
when PUBREC turns them into PUBREL; a QoS 1 message in flight at a crash is sent
again with a new packet id, which at-least-once allows. A PUBACK, PUBREC or PUBCOMP
whose packet changed the journal is held until that batch is on disk
(``release_acks``), and acknowledgements leave in the order the packets came.

Outbound queue policy (``max_queued`` per client, 1000 by default): messages wait in
the queue while the in-flight window is full, while the transport has paused writing
(slow consumer) or while a persistent client is offline. QoS 0 messages are not
queued for an offline client. When the queue is full the oldest queued QoS 0 message
is dropped to make room; when it holds no QoS 0 message, the new message is refused
(dropped, counted in ``ClientState.dropped``). The queue therefore never grows past
``max_queued`` and a slow consumer never makes the broker buffer without bound.

MQTT 5.0 features: a message with a message expiry interval travels as an
``ExpiringPublish`` (its absolute deadline beside the received interval) and is
dropped (``ClientState.expired``) when it has expired by the time it would be sent;
the sent copy carries the remaining interval (§3.3.2.3.3). Inbound topic aliases are
resolved per connection (§3.3.2.3.4); the broker never sends aliases itself, which the
spec allows, so a client's own topic alias maximum is ignored. No authentication
method is supported (§4.12): CONNECT with one gets CONNACK 0x8C, AUTH is a protocol
error. The broker puts no reason strings or user properties on acknowledgements, so a
client's request problem information 0 (§3.1.2.11.7) needs nothing from it.
"""

from __future__ import annotations

import enum
import itertools
import math

import orjson
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from . import codec
from .store import DEL_MESSAGE, DEL_SESSION, INFLIGHT, PUT_MESSAGE, PUT_SESSION, QUEUED, RELEASING, Journal
from .store import encode_message, message_key
from .packets import (
    PKT_AUTH,
    PKT_CONNECT,
    PKT_DISCONNECT,
    PKT_PINGREQ,
    PKT_PUBACK,
    PKT_PUBCOMP,
    PKT_PUBLISH,
    PKT_PUBREC,
    PKT_PUBREL,
    PKT_SUBSCRIBE,
    PKT_UNSUBSCRIBE,
    PACKET_TYPES,
    RC_PROTOCOL_ERROR,
    RC_UNSUPPORTED_PROTOCOL_VERSION,
    Connack,
    Connect,
    Disconnect,
    MQTTDecodeError,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Unsuback,
)

if TYPE_CHECKING:
    from .broker import Broker

# 3.1.1 CONNACK return codes (§3.2.2.3).
CONNACK_ACCEPTED = 0
CONNACK_BAD_PROTOCOL = 1
CONNACK_IDENTIFIER_REJECTED = 2
CONNACK_NOT_AUTHORIZED = 5

# 5.0 reason codes used by the session (§2.4).
RC_SUCCESS = 0x00
RC_DISCONNECT_WITH_WILL = 0x04
RC_NO_SUBSCRIPTION_EXISTED = 0x11
RC_UNSPECIFIED = 0x80
RC_CLIENT_ID_NOT_VALID = 0x85
RC_BAD_USER_NAME_OR_PASSWORD = 0x86
RC_NOT_AUTHORIZED = 0x87
RC_SERVER_SHUTTING_DOWN = 0x8B
RC_BAD_AUTHENTICATION_METHOD = 0x8C
RC_KEEP_ALIVE_TIMEOUT = 0x8D
RC_SESSION_TAKEN_OVER = 0x8E
RC_TOPIC_FILTER_INVALID = 0x8F
RC_PACKET_ID_NOT_FOUND = 0x92
RC_RECEIVE_MAXIMUM_EXCEEDED = 0x93
RC_TOPIC_ALIAS_INVALID = 0x94
RC_QUOTA_EXCEEDED = 0x97
SUBACK_FAILURE_311 = 0x80

DEFAULT_INFLIGHT = 20  # outbound window for 3.1.1 clients (5.0 clients say theirs)
DEFAULT_MAX_QUEUED = 1000
DEFAULT_RECEIVE_MAXIMUM = 100  # inbound QoS 2 messages a client may have unreleased
DEFAULT_TOPIC_ALIAS_MAXIMUM = 10  # inbound topic aliases per 5.0 connection


@dataclass(slots=True)
class ExpiringPublish(Publish):
    """A routed message with a message expiry interval, not yet sent.

    ``properties`` keep the interval as received; ``expires_at`` is the broker time it
    runs out. The codec encodes only ``Publish`` itself, so ``Session.pump`` sends a
    plain copy carrying the remaining interval.
    """

    expires_at: float = 0.0


def _expiry(interval: int) -> float | None:
    """5.0 session expiry interval in seconds; 0xFFFFFFFF means never (§3.1.2.11.2)."""
    return None if interval == 0xFFFFFFFF else float(interval)


class State(enum.Enum):
    AWAIT_CONNECT = "await-connect"
    AUTHENTICATING = "authenticating"  # CONNECT read; the password check runs off the loop
    CONNECTED = "connected"
    CLOSED = "closed"


# Packets a client may send, per session state. Anything else is a protocol error.
ALLOWED: dict[State, frozenset[int]] = {
    State.AWAIT_CONNECT: frozenset({PKT_CONNECT}),
    State.AUTHENTICATING: frozenset(),
    State.CONNECTED: frozenset({PKT_PUBLISH, PKT_PUBACK, PKT_PUBREC, PKT_PUBREL, PKT_PUBCOMP,
                                PKT_SUBSCRIBE, PKT_UNSUBSCRIBE, PKT_PINGREQ, PKT_DISCONNECT}),
    State.CLOSED: frozenset(),
}  # fmt: skip


class ProtocolError(Exception):
    """The client broke the protocol; ``reason_code`` goes in the 5.0 DISCONNECT."""

    def __init__(self, message: str, reason_code: int = RC_PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class ClientState:
    """What a client id keeps across connections (see the module docstring)."""

    __slots__ = ("client_id", "expiry", "subscriptions", "queue", "inflight", "inbound_qos2", "session", "username",
                 "dropped", "expired", "max_queued", "journal", "seqs", "inflight_seqs", "next_seq",
                 "_ids")  # fmt: skip

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        # Seconds the state outlives a connection: 0 (clean), None (never expires).
        self.expiry: float | None = 0.0
        self.subscriptions: dict[str, object] = {}  # full filter -> broker.Subscription
        self.queue: deque[Publish] = deque()  # waiting for the window; no packet id yet
        self.inflight: dict[int, Publish | Pubrel] = {}  # sent, not yet acknowledged
        self.inbound_qos2: set[int] = set()  # PUBREC sent, PUBREL not yet received
        self.session: Session | None = None
        self.username: str | None = None  # of the latest connection (ACL checks while offline)
        self.dropped = 0  # refused by the queue policy, or too big for the client
        self.expired = 0  # message expiry interval ran out before sending
        self.max_queued: int | None = None  # this client's own queue limit (the sidecar's subscriptions)
        # Set while this state is kept on disk (see the module docstring); ``seqs`` runs
        # beside ``queue`` (0: a QoS 0 message, not stored), ``inflight_seqs`` by packet id.
        self.journal: Journal | None = None
        self.seqs: deque[int] = deque()
        self.inflight_seqs: dict[int, int] = {}
        self.next_seq = 1
        self._ids = itertools.cycle(range(1, 65536))

    @property
    def persistent(self) -> bool:
        return self.expiry != 0

    def next_packet_id(self) -> int:
        for _ in range(65535):
            packet_id = next(self._ids)
            if packet_id not in self.inflight:
                return packet_id
        raise RuntimeError("no free packet id")  # unreachable: the window is far smaller

    def enqueue(self, message: Publish, max_queued: int) -> bool:
        """Queue ``message`` under the drop policy; False when it was refused.

        ``max_queued`` is the broker's limit, unless this client has its own.
        """
        if len(self.queue) >= (self.max_queued or max_queued):
            for index, queued in enumerate(self.queue):
                if queued.qos == 0:
                    del self.queue[index]
                    if self.journal is not None:
                        del self.seqs[index]
                    self.dropped += 1
                    break
            else:
                self.dropped += 1
                return False
        self.queue.append(message)
        if self.journal is not None:
            self.seqs.append(self._store(message) if message.qos else 0)
        return True

    # -- persistence (only while ``journal`` is set) -------------------------------------

    def persist(self, journal: Journal) -> None:
        """Start keeping this state on disk, with what it holds already."""
        self.journal = journal
        self.seqs = deque(self._store(message) if message.qos else 0 for message in self.queue)
        self.save()

    def save(self) -> None:
        """Write the session record: expiry, subscriptions, inbound QoS 2 packet ids."""
        record = {"expiry": self.expiry, "user": self.username, "q2": sorted(self.inbound_qos2), "subs": [
            [name, sub.qos, sub.no_local, sub.retain_as_published, sub.retain_handling, sub.identifier]
            for name, sub in self.subscriptions.items()]}  # fmt: skip
        self.journal.add(PUT_SESSION, self.client_id, orjson.dumps(record))

    def forget_all(self) -> None:
        """Remove the session and its messages from disk; the state stays in memory only."""
        if self.journal is not None:
            self.journal.add(DEL_SESSION, self.client_id)
            self.journal = None
            self.seqs = deque()
            self.inflight_seqs = {}

    def _store(self, message: Publish, state: int = QUEUED, packet_id: int = 0, seq: int = 0) -> int:
        if not seq:
            seq = self.next_seq
            self.next_seq += 1
        expires = message.expires_at + self.journal.wall_offset if type(message) is ExpiringPublish else 0.0
        self.journal.add(PUT_MESSAGE, message_key(self.client_id, seq), encode_message(message, state, packet_id,
                                                                                       expires))  # fmt: skip
        return seq

    def sent(self, seq: int, message: Publish) -> None:
        """``message`` (with its packet id) went out: a QoS 2 one is stored with its id."""
        self.inflight_seqs[message.packet_id] = seq
        if message.qos == 2:
            self._store(message, INFLIGHT, message.packet_id, seq)

    def released(self, packet_id: int) -> None:
        """PUBREC came for a QoS 2 message: only its packet id must survive now."""
        seq = self.inflight_seqs.get(packet_id)
        if seq:
            self.journal.add(PUT_MESSAGE, message_key(self.client_id, seq), encode_message(None, RELEASING, packet_id))

    def forget(self, seq: int) -> None:
        if seq and self.journal is not None:
            self.journal.add(DEL_MESSAGE, message_key(self.client_id, seq))

    def acknowledged(self, packet_id: int) -> None:
        """The flow of ``packet_id`` ended (PUBACK, PUBCOMP or a refusing PUBREC)."""
        seq = self.inflight_seqs.pop(packet_id, 0)
        if seq and self.journal is not None:
            self.journal.add(DEL_MESSAGE, message_key(self.client_id, seq))


class Session:
    """One client connection. Feed it bytes; send what it returns; close when told.

    ``feed``/``on_timer`` return ``(data, close_reason)``: the bytes to write and, when
    the connection must end, a reason (after writing ``data``). Output caused by other
    connections (a routed publish, a takeover) accumulates; ``notify`` (set by the
    adapter) is called when some appears outside ``feed``, and ``data_to_send()`` /
    ``close_reason`` collect it.
    """

    __slots__ = ("broker", "created", "now", "max_packet_size", "state", "level", "client", "client_id", "will",
                 "keepalive", "last_received", "window", "peer_max_packet", "writable", "close_reason", "notify",
                 "topic_aliases", "username", "pending_auth", "_connect", "_held", "_in", "_out", "_in_call")  # fmt: skip

    def __init__(self, broker: Broker, *, now: float = 0.0, max_packet_size: int | None = None) -> None:
        self.broker = broker
        self.created = self.now = now
        self.max_packet_size = max_packet_size or broker.max_packet_size
        self.state = State.AWAIT_CONNECT
        self.level = 0  # protocol level from CONNECT (0 until then)
        self.client: ClientState | None = None
        self.client_id: str | None = None
        self.will = None
        self.keepalive = 0.0
        self.last_received = 0.0
        self.window = DEFAULT_INFLIGHT
        self.peer_max_packet = None
        self.writable = True
        self.close_reason: str | None = None
        self.notify: Callable[[], None] | None = None
        self.topic_aliases: dict[int, str] = {}  # inbound, this connection only
        self.username: str | None = None
        # (username, password) to check before CONNACK; the adapter calls ``authenticated``.
        self.pending_auth: tuple[str | None, bytes | None] | None = None
        self._connect: Connect | None = None
        self._held: deque[tuple[int, object]] = deque()  # (journal batch, ack) until durable
        self._in = b""
        self._out = bytearray()
        self._in_call = False

    # -- public interface -------------------------------------------------------------

    def feed(self, data: bytes, now: float) -> tuple[bytes, str | None]:
        self._in_call = True
        try:
            if self.state is State.CLOSED:
                return self._take()
            self.last_received = self.now = now
            self.broker.advance(now)
            buf = self._in + data if self._in else bytes(data)
            view = memoryview(buf)
            pos = 0
            try:
                while pos < len(buf) and self.state is not State.CLOSED and self.state is not State.AUTHENTICATING:
                    packet, used = codec.decode(view[pos:], self.level, self.max_packet_size)
                    if packet is None:
                        break
                    pos += used
                    self._handle(packet, now)
            except MQTTDecodeError as exc:
                self._protocol_close(str(exc), exc.reason_code)
            except ProtocolError as exc:
                self._protocol_close(str(exc), exc.reason_code)
            finally:
                view.release()
            self._in = buf[pos:] if self.state is not State.CLOSED else b""
            return self._take()
        finally:
            self._in_call = False

    def authenticated(self, allowed: bool, now: float) -> tuple[bytes, str | None]:
        """The password check for ``pending_auth`` ended; go on with CONNECT and the bytes after it."""
        self.pending_auth = None
        if self.state is not State.AUTHENTICATING:
            return self._take()
        self._in_call = True
        try:
            self.state = State.AWAIT_CONNECT
            if allowed:
                self._accept(self._connect, now)
            else:
                self._refuse(RC_BAD_USER_NAME_OR_PASSWORD, "bad user name or password")
            self._connect = None
        finally:
            self._in_call = False
        if self.state is State.CLOSED or not self._in:
            return self._take()
        pending, self._in = self._in, b""
        return self.feed(pending, now)

    def release_acks(self) -> None:
        """Send the acknowledgements whose journal batch is now on disk."""
        journal = self.broker.journal
        held = self._held
        while held and held[0][0] <= journal.durable:
            self._send(held.popleft()[1])
        if held and self.state is State.CONNECTED:
            journal.waiting.add(self)

    def abort(self, reason: str) -> None:
        """The store failed: close without acknowledging, so the client sends again."""
        self._held.clear()
        self._close(reason, RC_UNSPECIFIED)

    def server_shutdown(self, now: float) -> tuple[bytes, str | None]:
        """The broker stops: 5.0 clients get DISCONNECT 0x8B; no wills, nobody failed."""
        self.now = now
        self._held.clear()
        self._close("server shutting down", RC_SERVER_SHUTTING_DOWN, publish_will=False)
        return self._take()

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_deadline(self) -> float | None:
        """When ``on_timer`` must run next: CONNECT timeout, then 1.5x keep-alive."""
        if self.state is State.AWAIT_CONNECT:
            return self.created + self.broker.connect_timeout
        if self.state is State.CLOSED or not self.keepalive:
            return None
        return self.last_received + self.keepalive * 1.5

    def on_timer(self, now: float) -> tuple[bytes, str | None]:
        self.now = now
        self.broker.advance(now)
        deadline = self.next_deadline()
        if deadline is not None and now >= deadline:
            self._in_call = True
            try:
                if self.state is State.AWAIT_CONNECT:
                    self._close("no CONNECT in time", None)
                else:
                    self._close("keep-alive timeout [MQTT-3.1.2-24]", RC_KEEP_ALIVE_TIMEOUT)
            finally:
                self._in_call = False
        return self._take()

    def connection_lost(self, now: float) -> None:
        """The transport is gone: an abrupt loss publishes the will."""
        self.now = now
        self.broker.advance(now)
        if self.state is not State.CLOSED:
            self._in_call = True
            try:
                self._close("connection lost", None)
            finally:
                self._in_call = False
        self._out.clear()

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        self.pump()

    # -- output ---------------------------------------------------------------------------

    def _take(self) -> tuple[bytes, str | None]:
        return self.data_to_send(), self.close_reason

    def _send(self, packet) -> None:
        self._write(codec.encode(packet, self.level or 4))

    def _write(self, data: bytes) -> None:
        was_empty = not self._out
        self._out += data
        if was_empty and not self._in_call and self.notify is not None:
            self.notify()

    def _protocol_close(self, message: str, reason_code: int) -> None:
        if self.state is State.AWAIT_CONNECT and reason_code == RC_UNSUPPORTED_PROTOCOL_VERSION:
            # The peer's level is unknown; answer in 3.1.1 form (return code 1, §3.1.2.2).
            self._out += codec.encode(Connack(False, CONNACK_BAD_PROTOCOL), 4)
            reason_code = None
        self._close(message, reason_code)

    def _close(self, reason: str, reason_code: int | None, *, publish_will: bool = True) -> None:
        """End the connection: a 5.0 DISCONNECT first when ``reason_code`` is given."""
        if self.state is State.CLOSED:
            return
        self._held.clear()
        if reason_code is not None and self.level == 5 and self.state is State.CONNECTED:
            self._send(Disconnect(reason_code))
        was_connected = self.state is State.CONNECTED
        self.state = State.CLOSED
        self.close_reason = reason
        if was_connected:
            will = self.will if publish_will else None
            self.will = None
            self.broker.detach(self, will, self.now)
        if not self._in_call and self.notify is not None:
            self.notify()

    # -- inbound --------------------------------------------------------------------------

    def _handle(self, packet, now: float) -> None:
        kind = PACKET_TYPES[type(packet)]
        if kind not in ALLOWED[self.state]:
            if kind == PKT_CONNECT:
                raise ProtocolError("second CONNECT [MQTT-3.1.0-2]")
            if self.state is State.AWAIT_CONNECT:
                raise ProtocolError(f"{type(packet).__name__.upper()} before CONNECT [MQTT-3.1.0-1]")
            if kind == PKT_AUTH:
                raise ProtocolError("AUTH without an authentication method in CONNECT (§4.12)")
            raise ProtocolError(f"{type(packet).__name__.upper()} may not be sent by a client")
        if kind == PKT_PUBLISH:
            self._on_publish(packet)
        elif kind == PKT_PUBACK:
            self._on_puback(packet)
        elif kind == PKT_PUBREC:
            self._on_pubrec(packet)
        elif kind == PKT_PUBREL:
            self._on_pubrel(packet)
        elif kind == PKT_PUBCOMP:
            self._on_pubcomp(packet)
        elif kind == PKT_SUBSCRIBE:
            self._on_subscribe(packet)
        elif kind == PKT_UNSUBSCRIBE:
            self._on_unsubscribe(packet)
        elif kind == PKT_PINGREQ:
            self._send(Pingresp())
        elif kind == PKT_DISCONNECT:
            self._on_disconnect(packet)
        elif kind == PKT_CONNECT:
            self._on_connect(packet, now)

    def _on_connect(self, packet: Connect, now: float) -> None:
        self.level = packet.protocol_level
        v5 = self.level == 5
        if v5 and "authentication_method" in packet.properties:
            # §4.12: no method is supported; refuse before touching any client state.
            self._send(Connack(False, RC_BAD_AUTHENTICATION_METHOD))
            self._close("unsupported authentication method", None)
            return
        if not packet.client_id and not v5 and not packet.clean_start:
            # [MQTT-3.1.3-8]: an empty id needs clean session 1 in 3.1.1.
            self._send(Connack(False, CONNACK_IDENTIFIER_REJECTED))
            self._close("empty client id with clean session 0", None)
            return
        self.username = packet.username
        if packet.username is None:
            if not self.broker.anonymous:
                self._refuse(RC_NOT_AUTHORIZED, "anonymous clients are not allowed")
                return
        elif self.broker.passwords is not None:
            self.state = State.AUTHENTICATING
            self._connect = packet
            self.pending_auth = (packet.username, packet.password)
            return
        self._accept(packet, now)

    def _refuse(self, reason_code: int, reason: str) -> None:
        """CONNACK with a refusal (3.1.1: return code 5, not authorized), then close."""
        self._send(Connack(False, reason_code if self.level == 5 else CONNACK_NOT_AUTHORIZED))
        self._close(reason, None)

    def _accept(self, packet: Connect, now: float) -> None:
        v5 = self.level == 5
        client_id = packet.client_id
        assigned = None
        if not client_id:
            client_id = assigned = self.broker.assign_client_id()
        props = packet.properties
        if v5:
            expiry = _expiry(props.get("session_expiry_interval", 0))
            self.window = props.get("receive_maximum", 65535)
            self.peer_max_packet = props.get("maximum_packet_size")
        else:
            expiry = 0.0 if packet.clean_start else None
        self.client_id = client_id
        self.will = packet.will
        self.keepalive = float(packet.keepalive)
        self.last_received = now
        self.state = State.CONNECTED
        self.client, session_present = self.broker.attach(self, client_id, packet.clean_start, expiry, now)
        ack_props = {}
        if v5:
            ack_props = {"receive_maximum": self.broker.receive_maximum,
                         "maximum_packet_size": self.max_packet_size,
                         "subscription_identifier_available": 1}  # fmt: skip
            if self.broker.topic_alias_maximum:
                ack_props["topic_alias_maximum"] = self.broker.topic_alias_maximum
            if assigned is not None:
                ack_props["assigned_client_identifier"] = assigned
        self._send(Connack(session_present, 0, ack_props))
        self.resend()

    def _on_publish(self, packet: Publish) -> None:
        properties = packet.properties
        if properties:
            if "subscription_identifier" in properties:
                raise ProtocolError("subscription identifier in a PUBLISH from a client [MQTT-3.3.4-6]")
            alias = properties.pop("topic_alias", None)
            if alias is not None:
                self._resolve_alias(packet, alias)
        journal = self.broker.journal
        changes = len(journal.ops) if journal is not None else 0
        allowed = self._may_publish(packet.topic)
        refused = 0
        if packet.qos == 2:
            client = self.client
            inbound = client.inbound_qos2
            if packet.packet_id not in inbound:
                if len(inbound) >= self.broker.receive_maximum:
                    raise ProtocolError("more unreleased QoS 2 messages than receive maximum",
                                        RC_RECEIVE_MAXIMUM_EXCEEDED)
                if allowed:
                    inbound.add(packet.packet_id)
                    if client.journal is not None:
                        client.save()
                    refused = self.broker.route(packet, self.client_id)
            # else: a resend of a message already routed; exactly once means not again.
            self._acknowledge(Pubrec(packet.packet_id, self._reason(allowed, refused)), changes)
            return
        if allowed:
            refused = self.broker.route(packet, self.client_id)
        if packet.qos == 1:
            self._acknowledge(Puback(packet.packet_id, self._reason(allowed, refused)), changes)

    def _reason(self, allowed: bool, refused: int) -> int:
        """A 5.0 PUBACK/PUBREC reason: not authorized, or some subscriber's queue was full.

        A 3.1.1 acknowledgement cannot say either.
        """
        if self.level != 5:
            return 0
        if not allowed:
            return RC_NOT_AUTHORIZED
        return RC_QUOTA_EXCEEDED if refused else 0

    def _may_publish(self, topic: str) -> bool:
        """Clients may not write ``$SYS`` topics, nor what the ACL file denies them.

        A refused message is acknowledged (5.0: reason 0x87) and dropped, as in Mosquitto.
        """
        if topic.startswith("$SYS/"):
            return False
        acl = self.broker.acl
        return acl is None or acl.can_publish(self.client_id, self.username, topic)

    def _acknowledge(self, ack, changes: int) -> None:
        """Send ``ack`` now, or once the journal batch holding this packet's changes is durable."""
        journal = self.broker.journal
        if journal is not None and len(journal.ops) > changes:
            self._held.append((journal.batch, ack))
            journal.waiting.add(self)
        elif self._held:
            # Nothing of its own on disk: it waits only for the ack before it (same batch).
            self._held.append((self._held[-1][0], ack))
            journal.waiting.add(self)
        else:
            self._send(ack)

    def _resolve_alias(self, packet: Publish, alias: int) -> None:
        """A topic and an alias set the mapping; an alias with an empty topic uses it (§3.3.2.3.4)."""
        # Alias 0 never gets here: the codec refuses it as a protocol error.
        if alias > self.broker.topic_alias_maximum:
            raise ProtocolError(f"topic alias {alias} above the maximum of {self.broker.topic_alias_maximum} "
                                "[MQTT-3.3.2-9]", RC_TOPIC_ALIAS_INVALID)  # fmt: skip
        if packet.topic:
            self.topic_aliases[alias] = packet.topic
            return
        topic = self.topic_aliases.get(alias)
        if topic is None:
            raise ProtocolError(f"topic alias {alias} used before it was set")
        packet.topic = topic

    def _on_pubrel(self, packet: Pubrel) -> None:
        client = self.client
        inbound = client.inbound_qos2
        if packet.packet_id in inbound:
            inbound.discard(packet.packet_id)
            journal = self.broker.journal
            changes = len(journal.ops) if journal is not None else 0
            if client.journal is not None:
                # The id may be reused only once its release is on disk, or a restart would
                # take the next message with this id for a resend and drop it.
                client.save()
            self._acknowledge(Pubcomp(packet.packet_id), changes)
        else:
            self._send(Pubcomp(packet.packet_id, RC_PACKET_ID_NOT_FOUND if self.level == 5 else 0))

    def _on_puback(self, packet: Puback) -> None:
        held = self.client.inflight.get(packet.packet_id)
        if isinstance(held, Publish) and held.qos == 1:
            del self.client.inflight[packet.packet_id]
            self.client.acknowledged(packet.packet_id)
            self.pump()

    def _on_pubrec(self, packet: Pubrec) -> None:
        inflight = self.client.inflight
        held = inflight.get(packet.packet_id)
        if isinstance(held, Publish) and held.qos == 2:
            if packet.reason_code >= 0x80:  # 5.0: the receiver refused it; the flow ends here
                del inflight[packet.packet_id]
                self.client.acknowledged(packet.packet_id)
                self.pump()
                return
            inflight[packet.packet_id] = Pubrel(packet.packet_id)
            if self.client.journal is not None:
                self.client.released(packet.packet_id)
            self._send(Pubrel(packet.packet_id))
        elif isinstance(held, Pubrel):
            self._send(held)
        elif self.level == 5:
            self._send(Pubrel(packet.packet_id, RC_PACKET_ID_NOT_FOUND))

    def _on_pubcomp(self, packet: Pubcomp) -> None:
        if isinstance(self.client.inflight.get(packet.packet_id), Pubrel):
            del self.client.inflight[packet.packet_id]
            self.client.acknowledged(packet.packet_id)
            self.pump()

    def _on_subscribe(self, packet) -> None:
        v5 = self.level == 5
        codes = []
        granted_filters = []
        # §3.8.2.1.2: one identifier for every subscription this SUBSCRIBE makes.
        identifiers = packet.properties.get("subscription_identifier")
        identifier = identifiers[0] if identifiers else None
        acl = self.broker.acl
        for topic_filter, options in packet.topics:
            if acl is not None and not acl.can_subscribe(self.client_id, self.username, topic_filter):
                codes.append(RC_NOT_AUTHORIZED if v5 else SUBACK_FAILURE_311)
                continue
            try:
                subscription, new = self.broker.subscribe(self.client, topic_filter, options, identifier)
            except ValueError:
                codes.append(RC_TOPIC_FILTER_INVALID if v5 else SUBACK_FAILURE_311)
                continue
            codes.append(min(options.qos, 2))
            granted_filters.append((topic_filter, subscription, new))
        self._send(Suback(packet.packet_id, codes))
        for topic_filter, subscription, new in granted_filters:
            self.broker.send_retained(self.client, topic_filter, subscription, new)
        self.pump()

    def _on_unsubscribe(self, packet) -> None:
        codes = []
        for topic_filter in packet.topics:
            existed = self.broker.unsubscribe(self.client, topic_filter)
            codes.append(RC_SUCCESS if existed else RC_NO_SUBSCRIPTION_EXISTED)
        self._send(Unsuback(packet.packet_id, codes if self.level == 5 else []))

    def _on_disconnect(self, packet: Disconnect) -> None:
        if self.level == 5:
            expiry = packet.properties.get("session_expiry_interval")
            if expiry is not None:
                if not self.client.persistent and expiry > 0:
                    raise ProtocolError("session expiry set in DISCONNECT after 0 in CONNECT [MQTT-3.14.2-2]")
                self.client.expiry = _expiry(expiry)
        keep_will = self.level == 5 and packet.reason_code == RC_DISCONNECT_WITH_WILL
        self._close("client disconnected", None, publish_will=keep_will)

    # -- outbound -------------------------------------------------------------------------

    def deliver(self, message: Publish) -> bool:
        """Queue a routed message (``qos`` already the granted one) and send what fits.

        False when the queue refused it (see the module docstring).
        """
        if not self.client.enqueue(message, self.broker.max_queued):
            return False
        self.pump()
        return True

    def pump(self) -> None:
        """Move queued messages to the wire while the window and the transport allow."""
        client = self.client
        if self.state is not State.CONNECTED or client is None:
            return
        queue = client.queue
        stored = client.journal is not None
        level = self.level
        peer_max_packet = self.peer_max_packet
        while queue and self.writable:
            message = queue[0]
            if message.qos and len(client.inflight) >= self.window:
                return
            queue.popleft()
            seq = client.seqs.popleft() if stored else 0
            if type(message) is ExpiringPublish:
                message = self._unexpired(message)
                if message is None:
                    client.forget(seq)
                    continue
            if message.qos:
                message.packet_id = client.next_packet_id()
            data = codec.encode(message, level)
            if peer_max_packet is not None and len(data) > peer_max_packet:
                # 5.0 §3.1.2.11.4: discard it, as if sent; its packet id stays free.
                message.packet_id = None
                client.dropped += 1
                client.forget(seq)
                continue
            if message.qos:
                client.inflight[message.packet_id] = message
                if seq:
                    client.sent(seq, message)
            self._write(data)

    def _unexpired(self, message: ExpiringPublish) -> Publish | None:
        """The copy to send, with the interval cut by the time it waited; None once expired."""
        now = self.broker.now
        if now > message.expires_at:
            self.client.expired += 1
            return None
        properties = message.properties  # this receiver's own copy
        received = properties["message_expiry_interval"]
        properties["message_expiry_interval"] = min(received, math.ceil(message.expires_at - now))
        return Publish(message.topic, message.payload, message.qos, message.retain, message.dup, None, properties)

    def resend(self) -> None:
        """After CONNECT: unacknowledged messages again (PUBLISH with DUP, or PUBREL)."""
        for packet_id, held in self.client.inflight.items():
            if isinstance(held, Publish):
                held.dup = True
            self._send(held)
        self.pump()

    def takeover(self) -> None:
        """Another connection CONNECTed with this client id [MQTT-3.1.4-3]."""
        self._close("session taken over", RC_SESSION_TAKEN_OVER)
