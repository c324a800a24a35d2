"""Helpers for tests of the state API: resources folders with state components, save and get."""

from __future__ import annotations

import json

from _http import json_request, request

STORE = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {name}
spec:
  type: {type}
  version: v1
  metadata:{metadata}
"""


def write_resources(tmp_path, *stores):
    folder = tmp_path / "resources"
    folder.mkdir(exist_ok=True)
    for name, type_, metadata in stores:
        lines = "".join(f"\n  - name: {k}\n    value: \"{v}\"" for k, v in metadata.items()) or " []"
        (folder / f"{name}.yaml").write_text(STORE.format(name=name, type=type_, metadata=lines))
    return str(folder)


def save(sc, items, store="store", query=""):
    return json_request(sc.http_port, "POST", f"/v1.0/state/{store}{query}", json.dumps(items).encode(),
                        {"Content-Type": "application/json"})


def get(sc, key, store="store"):
    return request(sc.http_port, "GET", f"/v1.0/state/{store}/{key}")
