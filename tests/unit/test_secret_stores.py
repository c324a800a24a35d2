"""Secret stores, secret scopes and secretKeyRef resolution, without a sidecar."""

from __future__ import annotations

import json

import pytest

from pillion.components.secretstores import MULTIPLE_KEY_VALUES_PER_SECRET, SecretStoreError
from pillion.components.secretstores.localenv import LocalEnvSecretStore
from pillion.components.secretstores.localfile import LocalFileSecretStore, flatten
from pillion.config.manifests import Component, Configuration, MetadataItem, SecretKeyRef, Source
from pillion.errors import ConfigError
from pillion.runtime.secrets import SecretScopes, resolve_refs

NESTED = {"redisPassword": "pw", "connectionStrings": {"sql": "s", "mysql": {"main": "m"}}, "ports": [80, 443],
          "flag": True, "none": None, "ratio": 1.5}


def _component(name="secrets", type_="secretstores.local.file", metadata=(), auth=None):
    return Component(
        name=name, namespace=None, type=type_, version="v1", metadata=tuple(metadata), scopes=(),
        init_timeout="5s", ignore_errors=False, auth_secret_store=auth, source=Source("/res/c.yaml", 2),
    )


def _file_store(tmp_path, document, **metadata):
    path = tmp_path / "secrets.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    items = [MetadataItem("secretsFile", str(path))] + [MetadataItem(k, v) for k, v in metadata.items()]
    return LocalFileSecretStore(_component(metadata=items))


# ---- secretstores.local.file --------------------------------------------------


def test_single_valued_flattens_every_leaf(tmp_path):
    store = _file_store(tmp_path, NESTED)
    assert store.get("redisPassword", {}) == {"redisPassword": "pw"}
    assert store.get("connectionStrings:sql", {}) == {"connectionStrings:sql": "s"}
    assert store.get("connectionStrings:mysql:main", {}) == {"connectionStrings:mysql:main": "m"}
    assert store.get("ports:1", {}) == {"ports:1": "443"}
    assert (store.get("flag", {}), store.get("none", {}), store.get("ratio", {})) == (
        {"flag": "true"}, {"none": ""}, {"ratio": "1.5"})
    assert store.get("connectionStrings", {}) is None
    assert store.bulk()["connectionStrings:sql"] == {"connectionStrings:sql": "s"}
    assert len(store.bulk()) == 8
    assert store.features() == frozenset()


def test_multi_valued_keeps_the_top_level_as_secret_names(tmp_path):
    store = _file_store(tmp_path, NESTED, multiValued="true")
    assert store.get("connectionStrings", {}) == {"sql": "s", "mysql:main": "m"}
    assert store.get("redisPassword", {}) == {"redisPassword": "pw"}
    assert store.get("ports", {}) == {"0": "80", "1": "443"}
    assert store.get("connectionStrings:sql", {}) is None
    assert set(store.bulk()) == set(NESTED)
    assert store.features() == frozenset({MULTIPLE_KEY_VALUES_PER_SECRET})


def test_nested_separator(tmp_path):
    store = _file_store(tmp_path, NESTED, nestedSeparator=".")
    assert store.get("connectionStrings.mysql.main", {}) == {"connectionStrings.mysql.main": "m"}
    multi = _file_store(tmp_path, NESTED, nestedSeparator="__", multiValued="yes")
    assert multi.get("connectionStrings", {}) == {"sql": "s", "mysql__main": "m"}


def test_returned_maps_are_copies(tmp_path):
    store = _file_store(tmp_path, {"a": "1"})
    store.get("a", {})["a"] = "changed"
    store.bulk()["a"]["a"] = "changed"
    assert store.get("a", {}) == {"a": "1"}


def test_metadata_names_are_case_insensitive(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"a": {"b": "c"}}')
    store = LocalFileSecretStore(_component(metadata=[MetadataItem("SECRETSFILE", str(path)),
                                                      MetadataItem("multivalued", "True")]))
    assert store.get("a", {}) == {"b": "c"}


def test_relative_path_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "s.json").write_text('{"k": "v"}')
    monkeypatch.chdir(tmp_path)
    store = LocalFileSecretStore(_component(metadata=[MetadataItem("secretsFile", "s.json")]))
    assert store.path == str(tmp_path / "s.json")
    monkeypatch.chdir("/")
    assert store.get("k", {}) == {"k": "v"}  # read once, at start


