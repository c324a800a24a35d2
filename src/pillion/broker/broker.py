"""The broker core: client states by client id, subscriptions, retained messages, routing.

Owns session takeover, clean/persistent session lifetimes, the topic trie, shared
subscription balancing, retained messages (a dict in memory for now) and will
delivery. Sessions (``session.py``) call into it; it calls back into the sessions of
the receivers. No sockets, no asyncio, no clock: everything here runs inside a
``Session.feed``/``on_timer``/``connection_lost`` call.

Routing rules: a client whose filters overlap for a topic gets the message once, at
the highest granted QoS among them (§3.3.4); the delivered QoS is the lower of the
published and the granted one. A shared subscription ``$share/{group}/{filter}``
gives each message to one member of the group, round robin, preferring connected
members. Retained messages go to new subscriptions (not to shared ones) with the
retain flag set; a routed message keeps its retain flag only for a 5.0
retain-as-published subscription.
"""

from __future__ import annotations

import itertools
import secrets

from .packets import MAX_PACKET_SIZE, Publish, SubscriptionOptions
from .session import DEFAULT_MAX_QUEUED, DEFAULT_RECEIVE_MAXIMUM, ClientState, Session
from .topics import TopicTrie, filter_matches, parse_filter

DEFAULT_MAX_PACKET_SIZE = 1024 * 1024

# Properties that belong to one hop and are not forwarded to subscribers.
_HOP_PROPERTIES = ("topic_alias", "subscription_identifier", "will_delay_interval")


