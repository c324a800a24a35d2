"""The span queue and the background task that ships it, off the request path.

``record`` only appends to a bounded list (when full the span is dropped and counted,
never waited for); a task flushes every ``interval`` seconds or as soon as
``max_batch`` spans wait, encodes each batch once per destination and POSTs it. A
destination that fails loses that batch (counted, logged at most once a minute): a
collector being down must not grow memory on a small board.

The HTTP client here is a few lines over asyncio streams, one connection per batch
(one a second at most): it needs TLS for ``isSecure`` collectors, which the sidecar's
pool does not speak, and a request a second gains nothing from keep-alive.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

log = logging.getLogger("pillion.runtime.tracing")


class Destination:
    """Where one encoding goes: ``encode(spans, service) -> bytes`` POSTed to ``url``."""

    def __init__(self, url: str, encode: Callable[[Sequence, str], bytes], content_type: bytes, label: str,
                 timeout: float = 5.0):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{label}: {url!r} is not an http:// or https:// URL")
        self.url = url
        self.label = label
        self.secure = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.secure else 80)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.encode = encode
        self.content_type = content_type
        self.timeout = timeout
        self.sent = 0
        self.failed = 0
        self._warned = 0.0

    async def send(self, spans: Sequence, service: str) -> None:
        body = self.encode(spans, service)
        try:
            status = await asyncio.wait_for(self._post(body), self.timeout)
            if not 200 <= status < 300:
                raise OSError(f"answered HTTP {status}")
        except (TimeoutError, OSError, ValueError) as exc:
            self.failed += len(spans)
            now = time.monotonic()
            if now - self._warned > 60:
                self._warned = now
                log.warning("tracing: %d span(s) not exported to %s (%s): %s", len(spans), self.label, self.url,
                            exc or type(exc).__name__)
            return
        self.sent += len(spans)

    async def _post(self, body: bytes) -> int:
        ssl = None
        if self.secure:
            import ssl as ssl_module  # only an isSecure collector pays for loading OpenSSL

            ssl = ssl_module.create_default_context()
        reader, writer = await asyncio.open_connection(self.host, self.port, ssl=ssl)
        try:
            head = (f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n").encode()
            writer.write(head + b"Content-Type: " + self.content_type + b"\r\n\r\n" + body)
            await writer.drain()
            status_line = await reader.readline()
            parts = status_line.split()
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
                raise ValueError(f"not an HTTP answer: {status_line[:60]!r}")
            await reader.read()  # the rest until the server closes, so it sees a clean exchange
            return int(parts[1])
        finally:
            writer.close()


class Batcher:
    """A bounded queue of finished spans and the task that exports them in batches."""

    def __init__(self, destinations: Sequence[Destination], service: str, *, max_queue: int = 2048,
                 max_batch: int = 512, interval: float = 1.0):
        self.destinations = list(destinations)
        self.service = service
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.interval = interval
        self.dropped = 0
        self._queue: list = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._warned = -60.0

    def add(self, span) -> None:
        queue = self._queue
        if len(queue) >= self.max_queue:
            self.dropped += 1
            return
        queue.append(span)
        if len(queue) >= self.max_batch and self._wake is not None:
            self._wake.set()

    def __len__(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        reported = 0
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # a bug in an encoder must not stop the export for good
                log.exception("tracing: exporting a batch failed")
            if self.dropped > reported and time.monotonic() - self._warned > 60:
                self._warned = time.monotonic()
                log.warning("tracing: %d span(s) dropped so far: the export queue (%d) was full",
                            self.dropped, self.max_queue)
                reported = self.dropped

    async def flush(self) -> None:
        """Export everything queued now, one batch at a time."""
        while self._queue:
            batch = self._queue[:self.max_batch]
            del self._queue[:self.max_batch]
            if self.destinations:
                await asyncio.gather(*(d.send(batch, self.service) for d in self.destinations))

    async def close(self, timeout: float = 2.0) -> None:
        """Stop the task and export what is left, for at most ``timeout`` seconds (shutdown must not hang)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            log.warning("tracing: %d span(s) not exported at shutdown", len(self._queue))
