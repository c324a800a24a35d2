"""Configuration updates to the app: ``POST /configuration/{store}/{key}`` per changed key.

daprd sends the whole update (``{"id", "items": {key: item}}``) once for every key
in it, with ``Content-Type: application/json``; an answer other than 200 is
logged and nothing is retried (the next change brings the latest value anyway).
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import orjson

from ..components.configuration import ConfigurationItem, UpdateHandler
from ..server.client import ClientError
from .app_channel import AppUnavailable

log = logging.getLogger("pillion.runtime.configuration")

DELIVERY_TIMEOUT = 60.0
_HEADERS = [(b"Content-Type", b"application/json")]


def update_handler(sidecar, store: str) -> UpdateHandler:
    """The handler a subscription of ``store`` calls with each update."""

    async def deliver(subscription_id: str, items: dict[str, ConfigurationItem]) -> None:
        body = orjson.dumps({"id": subscription_id, "items": {key: item.to_json() for key, item in items.items()}})
        for key in items:
            path = f"/configuration/{quote(store, safe='')}/{quote(key, safe='/:@')}"
            try:
                response = await sidecar.app.call("POST", path, _HEADERS, body, timeout=DELIVERY_TIMEOUT)
            except (AppUnavailable, ClientError) as exc:
                log.warning("configuration update %s to the app failed: %s", path, exc)
                continue
            if response.status != 200:
                log.warning("configuration update %s: the app answered %d", path, response.status)

    return deliver


def queue_handler(queue) -> UpdateHandler:
    """The handler of a subscription whose updates go to a stream (the gRPC front) via ``queue``.

    The stream's reader takes ``(subscription id, items)`` pairs; the store's watcher
    never waits on a slow client, as the app POSTs above would not either.
    """

    async def deliver(subscription_id: str, items: dict[str, ConfigurationItem]) -> None:
        queue.put_nowait((subscription_id, items))

    return deliver
