"""``pubsub.mqtt`` (and Dapr's name ``pubsub.mqtt3``): pub/sub over MQTT.

With no ``url``, with ``url: pillion://``, or with a url naming this sidecar's own
listener, messages go through the embedded broker in process (``EmbeddedMqtt``): no
socket, no encoding, and the broker's LMDB store holds what is queued for this app.
When the sidecar shares another Pillion's broker on this host, or ``url`` names any
other broker, the component is a paho-mqtt client (``mqtt_external.py``, imported only
then).

Subscriptions are persistent sessions: client id ``pillion-{consumerID}-{instance}``
(the instance is the sidecar's HTTP port, stable across restarts of one replica), each
topic subscribed as ``$share/{consumerID}/{topic}`` so that replicas of one app id share
the work and different app ids each get every message.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

from ...broker.packets import Publish
from ...broker.topics import TopicTrie, validate_topic
from ...errors import ConfigError
from ...runtime import memory as _memory
from . import Handler, Message, Outcome, PubSub, PublishError, SubscribeOptions

log = logging.getLogger("pillion.pubsub.mqtt")

EMBEDDED_SCHEME = "pillion"
# Messages kept for this app (on disk, and in memory until delivered): 10,000 at most, fewer
# under a small memory limit (runtime/memory.py app_queue_default; 2,048 at 64 MiB).
DEFAULT_APP_QUEUE = _memory.APP_QUEUE_MAX


def create(component, context) -> PubSub:
    """The embedded or the external implementation, from the component's ``url``."""
    metadata = {k.lower(): v for k, v in component.metadata_dict().items()}
    url = metadata.get("url", "")
    server = context.broker
    if not url and context.shared_broker_url:
        url = context.shared_broker_url
    if server is not None and _names_embedded(url, server):
        return EmbeddedMqtt(component, context, server, metadata)
    if not url:
        raise ConfigError(component.source.file, component.source.document, "spec.metadata.url",
                          "a broker url such as tcp://host:1883 (this sidecar runs no embedded broker)")
    from .mqtt_external import ExternalMqtt, parse_settings

    settings = parse_settings(component, default_url=url, default_consumer_id=context.app_id)
    return ExternalMqtt(settings, f"pillion-{settings.consumer_id}-{context.instance}")


def _names_embedded(url: str, server) -> bool:
    if not url:
        return True
    parts = urlsplit(url)
    if parts.scheme == EMBEDDED_SCHEME:
        return True
    ports = {sock.getsockname()[1] for sock in server.sockets}
    return parts.hostname in ("127.0.0.1", "localhost", "::1") and parts.port in ports


def _bad(component, name: str, expected: str) -> ConfigError:
    index = next(i for i, m in enumerate(component.metadata) if m.name.lower() == name.lower())
    return ConfigError(component.source.file, component.source.document, f"spec.metadata[{index}].{name}", expected)


