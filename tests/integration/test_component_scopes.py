"""Component scopes for every kind of component: an app sees only the components scoped to it."""

from __future__ import annotations

import json

from _http import json_request

from pillion._testing import Sidecar

KINDS = {
    "state": "state.in-memory",
    "pubsub": "pubsub.in-memory",
    "files": "bindings.localstorage",
    "secrets": "secretstores.local.env",
    "locks": "lock.lmdb",
    "settings": "configuration.lmdb",
}


def _resources(tmp_path):
    folder = tmp_path / "resources"
    folder.mkdir()
    for name, kind in KINDS.items():
        metadata = f"[{{name: rootPath, value: '{tmp_path / 'files'}'}}]" if name == "files" else "[]"
        (folder / f"{name}.yaml").write_text(
            f"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: {name}}}\n"
            f"spec: {{type: {kind}, version: v1, metadata: {metadata}}}\nscopes: [owner]\n")
    (folder / "shared.yaml").write_text("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: shared}\n"
                                        "spec: {type: state.in-memory, version: v1}\n")
    return folder


def _calls(port):
    """One request per building block, on the component of that kind; (status, errorCode or None)."""
    answers = {
        "state": json_request(port, "GET", "/v1.0/state/state/k"),
        "pubsub": json_request(port, "POST", "/v1.0/publish/pubsub/t", b"{}"),
        "files": json_request(port, "POST", "/v1.0/bindings/files", json.dumps({"operation": "list"}).encode()),
        "secrets": json_request(port, "GET", "/v1.0/secrets/secrets/HOME"),
        "locks": json_request(port, "POST", "/v1.0-alpha1/lock/locks",
                              json.dumps({"resourceId": "r", "lockOwner": "o", "expiryInSeconds": 5}).encode()),
        "settings": json_request(port, "GET", "/v1.0/configuration/settings?key=a"),
    }
    return {name: (status, body.get("errorCode") if isinstance(body, dict) else None)
            for name, (status, _, body) in answers.items()}


def test_components_scoped_to_another_app_are_invisible(tmp_path, processes):
    resources = _resources(tmp_path)
    owner = Sidecar(tmp_path, "owner", "--resources-path", str(resources))
    stranger = Sidecar(tmp_path, "stranger", "--resources-path", str(resources))
    processes.extend([owner, stranger])

    def names(sidecar):
        return sorted(c["name"] for c in json_request(sidecar.http_port, "GET", "/v1.0/metadata")[2]["components"])

    assert names(owner) == sorted([*KINDS, "shared"])
    assert names(stranger) == ["shared"]
    assert all(status < 300 for status, _ in _calls(owner.http_port).values()), _calls(owner.http_port)
    assert _calls(stranger.http_port) == {
        "state": (400, "ERR_STATE_STORE_NOT_FOUND"),
        "pubsub": (400, "ERR_PUBSUB_NOT_CONFIGURED"),
        "files": (500, "ERR_INVOKE_OUTPUT_BINDING"),
        "secrets": (500, "ERR_SECRET_STORES_NOT_CONFIGURED"),
        "locks": (500, "ERR_LOCK_STORE_NOT_CONFIGURED"),
        "settings": (500, "ERR_CONFIGURATION_STORE_NOT_CONFIGURED"),
    }
