"""The configuration store interface: what the configuration API needs from any store.

Dapr's contract (contrib ``configuration/store.go``): get items by key (all when no
key is given), and subscribe to changes with a handler that receives update events.
Pillion's stores are local, so they also take writes (``set``/``delete``) for the
``pillion config`` command; the HTTP API never writes.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from ..state import StoreError

__all__ = ["ConfigurationItem", "ConfigurationStore", "StoreError", "UpdateHandler"]


@dataclass(frozen=True)
class ConfigurationItem:
    """One item as Dapr serialises it: a string value, its version and free metadata."""

    value: str
    version: str
    metadata: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"value": self.value, "version": self.version, "metadata": self.metadata}


# (subscription id, changed items by key) -> awaited before the next update is sent.
UpdateHandler = Callable[[str, dict[str, ConfigurationItem]], Awaitable[None]]


class ConfigurationStore(abc.ABC):
    """One configured configuration store component; failures raise StoreError."""

    name: str
    reads_without_waiting = False  # True: get_json_now answers in the calling thread

    def get_json_now(self, keys: Iterable[str]) -> bytes:
        """``get`` as the API's JSON answer (empty when nothing is found), without waiting."""
        raise NotImplementedError

    @abc.abstractmethod
    async def get(self, keys: Iterable[str]) -> dict[str, ConfigurationItem]:
        """The items that exist among ``keys``; every item when ``keys`` is empty."""

    @abc.abstractmethod
    async def subscribe(self, keys: Iterable[str], handler: UpdateHandler) -> str:
        """Call ``handler`` for each later change of ``keys`` (every key when empty); the subscription id."""

    @abc.abstractmethod
    async def unsubscribe(self, subscription_id: str) -> bool:
        """Stop a subscription; False when no subscription has that id."""

    @abc.abstractmethod
    async def set(self, items: dict[str, tuple[str, dict[str, str]]]) -> dict[str, ConfigurationItem]:
        """Write ``{key: (value, metadata)}`` in one transaction; the stored items."""

    @abc.abstractmethod
    async def delete(self, keys: Iterable[str]) -> list[str]:
        """Remove ``keys`` in one transaction; the keys that existed."""

    async def close(self) -> None:
        """Stop subscriptions and release what the store holds."""