class Broker:
    """Sans-IO broker state shared by every connection.

    Args:
        max_packet_size: largest packet accepted from a client, fixed header included
            (larger ones close the connection, 5.0: reason 0x95). Default 1 MiB.
        max_queued: outbound messages queued per client (see ``session.py`` for the
            drop policy). Default 1000.
        receive_maximum: inbound QoS 2 messages a client may leave unreleased; sent to
            5.0 clients in CONNACK. Default 100.
        connect_timeout: seconds a new connection has to send CONNECT.
    """

    def __init__(self, *, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE, max_queued: int = DEFAULT_MAX_QUEUED,
                 receive_maximum: int = DEFAULT_RECEIVE_MAXIMUM, connect_timeout: float = 10.0) -> None:
        if not 0 < max_packet_size <= MAX_PACKET_SIZE:
            raise ValueError(f"max_packet_size must be in 1..{MAX_PACKET_SIZE}")
        if max_queued < 1 or not 0 < receive_maximum < 65536:
            raise ValueError("max_queued must be >= 1 and receive_maximum in 1..65535")
        self.max_packet_size = max_packet_size
        self.max_queued = max_queued
        self.receive_maximum = receive_maximum
        self.connect_timeout = connect_timeout
        self.clients: dict[str, ClientState] = {}
        self.retained: dict[str, Publish] = {}
        self.trie = TopicTrie()
        self.messages_received = 0
        self.messages_sent = 0
        self._round_robin: dict[tuple[str, str], int] = {}
        self._pending_wills: dict[str, tuple[float, object]] = {}  # client id -> (due, will)
        self._expiring: dict[str, float] = {}  # offline persistent client id -> expiry time
        self._ids = itertools.count(1)

    def session(self, now: float = 0.0) -> Session:
        """A new connection's session."""
        return Session(self, now=now)

    @property
    def connected(self) -> int:
        return sum(1 for client in self.clients.values() if client.session is not None)

    # -- connections ------------------------------------------------------------------------

    def assign_client_id(self) -> str:
        while True:
            client_id = f"pillion-{next(self._ids)}-{secrets.token_hex(4)}"
            if client_id not in self.clients:
                return client_id

    def attach(self, session: Session, client_id: str, clean_start: bool, expiry: float | None, now: float):
        """Bind ``session`` to ``client_id``; returns ``(ClientState, session_present)``.

        ``expiry``: seconds the client state outlives the connection (0: clean, None: never).
        """
        client = self.clients.get(client_id)
        if client is not None and client.session is not None:
            client.session.takeover()  # detaches it; a clean client state is gone after this
            client = self.clients.get(client_id)
        if client is not None and clean_start:
            self._discard(client)
            client = None
        # Reconnecting before the will delay ran out cancels the will [MQTT-3.1.3-9].
        self._pending_wills.pop(client_id, None)
        self._expiring.pop(client_id, None)
        present = client is not None
        if client is None:
            client = self.clients[client_id] = ClientState(client_id)
        client.expiry = expiry
        client.session = session
        return client, present

    def detach(self, session: Session, will, now: float) -> None:
        """``session`` ended; publish ``will`` if given and drop a non-persistent state.

        A 5.0 will delay postpones the will until the delay or the session expiry,
        whichever ends first; reconnecting in between cancels it.
        """
        client = session.client
        expiry = 0.0
        if client is not None and client.session is session:
            client.session = None
            expiry = client.expiry
            if client.persistent:
                # QoS 0 messages are not kept for an offline client.
                client.queue = type(client.queue)(m for m in client.queue if m.qos)
                if expiry is not None:
                    self._expiring[client.client_id] = now + expiry
            else:
                self._discard(client)
        if will is None:
            return
        delay = will.properties.get("will_delay_interval", 0)
        if expiry is not None:
            delay = min(delay, expiry)
        if delay > 0 and client is not None and client.session is None:
            self._pending_wills[client.client_id] = (now + delay, will)
        else:
            self._publish_will(will, session.client_id)

    def _publish_will(self, will, client_id: str | None) -> None:
        self.route(Publish(will.topic, will.payload, will.qos, will.retain, properties=dict(will.properties)),
                   client_id)

    def tick(self, now: float) -> None:
        """Publish delayed wills that are due and drop expired offline sessions."""
        for client_id, (due, will) in list(self._pending_wills.items()):
            if due <= now:
                del self._pending_wills[client_id]
                self._publish_will(will, client_id)
        for client_id, due in list(self._expiring.items()):
            if due <= now:
                del self._expiring[client_id]
                client = self.clients.get(client_id)
                if client is not None and client.session is None:
                    self._discard(client)

    def next_deadline(self) -> float | None:
        """When ``tick`` has work next, or None."""
        dues = [due for due, _ in self._pending_wills.values()]
        dues.extend(self._expiring.values())
        return min(dues, default=None)

    def _discard(self, client: ClientState) -> None:
        for full_filter in list(client.subscriptions):
            self.unsubscribe(client, full_filter)
        if self.clients.get(client.client_id) is client:
            del self.clients[client.client_id]

    # -- subscriptions ----------------------------------------------------------------------

    def subscribe(self, client: ClientState, full_filter: str, options: SubscriptionOptions) -> bool:
        """Add or replace a subscription; True when new. Raises ValueError for a bad filter."""
        group, topic_filter = parse_filter(full_filter)
        key = client.client_id if group is None else ("$share", group, client.client_id)
        self.trie.subscribe(topic_filter, key, options)
        new = full_filter not in client.subscriptions
        client.subscriptions[full_filter] = options
        return new

    def unsubscribe(self, client: ClientState, full_filter: str) -> bool:
        if client.subscriptions.pop(full_filter, None) is None:
            return False
        group, topic_filter = parse_filter(full_filter)
        key = client.client_id if group is None else ("$share", group, client.client_id)
        self.trie.unsubscribe(topic_filter, key)
        if group is not None:
            # A member left: restart the group's turn, so counters exist only for live groups.
            self._round_robin.pop((group, topic_filter), None)
        return True

    def send_retained(self, client: ClientState, full_filter: str, options: SubscriptionOptions, new: bool) -> None:
        """Retained messages for a just-made subscription (retain handling 0/1/2, §3.3.1.3)."""
        group, topic_filter = parse_filter(full_filter)
        if group is not None or options.retain_handling == 2 or (options.retain_handling == 1 and not new):
            return
        for topic in filter_matches(topic_filter, self.retained):
            self._deliver(client, self.retained[topic], options.qos, True)

    # -- routing ----------------------------------------------------------------------------

    def route(self, message: Publish, sender: str | None) -> None:
        """Store/clear the retained copy and deliver ``message`` to every subscriber."""
        self.messages_received += 1
        topic = message.topic
        properties = message.properties
        for name in _HOP_PROPERTIES:
            properties.pop(name, None)
        if message.retain:
            if message.payload:
                self.retained[topic] = Publish(topic, message.payload, message.qos, True, properties=properties)
            else:
                self.retained.pop(topic, None)
        best: dict[str, tuple[int, bool]] = {}
        shared: dict[tuple[str, str], list[tuple[str, SubscriptionOptions]]] = {}
        for key, options, topic_filter in self.trie.match(topic):
            if type(key) is tuple:
                shared.setdefault((key[1], topic_filter), []).append((key[2], options))
                continue
            if options.no_local and key == sender:
                continue
            qos, retain = best.get(key, (-1, False))
            best[key] = (max(qos, options.qos), retain or options.retain_as_published)
        for group_key, members in shared.items():
            online = [m for m in members if self.clients[m[0]].session is not None] or members
            turn = self._round_robin.get(group_key, 0)
            self._round_robin[group_key] = turn + 1
            client_id, options = online[turn % len(online)]
            qos, retain = best.get(client_id, (-1, False))
            best[client_id] = (max(qos, options.qos), retain)
        for client_id, (qos, retain_as_published) in best.items():
            self._deliver(self.clients[client_id], message, qos, message.retain and retain_as_published)

    def _deliver(self, client: ClientState, message: Publish, granted: int, retain: bool) -> None:
        copy = Publish(message.topic, message.payload, min(message.qos, granted), retain,
                       properties=dict(message.properties))  # fmt: skip
        self.messages_sent += 1
        if client.session is not None:
            client.session.deliver(copy)
        elif copy.qos:
            client.enqueue(copy, self.max_queued)
