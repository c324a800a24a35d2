"""An in-process client of the embedded broker: the sidecar's own pub/sub connection.

It takes a client id's place in the broker like a network client (same sessions,
same persistence, same shared subscriptions), but messages reach it as ``Publish``
objects, with no socket and no encoding. ``Broker`` sees it through the few methods
it calls on a ``Session``: ``deliver``, ``takeover`` and ``username``.

Flow control: at most ``window`` messages are out at once (handed to ``on_message``
and not yet ``ack``ed); the rest wait in the client state's bounded queue, on disk
for a persistent session, exactly as for a slow network client.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .packets import Publish, SubscriptionOptions
from .session import ClientState, ExpiringPublish


class LocalClient:
    __slots__ = ("broker", "clock", "client_id", "expiry", "window", "max_queued", "on_message", "client", "username",
                 "closed")  # fmt: skip

    def __init__(self, broker, client_id: str, clock: Callable[[], float], *, expiry: float | None = None,
                 window: int = 100, max_queued: int | None = None) -> None:
        """``expiry``: seconds the session outlives this client (None: forever, 0: clean);
        ``max_queued``: this client's queue limit instead of the broker's."""
        self.broker = broker
        self.max_queued = max_queued
        self.clock = clock
        self.client_id = client_id
        self.expiry = expiry
        self.window = window
        # Called with (message, packet_id) for each message to handle; ``ack(packet_id)`` when
        # done (packet id 0: QoS 0, nothing to acknowledge). Set it before ``connect``.
        self.on_message: Callable[[Publish, int], None] | None = None
        self.client: ClientState | None = None
        self.username = None
        self.closed = True

    # -- the client side ------------------------------------------------------------------

    def connect(self) -> bool:
        """Attach to the broker; True when a stored session was resumed. Delivers what waited."""
        now = self.clock()
        self.broker.advance(now)
        self.client, present = self.broker.attach(self, self.client_id, self.expiry == 0, self.expiry, now)
        self.client.max_queued = self.max_queued
        self.closed = False
        # In flight when the last connection ended (or the broker stopped): hand out again.
        for packet_id, held in list(self.client.inflight.items()):
            if isinstance(held, Publish):
                held.dup = True
                self.on_message(held, packet_id)
            else:  # a PUBREL of a QoS 2 flow: the message was handled already
                self.ack(packet_id)
        self.pump()
        return present

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Raises ValueError for a bad filter."""
        subscription, new = self.broker.subscribe(self.client, topic_filter, SubscriptionOptions(qos))
        self.broker.send_retained(self.client, topic_filter, subscription, new)
        self.pump()

    def subscriptions(self) -> list[str]:
        return list(self.client.subscriptions)

    def unsubscribe(self, topic_filter: str) -> None:
        self.broker.unsubscribe(self.client, topic_filter)

    def ack(self, packet_id: int) -> None:
        """The message ``packet_id`` was handled (or dropped): forget it, send the next."""
        client = self.client
        if client is None or client.inflight.pop(packet_id, None) is None:
            return
        client.acknowledged(packet_id)
        self.pump()

    def close(self) -> None:
        """Detach; unacknowledged messages stay with a persistent session."""
        if not self.closed:
            self.closed = True
            self.broker.detach(self, None, self.clock())

    # -- what the broker calls --------------------------------------------------------------

    def deliver(self, message: Publish) -> bool:
        if not self.client.enqueue(message, self.broker.max_queued):
            return False
        self.pump()
        return True

    def takeover(self) -> None:
        """Another connection took this client id: this one is closed."""
        self.close()

    def pump(self) -> None:
        client = self.client
        if self.closed or client is None or self.on_message is None:
            return
        queue = client.queue
        stored = client.journal is not None
        while queue and len(client.inflight) < self.window:
            message = queue.popleft()
            seq = client.seqs.popleft() if stored else 0
            if type(message) is ExpiringPublish:
                now = self.broker.now
                if now > message.expires_at:
                    client.expired += 1
                    client.forget(seq)
                    continue
                message.properties["message_expiry_interval"] = max(0, math.ceil(message.expires_at - now))
            if not message.qos:
                self.on_message(message, 0)
                continue
            packet_id = message.packet_id = client.next_packet_id()
            client.inflight[packet_id] = message
            if seq:
                client.sent(seq, message)
            self.on_message(message, packet_id)
