"""Resiliency policies on components, through a real sidecar: pub/sub delivery (inbound) and an
output binding (outbound) follow the policy; a component without one keeps its defaults."""

from __future__ import annotations

import json
import time

from _http import json_request
from test_pubsub import SubscriberApp, _publish, _start, _subscribed

from pillion._testing import wait_for

PUBSUB = ("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: pubsub}\n"
          "spec: {type: pubsub.mqtt, version: v1, metadata: [{name: qos, value: '1'}]}\n")
RESILIENCY = """
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {name: edge}
spec:
  policies:
    retries:
      twice: {policy: constant, duration: 200ms, maxRetries: 2}
  targets:
    components:
      pubsub: {inbound: {retry: twice}}
      backend: {outbound: {retry: twice}}
"""


def test_pubsub_delivery_retries_follow_the_policy_then_dead_letter(tmp_path, processes, echo_app):
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "pubsub.yaml").write_text(PUBSUB)
    (resources / "resiliency.yaml").write_text(RESILIENCY)
    app = SubscriberApp(tmp_path, {"subscriptions": [
        {"pubsubname": "pubsub", "topic": "orders", "route": "/status/500", "deadLetterTopic": "orders-dead"},
        {"pubsubname": "pubsub", "topic": "orders-dead", "route": "/dead"}]})
    processes.append(app)
    sidecar = _start(tmp_path, processes, resources, app.port)
    _subscribed(sidecar, 2)
    assert _publish(sidecar, "orders", json.dumps({"n": 1}).encode())[0] == 204
    wait_for(lambda: app.received(), what="the dead letter")
    attempts = [e for e in app.received(accepted_only=False) if e["path"] == "/status/500"]
    assert len(attempts) == 3  # the first delivery and maxRetries 2, not the default five
    assert [e["path"] for e in app.received()] == ["/dead"]


def test_an_output_binding_is_retried_by_its_outbound_policy(tmp_path, processes, echo_app):
    server = echo_app()
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "resiliency.yaml").write_text(RESILIENCY)
    for name in ("backend", "plain"):  # the same endpoint; only `backend` has a policy
        (resources / f"{name}.yaml").write_text(
            f"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: {name}}}\n"
            f"spec: {{type: bindings.http, version: v1, metadata: [{{name: url, value: 'http://127.0.0.1:{server.port}'}}]}}\n")
    app = SubscriberApp(tmp_path, {})
    processes.append(app)
    sidecar = _start(tmp_path, processes, resources, app.port)

    def call(binding, path):
        started = time.monotonic()
        status, _, body = json_request(sidecar.http_port, "POST", f"/v1.0/bindings/{binding}",
                                       json.dumps({"operation": "get", "metadata": {"path": path}}))
        return status, body, time.monotonic() - started

    status, _, elapsed = call("backend", "/flaky/2/a")
    assert status == 200 and elapsed >= 0.35  # two 503s, retried 200ms apart
    status, body, _ = call("plain", "/flaky/2/b")
    assert status == 500 and body["errorCode"] == "ERR_INVOKE_OUTPUT_BINDING"  # no policy: the first 503 fails
    status, body, _ = call("backend", "/flaky/9/c")
    assert status == 500 and "503" in body["message"]  # retries used up
    status, body, _ = call("backend", "/x")
    assert status == 200
    status, _, body = json_request(sidecar.http_port, "POST", "/v1.0/bindings/backend",
                                   json.dumps({"operation": "teleport"}))
    assert status == 500 and "supported operations" in body["message"]
