"""The lock store interface: what the distributed lock API needs from any store.

Resource ids arrive fully qualified (the API applies Dapr's ``keyPrefix``, giving
``lock||<appid>||<resourceId>`` by default), so stores never see unprefixed ids.
Every method may be called from the event loop and must not block it.
"""

from __future__ import annotations

import abc
import enum

from ..state import StoreError

__all__ = ["LockStore", "StoreError", "UnlockStatus"]


class UnlockStatus(enum.IntEnum):
    """Dapr's ``UnlockResponse.Status``; the HTTP API sends the number."""

    SUCCESS = 0
    LOCK_DOES_NOT_EXIST = 1
    LOCK_BELONGS_TO_OTHERS = 2
    INTERNAL_ERROR = 3


class LockStore(abc.ABC):
    """One configured lock store component; failures raise StoreError."""

    name: str

    @abc.abstractmethod
    async def try_lock(self, resource_id: str, owner: str, expiry_seconds: int) -> bool:
        """Take the lock unless someone holds an unexpired one (its owner included)."""

    @abc.abstractmethod
    async def unlock(self, resource_id: str, owner: str) -> int:
        """Release a lock ``owner`` holds; an ``UnlockStatus`` value."""

    async def close(self) -> None:
        """Release what the store holds; calls after this raise StoreError."""
