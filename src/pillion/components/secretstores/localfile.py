"""``secretstores.local.file``: secrets from a JSON file, read once at start.

Metadata, names matched case-insensitively as daprd does:

* ``secretsFile`` (required): the JSON file. A relative path is relative to the
  sidecar's working directory, as in daprd (it opens the path as given), not to
  the component file; ``~`` is expanded.
* ``nestedSeparator`` (default ``:``): joins the keys of nested objects (and array
  indexes) into one flat key.
* ``multiValued`` (default false): false makes every leaf its own secret, so
  ``{"db": {"user": "u"}}`` gives secret ``db:user`` = ``{"db:user": "u"}``; true
  keeps the top level as secret names whose flattened contents are the secret's
  key/value map, so ``db`` = ``{"user": "u"}``.

Unlike daprd, numbers and booleans read as their JSON text and null as "" (daprd
renders them with Go's ``%s``, giving text like ``%!s(float64=5)``), a flattened key
that repeats another is a start-up error (daprd stops flattening silently), and with
multiValued a top-level number, boolean or array is kept (daprd drops it).
"""

from __future__ import annotations

import json
import os

from ...config.manifests import Component
from ...errors import ConfigError
from . import MULTIPLE_KEY_VALUES_PER_SECRET

# dapr/kit's truthy words; anything else daprd reads as false, here it is an error.
_TRUE = frozenset({"true", "t", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "f", "0", "no", "n", "off", ""})


class LocalFileSecretStore:
    def __init__(self, component: Component, context=None):
        self.name = component.name
        src = component.source
        values: dict[str, tuple[int, str, str]] = {}
        for index, item in enumerate(component.metadata):
            if item.value is not None:
                values[item.name.lower()] = (index, item.name, item.value)

        def fail(name: str, expected: str):
            if name in values:
                index, original, _ = values[name]
                return ConfigError(src.file, src.document, f"spec.metadata[{index}].{original}", expected)
            return ConfigError(src.file, src.document, "spec.metadata", expected)

        path = values.get("secretsfile", (0, "", ""))[2].strip()
        if not path:
            raise fail("secretsfile", f"a secretsFile item: the JSON file secret store {self.name!r} reads")
        separator = values.get("nestedseparator", (0, "", ""))[2] or ":"
        multi_text = values.get("multivalued", (0, "", "false"))[2].strip().lower()
        if multi_text not in _TRUE | _FALSE:
            raise fail("multivalued", f"true or false (got {values['multivalued'][2]!r})")
        self.multi_valued = multi_text in _TRUE
        self.path = os.path.abspath(os.path.expanduser(path))
        try:
            with open(self.path, "rb") as f:
                document = json.loads(f.read())
        except OSError as exc:
            raise fail("secretsfile", f"a readable JSON file: {exc.strerror or exc} ({self.path})") from None
        except ValueError as exc:
            raise fail("secretsfile", f"a JSON file: {self.path}: {exc}") from None
        if not isinstance(document, dict):
            raise fail("secretsfile", f"a JSON object at the top of {self.path}")
        try:
            self._secrets = secrets_from_json(document, separator, self.multi_valued)
        except ValueError as exc:
            raise fail("secretsfile", f"a JSON file without clashing keys: {self.path}: {exc}") from None

    def get(self, key: str, metadata: dict[str, str] | None = None) -> dict[str, str] | None:
        secret = self._secrets.get(key)
        return dict(secret) if secret is not None else None

    def bulk(self, metadata: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
        return {name: dict(secret) for name, secret in self._secrets.items()}

    def features(self) -> frozenset[str]:
        return frozenset({MULTIPLE_KEY_VALUES_PER_SECRET}) if self.multi_valued else frozenset()


def secrets_from_json(document: dict, separator: str, multi_valued: bool) -> dict[str, dict[str, str]]:
    """Secret name -> key/value map; ValueError names a flattened key that repeats."""
    if not multi_valued:
        return {key: {key: value} for key, value in flatten(document, separator).items()}
    secrets: dict[str, dict[str, str]] = {}
    for name, value in document.items():
        if isinstance(value, (dict, list)):
            secrets[name] = flatten(value, separator)
        else:
            secrets[name] = {name: _text(value)}
    return secrets


def flatten(value: dict | list, separator: str) -> dict[str, str]:
    """Leaves by their path of keys (array indexes as numbers) joined with ``separator``."""
    out: dict[str, str] = {}

    def visit(node, path: str) -> None:
        if isinstance(node, (dict, list)):
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, child in items:
                visit(child, f"{path}{separator}{key}" if path else str(key))
        elif path in out:
            raise ValueError(f"key {path!r} appears twice once nested keys are joined with {separator!r}")
        else:
            out[path] = _text(node)

    visit(value, "")
    return out


def _text(value) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value)