@pytest.mark.parametrize("document, words", [
    ("{not json", "a JSON file"),
    ('["a"]', "a JSON object"),
    ('{"a:b": "1", "a": {"b": "2"}}', "'a:b' appears twice"),
])
def test_bad_file_is_a_config_error(tmp_path, document, words):
    with pytest.raises(ConfigError) as err:
        _file_store(tmp_path, document)
    assert err.value.field == "spec.metadata[0].secretsFile" and err.value.file == "/res/c.yaml"
    assert words in str(err.value)


def test_missing_file_and_missing_metadata(tmp_path):
    with pytest.raises(ConfigError) as err:
        LocalFileSecretStore(_component(metadata=[MetadataItem("secretsFile", str(tmp_path / "nope.json"))]))
    assert "nope.json" in str(err.value) and err.value.field == "spec.metadata[0].secretsFile"
    with pytest.raises(ConfigError) as err:
        LocalFileSecretStore(_component())
    assert err.value.field == "spec.metadata" and "secretsFile" in str(err.value)


def test_bad_multi_valued(tmp_path):
    with pytest.raises(ConfigError) as err:
        _file_store(tmp_path, {}, multiValued="sometimes")
    assert err.value.field == "spec.metadata[1].multiValued"


def test_flatten_arrays_of_objects():
    assert flatten({"a": [{"b": 1}, "x"]}, "/") == {"a/0/b": "1", "a/1": "x"}


# ---- secretstores.local.env ----------------------------------------------------


def test_env_store_get_and_bulk(monkeypatch):
    monkeypatch.setenv("PILLION_T_ONE", "1")
    monkeypatch.setenv("DAPR_API_TOKEN", "secret-token")
    monkeypatch.setenv("APP_API_TOKEN", "app-token")
    store = LocalEnvSecretStore(_component(type_="secretstores.local.env"))
    assert store.get("PILLION_T_ONE", {}) == {"PILLION_T_ONE": "1"}
    assert store.get("PILLION_T_UNSET", {}) == {"PILLION_T_UNSET": ""}  # as daprd: no error
    assert store.get("DAPR_API_TOKEN", {}) == {"DAPR_API_TOKEN": ""}
    assert store.get("APP_API_TOKEN", {}) == {"APP_API_TOKEN": ""}
    bulk = store.bulk()
    assert bulk["PILLION_T_ONE"] == {"PILLION_T_ONE": "1"}
    assert "DAPR_API_TOKEN" not in bulk and "APP_API_TOKEN" not in bulk


def test_env_store_prefix(monkeypatch):
    monkeypatch.setenv("MYAPP_DB", "db-pw")
    monkeypatch.setenv("MYAPP_", "just the prefix")
    monkeypatch.setenv("myapp_lower", "case matters")
    monkeypatch.setenv("OTHER", "x")
    store = LocalEnvSecretStore(_component(type_="secretstores.local.env", metadata=[MetadataItem("Prefix", "MYAPP_")]))
    assert store.get("DB", {}) == {"DB": "db-pw"}
    assert store.get("OTHER", {}) == {"OTHER": ""}
    assert store.bulk() == {"DB": {"DB": "db-pw"}}


def test_env_store_prefix_cannot_reach_dapr_variables(monkeypatch):
    monkeypatch.setenv("DAPR_API_TOKEN", "secret-token")
    store = LocalEnvSecretStore(_component(type_="secretstores.local.env", metadata=[MetadataItem("prefix", "DAPR_")]))
    assert store.get("API_TOKEN", {}) == {"API_TOKEN": ""}
    assert store.bulk() == {}


# ---- secret scopes -------------------------------------------------------------


def _scopes(*scopes, key="secrets"):
    return SecretScopes.from_configuration(Configuration("c", {key: {"scopes": list(scopes)}}, Source("/c.yaml", 0)))


def test_no_configuration_or_no_scope_allows_everything():
    assert SecretScopes.from_configuration(None).allows("s", "k")
    assert SecretScopes.from_configuration(Configuration("c", {}, Source("/c.yaml", 0))).allows("s", "k")
    assert _scopes({"storeName": "other", "defaultAccess": "deny"}).allows("s", "k")


def test_default_access_deny_and_allow():
    scopes = _scopes({"storeName": "s", "defaultAccess": "Deny"})
    assert not scopes.allows("s", "k")
    scopes = _scopes({"storeName": "s", "defaultAccess": "allow", "deniedSecrets": ["bad"]})
    assert scopes.allows("s", "k") and not scopes.allows("s", "bad")


