"""The official Dapr JavaScript SDK (``@dapr/dapr``, tests/js) over HTTP against real sidecars.

The node scripts print one JSON line of ``{check: "ok" | "FAIL: ..."}`` and exit non-zero on
a failure; this module starts the sidecars (and, for app.js, the app under ``pillion run``)
and asserts every check. Install the SDK with ``npm ci --prefix tests/js``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from _http import json_request

from pillion._testing import Sidecar, free_port, wait_for

JS = Path(__file__).resolve().parents[1] / "js"
NODE = shutil.which("node")

if NODE is None:
    pytest.skip("node (Node.js 20) is not installed", allow_module_level=True)


@pytest.fixture(autouse=True)
def sdk_installed():
    """Each test fails under CI (env ``CI``) without the npm packages, and skips elsewhere."""
    if not (JS / "node_modules/@dapr/dapr").is_dir():
        message = "the Dapr JS SDK is not installed in tests/js; run `npm ci --prefix tests/js`"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)

SECRETS = {"db-password": "s3cret", "api-key": "k-123"}


def write_resources(tmp: Path) -> Path:
    """Every component the scripts use, under the names they use."""
    resources = tmp / "resources"
    resources.mkdir()
    (tmp / "files").mkdir()
    (tmp / "secrets.json").write_text(json.dumps(SECRETS))
    docs = [
        ("statestore", "state.lmdb", {"actorStateStore": "true"}),
        ("pubsub", "pubsub.mqtt", {}),
        ("files", "bindings.localstorage", {"rootPath": str(tmp / "files")}),
        ("secrets", "secretstores.local.file", {"secretsFile": str(tmp / "secrets.json")}),
        ("lockstore", "lock.lmdb", {}),
        ("configstore", "configuration.lmdb", {}),
        ("tick", "bindings.cron", {"schedule": "@every 1s"}),
    ]
    text = "\n---\n".join(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\n"
        f"metadata: {{name: {name}}}\nspec:\n  type: {kind}\n  version: v1\n  metadata:"
        + ("".join(f"\n  - {{name: {k}, value: {json.dumps(v)}}}" for k, v in meta.items()) or " []")
        for name, kind, meta in docs
    )
    (resources / "components.yaml").write_text(text + "\n")
    return resources


def run_script(script: str, http_port: int, **env: str) -> dict:
    full_env = dict(os.environ, DAPR_HTTP_PORT=str(http_port), DAPR_HOST="127.0.0.1", **env)
    full_env.pop("DAPR_API_TOKEN", None)
    full_env.pop("DAPR_HTTP_ENDPOINT", None)
    out = subprocess.run([NODE, str(JS / script)], check=False, capture_output=True, text=True, env=full_env,
                         timeout=90, cwd=JS)
    lines = out.stdout.strip().splitlines()
    assert lines, f"{script} printed nothing (exit {out.returncode}):\n{out.stderr}"
    results = json.loads(lines[-1])
    failed = {k: v for k, v in results.items() if not str(v).startswith(("ok", "http-not-supported"))}
    assert not failed and out.returncode == 0, f"{script}: {failed}\n{out.stderr}"
    return results


def test_js_sdk_client_building_blocks_over_http(tmp_path, processes):
    resources = write_resources(tmp_path)
    sidecar = Sidecar(tmp_path, "jsclient", "--resources-path", str(resources))
    processes.append(sidecar)
    results = run_script("client.js", sidecar.http_port, EXPECT_APP_ID="jsclient")
    expected = {"state.save", "state.get", "state.get.missing", "state.getBulk", "state.delete", "state.transaction",
                "state.query", "state.save.etag", "state.delete.etag", "state.save.ttl-metadata", "pubsub.publish",
                "binding.send", "secret.get", "secret.getBulk", "metadata.get", "metadata.set", "lock.lock",
                "lock.unlock", "health.isHealthy", "sidecar.shutdown"}  # fmt: skip
    assert {k for k, v in results.items() if v == "ok"} == expected
    # @dapr/dapr's HTTP client throws HTTPNotSupportedError for configuration before sending anything.
    assert results["configuration.get"] == "http-not-supported-by-sdk: HTTPNotSupportedError"
    assert (tmp_path / "files/js.txt").read_text() == "hello from js"
    wait_for(lambda: not sidecar.alive(), 10, what="the sidecar to exit after POST /v1.0/shutdown")
    assert sidecar.proc.returncode == 0, sidecar.output()


def test_js_sdk_server_invocation_pubsub_and_actors(tmp_path, processes):
    """app.js (DaprServer, HTTP) runs under ``pillion run``; drive.js calls it through the sidecar."""
    resources = write_resources(tmp_path)
    app_port = free_port()
    sidecar = Sidecar(tmp_path, "jsapp", "--resources-path", str(resources), "--app-port", str(app_port),
                      command="run", app=[NODE, str(JS / "app.js")], wait=None)  # fmt: skip
    processes.append(sidecar)
    # healthz turns 204 once the app listens; the actor type is hosted once the sidecar read /dapr/config.
    sidecar.wait_status("/v1.0/healthz", 204, timeout=30)

    def hosted():
        status, _, meta = json_request(sidecar.http_port, "GET", "/v1.0/metadata")
        return status == 200 and "CounterActor" in [a.get("type") for a in meta.get("actors") or []]

    wait_for(hosted, 20, what="app.js to register its actor type")
    results = run_script("drive.js", sidecar.http_port, TARGET_APP_ID="jsapp")
    assert set(results) == {"invoker.invoke", "pubsub.publish", "server.pubsub.subscribe", "pubsub.publishBulk",
                            "pubsub.publish.rawPayload", "server.pubsub.bulk+raw",
                            "pubsub.publishBulk.to-bulk-subscriber", "server.pubsub.subscribeBulk",
                            "server.binding.receive", "actor.invoke+state", "actor.isolation", "actor.reminder",
                            "actor.timer"}  # fmt: skip
    assert "== APP == js app listening on" in sidecar.output()
