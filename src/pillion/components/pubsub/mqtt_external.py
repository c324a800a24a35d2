"""``pubsub.mqtt`` on a real broker (Mosquitto, EMQX, HiveMQ) through paho-mqtt.

Two paho clients, as Dapr does: a clean-session publisher (``{consumerID}-pub-{suffix}``)
and a subscriber with the caller's client id, a persistent session and manual acks.
Each runs paho's own network thread; callbacks hop onto the event loop with
``call_soon_threadsafe``, so the loop never blocks on the network.

Decisions, for whoever wires or operates this:

* ``cleanSession`` defaults to **false** (Dapr's pubsub.mqtt3 defaults to true): the
  broker keeps the subscriptions and the unacknowledged messages while the sidecar is
  away, which is what at-least-once needs. With MQTT 5 the session never expires.
* A message is acknowledged only after its handler returned SUCCESS or DROP. RETRY or
  an exception calls the handler again (``redelivered=True``) until it accepts or the
  component stops; an exception waits ``EXCEPTION_RETRY_DELAY`` first, since only a
  RETRY means the handler already waited.
* Flow control: each subscription has a FIFO queue and at most ``max_in_flight``
  handler calls at once. paho cannot pause reading, but the broker stops sending QoS 1/2
  messages once its in-flight window of unacknowledged messages is full (Mosquitto's
  ``max_inflight_messages``, MQTT 5's Receive Maximum), so the queue stays bounded
  because nothing is acked before the handler accepts. QoS 0 has no such brake.
* Ordering: handlers start in arrival order; with ``max_in_flight`` 1 they also finish
  in order, and a retried message holds back the ones behind it.
* After a reconnect the broker resends unacknowledged QoS 1 messages under the same
  packet ids, so copies received on the old connection are never acked (the id may
  name another message by then) and, with a persistent session, are skipped when still
  queued. QoS 2 is acked across reconnects (the broker waits for our PUBCOMP), but paho
  keeps no session on disk, so a QoS 2 message unacked when the process dies is lost:
  prefer QoS 1, the default.
* ``subscribe`` uses ``$share/{group}/{topic}`` when the options name a group (MQTT 5
  brokers announce support in CONNACK; Mosquitto >= 1.6, EMQX and HiveMQ also accept it
  from 3.1.1 clients). A message matching several subscriptions goes to the first one.
* A persistent session may deliver messages for topics an earlier run subscribed
  before this run subscribes anything: they wait, unacked, until a matching
  ``subscribe``. ``unsubscribe_others`` marks the set of subscriptions final: waiting
  messages no subscription wants are acked (dropped) and their topic unsubscribed,
  and so is any such message later. The broker cannot list a session's subscriptions,
  so an old wildcard filter stays and its messages keep being dropped.
* ``publish`` waits up to ``connect_wait`` for the publisher to be connected and then
  up to ``ack_wait`` for PUBACK/PUBCOMP (for QoS 0, for the socket write); otherwise
  PublishError. A message already handed to paho may still go out after a reconnect,
  so a PublishError means "maybe not delivered".
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import tempfile
import uuid
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ...config.manifests import Component
from ...errors import ConfigError, PillionError
from . import Handler, Message, Outcome, PubSub, PublishError, SubscribeOptions

log = logging.getLogger("pillion.pubsub.mqtt")

TRUTHY = frozenset({"true", "1", "yes", "y", "on"})
FALSY = frozenset({"false", "0", "no", "n", "off", ""})
PLAIN_SCHEMES = {"tcp": 1883, "mqtt": 1883}
TLS_SCHEMES = {"ssl": 8883, "tls": 8883, "mqtts": 8883, "tcps": 8883}
PROTOCOLS = {"3.1.1": mqtt.MQTTv311, "311": mqtt.MQTTv311, "4": mqtt.MQTTv311, "5": mqtt.MQTTv5, "5.0": mqtt.MQTTv5}
NEVER_EXPIRES = 0xFFFFFFFF
KEEPALIVE = 30
EXCEPTION_RETRY_DELAY = 1.0
SHARED_NOT_SUPPORTED = 0x9E


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """Dapr's pubsub.mqtt3 metadata, typed; certificates stay PEM text."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    qos: int = 1
    retain: bool = False
    clean_session: bool = False
    consumer_id: str = ""
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    protocol: int = mqtt.MQTTv311


