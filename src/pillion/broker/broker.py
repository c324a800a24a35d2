"""The broker core: client states by client id, subscriptions, retained messages, routing.

Owns session takeover, clean/persistent session lifetimes, the topic trie, shared
subscription balancing, retained messages and will delivery, and with a journal
(``store.py``) what goes to disk: retained messages here, client states through
``ClientState`` (see ``session.py``); ``restore`` rebuilds both after a restart. Sessions (``session.py``) call into it; it calls back into the sessions of
the receivers. No sockets, no asyncio, no clock: everything here runs inside a
``Session.feed``/``on_timer``/``connection_lost`` call.

Routing rules: a client whose filters overlap for a topic gets the message once, at
the highest granted QoS among them (§3.3.4); the delivered QoS is the lower of the
published and the granted one. A shared subscription ``$share/{group}/{filter}``
gives each message to one member of the group, round robin, preferring connected
members. Retained messages go to new subscriptions (not to shared ones) with the
retain flag set; a routed message keeps its retain flag only for a 5.0
retain-as-published subscription.

5.0 properties of a message (response topic, correlation data, user properties,
content type...) reach subscribers unchanged, except the per-hop ones. A delivered
message carries the subscription identifiers of all the receiver's matching
subscriptions (§3.3.4). A message with a message expiry interval gets an absolute
deadline from ``now`` when it is routed; a retained message past it is removed
instead of delivered, a queued one is dropped by the session (§3.3.2.3.3).
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections import deque
from dataclasses import dataclass

from .packets import MAX_PACKET_SIZE, Publish, Pubrel, SubscriptionOptions
from .session import (
    DEFAULT_MAX_QUEUED,
    DEFAULT_RECEIVE_MAXIMUM,
    DEFAULT_TOPIC_ALIAS_MAXIMUM,
    ClientState,
    ExpiringPublish,
    Session,
)
from .store import DEL_RETAINED, INFLIGHT, PUT_RETAINED, QUEUED, RELEASING, Journal, Restored, encode_message
from .topics import TopicTrie, filter_matches, parse_filter

log = logging.getLogger("pillion.broker")

DEFAULT_MAX_PACKET_SIZE = 1024 * 1024

# Properties that belong to one hop and are not forwarded to subscribers.
_HOP_PROPERTIES = ("topic_alias", "subscription_identifier", "will_delay_interval")


@dataclass(slots=True)
class Subscription(SubscriptionOptions):
    """A subscription's options plus the 5.0 subscription identifier it was made with."""

    identifier: int | None = None


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
        topic_alias_maximum: inbound topic aliases a 5.0 client may use per
            connection; sent in CONNACK (0: none). Default 10.

    ``now`` is the latest time any session or ``tick`` handed to the core (it has no
    clock of its own); message expiry is measured against it.
    """

    def __init__(self, *, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE, max_queued: int = DEFAULT_MAX_QUEUED,
                 receive_maximum: int = DEFAULT_RECEIVE_MAXIMUM, connect_timeout: float = 10.0,
                 topic_alias_maximum: int = DEFAULT_TOPIC_ALIAS_MAXIMUM) -> None:
        if not 0 < max_packet_size <= MAX_PACKET_SIZE:
            raise ValueError(f"max_packet_size must be in 1..{MAX_PACKET_SIZE}")
        if max_queued < 1 or not 0 < receive_maximum < 65536:
            raise ValueError("max_queued must be >= 1 and receive_maximum in 1..65535")
        if not 0 <= topic_alias_maximum < 65536:
            raise ValueError("topic_alias_maximum must be in 0..65535")
        self.max_packet_size = max_packet_size
        self.max_queued = max_queued
        self.receive_maximum = receive_maximum
        self.connect_timeout = connect_timeout
        self.topic_alias_maximum = topic_alias_maximum
        self.now = 0.0
        self.clients: dict[str, ClientState] = {}
        self.retained: dict[str, Publish] = {}
        self.trie = TopicTrie()
        self.messages_received = 0
        self.messages_sent = 0
        self.journal: Journal | None = None  # set by ``restore``: persistence on
        self.passwords = None  # auth.PasswordFile: CONNECTs with a username are checked
        self.anonymous = True  # CONNECT without a username allowed
        self.acl = None  # auth.Acl: per-topic publish/receive/subscribe checks
        self._round_robin: dict[tuple[str, str], int] = {}
        self._pending_wills: dict[str, tuple[float, object]] = {}  # client id -> (due, will)
        self._expiring: dict[str, float] = {}  # offline persistent client id -> expiry time
        self._ids = itertools.count(1)

    def session(self, now: float = 0.0) -> Session:
        """A new connection's session."""
        return Session(self, now=now)

    def advance(self, now: float) -> None:
        """Record the time of the call in progress (never backwards)."""
        if now > self.now:
            self.now = now

    @property
    def connected(self) -> int:
        return sum(1 for client in self.clients.values() if client.session is not None)

    @property
    def messages_dropped(self) -> int:
        """Refused by a full queue, too big for the client, or expired (current client states)."""
        return sum(client.dropped + client.expired for client in self.clients.values())

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
        client.username = session.username
        if self.journal is not None:
            if not client.persistent:
                client.forget_all()  # resumed with session expiry 0: it ends with this connection
            elif client.journal is None:
                client.persist(self.journal)
            else:
                client.save()
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
                if client.journal is not None:
                    kept = [(m, seq) for m, seq in zip(client.queue, client.seqs) if m.qos]
                    client.queue = deque(m for m, _ in kept)
                    client.seqs = deque(seq for _, seq in kept)
                    client.save()  # DISCONNECT may have changed the expiry
                else:
                    client.queue = deque(m for m in client.queue if m.qos)
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
        self.advance(now)
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

    def restore(self, restored: Restored, now: float, wall: float) -> None:
        """Rebuild retained messages and offline client states from disk, and turn persistence on.

        ``wall`` is ``time.time()`` at ``now``. Damaged session records are logged and
        removed; an offline session's expiry starts again from the restart.
        """
        self.advance(now)
        journal = self.journal = Journal(wall - now)
        for op in restored.garbage:
            journal.add(*op)
        for topic, (expires, message) in restored.retained.items():
            if expires:
                if expires <= wall:
                    journal.add(DEL_RETAINED, topic)
                    continue
                message = _expiring(message, expires - journal.wall_offset)
            self.retained[topic] = message
        for client_id, stored in restored.sessions.items():
            client = self.clients[client_id] = ClientState(client_id)
            client.journal = journal
            try:
                self._restore_client(client, stored.record, stored.messages, wall)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                log.error("dropping damaged broker session %r: %s", client_id, exc)
                self._discard(client)
                continue
            if not client.persistent:
                self._discard(client)
            elif client.expiry is not None:
                self._expiring[client_id] = now + client.expiry

    def _restore_client(self, client: ClientState, record: dict, messages: list, wall: float) -> None:
        expiry = record["expiry"]
        client.expiry = None if expiry is None else float(expiry)
        client.username = record.get("user")
        client.inbound_qos2 = {int(packet_id) for packet_id in record["q2"]}
        journal, client.journal = client.journal, None  # re-subscribing must not write the record again
        try:
            for name, qos, no_local, retain_as_published, retain_handling, identifier in record["subs"]:
                self.subscribe(client, name, SubscriptionOptions(qos, no_local, retain_as_published, retain_handling),
                               identifier)  # fmt: skip
        finally:
            client.journal = journal  # also on error: ``_discard`` must delete the record
        for seq, state, packet_id, expires, message in sorted(messages, key=lambda m: m[0]):
            client.next_seq = seq + 1
            if state == RELEASING:
                client.inflight[packet_id] = Pubrel(packet_id)
                client.inflight_seqs[packet_id] = seq
            elif state == INFLIGHT:
                message.dup = True
                client.inflight[packet_id] = message
                client.inflight_seqs[packet_id] = seq
            elif expires and expires <= wall:
                client.forget(seq)
            else:
                message.packet_id = None
                client.queue.append(_expiring(message, expires - journal.wall_offset) if expires else message)
                client.seqs.append(seq)

    def _discard(self, client: ClientState) -> None:
        client.forget_all()
        for full_filter in list(client.subscriptions):
            self.unsubscribe(client, full_filter)
        if self.clients.get(client.client_id) is client:
            del self.clients[client.client_id]

    # -- subscriptions ----------------------------------------------------------------------

    def subscribe(self, client: ClientState, full_filter: str, options: SubscriptionOptions,
                  identifier: int | None = None) -> tuple[Subscription, bool]:
        """Add or replace a subscription (identifier included); returns it and True when new.

        Raises:
            ValueError: a bad filter.
        """
        group, topic_filter = parse_filter(full_filter)
        key = client.client_id if group is None else ("$share", group, client.client_id)
        subscription = Subscription(options.qos, options.no_local, options.retain_as_published,
                                    options.retain_handling, identifier)  # fmt: skip
        self.trie.subscribe(topic_filter, key, subscription)
        new = full_filter not in client.subscriptions
        client.subscriptions[full_filter] = subscription
        if client.journal is not None:
            client.save()
        return subscription, new

    def unsubscribe(self, client: ClientState, full_filter: str) -> bool:
        if client.subscriptions.pop(full_filter, None) is None:
            return False
        group, topic_filter = parse_filter(full_filter)
        key = client.client_id if group is None else ("$share", group, client.client_id)
        self.trie.unsubscribe(topic_filter, key)
        if group is not None:
            # A member left: restart the group's turn, so counters exist only for live groups.
            self._round_robin.pop((group, topic_filter), None)
        if client.journal is not None:
            client.save()
        return True

    def send_retained(self, client: ClientState, full_filter: str, subscription: Subscription, new: bool) -> None:
        """Retained messages for a just-made subscription (retain handling 0/1/2, §3.3.1.3).

        One past its message expiry interval is removed instead [MQTT-3.3.2-5].
        """
        group, topic_filter = parse_filter(full_filter)
        if group is not None or subscription.retain_handling == 2 or (subscription.retain_handling == 1 and not new):
            return
        identifiers = None if subscription.identifier is None else [subscription.identifier]
        for topic in filter_matches(topic_filter, self.retained):
            message = self.retained[topic]
            if type(message) is ExpiringPublish and self.now > message.expires_at:
                del self.retained[topic]
                if self.journal is not None:
                    self.journal.add(DEL_RETAINED, topic)
                continue
            self._deliver(client, message, subscription.qos, True, identifiers)

    # -- routing ----------------------------------------------------------------------------

    def route(self, message: Publish, sender: str | None) -> int:
        """Store/clear the retained copy and deliver ``message`` to every subscriber.

        Returns how many subscribers refused a QoS 1/2 copy because their queue was full:
        the publisher is told (5.0 PUBACK 0x97, an error to an in-process publisher).
        """
        self.messages_received += 1
        return self._route(message, sender, self.journal)

    def publish_internal(self, message: Publish) -> None:
        """A message from the broker itself (``$SYS``): not counted, never written to disk."""
        self._route(message, None, None)

    def _route(self, message: Publish, sender: str | None, journal: Journal | None) -> int:
        topic = message.topic
        properties = message.properties
        if properties:
            for name in _HOP_PROPERTIES:
                properties.pop(name, None)
            interval = properties.get("message_expiry_interval")
            if interval is not None:
                message = ExpiringPublish(topic, message.payload, message.qos, message.retain,
                                          properties=properties, expires_at=self.now + interval)  # fmt: skip
        if message.retain:
            if message.payload:
                retained = self.retained[topic] = _copy(message, message.qos, True, properties)
                if journal is not None:
                    expires = retained.expires_at + journal.wall_offset if type(retained) is ExpiringPublish else 0.0
                    journal.add(PUT_RETAINED, topic, encode_message(retained, QUEUED, 0, expires))
            elif self.retained.pop(topic, None) is not None and journal is not None:
                journal.add(DEL_RETAINED, topic)
        best: dict[str, tuple[int, bool]] = {}
        identifiers: dict[str, list[int]] | None = None  # only once a match has an identifier
        shared: dict[tuple[str, str], list[tuple[str, Subscription]]] = {}
        for key, subscription, topic_filter in self.trie.match(topic):
            if type(key) is tuple:
                shared.setdefault((key[1], topic_filter), []).append((key[2], subscription))
                continue
            if subscription.no_local and key == sender:
                continue
            qos, retain = best.get(key, (-1, False))
            best[key] = (max(qos, subscription.qos), retain or subscription.retain_as_published)
            if subscription.identifier is not None:
                if identifiers is None:
                    identifiers = {}
                identifiers.setdefault(key, []).append(subscription.identifier)
        for group_key, members in shared.items():
            online = [m for m in members if self.clients[m[0]].session is not None] or members
            turn = self._round_robin.get(group_key, 0)
            self._round_robin[group_key] = turn + 1
            client_id, subscription = online[turn % len(online)]
            qos, retain = best.get(client_id, (-1, False))
            best[client_id] = (max(qos, subscription.qos), retain)
            if subscription.identifier is not None:
                if identifiers is None:
                    identifiers = {}
                identifiers.setdefault(client_id, []).append(subscription.identifier)
        refused = 0
        for client_id, (qos, retain_as_published) in best.items():
            refused += self._deliver(self.clients[client_id], message, qos, message.retain and retain_as_published,
                                     None if identifiers is None else identifiers.get(client_id))  # fmt: skip
        return refused

    def _deliver(self, client: ClientState, message: Publish, granted: int, retain: bool,
                 identifiers: list[int] | None = None) -> bool:
        """Queue this receiver's own copy; True when a QoS 1/2 copy was refused (queue full).

        ``identifiers``: the receiver's matching subscription identifiers.
        """
        if self.acl is not None and not self.acl.can_receive(client.client_id, client.username, message.topic):
            return False
        properties = dict(message.properties)
        if identifiers:
            properties["subscription_identifier"] = identifiers
        if type(message) is Publish:
            copy = Publish(message.topic, message.payload, min(message.qos, granted), retain, properties=properties)
        else:
            copy = _copy(message, min(message.qos, granted), retain, properties)
        self.messages_sent += 1
        if client.session is not None:
            return not client.session.deliver(copy) and copy.qos > 0
        return copy.qos > 0 and not client.enqueue(copy, self.max_queued)


def _expiring(message: Publish, expires_at: float) -> ExpiringPublish:
    return ExpiringPublish(message.topic, message.payload, message.qos, message.retain, properties=message.properties,
                           expires_at=expires_at)  # fmt: skip


def _copy(message: Publish, qos: int, retain: bool, properties: dict) -> Publish:
    """A new message for one holder (a receiver, the retained store); keeps an expiry deadline."""
    if type(message) is ExpiringPublish:
        return ExpiringPublish(message.topic, message.payload, qos, retain, properties=properties,
                               expires_at=message.expires_at)  # fmt: skip
    return Publish(message.topic, message.payload, qos, retain, properties=properties)
