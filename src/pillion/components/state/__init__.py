"""The state store interface: what the state API needs from any store.

Keys arrive fully qualified (the API applies Dapr's ``keyPrefix``). Values are the
bytes to keep, byte for byte (JSON text stays JSON text). Every method may be called
from the event loop and must not block it: stores that touch disk do so elsewhere.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...errors import PillionError

if TYPE_CHECKING:
    from .query import Query


class Feature(str, enum.Enum):
    """Dapr's capability names, as the metadata API reports them."""

    ETAG = "ETAG"
    TRANSACTIONAL = "TRANSACTIONAL"
    TTL = "TTL"
    QUERY_API = "QUERY_API"
    ACTOR = "ACTOR"

    def __str__(self) -> str:
        return self.value


class ETagError(PillionError):
    """A write's ETag did not hold: ``kind`` is ``"mismatch"`` (409) or ``"invalid"`` (400)."""

    def __init__(self, kind: str, key: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.key = key


class StoreError(PillionError):
    """Any other failure inside a store (disk full, map full, closed)."""


class WouldBlock(PillionError):
    """``get_now`` cannot answer without waiting; use ``await get`` instead."""


@dataclass(frozen=True, slots=True)
class SetRequest:
    key: str
    value: bytes
    etag: str | None = None
    first_write: bool = False  # options.concurrency == "first-write"
    ttl_seconds: int | None = None  # None: no TTL; -1: never expire
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    key: str
    etag: str | None = None
    first_write: bool = False


@dataclass(slots=True)
class Item:
    """A stored value as read back (not frozen: built on every GET, and frozen init is slow)."""

    value: bytes
    etag: str | None = None
    expire_time: float | None = None  # epoch seconds, for metadata.ttlExpireTime
    content_type: str | None = None


class StateStore(abc.ABC):
    """One configured state store component.

    Writes are atomic per call: ``set``/``delete``/``transact`` apply all of their
    requests or none of them (an ETag failure in one aborts the call). A call returns
    only once its writes are as durable as the store's configuration promises.
    """

    #: Most operations one ``transact`` call may carry; 0: no limit (Dapr's MultiMaxSize).
    max_transaction_operations: int = 0

    #: True when ``get_now`` answers from memory or a memory map without blocking the loop.
    reads_without_waiting: bool = False

    def get_now(self, key: str) -> Item | None:
        """``get`` without a coroutine, for stores whose reads never wait (the GET hot path).

        Raises WouldBlock when this particular read would have to wait.
        """
        raise WouldBlock("this store has no synchronous reads")

    @abc.abstractmethod
    def features(self) -> frozenset[Feature]:
        """What this store supports; the API refuses what is not here."""

    @abc.abstractmethod
    async def get(self, key: str) -> Item | None:
        """The live item, or None when missing or expired."""

    async def bulk_get(self, keys: list[str]) -> list[Item | None]:
        """Items in the order asked for."""
        return [await self.get(key) for key in keys]

    @abc.abstractmethod
    async def set(self, requests: list[SetRequest]) -> None:
        """Upsert all, atomically; raises ETagError (and writes nothing) on a failed ETag."""

    @abc.abstractmethod
    async def delete(self, requests: list[DeleteRequest]) -> None:
        """Delete all, atomically; deleting a missing key without an ETag succeeds."""

    @abc.abstractmethod
    async def transact(self, operations: list[SetRequest | DeleteRequest]) -> None:
        """Apply upserts and deletes in order, atomically."""

    async def query(self, prefix: str, query: "Query") -> tuple[list[tuple[str, bytes, str | None]], str | None]:
        """Run a state query over the live keys under ``prefix``: ``(page, next_token)``.

        Optional: only stores that list ``Feature.QUERY_API`` implement it. ``prefix``
        is the binding's full key prefix (``"app||"``, or ``""``); keys whose rest
        contains ``||`` (another scheme's keys, actor state) are not considered. Each
        result is ``(key without the prefix, stored value bytes, etag or None)``; the
        page and token follow ``query.run`` (see ``components/state/query.py``).
        Raises QueryError for a query the store cannot run, StoreError on failure.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support the query API")

    async def close(self) -> None:
        """Release files and threads; further calls raise StoreError."""
