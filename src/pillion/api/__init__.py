"""The sidecar's HTTP API: one module per building block, each ending in ``ENDPOINTS``.

A handler is ``handler(sidecar, request) -> Response | Awaitable[Response]``. The
router, the token check and the metadata API read the endpoint records; nothing
else registers routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Endpoint:
    methods: tuple[str, ...] | None  # None: every method
    route: str  # Dapr's route syntax: {param}, {tail...}
    name: str  # stable name, as Dapr's (e.g. "GetMetadata")
    group: str  # building block, for allow/deny lists
    handler: Callable[[Any, Any], Any]
    public: bool = False  # served without the API token (Dapr: healthz only)


def all_endpoints() -> tuple[Endpoint, ...]:
    from . import actors, bindings, configuration, health, invoke, lock, metadata, pubsub, secrets, shutdown, state

    return (health.ENDPOINTS + metadata.ENDPOINTS + shutdown.ENDPOINTS + state.ENDPOINTS + pubsub.ENDPOINTS
            + bindings.ENDPOINTS + secrets.ENDPOINTS + configuration.ENDPOINTS + lock.ENDPOINTS + actors.ENDPOINTS
            + invoke.ENDPOINTS)
