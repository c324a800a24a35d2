"""``bindings.mqtt`` (and Dapr's name ``bindings.mqtt3``): devices' MQTT topics as a binding.

It rides on the ``pubsub.mqtt`` transports: the embedded broker in process when ``url``
is empty, ``pillion://`` or this sidecar's own port, else paho-mqtt to any broker. Input
subscribes ``topic`` itself (wildcards allowed; the real topic comes in the ``topic``
metadata) on a persistent session of its own (client id ``pillion-{consumerID}-binding``),
so a message is acknowledged only once the app answered 2xx. Output has one operation,
``create``, publishing to ``topic`` or to the request's ``metadata.topic``.

A refused delivery is tried again every 5 s until the app takes it; daprd instead leaves
it unacknowledged until the next reconnect (``backOffMaxRetries`` is accepted, not used).
"""

from __future__ import annotations

import asyncio
import dataclasses

from ...config.manifests import MetadataItem
from ...errors import ConfigError
from ..pubsub import Outcome, PublishError, SubscribeOptions
from ..pubsub import mqtt as pubsub_mqtt
from . import BindingError, BindingResponse

RETRY_EVERY = 5.0


class MqttBinding:
    """Input and output; see the module docstring."""

    def __init__(self, component, context) -> None:
        metadata = {k.lower(): v for k, v in component.metadata_dict().items()}
        self.name = component.name
        self.topic = metadata.get("topic") or ""
        if not self.topic:
            raise ConfigError(component.source.file, component.source.document, "spec.metadata.topic",
                              "the MQTT topic to subscribe and publish (wildcards allowed for input)")
        consumer = metadata.get("consumerid") or f"{context.app_id}-{component.name}"
        # The transport's client id is built from consumerID: give the binding one of its own.
        items = [m for m in component.metadata if m.name.lower() != "consumerid"]
        items.append(MetadataItem("consumerID", f"{consumer}-binding"))
        self.transport = pubsub_mqtt.create(dataclasses.replace(component, metadata=tuple(items)), context)
        self._started = False

    def operations(self) -> list[str]:
        return ["create"]

    async def _start_transport(self) -> None:
        if not self._started:
            self._started = True
            await self.transport.start()

    async def invoke(self, operation: str, data: bytes, metadata: dict[str, str]) -> BindingResponse:
        await self._start_transport()
        topic = metadata.get("topic") or self.topic
        try:
            await self.transport.publish(topic, data, {k: v for k, v in metadata.items() if k != "topic"})
        except PublishError as exc:
            raise BindingError(f"mqtt binding {self.name}: publish to {topic} failed: {exc}") from None
        return BindingResponse(b"", {})

    async def start(self, handler) -> None:
        """Deliver ``topic``'s messages to ``handler(data, metadata) -> accepted``."""
        await self._start_transport()

        async def deliver(message) -> Outcome:
            if await handler(message.data, {"topic": message.topic}):
                return Outcome.SUCCESS
            await asyncio.sleep(RETRY_EVERY)
            return Outcome.RETRY

        options = SubscribeOptions(group="")
        await self.transport.subscribe(self.topic, deliver, options)
        await self.transport.unsubscribe_others({self.topic}, options)

    async def close(self) -> None:
        if self._started:
            await self.transport.close()
