"""``middleware.http.ratelimit``: at most ``maxRequestsPerSecond`` requests per client, as Dapr's.

Dapr's component (tollbooth) keeps a token bucket per remote IP: it refills at
``maxRequestsPerSecond`` and holds as many tokens (the burst); a request without a
token gets 429 and the text "You have reached maximum request limit.". In the app
pipeline every call comes from the sidecar itself, so the limit is one bucket for
all calls into the app.
"""

from __future__ import annotations

import time

from ...config.manifests import Component
from ...errors import ConfigError
from ...server.client import ClientResponse
from ...server.http import Response
from ..registry import Context
from . import AppCall, HttpMiddleware, Next

MESSAGE = b"You have reached maximum request limit."
_TEXT = [(b"Content-Type", b"text/plain; charset=utf-8")]
MAX_CLIENTS = 4096  # buckets kept; full (idle) ones are forgotten first


class _Bucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float, stamp: float):
        self.tokens = tokens
        self.stamp = stamp


class RateLimit(HttpMiddleware):
    def __init__(self, component: Component, context: Context, clock=time.monotonic):
        self.name = component.name
        self.rate = _rate(component)
        self.burst = max(1.0, float(int(self.rate)))
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, client: str) -> bool:
        """Take a token from ``client``'s bucket if it has one."""
        now = self.clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= MAX_CLIENTS:
                self._forget_idle(now)
            bucket = self._buckets[client] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def _forget_idle(self, now: float) -> None:
        idle = [k for k, b in self._buckets.items() if b.tokens + (now - b.stamp) * self.rate >= self.burst]
        for key in idle or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[key]

    async def handle(self, request, next: Next):
        if not self.allow(request.peer):
            return Response(429, MESSAGE, list(_TEXT))
        return await next(request)

    async def handle_app(self, call: AppCall, next: Next):
        if not self.allow(""):
            return ClientResponse(429, b"Too Many Requests", list(_TEXT), MESSAGE)
        return await next(call)


def _rate(component: Component) -> float:
    for index, item in enumerate(component.metadata):
        if item.name.lower() == "maxrequestspersecond" and item.value is not None:
            try:
                rate = float(item.value.strip())
            except ValueError:
                rate = 0.0
            if rate > 0:
                return rate
            raise ConfigError(component.source.file, component.source.document,
                              f"spec.metadata[{index}].{item.name}",
                              f"a number of requests per second above 0 (got {item.value.strip()!r})")
    raise ConfigError(component.source.file, component.source.document, "spec.metadata",
                      "a maxRequestsPerSecond entry (the limit per client)")