def parse_settings(component: Component, *, default_url: str = "", default_consumer_id: str = "") -> MqttSettings:
    """Typed settings; names are case-insensitive and unknown ones are accepted, as Dapr does.

    ``default_url`` and ``default_consumer_id`` (the app id) fill in what the component omits.

    Raises:
        ConfigError: naming ``spec.metadata[i].<name>`` and what was expected.
    """
    src = component.source
    values: dict[str, tuple[int, str, str]] = {}
    for index, item in enumerate(component.metadata):
        if item.value is not None:
            values[item.name.lower()] = (index, item.name, item.value.strip())

    def fail(name: str, expected: str):
        if name in values:
            index, original, _ = values[name]
            raise ConfigError(src.file, src.document, f"spec.metadata[{index}].{original}", expected)
        raise ConfigError(src.file, src.document, f"spec.metadata.{name}", expected)

    def text(name: str) -> str | None:
        return values[name][2] if name in values else None

    def flag(name: str, default: bool) -> bool:
        value = text(name)
        if value is None:
            return default
        if value.lower() not in TRUTHY | FALSY:
            fail(name, f"true or false (got {value!r})")
        return value.lower() in TRUTHY

    url = text("url") or default_url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in PLAIN_SCHEMES and scheme not in TLS_SCHEMES:
        fail("url", f"a broker url tcp://, mqtt://, ssl://, tls:// or mqtts://host:port (got {url!r};"
                    " websockets are not supported)")
    try:
        port = parts.port or PLAIN_SCHEMES.get(scheme) or TLS_SCHEMES[scheme]
    except ValueError:
        fail("url", f"a valid port number (got {url!r})")
    if not parts.hostname:
        fail("url", f"a host name in the url (got {url!r})")

    qos_text = text("qos") or "1"
    if qos_text not in ("0", "1", "2"):
        fail("qos", f"0, 1 or 2 (got {qos_text!r})")
    protocol_text = text("protocolversion") or "3.1.1"
    if protocol_text not in PROTOCOLS:
        fail("protocolversion", f"3.1.1 or 5 (got {protocol_text!r})")

    settings = MqttSettings(
        host=parts.hostname,
        port=port,
        tls=scheme in TLS_SCHEMES,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        qos=int(qos_text),
        retain=flag("retain", False),
        clean_session=flag("cleansession", False),
        consumer_id=text("consumerid") or default_consumer_id,
        ca_cert=text("cacert") or None,
        client_cert=text("clientcert") or None,
        client_key=text("clientkey") or None,
        protocol=PROTOCOLS[protocol_text],
    )
    if not settings.consumer_id:
        fail("consumerid", "a consumer id (no app id to default to)")
    if bool(settings.client_cert) != bool(settings.client_key):
        fail("clientkey" if settings.client_cert else "clientcert", "clientCert and clientKey together")
    if settings.tls:
        try:
            tls_context(settings)
        except (ssl.SSLError, ValueError) as exc:
            fail("clientcert" if settings.client_cert else "cacert", f"valid PEM certificates ({exc})")
    return settings


def tls_context(settings: MqttSettings) -> ssl.SSLContext:
    """The client's TLS context from PEM text; the key passes through a 0600 temp file only briefly."""
    context = ssl.create_default_context()
    if settings.ca_cert:
        context.load_verify_locations(cadata=settings.ca_cert)
    if settings.client_cert and settings.client_key:
        with tempfile.TemporaryDirectory(prefix="pillion-mqtt-") as directory:
            cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
            for path, pem in ((cert_path, settings.client_cert), (key_path, settings.client_key)):
                with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
                    out.write(pem)
            context.load_cert_chain(cert_path, key_path)
    return context