def _setting(component, metadata: dict[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = metadata.get(name.lower(), default).lower()
    if value not in allowed:
        raise _bad(component, name, f"one of {', '.join(allowed)} (got {value!r})")
    return value


def _count(component, metadata: dict[str, str], name: str, default: int) -> int:
    text = metadata.get(name.lower())
    if text is None:
        return default
    if not text.isdigit() or int(text) < 1:
        raise _bad(component, name, f"a whole number of messages, at least 1 (got {text!r})")
    return int(text)


class EmbeddedMqtt(PubSub):
    """The component on the in-process broker; see the module docstring."""

    features = frozenset({"SUBSCRIBE_WILDCARDS", "MESSAGE_TTL"})

    def __init__(self, component, context, server, metadata: dict[str, str]) -> None:
        self.name = component.name
        self.server = server
        self.qos = int(_setting(component, metadata, "qos", ("0", "1", "2"), "1"))
        self.retain = _setting(component, metadata, "retain", ("true", "false"), "false") == "true"
        self.consumer_id = metadata.get("consumerid") or context.app_id
        self.max_queued = _count(component, metadata, "maxQueuedMessages", _memory.app_queue_default())
        self.client_id = f"pillion-{self.consumer_id}-{context.instance}"
        restored = server.broker.clients.get(self.client_id)
        if restored is not None:  # its queue limit holds before the app is ready, too
            restored.max_queued = self.max_queued
        self._client = None
        self._handlers = TopicTrie()  # topic filter -> handler
        self._filters: set[str] = set()
        self._unrouted: list[tuple[Publish, int]] = []  # restored before their handler was known
        self._tasks: set[asyncio.Task] = set()
        self._delivering = True

    async def publish(self, topic: str, data: bytes, metadata: dict[str, str]) -> None:
        try:
            validate_topic(topic)
        except ValueError as exc:
            raise PublishError(f"invalid MQTT topic {topic!r}: {exc}") from None
        properties = {}
        ttl = metadata.get("ttlInSeconds")
        if ttl:
            properties["message_expiry_interval"] = int(ttl)
        retain = metadata.get("retain", "true" if self.retain else "false").lower() == "true"
        try:
            await self.server.publish(Publish(topic, data, self.qos, retain, properties=properties))
        except OSError as exc:
            raise PublishError(str(exc)) from None

    async def subscribe(self, topic: str, handler: Handler, options: SubscribeOptions) -> None:
        if self._client is None:
            self._client = self.server.local_client(self.client_id, window=options.max_in_flight,
                                                    max_queued=self.max_queued)
            self._client.on_message = self._on_message
            self._client.connect()
        self._handlers.subscribe(topic, topic, handler)
        self._filters.add(topic)
        self._client.subscribe(f"$share/{options.group}/{topic}" if options.group else topic, self.qos)
        unrouted, self._unrouted = self._unrouted, []
        for message, packet_id in unrouted:
            self._on_message(message, packet_id)

    async def unsubscribe_others(self, keep: set[str], options: SubscribeOptions) -> None:
        if self._client is None:
            return
        prefix = f"$share/{options.group}/" if options.group else ""
        for full_filter in self._client.subscriptions():
            if full_filter.startswith(prefix) and full_filter[len(prefix):] not in keep:
                log.info("pubsub %s: unsubscribing %r, which the app no longer subscribes", self.name, full_filter)
                self._client.unsubscribe(full_filter)
        unrouted, self._unrouted = self._unrouted, []
        for message, packet_id in unrouted:
            log.warning("pubsub %s: dropping a message on %r kept for a subscription the app no longer has",
                        self.name, message.topic)
            self._client.ack(packet_id)

    def _on_message(self, message: Publish, packet_id: int) -> None:
        matches = self._handlers.match(message.topic)
        if not matches or not self._delivering:
            self._unrouted.append((message, packet_id))
            return
        handler = matches[0][1]
        task = asyncio.get_running_loop().create_task(self._deliver(handler, message, packet_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, handler: Handler, message: Publish, packet_id: int) -> None:
        delivery = Message(message.topic, message.payload, _metadata(message), message.dup)
        while self._delivering:
            try:
                outcome = await handler(delivery)
            except Exception:  # a failed delivery is tried again, never acknowledged
                log.exception("pubsub %s: delivery on %r failed", self.name, message.topic)
                await asyncio.sleep(1.0)
                outcome = Outcome.RETRY
            if outcome is not Outcome.RETRY:
                self._client.ack(packet_id)
                return
            delivery.redelivered = True

    async def stop_delivery(self) -> None:
        self._delivering = False

    async def close(self) -> None:
        self._delivering = False
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
        if self._client is not None:
            self._client.close()


def _metadata(message: Publish) -> dict[str, str]:
    """MQTT 5 user properties become message metadata (headers to the app), as Dapr's do."""
    return {key: value for key, value in message.properties.get("user_property", ())}
