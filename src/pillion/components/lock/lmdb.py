"""``lock.lmdb``: distributed locks for every sidecar of a host, kept in LMDB.

The default path (``<data_dir>/locks``) is shared by all sidecars on the host, so
they contend for the same locks. Every operation is a read-check-write job run by
the environment's writer thread (``state/writer.py``): LMDB lets one write
transaction run at a time across processes, which is what makes the check and the
write atomic between sidecars. A lock is a state-format record (``records.pack``)
whose value is the owner and whose expire time is wall-clock epoch seconds, so the
writer's sweep deletes expired locks like expired state; a held lock survives a
restart of its sidecar until it expires.

``keyPrefix`` is read by the API layer (see ``api/lock.py``); here it is only
checked, as Dapr refuses a prefix containing ``||`` when it loads the component.
"""

from __future__ import annotations

from functools import partial

import lmdb

from ...config.manifests import Component
from ...errors import ConfigError
from ...runtime import memory as _memory
from ..registry import Context
from ..state import records
from ..state import writer as _writer
from ..state.lmdb import open_environment, parse_metadata, release_environment
from . import LockStore, StoreError, UnlockStatus

MIB = 1 << 20
# Locks are a few dozen bytes each: 16 MiB to start (4 MiB on 32-bit, see runtime/memory.py).
DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE = _memory.lmdb_map_sizes("lock")


def _check_key_prefix(component: Component) -> None:
    for index, item in enumerate(component.metadata):
        if item.name.lower() == "keyprefix" and item.value and "||" in item.value:
            raise ConfigError(component.source.file, component.source.document, f"spec.metadata[{index}].{item.name}",
                              f"a key prefix without '||' (got {item.value.strip()!r})")


def _holder(txn: lmdb.Transaction, batch: _writer.Batch, key: bytes) -> bytes | None:
    """The owner of the live lock on ``key``, or None (absent, expired or unreadable)."""
    raw = txn.get(key, db=batch.db)
    if raw is None:
        return None
    try:
        _, expire, _, owner = records.unpack(raw)
    except ValueError:
        return None
    return owner if records.is_live(expire, batch.now) else None


def _try_lock(key: bytes, owner: bytes, expiry_seconds: int, txn: lmdb.Transaction, batch: _writer.Batch) -> bool:
    """Writer-thread job: take the lock if nobody holds a live one."""
    if _holder(txn, batch, key) is not None:
        return False
    txn.put(key, records.pack(batch.next_version(), batch.now + expiry_seconds, None, owner), db=batch.db)
    return True


def _unlock(key: bytes, owner: bytes, txn: lmdb.Transaction, batch: _writer.Batch) -> int:
    """Writer-thread job: release the lock when ``owner`` holds it."""
    holder = _holder(txn, batch, key)
    if holder is None:
        return UnlockStatus.LOCK_DOES_NOT_EXIST
    if holder != owner:
        return UnlockStatus.LOCK_BELONGS_TO_OTHERS
    txn.delete(key, db=batch.db)
    return UnlockStatus.SUCCESS


class LmdbLockStore(LockStore):
    """A ``lock.lmdb`` component; see the module docstring for its behaviour."""

    def __init__(self, component: Component, context: Context):
        self.name = component.name
        _check_key_prefix(component)
        self.options = opts = parse_metadata(component, context, subdir="locks", default_map_size=DEFAULT_MAP_SIZE,
                                             default_max_map_size=DEFAULT_MAX_MAP_SIZE)
        self._env = open_environment(component, opts, "lock store")
        self._closed = False

    async def try_lock(self, resource_id: str, owner: str, expiry_seconds: int) -> bool:
        if expiry_seconds <= 0:
            raise StoreError(f"lock expiry must be positive, got {expiry_seconds}")
        key = self._key(resource_id)
        return await self._env.submit(partial(_try_lock, key, owner.encode(), expiry_seconds))

    async def unlock(self, resource_id: str, owner: str) -> int:
        key = self._key(resource_id)
        return int(await self._env.submit(partial(_unlock, key, owner.encode())))

    def _key(self, resource_id: str) -> bytes:
        if self._closed:
            raise StoreError(f"lock store {self.name!r} is closed")
        key = resource_id.encode()
        limit = self._env.max_key_size
        if not 0 < len(key) <= limit:
            raise StoreError(f"lock key must be 1 to {limit} bytes of UTF-8, got {len(key)}")
        return key

    async def close(self) -> None:
        """Drain this environment's queue and close it when this is its last user."""
        if self._closed:
            return
        self._closed = True
        await release_environment(self._env)
