"""The secrets API and secretKeyRef through a real sidecar process."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from _http import json_request
from pillion._testing import free_port, pillion_command

FILE_STORE = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {name}
spec:
  type: secretstores.local.file
  version: v1
  metadata:
  - name: secretsFile
    value: "{path}"
  - name: multiValued
    value: "{multi}"
"""

ENV_STORE = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: env
spec:
  type: secretstores.local.env
  version: v1
  metadata:
  - name: prefix
    value: SECRETS_TEST_
"""

LMDB_FROM_SECRET = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: store
auth:
  secretStore: {store}
spec:
  type: state.lmdb
  version: v1
  metadata:
  - name: path
    secretKeyRef:
      name: {secret}
      key: {key}
"""

CONFIG = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: secrets-config
spec:
  secrets:
    scopes:
    - storeName: scoped
      defaultAccess: deny
      allowedSecrets: ["open"]
    - storeName: secrets
      deniedSecrets: ["hidden"]
"""

SECRETS = {"open": "o", "hidden": "h", "closed": "c"}


def _resources(tmp_path, *, lmdb_key="lmdb"):
    folder = tmp_path / "resources"
    folder.mkdir()
    state_dir = tmp_path / "from-secret" / "state"
    (tmp_path / "secrets.json").write_text(json.dumps({**SECRETS, "db": {"user": "admin", "lmdb": str(state_dir)}}))
    path = tmp_path / "secrets.json"
    (folder / "a-secrets.yaml").write_text(FILE_STORE.format(name="secrets", path=path, multi="false"))
    (folder / "b-multi.yaml").write_text(FILE_STORE.format(name="multi", path=path, multi="true"))
    (folder / "c-scoped.yaml").write_text(FILE_STORE.format(name="scoped", path=path, multi="false"))
    (folder / "d-env.yaml").write_text(ENV_STORE)
    (folder / "e-store.yaml").write_text(LMDB_FROM_SECRET.format(store="multi", secret="db", key=lmdb_key))
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    return str(folder), str(config), state_dir


@pytest.fixture
def secrets(tmp_path, sidecar):
    folder, config, state_dir = _resources(tmp_path)
    sc = sidecar("secretive", "--resources-path", folder, "--config", config, wait="/v1.0/healthz",
                 env={"SECRETS_TEST_TOKEN": "t0ken"})
    sc.state_dir = state_dir
    return sc


def _get(sc, path):
    return json_request(sc.http_port, "GET", path)


def test_get_single_and_multi_valued(secrets):
    assert _get(secrets, "/v1.0/secrets/secrets/open")[::2] == (200, {"open": "o"})
    assert _get(secrets, "/v1.0/secrets/secrets/db:user")[::2] == (200, {"db:user": "admin"})
    status, headers, body = _get(secrets, "/v1.0/secrets/multi/db")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert body == {"user": "admin", "lmdb": str(secrets.state_dir)}
    assert _get(secrets, "/v1.0/secrets/env/TOKEN")[::2] == (200, {"TOKEN": "t0ken"})


def test_bulk_is_filtered_by_scopes(secrets):
    status, _, body = _get(secrets, "/v1.0/secrets/secrets/bulk")
    assert status == 200
    assert set(body) == {"open", "closed", "db:user", "db:lmdb"}  # "hidden" denied
    assert body["open"] == {"open": "o"}
    assert _get(secrets, "/v1.0/secrets/scoped/bulk")[::2] == (200, {"open": {"open": "o"}})
    assert _get(secrets, "/v1.0/secrets/multi/bulk")[2]["db"]["user"] == "admin"
    env = _get(secrets, "/v1.0/secrets/env/bulk")[2]
    assert env == {"TOKEN": {"TOKEN": "t0ken"}}


def test_missing_secret_is_err_secret_get(secrets):
    status, _, body = _get(secrets, "/v1.0/secrets/secrets/nothing")
    assert (status, body["errorCode"]) == (500, "ERR_SECRET_GET")
    assert body["message"] == ("failed getting secret with key nothing from secret store secrets: "
                               "secret nothing not found")


def test_unknown_store_is_401(secrets):
    status, _, body = _get(secrets, "/v1.0/secrets/vault/open")
    assert (status, body["errorCode"]) == (401, "ERR_SECRET_STORE_NOT_FOUND")
    assert body["message"] == "failed finding secret store with key vault"
    assert _get(secrets, "/v1.0/secrets/vault/bulk")[0] == 401


def test_scopes_deny_with_403(secrets):
    status, _, body = _get(secrets, "/v1.0/secrets/scoped/closed")
    assert (status, body["errorCode"]) == (403, "ERR_PERMISSION_DENIED")
    assert body["message"] == 'access denied by policy to get "closed" from "scoped"'
    assert _get(secrets, "/v1.0/secrets/scoped/open")[0] == 200
    assert _get(secrets, "/v1.0/secrets/secrets/hidden")[0] == 403
    assert _get(secrets, "/v1.0/secrets/secrets/closed")[0] == 200


def test_state_store_path_from_a_secret(secrets):
    status, _, _ = json_request(secrets.http_port, "POST", "/v1.0/state/store",
                                json.dumps([{"key": "k", "value": "v"}]).encode())
    assert status == 204
    assert json_request(secrets.http_port, "GET", "/v1.0/state/store/k")[::2] == (200, "v")
    assert (secrets.state_dir / "data.mdb").exists()


def test_metadata_lists_secret_stores(secrets):
    components = {c["name"]: c for c in _get(secrets, "/v1.0/metadata")[2]["components"]}
    assert components["secrets"]["type"] == "secretstores.local.file"
    assert components["multi"]["capabilities"] == ["MULTIPLE_KEY_VALUES_PER_SECRET"]
    assert components["env"]["capabilities"] == []


def test_no_secret_stores(tmp_path, sidecar):
    sc = sidecar("plain", wait="/v1.0/healthz")
    status, _, body = _get(sc, "/v1.0/secrets/any/key")
    assert (status, body["errorCode"]) == (500, "ERR_SECRET_STORES_NOT_CONFIGURED")


def _start(tmp_path, folder, *extra):
    env = dict(os.environ, PILLION_HOME=str(tmp_path / "home"), PILLION_DATA_DIR=str(tmp_path / "data"))
    return subprocess.run(pillion_command("sidecar", "--app-id", "bad", "--dapr-http-port", str(free_port()),
                                          "--mqtt-port", "0", "--resources-path", folder, *extra),
                          capture_output=True, text=True, timeout=30, env=env)


def test_missing_secret_key_stops_start_up(tmp_path):
    folder, _, _ = _resources(tmp_path, lmdb_key="nokey")
    out = _start(tmp_path, folder)
    assert out.returncode == 2, out.stderr
    assert "e-store.yaml (document 0)" in out.stderr and "spec.metadata[0].path" in out.stderr
    assert "'nokey'" in out.stderr and "'multi'" in out.stderr


def test_reference_without_auth_secret_store_stops_start_up(tmp_path):
    folder, _, _ = _resources(tmp_path)
    store = tmp_path / "resources" / "e-store.yaml"
    store.write_text(store.read_text().replace("auth:\n  secretStore: multi\n", ""))
    out = _start(tmp_path, folder)
    assert out.returncode == 2, out.stderr
    assert "auth.secretStore" in out.stderr and "'store'" in out.stderr


def test_bad_scope_stops_start_up(tmp_path):
    folder, config, _ = _resources(tmp_path)
    (tmp_path / "config.yaml").write_text(CONFIG.replace("defaultAccess: deny", "defaultAccess: sometimes"))
    out = _start(tmp_path, folder, "--config", config)
    assert out.returncode == 2, out.stderr
    assert "spec.secrets.scopes[0].defaultAccess" in out.stderr


def test_unreadable_secrets_file_stops_start_up(tmp_path):
    folder, _, _ = _resources(tmp_path)
    (tmp_path / "secrets.json").write_text("{broken")
    out = _start(tmp_path, folder)
    assert out.returncode == 2, out.stderr
    assert "a-secrets.yaml" in out.stderr and "secretsFile" in out.stderr
