"""sd_notify(3) without libsystemd, and what the sidecar tells systemd over it.

The protocol is one datagram per message, ``KEY=value`` lines, sent to the AF_UNIX
socket named by ``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace).
With ``NotifyAccess=main`` systemd only accepts messages from the main pid, so the
variables are removed from our environment once read: a child (the app of
``pillion run``, a binding's subprocess) must not speak for us.

Reload is not supported (configuration is read once at start), so the sidecar never
sends ``RELOADING=1``; under systemd SIGHUP is logged and otherwise ignored instead of
killing the process.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import Mapping, MutableMapping

log = logging.getLogger("pillion.systemd.notify")

# What systemd sets for us; removed from os.environ once read (see the module docstring).
SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def socket_address(value: str) -> str | bytes:
    """The address for ``sendto``: ``@name`` is the abstract socket ``\\0name``."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


class Notifier:
    """Sends sd_notify messages; failures are logged once, never raised (systemd may be gone)."""

    def __init__(self, address: str | bytes):
        self.address = address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._warned = False

    def send(self, *fields: str) -> bool:
        data = "\n".join(fields).encode()
        try:
            self._sock.sendto(data, self.address)
        except OSError as exc:
            if not self._warned:
                log.warning("sd_notify to %r failed: %s", self.address, exc)
                self._warned = True
            return False
        return True

    def close(self) -> None:
        self._sock.close()


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds of ``WATCHDOG_USEC`` when it is meant for ``pid``, else None."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return None
    return int(usec) / 1e6


class SystemdLifecycle:
    """The sidecar's start, readiness, drain and stop as sd_notify messages (``runtime.sidecar.Lifecycle``).

    ``READY=1`` and ``STOPPING=1`` are sent once each; ``STATUS=`` as often as there is
    news. The watchdog (when systemd asked for one) starts with ``starting()`` so a start
    that hangs is caught as well.
    """

    def __init__(self, notifier: Notifier, watchdog_seconds: float | None = None):
        self.notifier = notifier
        self.watchdog_seconds = watchdog_seconds
        self.pinger = None
        self.is_ready = False
        self.is_stopping = False

    def status(self, text: str) -> None:
        self.notifier.send(f"STATUS={text}")

    def starting(self, sidecar) -> None:
        """Called on the event loop at the top of ``Sidecar.start()``."""
        import asyncio

        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, log.warning,
                                    "SIGHUP ignored: Pillion does not reload its configuration; restart it instead")
        except (RuntimeError, ValueError):  # not the main thread: leave SIGHUP alone
            pass
        if self.watchdog_seconds:
            from .watchdog import Pinger, lmdb_probe

            self.pinger = Pinger(self.notifier, self.watchdog_seconds, lambda: lmdb_probe(sidecar))
            self.pinger.start(loop)
            log.info("systemd watchdog: %gs, pinging every %gs", self.watchdog_seconds, self.pinger.policy.period)

    def ready(self, text: str) -> None:
        if not self.is_ready and not self.is_stopping:
            self.is_ready = True
            self.notifier.send("READY=1", f"STATUS={text}")

    def stopping(self, reason: str) -> None:
        if not self.is_stopping:
            self.is_stopping = True
            # systemd stops watching once STOPPING=1 arrives (TimeoutStopSec= applies instead),
            # and the probe must not race the LMDB environments the drain closes.
            if self.pinger is not None:
                self.pinger.stop()
            self.notifier.send("STOPPING=1", f"STATUS=draining ({reason})")

    def stopped(self) -> None:
        if self.pinger is not None:
            self.pinger.stop()
        self.notifier.send("STATUS=stopped")


def from_environ(env: MutableMapping[str, str] | None = None, pid: int | None = None) -> SystemdLifecycle | None:
    """A lifecycle when ``$NOTIFY_SOCKET`` is set, else None; the variables are removed from ``env``."""
    env = os.environ if env is None else env
    path = env.get("NOTIFY_SOCKET", "")
    seconds = watchdog_interval(env, os.getpid() if pid is None else pid)
    for name in SYSTEMD_VARIABLES:
        env.pop(name, None)
    if not path:
        return None
    return SystemdLifecycle(Notifier(socket_address(path)), seconds)


def attach(sidecar) -> SystemdLifecycle | None:
    """Give ``sidecar`` its systemd lifecycle (from the environment), if systemd started us."""
    lifecycle = from_environ()
    if lifecycle is not None:
        sidecar.lifecycle = lifecycle
        lifecycle.status("loading configuration")
    return lifecycle
