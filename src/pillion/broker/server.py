"""The broker at the asyncio edge: listeners, persistence, ``$SYS`` and the tick.

``BrokerServer.start()`` restores the LMDB state (when ``data_dir`` is set), opens
the plain and TLS listeners and starts one timer for delayed wills, session expiry
and ``$SYS`` updates. The sidecar runs one inside its process; ``pillion broker``
runs one alone (``run``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import signal
import time

from .._version import __version__
from .broker import Broker
from .local import LocalClient
from .options import BrokerOptions
from .packets import Publish
from .protocol import MQTTProtocol

log = logging.getLogger("pillion.broker.server")

TICK = 1.0  # seconds between broker ticks (delayed wills, session expiry)
AUTH_CACHE_SIZE = 4096  # verified (username, password) pairs remembered, as keyed digests


def tls_context(options: BrokerOptions):
    import ssl  # about a megabyte of RSS; only brokers with a TLS listener pay it

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(options.cert_file, options.key_file)
    if options.ca_file:
        context.load_verify_locations(options.ca_file)
        context.verify_mode = ssl.CERT_REQUIRED if options.require_certificate else ssl.CERT_OPTIONAL
    return context


class BrokerServer:
    """A running broker: ``Broker``, its listeners, its store and its timer."""

    def __init__(self, options: BrokerOptions, broker: Broker | None = None) -> None:
        options.check()
        self.options = options
        self.broker = broker or Broker(max_packet_size=options.max_packet_size, max_queued=options.max_queued,
                                       receive_maximum=options.receive_maximum)
        if options.password_file or options.acl_file:
            from .auth import Acl, PasswordFile

            self.broker.passwords = PasswordFile.load(options.password_file) if options.password_file else None
            self.broker.acl = Acl.load(options.acl_file) if options.acl_file else None
        self.broker.anonymous = options.anonymous_allowed
        self._durable_waiters: list[tuple[int, asyncio.Future]] = []  # (journal batch, publish)
        self._auth_key = secrets.token_bytes(32)
        self._verified: set[tuple[str, bytes]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.servers: list[asyncio.AbstractServer] = []
        self.connections: set[MQTTProtocol] = set()
        self.refused = 0
        self.persistence = None
        self.started_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._next_sys = 0.0
        self._sys_last: dict[str, bytes] = {}

    @property
    def sockets(self):
        return [sock for server in self.servers for sock in server.sockets]

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.started_at = self.loop.time()
        if self.options.persistence and self.options.data_dir:
            await self._open_store(os.path.join(os.path.expanduser(self.options.data_dir), "broker"))
        try:
            if self.options.port:
                self.servers.append(await self.loop.create_server(self._protocol, self.options.host, self.options.port))
            if self.options.tls_port:
                host = self.options.tls_host or self.options.host
                self.servers.append(await self.loop.create_server(self._protocol, host, self.options.tls_port,
                                                                  ssl=tls_context(self.options)))
        except BaseException:
            await self.close()
            raise
        self._timer = self.loop.call_later(TICK, self._tick)
        self._publish_sys()

    async def _open_store(self, path: str) -> None:
        from .store import BrokerStore, Persistence

        store = await self.loop.run_in_executor(None, BrokerStore, path)
        try:
            restored = await self.loop.run_in_executor(None, store.load)
        except BaseException:
            store.close()
            raise
        self.broker.restore(restored, self.loop.time(), time.time())
        self.persistence = Persistence(store, self.broker.journal, self.loop, self._on_durable, self._on_failure)
        log.info("broker state restored from %s: %d retained, %d sessions", path, len(restored.retained),
                 len(restored.sessions))

    def _protocol(self) -> MQTTProtocol:
        return MQTTProtocol(self.broker, self.loop, self)

    def admit(self, protocol: MQTTProtocol) -> bool:
        """Count a new connection; False when ``max_connections`` is reached (it gets closed)."""
        limit = self.options.max_connections
        if limit and len(self.connections) >= limit:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning("refusing connections: max_connections=%d reached (%d refused so far)", limit,
                            self.refused)
            return False
        self.connections.add(protocol)
        return True

    def release(self, protocol: MQTTProtocol) -> None:
        self.connections.discard(protocol)

    async def authenticate(self, username: str, password: bytes | None) -> bool:
        """Check a password off the loop; a pair verified before is answered from memory.

        The memory holds keyed digests, not passwords, so reconnect storms do not cost
        one key derivation each.
        """
        digest = hmac.new(self._auth_key, password or b"", hashlib.sha256).digest()
        if (username, digest) in self._verified:
            return True
        allowed = await self.loop.run_in_executor(None, self.broker.passwords.check, username, password)
        if allowed:
            if len(self._verified) >= AUTH_CACHE_SIZE:
                self._verified.clear()
            self._verified.add((username, digest))
        return allowed

    def local_client(self, client_id: str, **options) -> LocalClient:
        """An in-process client (``broker/local.py``); ``options`` go to ``LocalClient``."""
        return LocalClient(self.broker, client_id, self.loop.time, **options)

    async def publish(self, message: Publish, sender: str | None = None) -> None:
        """Route ``message`` from inside the process; return once what it stored is durable.

        Raises OSError when a subscriber's queue refused it or the store could not commit it.
        """
        journal = self.broker.journal
        before = len(journal.ops) if journal is not None else 0
        if self.broker.route(message, sender):
            raise OSError("a subscriber's queue is full; publish again later")
        if journal is not None and len(journal.ops) > before:
            future = self.loop.create_future()
            self._durable_waiters.append((journal.batch, future))
            await future

    def _settle_publishes(self, exc: BaseException | None) -> None:
        durable = self.broker.journal.durable
        waiting = []
        for batch, future in self._durable_waiters:
            if batch > durable:
                waiting.append((batch, future))
            elif future.done():
                continue
            elif exc is None:
                future.set_result(None)
            else:
                future.set_exception(exc)
        self._durable_waiters = waiting

    def _on_durable(self, sessions) -> None:
        for session in sessions:
            session.release_acks()
        self._settle_publishes(None)

    def _on_failure(self, sessions, exc: BaseException) -> None:
        for session in sessions:
            session.abort(f"could not persist its messages: {exc}")
        self._settle_publishes(OSError(f"the broker could not persist the message: {exc}"))

    def _tick(self) -> None:
        now = self.loop.time()
        self.broker.tick(now)
        if self.options.sys_interval and now >= self._next_sys:
            self._publish_sys()
        self._timer = self.loop.call_later(TICK, self._tick)

    def _publish_sys(self) -> None:
        """Retained ``$SYS/broker/...`` statistics, republished only when they change."""
        now = self.loop.time()
        self._next_sys = now + self.options.sys_interval
        broker = self.broker
        values = {
            "version": f"pillion {__version__}",
            "uptime": f"{int(now - self.started_at)} seconds",
            "clients/connected": broker.connected,
            "clients/total": len(broker.clients),
            "messages/received": broker.messages_received,
            "messages/sent": broker.messages_sent,
            "messages/dropped": broker.messages_dropped,
            "retained messages/count": len(broker.retained),
        }
        for name, value in values.items():
            payload = str(value).encode()
            topic = f"$SYS/broker/{name}"
            if self._sys_last.get(topic) != payload:
                self._sys_last[topic] = payload
                broker.publish_internal(Publish(topic, payload, 0, True))

    async def close(self) -> None:
        """Stop listening, disconnect clients, commit what is collected."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for server in self.servers:
            server.close()
        for protocol in list(self.connections):
            protocol.shutdown()
        for server in self.servers:
            await server.wait_closed()
        self.servers = []
        if self.persistence is not None:
            await self.persistence.close()
            self.persistence = None


