"""Secret scopes from the Configuration, and secretKeyRef values read at start.

Scopes (``spec.secrets.scopes``) limit only the secrets API, as in daprd; a
component's secretKeyRef is read from its ``auth.secretStore`` without them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping

from ..components.secretstores import SecretStore, SecretStoreError
from ..config.manifests import Component, Configuration, MetadataItem
from ..errors import ConfigError


@dataclass(frozen=True, slots=True)
class SecretScope:
    """One store's rule; daprd's IsSecretAllowed order: allowed list, denied list, default."""

    store: str
    default_allow: bool = True
    allowed: frozenset[str] = frozenset()
    denied: frozenset[str] = frozenset()

    def allows(self, key: str) -> bool:
        if self.allowed:
            return key in self.allowed
        if key in self.denied:
            return False
        return self.default_allow


class SecretScopes:
    """Secret store name -> its scope; a store without one allows every secret."""

    def __init__(self, scopes: Iterable[SecretScope] = ()):
        self._scopes = {scope.store: scope for scope in scopes}

    def allows(self, store: str, key: str) -> bool:
        scope = self._scopes.get(store)
        return scope is None or scope.allows(key)

    @classmethod
    def from_configuration(cls, configuration: Configuration | None) -> "SecretScopes":
        """Validated ``spec.secrets.scopes`` (field names matched in any case, as Go decodes them).

        Raises:
            ConfigError: a repeated storeName, a defaultAccess other than allow or deny,
            or a field of the wrong shape, naming the field.
        """
        if configuration is None:
            return cls()
        src = configuration.source

        def error(field: str, expected: str) -> ConfigError:
            return ConfigError(src.file, src.document, field, expected)

        secrets = _get(configuration.spec, "secrets")
        if secrets is None:
            return cls()
        if not isinstance(secrets, dict):
            raise error("spec.secrets", "a mapping with scopes")
        raw_scopes = _get(secrets, "scopes")
        if raw_scopes is None:
            return cls()
        if not isinstance(raw_scopes, list):
            raise error("spec.secrets.scopes", "a list of {storeName, defaultAccess, allowedSecrets, deniedSecrets}")
        scopes: list[SecretScope] = []
        seen: set[str] = set()
        for i, raw in enumerate(raw_scopes):
            where = f"spec.secrets.scopes[{i}]"
            if not isinstance(raw, dict):
                raise error(where, "a mapping with storeName")
            store = _get(raw, "storeName")
            if not isinstance(store, str) or not store:
                raise error(f"{where}.storeName", "the name of a secret store component")
            if store in seen:
                raise error(f"{where}.storeName", f"a store named once; {store!r} has an earlier scope")
            seen.add(store)
            access = _get(raw, "defaultAccess")
            if access is None or access == "":
                access = "allow"
            if not isinstance(access, str) or access.lower() not in ("allow", "deny"):
                raise error(f"{where}.defaultAccess", f"allow or deny (got {access!r})")
            scopes.append(SecretScope(
                store, access.lower() == "allow",
                _names(_get(raw, "allowedSecrets"), f"{where}.allowedSecrets", error),
                _names(_get(raw, "deniedSecrets"), f"{where}.deniedSecrets", error),
            ))
        return cls(scopes)


def _get(mapping: Mapping[str, Any], name: str) -> Any:
    lowered = name.lower()
    return next((v for k, v in mapping.items() if isinstance(k, str) and k.lower() == lowered), None)


def _names(value: Any, field: str, error) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise error(field, "a list of secret names")
    return frozenset(value)


def resolve_refs(components: Iterable[Component], stores: Mapping[str, SecretStore]) -> tuple[Component, ...]:
    """The components with every secretKeyRef item turned into a plain value.

    Each component reads from its ``auth.secretStore``; standalone daprd has no
    default store (Kubernetes mode defaults to ``kubernetes``), so it must be given.
    daprd logs a failed lookup and leaves the component waiting or the value empty;
    here start-up stops instead, since a store opened with an empty password or path
    fails later and further from the cause.

    Raises:
        ConfigError: naming the component's file and document, the field, and the store
        and secret that could not be read.
    """
    return tuple(_resolve(component, stores) for component in components)


def _resolve(component: Component, stores: Mapping[str, SecretStore]) -> Component:
    refs = [i for i, item in enumerate(component.metadata) if item.secret_key_ref is not None]
    if not refs:
        return component
    src = component.source
    first = component.metadata[refs[0]]
    store_name = component.auth_secret_store
    if not store_name:
        raise ConfigError(
            src.file, src.document, "auth.secretStore",
            f"the secret store to read from: component {component.name!r} takes "
            f"spec.metadata[{refs[0]}].{first.name} from a secret (standalone Dapr has no default store)",
        )
    store = stores.get(store_name)
    if store is None:
        available = ", ".join(sorted(stores)) or "none"
        raise ConfigError(
            src.file, src.document, "auth.secretStore",
            f"a secret store created before component {component.name!r}; {store_name!r} is not one "
            f"(available: {available})",
        )
    items = list(component.metadata)
    fetched: dict[str, dict[str, str] | None] = {}
    for index in refs:
        item = items[index]
        ref = item.secret_key_ref
        assert ref is not None
        field = f"spec.metadata[{index}].{item.name}"
        what = f"component {component.name!r}: secret {ref.name!r}"
        if ref.name not in fetched:
            try:
                fetched[ref.name] = store.get(ref.name, {})
            except SecretStoreError as exc:
                raise ConfigError(src.file, src.document, field,
                                  f"a readable secret; {what} from store {store_name!r} failed: {exc}") from None
        secret = fetched[ref.name]
        if secret is None:
            raise ConfigError(src.file, src.document, field,
                              f"an existing secret; {what} is not in secret store {store_name!r}")
        value = secret.get(ref.key)
        if not value:  # daprd skips an empty value too
            raise ConfigError(src.file, src.document, field,
                              f"a secret with key {ref.key!r}; {what} in secret store {store_name!r} "
                              f"has {'it empty' if ref.key in secret else 'no such key'}")
        items[index] = MetadataItem(item.name, value)
    return replace(component, metadata=tuple(items))
