"""``configuration.lmdb``: configuration items in LMDB, changed by ``pillion config``.

Dapr has no local configuration store; this one keeps items in an LMDB environment
(default ``<data_dir>/configuration``) that every sidecar on the host and the
``pillion config`` command open together. Writes go through the environment's
writer thread (``state/writer.py``), so they are atomic across processes and each
takes a version from the store-wide counter.

Change feed: every write or delete also records ``c/<version>`` -> key. LMDB has no
cross-process notification, so a store with subscribers polls the counter every
``pollInterval`` (default 500ms; one read transaction, a few microseconds) and,
when it moved, reads the feed past the last version it saw. Feed entries expire
after an hour and the writer's sweep deletes them. Several changes of one key
between two polls arrive as one update carrying the latest item; a deleted key
arrives with an empty value and the version of its deletion.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import uuid
from collections.abc import Iterable
from functools import partial

import lmdb
import orjson

from ...config.durations import parse_duration
from ...config.manifests import Component
from ...errors import ConfigError
from ...runtime import memory as _memory
from ..registry import Context
from ..state import records
from ..state import writer as _writer
from ..state import WouldBlock
from ..state.lmdb import open_environment, parse_metadata, release_environment
from . import ConfigurationItem, ConfigurationStore, StoreError, UpdateHandler

log = logging.getLogger("pillion.configuration.lmdb")

DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE = _memory.lmdb_map_sizes("configuration")
DEFAULT_POLL_INTERVAL = 0.5
FEED_RETENTION = 3600.0  # seconds a change stays in the feed
ITEM = b"i/"
FEED = b"c/"
_VERSION = struct.Struct(">Q")  # big-endian: the feed's keys sort by version


def _poll_interval(component: Component) -> float:
    for index, item in enumerate(component.metadata):
        if item.name.lower() == "pollinterval" and item.value is not None:
            try:
                seconds = parse_duration(item.value.strip())
            except ValueError:
                seconds = 0.0
            if not 0.01 <= seconds <= 60:
                raise ConfigError(component.source.file, component.source.document,
                                  f"spec.metadata[{index}].{item.name}",
                                  f"a duration from 10ms to 60s, such as 500ms (got {item.value.strip()!r})")
            return seconds
    return DEFAULT_POLL_INTERVAL


def _record_change(key: bytes, version: int, txn: lmdb.Transaction, batch: _writer.Batch) -> None:
    txn.put(FEED + _VERSION.pack(version), records.pack(version, batch.now + FEED_RETENTION, None, key), db=batch.db)


def _set(items: list[tuple[bytes, bytes]], txn: lmdb.Transaction, batch: _writer.Batch) -> list[int]:
    """Writer-thread job: store every item and its feed entry; the versions given."""
    versions = []
    for key, value in items:
        version = batch.next_version()
        txn.put(ITEM + key, records.pack(version, 0.0, None, value), db=batch.db)
        _record_change(key, version, txn, batch)
        versions.append(version)
    return versions


def _delete(keys: list[bytes], txn: lmdb.Transaction, batch: _writer.Batch) -> list[bytes]:
    """Writer-thread job: delete the keys that exist and record each deletion in the feed."""
    deleted = []
    for key in keys:
        if txn.delete(ITEM + key, db=batch.db):
            _record_change(key, batch.next_version(), txn, batch)
            deleted.append(key)
    return deleted


def _decode(raw: bytes) -> ConfigurationItem:
    try:
        version, _, _, value = records.unpack(raw)
        body = orjson.loads(value)
        return ConfigurationItem(str(body["value"]), str(version), dict(body.get("metadata") or {}))
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"unreadable configuration record: {exc}") from exc


def _item_json(key: bytes, raw: bytes) -> bytes:
    try:
        version, _, _, value = records.unpack(raw)
        if value[:1] != b"{":
            raise ValueError("not a JSON object")
        return orjson.dumps(key.decode()) + b':{"version":"%d",' % version + value[1:]
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"unreadable configuration record: {exc}") from exc


class _Subscription:
    __slots__ = ("keys", "handler", "since")

    def __init__(self, keys: frozenset[str], handler: UpdateHandler, since: int):
        self.keys = keys  # empty: every key
        self.handler = handler
        self.since = since  # changes up to this version are not for this subscription


class LmdbConfigurationStore(ConfigurationStore):
    """A ``configuration.lmdb`` component; see the module docstring for its behaviour."""

    def __init__(self, component: Component, context: Context):
        self.name = component.name
        self.options = opts = parse_metadata(component, context, subdir="configuration",
                                             default_map_size=DEFAULT_MAP_SIZE,
                                             default_max_map_size=DEFAULT_MAX_MAP_SIZE)
        self.poll_interval = _poll_interval(component)
        self._env = open_environment(component, opts, "configuration store")
        self._subscriptions: dict[str, _Subscription] = {}
        self._watcher: asyncio.Task | None = None
        self._closed = False

    # -- reads -------------------------------------------------------------------------

    # A read is a snapshot of mapped pages on the calling thread: cheaper than a thread hop.
    reads_without_waiting = True

    def _read_now(self, fn):
        """``fn(txn)`` in one read snapshot; WouldBlock when another process resized the map."""
        if self._closed:
            raise StoreError(f"configuration store {self.name!r} is closed")
        env = self._env
        try:
            with env.read_lock, env.env.begin(db=env.db) as txn:
                return fn(txn)
        except lmdb.MapResizedError:
            raise WouldBlock("the map was resized by another process") from None
        except lmdb.Error as exc:
            raise StoreError(f"configuration read failed: {exc}") from exc

    async def _read(self, fn):
        """``_read_now``, adopting a map size another process set when it has to."""
        while True:
            try:
                return self._read_now(fn)
            except WouldBlock:
                await self._env.adopt()

    def _records(self, keys: Iterable[str]):
        """A reader of ``(key, record)`` for the found ``keys`` (every item when there are none)."""
        wanted = [self._key(k) for k in keys]

        def read(txn: lmdb.Transaction) -> list[tuple[bytes, bytes]]:
            if wanted:
                return [(k, raw) for k in wanted if (raw := txn.get(ITEM + k)) is not None]
            found = []
            cursor = txn.cursor()
            positioned = cursor.set_range(ITEM)
            while positioned and cursor.key().startswith(ITEM):
                found.append((cursor.key()[len(ITEM):], cursor.value()))
                positioned = cursor.next()
            return found

        return read

    async def get(self, keys: Iterable[str]) -> dict[str, ConfigurationItem]:
        return {k.decode(): _decode(raw) for k, raw in await self._read(self._records(keys))}

    def get_json_now(self, keys: Iterable[str]) -> bytes:
        """The API's answer, ``{key: {version, value, metadata}}`` as JSON, straight from the records.

        The stored value already is ``{"value", "metadata"}`` as JSON, so the version is
        spliced in front of it instead of decoding and encoding each item. Empty when
        nothing is found; WouldBlock when another process resized the map (then ``get``).
        """
        parts = [_item_json(k, raw) for k, raw in self._read_now(self._records(keys))]
        return b"{" + b",".join(parts) + b"}" if parts else b""

    def _changes(self, txn: lmdb.Transaction, since: int) -> tuple[int, dict[str, tuple[int, ConfigurationItem]]]:
        """The counter and ``{key: (version of its last change, item now)}`` for changes after ``since``."""
        counter = self._env.counter(txn)
        if counter <= since:
            return since, {}
        latest: dict[bytes, int] = {}
        cursor = txn.cursor()
        positioned = cursor.set_range(FEED + _VERSION.pack(since + 1))
        while positioned and cursor.key().startswith(FEED):
            (version,) = _VERSION.unpack(cursor.key()[len(FEED):])
            latest[records.unpack(cursor.value())[3]] = version
            positioned = cursor.next()
        changes = {}
        for key, version in latest.items():
            raw = txn.get(ITEM + key)
            changes[key.decode()] = (version, _decode(raw) if raw is not None else ConfigurationItem("", str(version)))
        return counter, changes

    # -- subscriptions -----------------------------------------------------------------

    async def subscribe(self, keys: Iterable[str], handler: UpdateHandler) -> str:
        wanted = frozenset(self._key(k).decode() for k in keys)
        since = await self._read(self._env.counter)
        subscription_id = str(uuid.uuid4())
        self._subscriptions[subscription_id] = _Subscription(wanted, handler, since)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch(since))
        return subscription_id

    async def unsubscribe(self, subscription_id: str) -> bool:
        if self._subscriptions.pop(subscription_id, None) is None:
            return False
        if not self._subscriptions and self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        return True

    async def _watch(self, since: int) -> None:
        while self._subscriptions:
            await asyncio.sleep(self.poll_interval)
            try:
                counter, changes = await self._read(partial(self._changes, since=since))
            except StoreError as exc:
                log.warning("configuration store %s: reading changes failed: %s", self.name, exc)
                continue
            since = counter
            if changes:
                await self._notify(counter, changes)

    async def _notify(self, counter: int, changes: dict[str, tuple[int, ConfigurationItem]]) -> None:
        calls = []
        for subscription_id, sub in list(self._subscriptions.items()):
            items = {key: item for key, (version, item) in changes.items()
                     if version > sub.since and (not sub.keys or key in sub.keys)}
            sub.since = counter
            if items:
                calls.append(self._call(sub, subscription_id, items))
        await asyncio.gather(*calls)

    async def _call(self, sub: _Subscription, subscription_id: str, items: dict[str, ConfigurationItem]) -> None:
        try:
            await sub.handler(subscription_id, items)
        except Exception:  # one subscriber's failure must not stop the others' updates
            log.exception("configuration store %s: subscription %s failed to take an update", self.name,
                          subscription_id)

    # -- writes (pillion config) ---------------------------------------------------------

    async def set(self, items: dict[str, tuple[str, dict[str, str]]]) -> dict[str, ConfigurationItem]:
        encoded = [(self._key(key), orjson.dumps({"value": value, "metadata": metadata}))
                   for key, (value, metadata) in items.items()]
        versions = await self._submit(partial(_set, encoded))
        return {key: ConfigurationItem(value, str(version), metadata)
                for (key, (value, metadata)), version in zip(items.items(), versions)}

    async def delete(self, keys: Iterable[str]) -> list[str]:
        deleted = await self._submit(partial(_delete, [self._key(k) for k in keys]))
        return [key.decode() for key in deleted]

    async def _submit(self, job):
        if self._closed:
            raise StoreError(f"configuration store {self.name!r} is closed")
        return await self._env.submit(job)

    def _key(self, key: str) -> bytes:
        encoded = key.encode()
        limit = self._env.max_key_size - len(ITEM)
        if not 0 < len(encoded) <= limit:
            raise StoreError(f"configuration key must be 1 to {limit} bytes of UTF-8, got {len(encoded)}")
        return encoded

    async def close(self) -> None:
        """Stop the watcher, then drain and close the environment when this is its last user."""
        if self._closed:
            return
        self._closed = True
        self._subscriptions.clear()
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        await release_environment(self._env)
