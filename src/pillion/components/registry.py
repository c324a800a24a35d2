"""Dapr component type name -> implementation, imported only when a resource uses it.

Implementations are named as ``"module:Class"`` strings so that a sidecar with no
state store never imports LMDB code, and one without MQTT never imports paho: on a
512 MB board every import counts.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection
from dataclasses import dataclass

from ..config.manifests import Component
from ..errors import ConfigError

# One line per built-in component type, as Dapr's cmd/daprd/components lists them.
BUILTIN: dict[str, str] = {
    "state.in-memory": "pillion.components.state.memory:MemoryStateStore",
    "state.lmdb": "pillion.components.state.lmdb:LmdbStateStore",
    "pubsub.in-memory": "pillion.components.pubsub.memory:MemoryPubSub",
    "pubsub.mqtt": "pillion.components.pubsub.mqtt:create",
    "pubsub.mqtt3": "pillion.components.pubsub.mqtt:create",  # Dapr's name for the same component
    "bindings.cron": "pillion.components.bindings.cron:CronBinding",
    "bindings.http": "pillion.components.bindings.http:HttpBinding",
    "bindings.localstorage": "pillion.components.bindings.localstorage:LocalStorageBinding",
    "bindings.mqtt": "pillion.components.bindings.mqtt:MqttBinding",
    "bindings.mqtt3": "pillion.components.bindings.mqtt:MqttBinding",
    "configuration.lmdb": "pillion.components.configuration.lmdb:LmdbConfigurationStore",
    "lock.lmdb": "pillion.components.lock.lmdb:LmdbLockStore",
    "middleware.http.ratelimit": "pillion.components.middleware.ratelimit:RateLimit",
    "secretstores.local.file": "pillion.components.secretstores.localfile:LocalFileSecretStore",
    "secretstores.local.env": "pillion.components.secretstores.localenv:LocalEnvSecretStore",
}

# What `pillion init` writes into the resources folder: file name -> Dapr YAML.
DEFAULT_RESOURCES: dict[str, str] = {
    "statestore.yaml": """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.lmdb
  version: v1
  metadata:
  # LMDB files under the data directory; fsync: an acknowledged write survives power loss.
  - name: durability
    value: fsync
  - name: actorStateStore
    value: "true"
""",
    "pubsub.yaml": """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.mqtt
  version: v1
  metadata:
  # No url: the broker embedded in the sidecar, its queues kept in LMDB under the data directory.
  - name: qos
    value: "1"
""",
    "configstore.yaml": """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: configstore
spec:
  type: configuration.lmdb
  version: v1
  metadata: []
  # Items are changed with `pillion config set KEY=VALUE`; subscribed apps are told.
""",
}


def known_types() -> list[str]:
    return sorted(BUILTIN)


def check(component: Component, secret_stores: Collection[str] = ()) -> None:
    """Fail start-up on a component this runtime cannot load, naming file, document and field.

    ``secret_stores`` names the secret store components loaded with it: a secretKeyRef
    needs ``auth.secretStore`` to name one (standalone Dapr has no default store).
    """
    src = component.source
    if component.type not in BUILTIN:
        available = ", ".join(known_types()) or "none in this version"
        raise ConfigError(
            src.file, src.document, "spec.type",
            f"a known component type; {component.type!r} (component {component.name!r}) is not one. Available: {available}",
        )
    refs = [index for index, item in enumerate(component.metadata) if item.secret_key_ref is not None]
    if refs and not secret_stores:
        raise ConfigError(
            src.file, src.document, f"spec.metadata[{refs[0]}].secretKeyRef",
            f"a plain value: component {component.name!r} refers to a secret, but no secret store "
            "component (secretstores.local.file, secretstores.local.env) is configured",
        )
    if refs and component.auth_secret_store not in secret_stores:
        got = f"{component.auth_secret_store!r} is not one" if component.auth_secret_store else "it is not set"
        raise ConfigError(
            src.file, src.document, "auth.secretStore",
            f"the secret store that holds the secrets of component {component.name!r}, one of "
            f"{', '.join(sorted(secret_stores))}; {got}",
        )
    if component.version not in ("", "v1"):
        raise ConfigError(src.file, src.document, "spec.version", f"v1 (got {component.version!r})")


@dataclass(frozen=True)
class Context:
    """What a component may know of the sidecar that runs it."""

    app_id: str
    data_dir: str
    namespace: str | None = None
    instance: str = "0"  # tells replicas of one app id on one host apart (the HTTP port)
    broker: object | None = None  # the embedded broker.server.BrokerServer
    shared_broker_url: str | None = None  # another Pillion's broker on this host, used instead


def create(component: Component, context: Context):
    """Instantiate a checked component; its factory raises ConfigError for bad metadata."""
    module, _, factory = BUILTIN[component.type].partition(":")
    return getattr(importlib.import_module(module), factory)(component, context)
