"""``state.lmdb``: the durable state store, one LMDB environment per path.

Every sidecar of a host may point at the same path; LMDB's lock file makes them
safe together. Writes go through the environment's writer thread with group commit
(see ``writer.py``); reads open a read-only transaction on the calling thread (the
event loop) and never wait for the writer. Records are laid out by ``records.py``.

Public behaviour, for the API layer:

* ``Item.etag`` is the item's version as a decimal string ("1", "42", ...): a
  store-wide counter, so versions grow strictly per key and are never reused, even
  after a delete. ``Item.expire_time`` is epoch seconds or None.
* ETagError kinds: ``"invalid"`` (ETag not a decimal u64; message "invalid etag
  value") and ``"mismatch"`` (wrong version, key absent or expired, or first-write
  on a live key; message "possible etag mismatch. error from state store").
* Keys are UTF-8, 1 to 511 bytes (LMDB's limit): writing a longer or empty key raises
  StoreError; reading one returns None.
* ``ttl_seconds`` > 0 sets an expiry; None, 0 and -1 mean never.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from functools import partial

import lmdb

from ...config.manifests import Component
from ...errors import ConfigError
from ...runtime import memory as _memory
from ..registry import Context
from . import DeleteRequest, Feature, Item, SetRequest, StateStore, StoreError, WouldBlock
from . import query as _query
from . import records
from . import writer as _writer

GIB = 1 << 30
MIB = 1 << 20
# 64-bit: 1 GiB, growing to 64 GiB; 32-bit: held within the process's LMDB budget (runtime/memory.py).
DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE = _memory.lmdb_map_sizes("state")
MIN_MAP_SIZE = 64 * 1024
DURABILITY = {  # name -> (sync, metasync)
    "fsync": (True, True),  # every acknowledged write survives power loss
    "nometasync": (True, False),  # power loss may drop the last transaction, never corrupts
    "nosync": (False, False),  # power loss / OS crash may drop recent writes; process crash is safe
}
TRUTHY = frozenset({"true", "1", "yes", "y", "on"})


@dataclass(frozen=True, slots=True)
class LmdbMetadata:
    path: str
    map_size: int = DEFAULT_MAP_SIZE
    max_map_size: int = DEFAULT_MAX_MAP_SIZE
    durability: str = "fsync"
    actor_state_store: bool = False


def parse_metadata(component: Component, context: Context, *, subdir: str = "state",
                   default_map_size: int = DEFAULT_MAP_SIZE,
                   default_max_map_size: int = DEFAULT_MAX_MAP_SIZE) -> LmdbMetadata:
    """Typed metadata; names are case-insensitive, unknown ones (``keyPrefix``…) ignored.

    The lock store reads the same settings, with its own directory and map size.

    Raises:
        ConfigError: naming ``spec.metadata[i].<name>`` and what was expected.
    """
    src = component.source
    values: dict[str, tuple[int, str, str]] = {}
    for index, item in enumerate(component.metadata):
        if item.value is not None:
            values[item.name.lower()] = (index, item.name, item.value.strip())

    def fail(name: str, expected: str):
        index, original, _ = values[name]
        raise ConfigError(src.file, src.document, f"spec.metadata[{index}].{original}", expected)

    def size(name: str, default: int) -> int:
        if name not in values:
            return default
        text = values[name][2]
        if not text.isdigit() or int(text) < MIN_MAP_SIZE:
            fail(name, f"a whole number of bytes, at least {MIN_MAP_SIZE} (got {text!r})")
        return int(text)

    path = values["path"][2] if "path" in values else os.path.join(context.data_dir, subdir)
    if not path:
        fail("path", "a directory path for the LMDB environment")
    durability = values["durability"][2].lower() if "durability" in values else "fsync"
    if durability not in DURABILITY:
        fail("durability", f"one of {', '.join(DURABILITY)} (got {values['durability'][2]!r})")
    map_size = size("mapsize", default_map_size)
    max_map_size = max(size("maxmapsize", max(default_max_map_size, map_size)), map_size)
    actor = values.get("actorstatestore", (0, "", ""))[2].lower() in TRUTHY
    return LmdbMetadata(os.path.expanduser(path), map_size, max_map_size, durability, actor)


def open_environment(component: Component, opts: LmdbMetadata, what: str) -> _writer.SharedEnv:
    """The environment at ``opts.path``, shared with the other LMDB components that name it.

    Raises StoreError when it cannot be opened, ConfigError when another component opened
    it with other durability flags (one environment has one set).
    """
    sync, metasync = DURABILITY[opts.durability]
    try:
        env = _writer.acquire(opts.path, map_size=opts.map_size, max_map_size=opts.max_map_size,
                              sync=sync, metasync=metasync)
    except (lmdb.Error, OSError) as exc:
        raise StoreError(f"cannot open {what} {component.name!r} at {opts.path}: {exc}") from exc
    if (env.sync, env.metasync) != (sync, metasync):
        _writer.unref(env)  # another user remains, so nothing to stop
        index = [i for i, m in enumerate(component.metadata) if m.name.lower() == "durability"]
        field = f"spec.metadata[{index[0]}].durability" if index else "spec.metadata"
        raise ConfigError(component.source.file, component.source.document, field,
                          f"the durability the other LMDB component at {opts.path} uses")
    return env


async def release_environment(env: _writer.SharedEnv) -> None:
    """Drop one user; drain the writer and close the environment when it was the last."""
    if _writer.unref(env):
        await env.stop()


def _apply(ops: list[SetRequest | DeleteRequest], txn: lmdb.Transaction, batch: _writer.Batch) -> None:
    """One job, run by the writer thread inside its nested transaction."""
    db = batch.db
    for op in ops:
        key = op.key.encode()
        is_set = isinstance(op, SetRequest)
        # A last-write-wins set has nothing to check: skip reading the current record.
        if op.etag or op.first_write or not is_set:
            raw = txn.get(key, db=db)
            current = None
            if raw is not None:
                version, expire = records.unpack_header(raw)
                if records.is_live(expire, batch.now):
                    current = version
            records.check_write(op, current)
            if not is_set:
                if raw is not None:
                    txn.delete(key, db=db)
                continue
        record = records.pack(batch.next_version(), records.expire_at(op.ttl_seconds, batch.now),
                              op.content_type, op.value)
        txn.put(key, record, db=db)


class LmdbStateStore(StateStore):
    """A ``state.lmdb`` component; see the module docstring for its behaviour."""

    # One transaction is one nested LMDB transaction in the writer's batch: bound it.
    max_transaction_operations = 10_000

    def __init__(self, component: Component, context: Context):
        self.name = component.name
        self.options = opts = parse_metadata(component, context)
        self._env = open_environment(component, opts, "state store")
        self._closed = False
        feats = {Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL, Feature.QUERY_API}
        if opts.actor_state_store:
            feats.add(Feature.ACTOR)
        self._features = frozenset(feats)

    @property
    def commits(self) -> int:
        """Write transactions committed on this store's environment (shared by its users)."""
        return self._env.commits

    def features(self) -> frozenset[Feature]:
        return self._features

    # Reads take a read-only snapshot on the calling thread: LMDB readers never wait for
    # the writer, and a read of a memory-mapped page costs less than a thread hop.
    reads_without_waiting = True

    async def get(self, key: str) -> Item | None:
        return (await self.bulk_get([key]))[0]

    def get_now(self, key: str) -> Item | None:
        self._check_open()
        env = self._env
        encoded = key.encode()
        if not 0 < len(encoded) <= env.max_key_size:
            return None
        try:
            with env.read_lock:
                now = time.time()
                with env.env.begin(db=env.db) as txn:
                    raw = txn.get(encoded)
        except lmdb.MapResizedError:
            raise WouldBlock("the map was resized by another process") from None
        except lmdb.Error as exc:
            raise StoreError(f"state read failed: {exc}") from exc
        return self._item(raw, now)

    async def bulk_get(self, keys: list[str]) -> list[Item | None]:
        """All keys from one read snapshot, in the order asked for."""
        self._check_open()
        env = self._env
        encoded = [k.encode() for k in keys]
        while True:
            try:
                with env.read_lock:
                    now = time.time()
                    with env.env.begin(db=env.db) as txn:
                        raws = [txn.get(k) if 0 < len(k) <= env.max_key_size else None for k in encoded]
                break
            except lmdb.MapResizedError:
                await env.adopt()
            except lmdb.Error as exc:
                raise StoreError(f"state read failed: {exc}") from exc
        return [self._item(raw, now) for raw in raws]

    @staticmethod
    def _item(raw: bytes | None, now: float) -> Item | None:
        if raw is None:
            return None
        try:
            version, expire, content_type, value = records.unpack(raw)
        except ValueError as exc:
            raise StoreError(f"unreadable state record: {exc}") from exc
        if not records.is_live(expire, now):
            return None
        return Item(value, str(version), expire or None, content_type)

    async def query(self, prefix: str, query: _query.Query) -> tuple[list[tuple[str, bytes, str | None]], str | None]:
        """Scan the keys under ``prefix`` in one read snapshot (see ``StateStore.query``).

        The scan and the engine run in a worker thread (``asyncio.to_thread``), so a
        large range does not stall the event loop; the thread holds ``read_lock`` for
        the life of its read transaction, as the writer's ``set_mapsize`` requires.
        """
        self._check_open()
        env = self._env
        while True:
            try:
                return await asyncio.to_thread(self._scan, prefix, query)
            except lmdb.MapResizedError:
                await env.adopt()
            except lmdb.Error as exc:
                raise StoreError(f"state query failed: {exc}") from exc

    def _scan(self, prefix: str, query: _query.Query) -> tuple[list[tuple[str, bytes, str | None]], str | None]:
        env = self._env
        start = prefix.encode()
        with env.read_lock:
            now = time.time()
            with env.env.begin(db=env.db) as txn:
                return _query.run(query, self._live_under(txn.cursor(), start, now))

    @staticmethod
    def _live_under(cursor: lmdb.Cursor, start: bytes, now: float):
        """``(key without prefix, value, etag)`` for live records whose key starts with ``start``."""
        positioned = cursor.set_range(start) if start else cursor.first()
        cut = len(start)
        while positioned:
            key = cursor.key()
            if not key.startswith(start):
                break
            rest = key[cut:]
            if b"||" not in rest:
                try:
                    version, expire, _, value = records.unpack(cursor.value())
                except ValueError:
                    value = None  # not a pillion record: invisible, as to get()
                if value is not None and records.is_live(expire, now):
                    yield rest.decode("utf-8", "replace"), value, str(version)
            positioned = cursor.next()

    async def set(self, requests: list[SetRequest]) -> None:
        await self._write(requests)

    async def delete(self, requests: list[DeleteRequest]) -> None:
        await self._write(requests)

    async def transact(self, operations: list[SetRequest | DeleteRequest]) -> None:
        await self._write(operations)

    async def _write(self, ops: list[SetRequest | DeleteRequest]) -> None:
        self._check_open()
        if not ops:
            return
        limit = self._env.max_key_size
        for op in ops:
            size = len(op.key.encode())
            if not 0 < size <= limit:
                raise StoreError(f"state key must be 1 to {limit} bytes of UTF-8, got {size}")
        await self._env.submit(partial(_apply, list(ops)))

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"state store {self.name!r} is closed")

    async def close(self) -> None:
        """Drain this environment's queue and close it when this is its last user."""
        if self._closed:
            return
        self._closed = True
        await release_environment(self._env)