async def is_pillion_broker(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether ``host:port`` is a Pillion broker: its retained ``$SYS/broker/version`` says so."""
    from . import codec
    from .packets import Connect, Subscribe, SubscriptionOptions

    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        writer.write(codec.encode(Connect(keepalive=10, client_id=f"pillion-probe-{secrets.token_hex(4)}"), 4)
                     + codec.encode(Subscribe(1, [("$SYS/broker/version", SubscriptionOptions(0))]), 4))
        buffer = b""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            chunk = await asyncio.wait_for(reader.read(4096), max(remaining, 0.01))
            if not chunk:
                return False
            buffer += chunk
            while True:
                packet, used = codec.decode(buffer, 4, 1 << 20)
                if packet is None:
                    break
                buffer = buffer[used:]
                if isinstance(packet, Publish):
                    return packet.payload.startswith(b"pillion")
    except (OSError, asyncio.TimeoutError, ValueError):
        return False
    finally:
        writer.close()


async def serve(options: BrokerOptions | None = None, **overrides) -> BrokerServer:
    """A started ``BrokerServer``; ``overrides`` are ``BrokerOptions`` fields."""
    server = BrokerServer((options or BrokerOptions()).merged(**overrides))
    await server.start()
    return server


async def run(options: BrokerOptions) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await serve(options)
    addresses = ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in server.sockets)
    log.info("MQTT broker listening on %s", addresses or "no socket (in-process only)")
    try:
        await stop.wait()
    finally:
        await server.close()
        log.info("MQTT broker stopped")
