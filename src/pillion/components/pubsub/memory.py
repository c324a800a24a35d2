"""``pubsub.in-memory``: Dapr's in-process broker for tests and single-process apps.

Messages live only in this process: nothing survives a restart, and a topic with no
subscriber drops what is published to it, as in Dapr. Each consumer group gets each
message once; a message is handed to its handler again until it is accepted.
"""

from __future__ import annotations

import asyncio
import logging

from . import Handler, Message, Outcome, PubSub, SubscribeOptions

log = logging.getLogger("pillion.pubsub.memory")


class MemoryPubSub(PubSub):
    def __init__(self, component, context) -> None:
        self.name = component.name
        self._subscriptions: dict[str, dict[str, tuple[Handler, asyncio.Semaphore]]] = {}  # topic -> group -> ...
        self._tasks: set[asyncio.Task] = set()
        self._delivering = True

    async def publish(self, topic: str, data: bytes, metadata: dict[str, str]) -> None:
        loop = asyncio.get_running_loop()
        for handler, slots in self._subscriptions.get(topic, {}).values():
            task = loop.create_task(self._deliver(handler, slots, Message(topic, data, dict(metadata))))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def subscribe(self, topic: str, handler: Handler, options: SubscribeOptions) -> None:
        self._subscriptions.setdefault(topic, {})[options.group] = (handler, asyncio.Semaphore(options.max_in_flight))

    async def _deliver(self, handler: Handler, slots: asyncio.Semaphore, message: Message) -> None:
        async with slots:
            while self._delivering:
                try:
                    if await handler(message) is not Outcome.RETRY:
                        return
                except Exception:  # the handler's failure means "again", as a RETRY
                    log.exception("pubsub %s: delivery of a message on %r failed", self.name, message.topic)
                    await asyncio.sleep(1.0)
                message.redelivered = True

    async def stop_delivery(self) -> None:
        self._delivering = False

    async def close(self) -> None:
        self._delivering = False
        for task in list(self._tasks):
            task.cancel()
