"""Name resolution: app id -> addresses of the sidecars that serve it.

An interface with small implementations: the host registry (sidecars on this
machine), a static table from the Configuration (other hosts), and a chain that
asks each in turn. MQTT-based discovery can join the chain later.
"""

from __future__ import annotations

import abc
import itertools
import time

from .registry import HostRegistry

Address = tuple[str, int]


class Resolver(abc.ABC):
    @abc.abstractmethod
    def resolve(self, app_id: str) -> list[Address]:
        """Addresses of the internal listeners of sidecars for ``app_id``; [] when unknown."""


    def forget(self, app_id: str) -> None:
        """Drop what is cached for ``app_id`` (after a failed call)."""


class HostRegistryResolver(Resolver):
    """Sidecars on this host; answers are cached for ``ttl`` seconds to keep LMDB off the hot path."""

    def __init__(self, registry: HostRegistry, ttl: float = 2.0):
        self._registry = registry
        self._ttl = ttl
        self._cache: dict[str, tuple[float, list[Address]]] = {}

    def resolve(self, app_id: str) -> list[Address]:
        now = time.monotonic()
        hit = self._cache.get(app_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = [
            (e.internal_host if e.internal_host not in ("0.0.0.0", "::") else "127.0.0.1", e.internal_port)
            for e in self._registry.lookup(app_id)
        ]
        if found:
            self._cache[app_id] = (now + self._ttl, found)
        return found

    def forget(self, app_id: str) -> None:
        self._cache.pop(app_id, None)


class StaticResolver(Resolver):
    """``spec.nameResolution: {component: static, configuration: {apps: {id: ["host:port"]}}}``."""

    def __init__(self, apps: dict[str, list[str]]):
        self._apps = {app: [_split(a) for a in addrs] for app, addrs in apps.items()}

    def resolve(self, app_id: str) -> list[Address]:
        return list(self._apps.get(app_id, ()))


class ChainResolver(Resolver):
    def __init__(self, *resolvers: Resolver):
        self._resolvers = resolvers

    def resolve(self, app_id: str) -> list[Address]:
        for resolver in self._resolvers:
            found = resolver.resolve(app_id)
            if found:
                return found
        return []

    def forget(self, app_id: str) -> None:
        for resolver in self._resolvers:
            resolver.forget(app_id)


class RoundRobin:
    """Spreads calls over the instances of one app id."""

    def __init__(self):
        self._counter = itertools.count()

    def pick(self, addresses: list[Address]) -> list[Address]:
        """The addresses in the order to try them: a rotating start, then the others."""
        start = next(self._counter) % len(addresses)
        return addresses[start:] + addresses[:start]


def _split(address: str) -> Address:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)
