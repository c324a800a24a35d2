"""asyncio adapter: one ``MQTTProtocol`` per connection around a sans-IO ``Session``.

``data_received`` feeds the session and writes what it returns; one ``loop.call_at``
timer follows ``session.next_deadline()``. Output caused by other connections arrives
through ``session.notify`` and is written once per loop iteration. Backpressure: when
the transport pauses writing, the session stops moving messages to the wire (they wait
in its bounded queue, see ``session.py``) and reading stops too, so a client that does
not read cannot make the broker buffer without bound.
"""

from __future__ import annotations

import asyncio
import logging

from .broker import Broker

log = logging.getLogger("pillion.broker.protocol")


class MQTTProtocol(asyncio.Protocol):
    __slots__ = ("broker", "loop", "server", "session", "transport", "_timer", "_timer_at", "_flush_scheduled",
                 "_peer")  # fmt: skip

    def __init__(self, broker: Broker, loop: asyncio.AbstractEventLoop, server=None) -> None:
        self.broker = broker
        self.loop = loop
        self.server = server  # a BrokerServer: connection limit and shutdown
        self.session = None
        self.transport = None
        self._timer = None
        self._timer_at = None
        self._flush_scheduled = False
        self._peer = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._peer = transport.get_extra_info("peername")
        if self.server is not None and not self.server.admit(self):
            transport.abort()
            return
        self.session = self.broker.session(self.loop.time())
        self.session.notify = self._wake
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.session is None:
            return
        try:
            out, close = self.session.feed(data, self.loop.time())
        except Exception:  # the connection boundary: a bug here must not reach other clients
            log.exception("closing %s (%s) after an internal error", self.session.client_id, self._peer)
            self.transport.close()
            return
        self._act(out, close)
        if self.session.pending_auth is not None:
            self.loop.create_task(self._authenticate(*self.session.pending_auth))

    async def _authenticate(self, username: str, password: bytes | None) -> None:
        """The password check runs in a thread (scrypt costs ~50 ms); reading waits for it."""
        self.transport.pause_reading()
        try:
            allowed = await self.server.authenticate(username, password)
        except Exception:  # the connection boundary, as in data_received
            log.exception("password check failed for %r (%s)", username, self._peer)
            allowed = False
        if self.transport.is_closing():
            return
        self.transport.resume_reading()
        self._act(*self.session.authenticated(allowed, self.loop.time()))

    def connection_lost(self, exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.session is None:  # refused in connection_made
            return
        if self.server is not None:
            self.server.release(self)
        self.session.connection_lost(self.loop.time())
        self.session.notify = None

    def shutdown(self) -> None:
        """The broker stops: a 5.0 client is told (DISCONNECT 0x8B), then the socket closes."""
        self._act(*self.session.server_shutdown(self.loop.time()))

    def pause_writing(self) -> None:
        self.session.pause_writing()
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()
        self.session.resume_writing()
        self._flush()

    # -- internals ----------------------------------------------------------------------

    def _act(self, out: bytes, close: str | None) -> None:
        if out and not self.transport.is_closing():
            self.transport.write(out)
        if close is not None:
            if not self.transport.is_closing():
                log.debug("closing %s (%s): %s", self.session.client_id, self._peer, close)
                self.transport.close()
        else:
            self._arm()

    def _wake(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.transport is None or self.transport.is_closing():
            return
        self._act(self.session.data_to_send(), self.session.close_reason)

    def _arm(self) -> None:
        deadline = self.session.next_deadline()
        if self._timer is not None:
            if deadline == self._timer_at:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline

    def _on_timer(self) -> None:
        self._timer = None
        self._act(*self.session.on_timer(self.loop.time()))
