"""Secret stores: what the secrets API and secretKeyRef resolution ask of one.

A store answers synchronously: the built-in ones hold their secrets in memory (a
file read once at start) or read the process environment, so a coroutine would
only cost a task per request on a small board.
"""

from __future__ import annotations

from typing import Protocol

from ...errors import PillionError

# Dapr's secretstores.Feature string, shown as a capability by the metadata API.
MULTIPLE_KEY_VALUES_PER_SECRET = "MULTIPLE_KEY_VALUES_PER_SECRET"


class SecretStoreError(PillionError):
    """A store could not answer; the API turns it into ERR_SECRET_GET."""


class SecretStore(Protocol):
    def get(self, key: str, metadata: dict[str, str]) -> dict[str, str] | None:
        """The secret's key/value map, or None when the store has no secret by that name."""

    def bulk(self, metadata: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
        """Every secret the store will list, by name, before secret scopes filter them."""

    def features(self) -> frozenset[str]:
        """Dapr feature strings, for the metadata API's capabilities."""


def is_secret_store(component_type: str) -> bool:
    """Secret stores are created before every other component, as daprd does."""
    return component_type.startswith("secretstores.")
