"""The binding component interface: what the bindings API and the input runtime need.

An output binding turns ``POST /v1.0/bindings/{name}`` into one operation on an
external system and hands back bytes plus string metadata (the API writes them as the
body and ``metadata.<key>`` headers). An input binding produces events; the runtime
delivers each to the app and tells the component, through the handler's result,
whether the app took it. Neither knows about HTTP routes or Dapr error bodies.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ...config.manifests import Component
from ...errors import ConfigError, PillionError


class BindingError(PillionError):
    """The operation failed (500 ERR_INVOKE_OUTPUT_BINDING); ``metadata`` still goes out as headers.

    Dapr sends a failed call's response metadata too (``bindings.http`` with a non-2xx
    status sets ``statusCode``), so the error carries it.
    """

    def __init__(self, message: str, metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.metadata = metadata or {}


class UnsupportedOperation(BindingError):
    """The component has no such operation; the API words the message from ``operations()``."""


@dataclass(slots=True)
class BindingResponse:
    data: bytes = b""  # empty data and metadata: the API answers 204
    metadata: dict[str, str] = field(default_factory=dict)


# (data, metadata) -> True once the app accepted the event, False to have it retried later.
InputHandler = Callable[[bytes, dict[str, str]], Awaitable[bool]]


class OutputBinding(abc.ABC):
    """One configured component that serves ``POST /v1.0/bindings/{name}``."""

    @abc.abstractmethod
    def operations(self) -> list[str]:
        """Dapr's operation names, in the order Dapr lists them in its error message."""

    @abc.abstractmethod
    async def invoke(self, operation: str, data: bytes, metadata: dict[str, str]) -> BindingResponse:
        """Run one operation; BindingError (or UnsupportedOperation) when it fails."""

    async def close(self) -> None:
        """Release connections and files; no invoke follows."""


class InputBinding(abc.ABC):
    """One configured component that produces events for the app."""

    @abc.abstractmethod
    async def start(self, handler: InputHandler) -> None:
        """Begin producing events; returns once started, delivery runs in the background."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop producing events; events in flight may be abandoned."""


def is_truthy(text: str) -> bool:
    """dapr/kit's ``strings.IsTruthy``, which Dapr components use for their booleans."""
    return text.strip().lower() in ("y", "yes", "true", "t", "on", "1")


class MetadataReader:
    """A component's plain metadata, by case-insensitive name, failing with the item's position.

    Dapr decodes component metadata case-insensitively; errors name the field as
    ``spec.metadata[i].<name as written>`` so the user finds the line.
    """

    def __init__(self, component: Component):
        self.component = component
        self._values: dict[str, tuple[int, str, str]] = {}
        for index, item in enumerate(component.metadata):
            if item.value is not None:
                self._values[item.name.lower()] = (index, item.name, item.value)

    def get(self, name: str, default: str | None = None) -> str | None:
        entry = self._values.get(name.lower())
        return default if entry is None else entry[2]

    def fail(self, name: str, expected: str):
        """Raise ConfigError for ``name``; ``spec.metadata`` when the item is missing."""
        src = self.component.source
        entry = self._values.get(name.lower())
        where = f"spec.metadata[{entry[0]}].{entry[1]}" if entry else "spec.metadata"
        if entry is None:
            expected = f"an item named {name!r}: {expected}"
        raise ConfigError(src.file, src.document, where, expected)
