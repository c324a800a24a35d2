"""The validated shape of Dapr resource manifests, as frozen dataclasses.

Only ``loader`` builds these; everything downstream reads them and never sees raw
YAML. Mappings inside (subscription metadata, resiliency policies, the
Configuration spec) use Dapr's canonical key names whatever case the file used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Source:
    """Where a manifest came from, so later errors can point at the file."""

    file: str
    document: int


@dataclass(frozen=True, slots=True)
class SecretKeyRef:
    """A value read from a secret store; ``key`` already defaults to ``name`` like daprd."""

    name: str
    key: str


@dataclass(frozen=True, slots=True)
class MetadataItem:
    """One ``name``/value pair; exactly one of value, secret_key_ref, env_ref is set.

    YAML scalars are kept as strings (``true`` -> "true", ``5`` -> "5") because Dapr
    components read every metadata value as text.
    """

    name: str
    value: str | None
    secret_key_ref: SecretKeyRef | None = None
    env_ref: str | None = None


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    namespace: str | None
    type: str
    version: str
    metadata: tuple[MetadataItem, ...]
    scopes: tuple[str, ...]
    init_timeout: str
    ignore_errors: bool
    auth_secret_store: str | None
    source: Source

    def metadata_dict(self) -> dict[str, str]:
        """Plain values by name; items still waiting for a secret or env lookup are left out."""
        return {m.name: m.value for m in self.metadata if m.value is not None}


@dataclass(frozen=True, slots=True)
class Subscription:
    """A declarative subscription; v1alpha1 ``spec.route`` becomes ``default_route``.

    ``routes`` are the (CEL match, path) rules in order; ``default_route`` is used
    when none matches. ``bulk_subscribe`` has enabled/maxMessagesCount/maxAwaitDurationMs
    with Dapr's defaults filled in, or is None when absent.
    """

    name: str
    pubsubname: str
    topic: str
    routes: tuple[tuple[str, str], ...]
    default_route: str | None
    metadata: dict[str, str]
    dead_letter_topic: str | None
    bulk_subscribe: dict[str, Any] | None
    scopes: tuple[str, ...]
    source: Source


@dataclass(frozen=True, slots=True)
class Resiliency:
    """Policies and targets, validated and normalized.

    ``policies`` = {"timeouts": {name: seconds}, "retries": {name: {policy, duration,
    maxInterval, maxRetries, matching}}, "circuitBreakers": {name: {maxRequests,
    interval, timeout, trip}}} with durations as float seconds and defaults filled in;
    ``targets`` = {"apps": …, "actors": …, "components": …} naming those policies.
    """

    name: str
    policies: dict[str, Any]
    targets: dict[str, Any]
    scopes: tuple[str, ...]
    source: Source


@dataclass(frozen=True, slots=True)
class HTTPEndpoint:
    name: str
    base_url: str
    headers: tuple[MetadataItem, ...]
    source: Source


@dataclass(frozen=True, slots=True)
class Configuration:
    """A ``kind: Configuration``; unknown spec keys are kept so newer files still load."""

    name: str
    spec: dict[str, Any]
    source: Source

    @property
    def access_control(self) -> dict[str, Any] | None:
        """The normalized ``spec.accessControl`` for ``runtime.acl.AccessControl.from_spec``."""
        return self.spec.get("accessControl")

    @property
    def name_resolution(self) -> dict[str, Any] | None:
        return self.spec.get("nameResolution")

    @property
    def features(self) -> dict[str, bool]:
        return {f["name"]: f["enabled"] for f in self.spec.get("features", ())}

    @property
    def api_allowed(self) -> list[dict[str, str]]:
        return list(self.spec.get("api", {}).get("allowed", ()))

    @property
    def api_denied(self) -> list[dict[str, str]]:
        return list(self.spec.get("api", {}).get("denied", ()))

    def pipeline(self, which: str) -> list[dict[str, str]]:
        """``httpPipeline`` or ``appHttpPipeline`` handlers: ``{name, type, where}`` in order."""
        return list(self.spec.get(which, ()))

    @property
    def mqtt(self) -> dict[str, Any]:
        """``spec.mqtt`` as ``broker.options.BrokerOptions`` keyword arguments."""
        return dict(self.spec.get("mqtt", {}))


@dataclass(frozen=True, slots=True)
class Resources:
    """Everything loaded from the resources paths for one app id, in file order."""

    components: tuple[Component, ...] = ()
    subscriptions: tuple[Subscription, ...] = ()
    resiliencies: tuple[Resiliency, ...] = ()
    http_endpoints: tuple[HTTPEndpoint, ...] = ()
