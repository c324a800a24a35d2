"""Calls into the local app: readiness, health checks, concurrency limit, API token, app pipeline.

Every building block that reaches the app (invocation, pub/sub deliveries, bindings,
actors, configuration updates) goes through ``AppChannel.call``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Awaitable

from ..components.middleware import AppCall, HttpMiddleware, chain
from ..server.client import ClientError, ClientResponse, HttpClientPool

log = logging.getLogger("pillion.runtime.app")


def header_safe(name: str, value: str) -> bool:
    """Whether message metadata can travel to the app as an HTTP header unchanged."""
    return name.isascii() and value.isascii() and "\r" not in value and "\n" not in value and ":" not in name


class AppUnavailable(Exception):
    """The app cannot take calls now; the message says why (Dapr's wording)."""


@dataclass(frozen=True)
class HealthCheck:
    path: str = "/healthz"
    interval: float = 5.0
    timeout: float = 0.5
    threshold: int = 3


class AppChannel:
    protocol = "http"  # GrpcAppChannel: "grpc"

    def __init__(
        self,
        pool: HttpClientPool,
        host: str,
        port: int,
        *,
        api_token: str | None = None,
        max_concurrency: int = -1,
        health: HealthCheck | None = None,
        on_ready=None,
        pipeline: Sequence[HttpMiddleware] = (),
    ):
        self.pool = pool
        self.host = host
        self.port = port
        self._token = [(b"dapr-api-token", api_token.encode())] if api_token else []
        self._limit = asyncio.Semaphore(max_concurrency) if max_concurrency > 0 else None
        self.health = health
        self.ready = asyncio.Event()
        self._on_ready = on_ready
        self.healthy = True
        self._failures = 0
        self._tasks: list[asyncio.Task] = []
        # The Configuration's appHttpPipeline; None (no extra step per call) when it is empty.
        self._pipeline = chain(pipeline, self._send, app=True) if pipeline else None

    def start(self) -> None:
        self._tasks.append(asyncio.ensure_future(self._wait_for_port()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _wait_for_port(self) -> None:
        """Dapr's start-up rule: the app channel is ready once the app's TCP port accepts."""
        delay = 0.02
        while True:
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            writer.close()
            break
        log.info("app is listening on %s:%d", self.host, self.port)
        self.ready.set()
        if self._on_ready is not None:
            self._on_ready()
        if self.health is not None:
            self._tasks.append(asyncio.ensure_future(self._check_health()))

    async def _check_health(self) -> None:
        hc = self.health
        while True:
            ok = await self._probe()
            if ok:
                if not self.healthy:
                    log.info("app is healthy again")
                self._failures = 0
                self.healthy = True
            else:
                self._failures += 1
                if self.healthy and self._failures >= hc.threshold:
                    log.warning("app is unhealthy after %d failed probes (%s)", self._failures, self._probe_name())
                    self.healthy = False
            await asyncio.sleep(hc.interval)

    async def _probe(self) -> bool:
        """One health probe: GET of the health path answering 2xx."""
        try:
            resp = await self.pool.request(self.host, self.port, "GET", self.health.path, self._token,
                                           timeout=self.health.timeout)
        except ClientError:
            return False
        return 200 <= resp.status < 300

    def _probe_name(self) -> str:
        return f"GET {self.health.path}"

    def call(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float | None = None
    ) -> Awaitable[ClientResponse]:
        """The app's response to one request (an awaitable: no extra coroutine on the hot path)."""
        if not self.ready.is_set():
            raise AppUnavailable("app channel is not initialized")
        if not self.healthy:
            raise AppUnavailable("app is not in a healthy state")
        if self._token:
            headers = headers + self._token
        if self._pipeline is not None:
            return self._pipeline(AppCall(method, target, headers, body, timeout))
        if self._limit is None:
            return self.pool.request(self.host, self.port, method, target, headers, body, timeout=timeout)
        return self._limited(method, target, headers, body, timeout)

    def _send(self, call: AppCall) -> Awaitable[ClientResponse]:
        """The end of the app pipeline: the call itself."""
        if self._limit is None:
            return self.pool.request(self.host, self.port, call.method, call.target, call.headers, call.body,
                                     timeout=call.timeout)
        return self._limited(call.method, call.target, call.headers, call.body, call.timeout)

    async def _limited(self, method, target, headers, body, timeout) -> ClientResponse:
        async with self._limit:
            return await self.pool.request(self.host, self.port, method, target, headers, body, timeout=timeout)