@dataclass(slots=True)
class _Delivery:
    """One received PUBLISH, with the connection it came on (packet ids are per connection)."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    dup: bool
    retain: bool
    generation: int


@dataclass(slots=True)
class _Subscription:
    topic: str
    wire_filter: str  # what the broker was asked for, maybe $share/{group}/{topic}
    handler: Handler
    options: SubscribeOptions
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    confirmed: bool = False
    dispatcher: asyncio.Task | None = None


class _Connection:
    """Connection state changes of one paho client, logged once each rather than per retry."""

    def __init__(self, role: str):
        self.role = role
        self.connected = asyncio.Event()
        self.failing = False

    def up(self, where: str) -> None:
        self.connected.set()
        self.failing = False
        log.info("mqtt %s connected to %s", self.role, where)

    def down(self, where: str, reason: object) -> None:
        if self.connected.is_set():
            log.warning("mqtt %s lost connection to %s (%s); reconnecting", self.role, where, reason)
        elif not self.failing:
            log.warning("mqtt %s cannot connect to %s (%s); retrying", self.role, where, reason)
        self.connected.clear()
        self.failing = True


class ExternalMqtt(PubSub):
    """The paho-mqtt implementation of ``pubsub.mqtt``; see the module docstring."""

    def __init__(self, settings: MqttSettings, client_id_base: str, *, connect_wait: float = 5.0,
                 ack_wait: float = 10.0, close_wait: float = 5.0, reconnect_delay: tuple[int, int] = (1, 30)):
        self.settings = settings
        self.client_id = client_id_base
        self.connect_wait = connect_wait
        self.ack_wait = ack_wait
        self.close_wait = close_wait
        self.reconnect_delay = reconnect_delay
        features = {"SUBSCRIBE_WILDCARDS"}
        if settings.protocol == mqtt.MQTTv5:
            features.add("MESSAGE_TTL")
        self.features = frozenset(features)
        self.where = f"{settings.host}:{settings.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._publisher: mqtt.Client | None = None
        self._subscriber: mqtt.Client | None = None
        self._pub_state = _Connection("publisher")
        self._sub_state = _Connection("subscriber")
        self._publishes: dict[int, asyncio.Future] = {}
        self._subacks: dict[int, tuple[_Subscription, asyncio.Future | None]] = {}
        self._subscriptions: dict[str, _Subscription] = {}
        self._waiting: list[_Delivery] = []  # received before any matching subscribe
        self._settled_group: str | None = None  # set by unsubscribe_others
        self._handlers: set[asyncio.Task] = set()
        self._generation = 0  # bumped by the subscriber's network thread on each connect
        self._shared_available = True
        self._delivering = True
        self._closed = False

    @property
    def ready(self) -> bool:
        """Both clients connected and every subscription confirmed by the broker (for health checks)."""
        return (self._pub_state.connected.is_set() and self._sub_state.connected.is_set()
                and all(s.confirmed for s in self._subscriptions.values()))

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Start both clients; an unreachable broker is logged and retried, never fatal."""
        self._loop = asyncio.get_running_loop()
        self._publisher = self._client(f"{self.settings.consumer_id}-pub-{uuid.uuid4().hex[:8]}", clean=True)
        self._publisher.on_connect = self._on_pub_connect
        self._publisher.on_disconnect = self._on_pub_disconnect
        self._publisher.on_connect_fail = self._on_pub_connect_fail
        self._publisher.on_publish = self._on_publish
        self._subscriber = self._client(self.client_id, clean=self.settings.clean_session, manual_ack=True)
        self._subscriber.on_connect = self._on_sub_connect
        self._subscriber.on_disconnect = self._on_sub_disconnect
        self._subscriber.on_connect_fail = self._on_sub_connect_fail
        self._subscriber.on_subscribe = self._on_subscribe
        self._subscriber.on_message = self._on_message
        for client, clean in ((self._publisher, True), (self._subscriber, self.settings.clean_session)):
            self._connect(client, clean)
            client.loop_start()
        try:
            await asyncio.wait_for(asyncio.gather(self._pub_state.connected.wait(), self._sub_state.connected.wait()),
                                   self.connect_wait)
        except asyncio.TimeoutError:
            log.warning("mqtt broker %s not reachable yet; publish fails until it is", self.where)

    def _client(self, client_id: str, clean: bool, manual_ack: bool = False) -> mqtt.Client:
        settings = self.settings
        v5 = settings.protocol == mqtt.MQTTv5
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=settings.protocol,
                             clean_session=None if v5 else clean, manual_ack=manual_ack)
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            client.tls_set_context(tls_context(settings))
        client.reconnect_delay_set(*self.reconnect_delay)
        return client

    def _connect(self, client: mqtt.Client, clean: bool) -> None:
        if self.settings.protocol == mqtt.MQTTv5:
            properties = None
            if not clean:
                properties = Properties(PacketTypes.CONNECT)
                properties.SessionExpiryInterval = NEVER_EXPIRES
            client.connect_async(self.settings.host, self.settings.port, KEEPALIVE, clean_start=clean,
                                 properties=properties)
        else:
            client.connect_async(self.settings.host, self.settings.port, KEEPALIVE)

    async def stop_delivery(self) -> None:
        """Stop the dispatchers; queued messages stay unacked with the broker."""
        self._delivering = False
        for subscription in self._subscriptions.values():
            if subscription.dispatcher is not None:
                subscription.dispatcher.cancel()

    async def close(self) -> None:
        """Let running handlers finish (time-bounded), then disconnect both clients."""
        if self._closed:
            return
        await self.stop_delivery()
        self._closed = True
        if self._handlers:
            _, pending = await asyncio.wait(set(self._handlers), timeout=self.close_wait)
            for task in pending:
                task.cancel()
        for future in self._publishes.values():
            if not future.done():
                future.set_exception(PublishError("the pub/sub component is closing"))
        self._publishes.clear()
        clients = [c for c in (self._publisher, self._subscriber) if c is not None]
        for client in clients:
            client.disconnect()
        if clients:
            try:
                await asyncio.wait_for(asyncio.to_thread(lambda: [c.loop_stop() for c in clients]), self.close_wait)
            except asyncio.TimeoutError:
                log.warning("mqtt network threads did not stop within %gs", self.close_wait)

    # -- publish -----------------------------------------------------------------

    async def publish(self, topic: str, data: bytes, metadata: dict[str, str]) -> None:
        if self._closed or self._publisher is None:
            raise PublishError("the pub/sub component is not running")
        try:
            await asyncio.wait_for(self._pub_state.connected.wait(), self.connect_wait)
        except asyncio.TimeoutError:
            raise PublishError(f"not connected to the MQTT broker {self.where} within {self.connect_wait:g}s") from None
        retain = self.settings.retain
        if metadata.get("retain"):
            retain = metadata["retain"].strip().lower() in TRUTHY
        properties = None
        ttl = metadata.get("ttlInSeconds")
        if ttl and self.settings.protocol == mqtt.MQTTv5:
            if not ttl.strip().isdigit():
                raise PublishError(f"ttlInSeconds must be a whole number of seconds (got {ttl!r})")
            properties = Properties(PacketTypes.PUBLISH)
            properties.MessageExpiryInterval = int(ttl)
        try:
            info = self._publisher.publish(topic, data, self.settings.qos, retain, properties)
        except ValueError as exc:
            raise PublishError(f"cannot publish to {topic!r}: {exc}") from None
        queued_for_reconnect = info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and self.settings.qos > 0
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not queued_for_reconnect:
            raise PublishError(f"cannot publish to {topic!r}: {mqtt.error_string(info.rc)}")
        future = self._loop.create_future()
        self._publishes[info.mid] = future  # on_publish's callback runs on this loop, after this line
        try:
            await asyncio.wait_for(future, self.ack_wait)
        except asyncio.TimeoutError:
            raise PublishError(f"the MQTT broker {self.where} did not acknowledge within {self.ack_wait:g}s") from None
        finally:
            self._publishes.pop(info.mid, None)

    def _published(self, mid: int, failure: str | None) -> None:
        future = self._publishes.get(mid)
        if future is None or future.done():
            return
        if failure:
            future.set_exception(PublishError(f"the MQTT broker refused the message: {failure}"))
        else:
            future.set_result(None)

    # -- subscribe ---------------------------------------------------------------

    async def subscribe(self, topic: str, handler: Handler, options: SubscribeOptions) -> None:
        """Register, then wait for SUBACK when connected; offline, the next connect subscribes."""
        if self._closed or self._subscriber is None:
            raise PillionError("the pub/sub component is not running")
        subscription = _Subscription(topic, self._wire_filter(topic, options.group), handler, options)
        replaced = self._subscriptions.pop(topic, None)
        if replaced is not None and replaced.dispatcher is not None:
            replaced.dispatcher.cancel()  # its queued messages stay unacked; the broker resends them later
        self._subscriptions[topic] = subscription
        subscription.dispatcher = asyncio.create_task(self._dispatch(subscription), name=f"mqtt-dispatch {topic}")
        waiting, self._waiting = self._waiting, []
        for delivery in waiting:
            self._route(delivery)
        if not self._sub_state.connected.is_set():
            return
        future = self._loop.create_future()
        self._send_subscribe(subscription, future)
        try:
            await asyncio.wait_for(future, self.connect_wait)
        except asyncio.TimeoutError:
            log.warning("mqtt subscribe to %r not confirmed within %gs; retried on reconnect", topic,
                        self.connect_wait)

    def _wire_filter(self, topic: str, group: str) -> str:
        return f"$share/{group}/{topic}" if group and self._shared_available else topic

    def _send_subscribe(self, subscription: _Subscription, future: asyncio.Future | None) -> None:
        result, mid = self._subscriber.subscribe(subscription.wire_filter, self.settings.qos)
        if result == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._subacks[mid] = (subscription, future)
        elif future is not None:
            future.set_result(None)  # not connected: on_connect subscribes it

    def _subscribed(self, mid: int, codes: list[int]) -> None:
        subscription, future = self._subacks.pop(mid, (None, None))
        if subscription is None:
            return
        code = codes[0] if codes else 0x80
        if code == SHARED_NOT_SUPPORTED and subscription.wire_filter != subscription.topic:
            log.warning("mqtt broker %s refuses shared subscriptions; subscribing %r unshared",
                        self.where, subscription.topic)
            subscription.wire_filter = subscription.topic
            self._send_subscribe(subscription, future)
            return
        if code >= 0x80:
            error = PillionError(f"the MQTT broker refused the subscription {subscription.wire_filter!r} "
                                 f"(reason code {code:#x})")
            log.error("%s", error)
            if future is not None and not future.done():
                future.set_exception(error)
            return
        subscription.confirmed = True
        if future is not None and not future.done():
            future.set_result(None)

    async def unsubscribe_others(self, keep: set[str], options: SubscribeOptions) -> None:
        """Drop what an earlier run subscribed and this one does not; see the module docstring."""
        self._settled_group = options.group
        waiting, self._waiting = self._waiting, []
        for delivery in waiting:
            self._route(delivery)

    def _forget(self, delivery: _Delivery) -> None:
        """Ack a message no subscription wants and unsubscribe its topic, shared and not."""
        log.info("mqtt: dropping a message on %r, which this app no longer subscribes", delivery.topic)
        self._ack(delivery)
        filters = [delivery.topic]
        if self._settled_group:
            filters.append(f"$share/{self._settled_group}/{delivery.topic}")
        self._subscriber.unsubscribe(filters)

    # -- delivery ----------------------------------------------------------------

    def _received(self, delivery: _Delivery) -> None:
        if self._delivering and not self._closed:
            self._route(delivery)

    def _route(self, delivery: _Delivery) -> None:
        subscription = self._subscriptions.get(delivery.topic)
        if subscription is None:
            subscription = next((s for s in self._subscriptions.values()
                                 if mqtt.topic_matches_sub(s.topic, delivery.topic)), None)
        if subscription is not None:
            subscription.queue.put_nowait(delivery)
        elif self._settled_group is not None:
            self._forget(delivery)
        else:
            self._waiting.append(delivery)

    async def _dispatch(self, subscription: _Subscription) -> None:
        slots = asyncio.Semaphore(subscription.options.max_in_flight)
        while True:
            await slots.acquire()
            delivery = await subscription.queue.get()
            if self._stale(delivery) and not self.settings.clean_session and delivery.qos == 1:
                slots.release()  # the broker sent it again on the new connection
                continue
            task = asyncio.create_task(self._deliver(subscription, delivery))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
            task.add_done_callback(lambda _: slots.release())

    async def _deliver(self, subscription: _Subscription, delivery: _Delivery) -> None:
        redelivered = delivery.dup
        while self._delivering:
            message = Message(delivery.topic, delivery.payload, {"retained": "true" if delivery.retain else "false"},
                              redelivered)
            try:
                outcome = await subscription.handler(message)
            except Exception:
                log.exception("mqtt handler for %r failed; retrying", delivery.topic)
                outcome = None
            if outcome in (Outcome.SUCCESS, Outcome.DROP):
                self._ack(delivery)
                return
            if self._stale(delivery) and not self.settings.clean_session and delivery.qos == 1:
                return  # the broker resent it on the new connection; that copy takes over
            redelivered = True
            if outcome is None:
                await asyncio.sleep(EXCEPTION_RETRY_DELAY)

    def _stale(self, delivery: _Delivery) -> bool:
        return delivery.generation != self._generation

    def _ack(self, delivery: _Delivery) -> None:
        """PUBACK/PUBCOMP; a QoS 1 packet id from an earlier connection may name another message now."""
        if delivery.qos == 0 or (delivery.qos == 1 and self._stale(delivery)):
            return
        self._subscriber.ack(delivery.mid, delivery.qos)

    # -- paho callbacks (network threads) ------------------------------------------

    def _call(self, callback, *args) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            pass  # the loop is closed: nothing is waiting any more

    def _on_pub_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._call(self._pub_state.down, self.where, reason_code)
        else:
            self._call(self._pub_state.up, self.where)

    def _on_pub_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if not self._closed:
            self._call(self._pub_state.down, self.where, reason_code)

    def _on_pub_connect_fail(self, client, userdata) -> None:
        self._call(self._pub_state.down, self.where, "connection failed")

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._call(self._published, mid, str(reason_code) if reason_code.is_failure else None)

    def _on_sub_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._call(self._sub_state.down, self.where, reason_code)
            return
        self._generation += 1
        shared = True
        if properties is not None and hasattr(properties, "SharedSubscriptionAvailable"):
            shared = bool(properties.SharedSubscriptionAvailable)
        self._call(self._sub_connected, flags.session_present, shared)

    def _sub_connected(self, session_present: bool, shared_available: bool) -> None:
        self._sub_state.up(self.where)
        self._shared_available = shared_available
        for subscription in self._subscriptions.values():
            if not session_present:
                subscription.confirmed = False
            if not subscription.confirmed:
                subscription.wire_filter = self._wire_filter(subscription.topic, subscription.options.group)
                self._send_subscribe(subscription, None)

    def _on_sub_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if not self._closed:
            self._call(self._sub_state.down, self.where, reason_code)

    def _on_sub_connect_fail(self, client, userdata) -> None:
        self._call(self._sub_state.down, self.where, "connection failed")

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self._call(self._subscribed, mid, [code.value for code in reason_codes])

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            log.warning("mqtt: dropping a message whose topic is not UTF-8: %r", message._topic)
            client.ack(message.mid, message.qos)
            return
        delivery = _Delivery(topic, message.payload, message.mid, message.qos, bool(message.dup),
                             bool(message.retain), self._generation)
        self._call(self._received, delivery)
