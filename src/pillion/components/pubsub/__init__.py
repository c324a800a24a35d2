"""The pub/sub component interface: what the publish API and the subscription runtime need.

A component moves opaque bytes (the CloudEvent JSON, or a raw payload) between the
sidecar and a broker. It knows nothing of CloudEvents, routes or apps: the runtime
(``runtime/pubsub.py``) builds envelopes and talks to the app. Delivery is at least
once: the component hands each message to the subscription's handler and acknowledges
it to the broker only when the handler returned ``Outcome.SUCCESS`` or ``Outcome.DROP``;
a raised exception or ``Outcome.RETRY`` leaves it unacknowledged, and the component
delivers it again later (the handler decides the back-off by returning after waiting).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ...errors import PillionError


class Outcome(enum.Enum):
    SUCCESS = "SUCCESS"  # acknowledged
    RETRY = "RETRY"  # delivered again later
    DROP = "DROP"  # acknowledged without processing


def parse_bool(text: str) -> bool | None:
    """Go's strconv.ParseBool, as daprd reads ``rawPayload``: None when it is not a boolean."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


class PublishError(PillionError):
    """The broker did not take the message (500 ERR_PUBSUB_PUBLISH_MESSAGE)."""


@dataclass(slots=True)
class Message:
    topic: str  # the real topic (a wildcard subscription gets the concrete one)
    data: bytes
    metadata: dict[str, str] = field(default_factory=dict)
    redelivered: bool = False
    attempts: int = 0  # deliveries to the app so far (the runtime counts them)


Handler = Callable[[Message], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class SubscribeOptions:
    """How one topic is consumed; ``group`` shares it between replicas of one app id."""

    group: str
    max_in_flight: int = 100  # messages handed to the handler at once
    metadata: dict[str, str] = field(default_factory=dict)


class PubSub(abc.ABC):
    """One configured pub/sub component."""

    features: frozenset[str] = frozenset()  # Dapr's names, e.g. "SUBSCRIBE_WILDCARDS"

    async def start(self) -> None:
        """Connect; called once before any publish or subscribe."""

    @abc.abstractmethod
    async def publish(self, topic: str, data: bytes, metadata: dict[str, str]) -> None:
        """Return once the broker has the message (persisted or acknowledged); else PublishError."""

    @abc.abstractmethod
    async def subscribe(self, topic: str, handler: Handler, options: SubscribeOptions) -> None:
        """Start delivering ``topic`` to ``handler``; messages kept while the sidecar was away come too."""

    async def unsubscribe_others(self, keep: set[str], options: SubscribeOptions) -> None:
        """Forget durable subscriptions of this consumer group that are not in ``keep``."""

    async def stop_delivery(self) -> None:
        """Hand out no new messages; handlers already running finish."""

    async def close(self) -> None:
        """Disconnect; unacknowledged messages stay with the broker for the next start."""
