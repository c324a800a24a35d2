"""``state.in-memory``: a dict-backed store for tests and throwaway state.

Nothing survives the process. Every call runs to completion on the event loop without
awaiting, so each call is atomic. ETags are decimal versions from a store-wide counter
(never reused, strictly increasing per key). Expired items are invisible at once and
removed by a sweep that runs on a write at most every ``SWEEP_INTERVAL`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from ...config.manifests import Component
from ..registry import Context
from . import DeleteRequest, Feature, Item, SetRequest, StateStore, StoreError
from . import query as _query
from .records import check_write, expire_at, is_live

SWEEP_INTERVAL = 10.0
TRUTHY = frozenset({"true", "1", "yes", "y", "on"})


@dataclass(frozen=True, slots=True)
class MemoryMetadata:
    actor_state_store: bool = False


def parse_metadata(component: Component) -> MemoryMetadata:
    """Only ``actorStateStore`` matters; other keys (``keyPrefix``…) are ignored."""
    values = {k.lower(): v for k, v in component.metadata_dict().items()}
    return MemoryMetadata(actor_state_store=values.get("actorstatestore", "").strip().lower() in TRUTHY)


class _Entry(NamedTuple):
    version: int
    expire: float  # 0.0 = never
    content_type: str | None
    value: bytes


class MemoryStateStore(StateStore):
    """Dapr's ``state.in-memory``; ``clock`` (epoch seconds) is injectable for tests."""

    def __init__(self, component: Component, context: Context, *, clock: Callable[[], float] = time.time):
        self.name = component.name
        self.options = parse_metadata(component)
        self._clock = clock
        self._data: dict[str, _Entry] = {}
        self._version = 0
        self._next_sweep = clock() + SWEEP_INTERVAL
        self._closed = False
        feats = {Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL, Feature.QUERY_API}
        if self.options.actor_state_store:
            feats.add(Feature.ACTOR)
        self._features = frozenset(feats)

    def features(self) -> frozenset[Feature]:
        return self._features

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._data.get(key)
        return entry if entry is not None and is_live(entry.expire, now) else None

    reads_without_waiting = True

    async def get(self, key: str) -> Item | None:
        return self.get_now(key)

    def get_now(self, key: str) -> Item | None:
        self._check_open()
        entry = self._live(key, self._clock())
        if entry is None:
            return None
        return Item(entry.value, str(entry.version), entry.expire or None, entry.content_type)

    async def bulk_get(self, keys: list[str]) -> list[Item | None]:
        return [await self.get(key) for key in keys]

    async def set(self, requests: list[SetRequest]) -> None:
        self._apply(requests)

    async def delete(self, requests: list[DeleteRequest]) -> None:
        self._apply(requests)

    async def transact(self, operations: list[SetRequest | DeleteRequest]) -> None:
        self._apply(operations)

    async def query(self, prefix: str, query: _query.Query) -> tuple[list[tuple[str, bytes, str | None]], str | None]:
        """Scan the dict for live keys under ``prefix`` (see ``StateStore.query``)."""
        self._check_open()
        now = self._clock()
        cut = len(prefix)
        items = [(key[cut:], entry.value, str(entry.version)) for key, entry in self._data.items()
                 if key.startswith(prefix) and "||" not in key[cut:] and is_live(entry.expire, now)]
        return _query.run(query, items)

    def _apply(self, ops: list[SetRequest | DeleteRequest]) -> None:
        """Stage every op over the current data, then apply all or raise before any."""
        self._check_open()
        now = self._clock()
        staged: dict[str, _Entry | None] = {}
        version = self._version
        for op in ops:
            entry = staged[op.key] if op.key in staged else self._data.get(op.key)
            live = entry if entry is not None and is_live(entry.expire, now) else None
            check_write(op, None if live is None else live.version)
            if isinstance(op, SetRequest):
                version += 1
                staged[op.key] = _Entry(version, expire_at(op.ttl_seconds, now), op.content_type, bytes(op.value))
            else:
                staged[op.key] = None
        self._version = version
        for key, entry in staged.items():
            if entry is None:
                self._data.pop(key, None)
            else:
                self._data[key] = entry
        if now >= self._next_sweep:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + SWEEP_INTERVAL
        dead = [k for k, e in self._data.items() if not is_live(e.expire, now)]
        for key in dead:
            del self._data[key]

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"state store {self.name!r} is closed")

    async def close(self) -> None:
        self._closed = True
        self._data.clear()
