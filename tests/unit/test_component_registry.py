"""Start-up checks of components against the registry: unknown types, secrets, versions."""

from __future__ import annotations

import pytest

from pillion.components import registry
from pillion.config.manifests import Component, MetadataItem, SecretKeyRef, Source
from pillion.errors import ConfigError


def _component(type_="state.example", version="v1", metadata=()):
    return Component(
        name="store", namespace=None, type=type_, version=version, metadata=tuple(metadata), scopes=(),
        init_timeout="5s", ignore_errors=False, auth_secret_store=None, source=Source("/res/store.yaml", 3),
    )


@pytest.fixture
def known_type(monkeypatch):
    monkeypatch.setitem(registry.BUILTIN, "state.example", "builtins:dict")


def test_unknown_type_names_file_document_and_field():
    with pytest.raises(ConfigError) as err:
        registry.check(_component("state.redis"))
    assert (err.value.file, err.value.document, err.value.field) == ("/res/store.yaml", 3, "spec.type")
    assert "'state.redis'" in str(err.value)


def test_secret_reference_names_the_component_and_item(known_type):
    items = [MetadataItem("host", "localhost"), MetadataItem("password", None, SecretKeyRef("db", "password"))]
    with pytest.raises(ConfigError) as err:
        registry.check(_component(metadata=items))
    assert err.value.field == "spec.metadata[1].secretKeyRef"
    assert "'store'" in str(err.value) and "store.yaml (document 3)" in str(err.value)


def test_version_other_than_v1(known_type):
    with pytest.raises(ConfigError) as err:
        registry.check(_component(version="v2"))
    assert err.value.field == "spec.version"


def test_known_component_passes(known_type):
    registry.check(_component(metadata=[MetadataItem("host", "localhost")]))