def test_allowed_list_wins_over_denied_list_and_default():
    """daprd: a non-empty allowedSecrets decides alone."""
    scopes = _scopes({"storeName": "s", "defaultAccess": "deny", "allowedSecrets": ["a", "b"], "deniedSecrets": ["a"]})
    assert scopes.allows("s", "a") and scopes.allows("s", "b") and not scopes.allows("s", "c")
    scopes = _scopes({"storeName": "s", "defaultAccess": "allow", "allowedSecrets": ["a"]})
    assert not scopes.allows("s", "c")


def test_scope_field_names_in_any_case():
    scopes = _scopes({"storename": "s", "DEFAULTACCESS": "deny", "AllowedSecrets": ["a"]}, key="Secrets")
    assert scopes.allows("s", "a") and not scopes.allows("s", "b")


@pytest.mark.parametrize("scope, field", [
    ({"defaultAccess": "deny"}, "spec.secrets.scopes[0].storeName"),
    ({"storeName": "s", "defaultAccess": "maybe"}, "spec.secrets.scopes[0].defaultAccess"),
    ({"storeName": "s", "allowedSecrets": "a"}, "spec.secrets.scopes[0].allowedSecrets"),
    ({"storeName": "s", "deniedSecrets": [1]}, "spec.secrets.scopes[0].deniedSecrets"),
    ("s", "spec.secrets.scopes[0]"),
])
def test_bad_scopes(scope, field):
    with pytest.raises(ConfigError) as err:
        _scopes(scope)
    assert (err.value.file, err.value.field) == ("/c.yaml", field)


def test_repeated_store_name():
    with pytest.raises(ConfigError) as err:
        _scopes({"storeName": "s"}, {"storeName": "s", "defaultAccess": "deny"})
    assert err.value.field == "spec.secrets.scopes[1].storeName"


# ---- resolve_refs --------------------------------------------------------------


class _Store:
    def __init__(self, secrets, fail=False):
        self.secrets = secrets
        self.fail = fail
        self.calls = []

    def get(self, key, metadata):
        self.calls.append(key)
        if self.fail:
            raise SecretStoreError("backend down")
        return self.secrets.get(key)


def _user(*items, auth="vault"):
    return _component("db", "state.lmdb", [MetadataItem("durability", "fsync"), *items], auth=auth)


def test_refs_become_plain_values_and_other_items_stay():
    store = _Store({"db": {"path": "/data/db", "password": "pw"}, "single": {"single": "one"}})
    component = _user(MetadataItem("path", None, SecretKeyRef("db", "path")),
                      MetadataItem("password", None, SecretKeyRef("db", "password")),
                      MetadataItem("other", None, SecretKeyRef("single", "single")))
    plain = _component("plain", "state.in-memory")
    resolved, untouched = resolve_refs([component, plain], {"vault": store})
    assert untouched is plain
    assert resolved.metadata_dict() == {"durability": "fsync", "path": "/data/db", "password": "pw", "other": "one"}
    assert all(m.secret_key_ref is None for m in resolved.metadata)
    assert store.calls == ["db", "single"]  # one lookup per secret


def test_missing_auth_secret_store():
    with pytest.raises(ConfigError) as err:
        resolve_refs([_user(MetadataItem("path", None, SecretKeyRef("db", "path")), auth=None)], {"vault": _Store({})})
    assert err.value.field == "auth.secretStore" and "'db'" in str(err.value) and "path" in str(err.value)


def test_unknown_secret_store():
    with pytest.raises(ConfigError) as err:
        resolve_refs([_user(MetadataItem("path", None, SecretKeyRef("db", "path")), auth="nope")], {"vault": _Store({})})
    assert err.value.field == "auth.secretStore" and "'nope'" in str(err.value) and "vault" in str(err.value)


@pytest.mark.parametrize("secrets, words", [
    ({}, "secret 'db' is not in secret store 'vault'"),
    ({"db": {"user": "u"}}, "no such key"),
    ({"db": {"path": ""}}, "has it empty"),
])
def test_missing_secret_names_component_field_and_secret(secrets, words):
    component = _user(MetadataItem("path", None, SecretKeyRef("db", "path")))
    with pytest.raises(ConfigError) as err:
        resolve_refs([component], {"vault": _Store(secrets)})
    assert (err.value.file, err.value.document, err.value.field) == ("/res/c.yaml", 2, "spec.metadata[1].path")
    assert "component 'db'" in str(err.value) and words in str(err.value)


def test_store_failure_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        resolve_refs([_user(MetadataItem("path", None, SecretKeyRef("db", "path")))],
                     {"vault": _Store({}, fail=True)})
    assert "backend down" in str(err.value)
