"""The systemd watchdog: ``WATCHDOG=1`` only while the sidecar really makes progress.

Two signs of life are required for each ping:

* the event loop ran a heartbeat callback recently (a hung or blocked loop stops them);
* LMDB answered a read transaction recently (a stuck environment stops them).

The pings come from a thread of their own that runs the LMDB probe itself, so a probe
that never returns stops the pings too, without any timeout bookkeeping. When pings
stop, systemd kills the service after ``WatchdogSec`` and ``Restart=`` brings it back.

``WatchdogPolicy`` is the decision alone, with the time passed in, so it can be tested
with a fake clock; ``Pinger`` is the thread and the loop callback around it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("pillion.systemd.watchdog")

_PROBE_KEY = b"\0pillion-watchdog-probe"  # any key: the read transaction is the probe


class WatchdogPolicy:
    """Whether to ping now, from the last heartbeat and the last good LMDB probe.

    Args:
        interval: ``WATCHDOG_USEC`` in seconds; systemd acts when no ping came for that long.
    Pings are due every ``period`` (half the interval, as sd_watchdog_enabled(3) advises);
    a sign of life older than ``period`` withholds the ping.
    """

    def __init__(self, interval: float):
        if interval <= 0:
            raise ValueError("the watchdog interval must be positive")
        self.interval = interval
        self.period = interval / 2
        self.beat_every = self.period / 2
        self.last_beat: float | None = None
        self.last_probe: float | None = None

    def beat(self, now: float) -> None:
        """The event loop ran our callback at ``now``."""
        self.last_beat = now

    def probed(self, now: float, ok: bool) -> None:
        """An LMDB probe finished at ``now``; only a good one counts."""
        if ok:
            self.last_probe = now

    def why_not(self, now: float) -> str | None:
        """None when a ping is deserved, else the reason it is withheld."""
        if self.last_beat is None or now - self.last_beat > self.period:
            return "the event loop made no progress"
        if self.last_probe is None or now - self.last_probe > self.period:
            return "LMDB did not answer"
        return None

    def should_ping(self, now: float) -> bool:
        return self.why_not(now) is None


class Pinger:
    """Runs the policy: a heartbeat on the loop, a probe-and-ping thread beside it."""

    def __init__(self, notifier, interval: float, probe: Callable[[], bool],
                 clock: Callable[[], float] = time.monotonic):
        self.notifier = notifier
        self.policy = WatchdogPolicy(interval)
        self.probe = probe
        self.clock = clock
        self.pings = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop = None
        self._handle = None

    def start(self, loop) -> None:
        self._loop = loop
        self._beat()
        self._thread = threading.Thread(target=self._run, name="pillion-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Idempotent; waits briefly for a probe in flight, never for a hung one."""
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)

    def _beat(self) -> None:
        self.policy.beat(self.clock())
        if not self._stop.is_set():
            self._handle = self._loop.call_later(self.policy.beat_every, self._beat)

    def _run(self) -> None:
        withheld = None
        while not self._stop.wait(self.policy.period):
            try:
                ok = self.probe()
            except Exception as exc:  # a probe failure is a missed ping, never a dead thread
                log.debug("watchdog probe failed: %s", exc)
                ok = False
            now = self.clock()
            self.policy.probed(now, ok)
            reason = self.policy.why_not(now)
            if reason is None:
                if self.notifier.send("WATCHDOG=1"):
                    self.pings += 1
                if withheld:
                    log.info("watchdog pings resumed")
            elif reason != withheld:
                log.warning("watchdog ping withheld: %s", reason)
            withheld = reason


def lmdb_probe(sidecar) -> bool:
    """One read transaction on each LMDB environment the sidecar depends on.

    The host registry always exists once the sidecar started; LMDB state stores share
    an environment wrapper whose ``read_lock`` a map resize holds, so the probe takes it
    as every reader does (a stuck resize then stops the pings as well).
    """
    registry = sidecar.registry
    if registry is not None:
        with registry._env.begin() as txn:  # the registry has no public handle on its env
            txn.get(_PROBE_KEY)
    for binding in list(sidecar.state_stores.values()):
        shared = getattr(binding.store, "_env", None)
        env = getattr(shared, "env", None)
        if env is None:
            continue
        with shared.read_lock, env.begin() as txn:
            txn.get(_PROBE_KEY)
    return True
