"""Run the broker on a TCP listener: ``serve(host, port)``; ``run()`` for the CLI."""

from __future__ import annotations

import asyncio
import logging
import signal

from .broker import Broker
from .protocol import MQTTProtocol

log = logging.getLogger("pillion.broker.server")

TICK = 1.0  # seconds between broker ticks (delayed wills, session expiry)


class BrokerServer:
    """A listening broker: the ``asyncio`` server, the ``Broker`` and its tick timer."""

    def __init__(self, broker: Broker, server, loop: asyncio.AbstractEventLoop) -> None:
        self.broker = broker
        self.server = server
        self.loop = loop
        self._timer = loop.call_later(TICK, self._tick)

    @property
    def sockets(self):
        return self.server.sockets

    def _tick(self) -> None:
        self.broker.tick(self.loop.time())
        self._timer = self.loop.call_later(TICK, self._tick)

    def close(self) -> None:
        self._timer.cancel()
        self.server.close()

    async def wait_closed(self) -> None:
        await self.server.wait_closed()


async def serve(host: str = "127.0.0.1", port: int = 1883, *, broker: Broker | None = None,
                **broker_options) -> BrokerServer:
    """Start listening on ``host:port``; ``broker_options`` go to ``Broker``."""
    broker = broker or Broker(**broker_options)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: MQTTProtocol(broker, loop), host, port)
    return BrokerServer(broker, server, loop)


async def run(host: str = "127.0.0.1", port: int = 1883, **broker_options) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await serve(host, port, **broker_options)
    addresses = ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in server.sockets)
    log.info("MQTT broker listening on %s", addresses)
    try:
        await stop.wait()
    finally:
        server.close()
        log.info("MQTT broker stopped")
