"""GetConfiguration, SubscribeConfiguration, UnsubscribeConfiguration (and their *Alpha1 names).

As daprd: a subscription is a server stream whose first message carries the subscription
id and each later one the changed items; it lasts until the client cancels the call or
calls UnsubscribeConfiguration with that id, and then the store subscription ends too.
UnsubscribeConfiguration knows only streamed subscriptions (the HTTP ones post to the
app) and answers ``ok: false`` with a message, not an error, for an unknown id.
"""

from __future__ import annotations

import asyncio

from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import configuration_pb2

from ..api import configuration as http_configuration
from ..runtime.configuration import queue_handler

# subscription id -> the queue of its open stream (None in it ends the stream).
_STREAMS: dict[str, asyncio.Queue] = {}


def _items(items: dict) -> dict:
    return {key: common_pb2.ConfigurationItem(value=item.value, version=item.version, metadata=item.metadata)
            for key, item in items.items()}


async def get_configuration(sidecar, request, context):
    store = http_configuration.find_store(sidecar, request.store_name)
    items = await http_configuration.get_items(request.store_name, store, list(request.keys))
    return configuration_pb2.GetConfigurationResponse(items=_items(items))


async def subscribe_configuration(sidecar, request, context):
    name = request.store_name
    store = http_configuration.find_store(sidecar, name)
    queue: asyncio.Queue = asyncio.Queue()
    subscription_id = await http_configuration.subscribe(name, store, sorted(request.keys), queue_handler(queue))
    _STREAMS[subscription_id] = queue
    watcher = asyncio.ensure_future(_end_on_stop(sidecar, queue))
    try:
        yield configuration_pb2.SubscribeConfigurationResponse(id=subscription_id)
        while (update := await queue.get()) is not None:
            yield configuration_pb2.SubscribeConfigurationResponse(id=update[0], items=_items(update[1]))
    finally:  # the client went away, UnsubscribeConfiguration or the sidecar's stop ended the stream
        watcher.cancel()
        _STREAMS.pop(subscription_id, None)
        await store.unsubscribe(subscription_id)


async def _end_on_stop(sidecar, queue: asyncio.Queue) -> None:
    """A stopping sidecar ends its streams at once (as daprd does), not after the grace period."""
    await sidecar.wait_stopped()
    queue.put_nowait(None)


def unsubscribe_configuration(sidecar, request, context):
    queue = _STREAMS.pop(request.id, None)
    if queue is None:
        return configuration_pb2.UnsubscribeConfigurationResponse(
            ok=False, message=f"failed to unsubscribe to configuration request {request.id}: "
                              "subscription does not exist")
    queue.put_nowait(None)
    return configuration_pb2.UnsubscribeConfigurationResponse(ok=True)


METHODS = {
    name + suffix: handler
    for suffix in ("", "Alpha1")
    for name, handler in (("GetConfiguration", get_configuration),
                          ("SubscribeConfiguration", subscribe_configuration),
                          ("UnsubscribeConfiguration", unsubscribe_configuration))
}
