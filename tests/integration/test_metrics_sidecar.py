"""Metrics through a real sidecar: /metrics parses as Prometheus text, Dapr's counters move with the calls
made (state, invocation, publish and delivery, output and input bindings), labels carry route templates;
`--enable-metrics=false` and `spec.metrics.enabled: false` mean no listener; a taken port is not fatal."""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest
from _http import request
from prometheus_client.parser import text_string_to_metric_families

from pillion._testing import Sidecar, free_port, wait_for


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def total(families: dict, name: str, sample: str | None = None, **labels) -> float:
    """The sum of family ``name``'s samples (named ``sample`` if given) whose labels include ``labels``."""
    family = families.get(name) or families.get(name.removesuffix("_total"))  # the parser drops _total
    if family is None:
        return 0
    return sum(s.value for s in family.samples
               if (sample is None or s.name == sample) and all(s.labels.get(k) == v for k, v in labels.items()))


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


RESOURCES = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: statestore}
spec:
  type: state.lmdb
  version: v1
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: pubsub}
spec:
  type: pubsub.mqtt
  version: v1
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: devices}
spec:
  type: bindings.mqtt3
  version: v1
  metadata:
  - {name: topic, value: 'sensors/+/temp'}
  - {name: consumerID, value: reader}
---
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata: {name: orders}
spec:
  pubsubname: pubsub
  topic: orders
  routes:
    default: /orders
"""


def test_counters_move_with_the_calls_made(tmp_path, processes, echo_app):
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "all.yaml").write_text(RESOURCES)
    app = echo_app()
    metrics_port = free_port()
    sidecar = Sidecar(tmp_path, "shop", "--resources-path", str(resources), "--app-port", str(app.port),
                      "--metrics-port", str(metrics_port), "--mqtt-port", str(free_port()))
    processes.append(sidecar)
    port = sidecar.http_port
    before = scrape(metrics_port)
    assert total(before, "dapr_runtime_component_loaded") == 3

    for i in range(20):  # distinct keys: one route template
        assert request(port, "POST", "/v1.0/state/statestore", json.dumps([{"key": f"k{i}", "value": i}]))[0] == 204
        assert request(port, "GET", f"/v1.0/state/statestore/k{i}")[0] == 200
    assert request(port, "GET", "/v1.0/invoke/shop/method/hello")[0] == 200
    assert request(port, "POST", "/v1.0/invoke/shop/method/status/503")[0] == 503
    assert request(port, "POST", "/v1.0/publish/pubsub/orders", json.dumps({"id": 1}),
                   {"Content-Type": "application/json"})[0] == 204
    status, _, _ = request(port, "POST", "/v1.0/bindings/devices", json.dumps(
        {"operation": "create", "data": {"t": 21}, "metadata": {"topic": "sensors/1/temp"}}))
    assert status in (200, 204)

    def delivered():
        families = scrape(metrics_port)
        return (total(families, "dapr_component_pubsub_ingress_count", process_status="success", topic="orders") >= 1
                and total(families, "dapr_component_input_binding_count", component="devices", success="true") >= 1)

    wait_for(delivered, 15, interval=0.2, what="pub/sub and input binding deliveries in the metrics")
    after = scrape(metrics_port)

    # HTTP server: route templates, not raw paths
    state_item = "/v1.0/state/{storeName}/{key}"
    assert total(after, "dapr_http_server_request_count", method="GET", path=state_item, app_id="shop") == 20
    assert total(after, "dapr_http_server_response_count", method="POST", path="/v1.0/state/{storeName}",
                 status="204") == 20
    assert total(after, "dapr_http_server_latency", "dapr_http_server_latency_count", path=state_item) == 20
    paths = {s.labels.get("path") for s in after["dapr_http_server_request_count"].samples}
    assert not any("k1" in p for p in paths), paths
    # state component operations
    assert total(after, "dapr_component_state_count", component="statestore", operation="set", success="true") == 20
    assert total(after, "dapr_component_state_count", component="statestore", operation="get", success="true") == 20
    # service invocation and the HTTP client into the app
    assert total(after, "dapr_runtime_service_invocation_req_sent_total", destination_app_id="shop") == 2
    assert total(after, "dapr_runtime_service_invocation_res_recv_total", destination_app_id="shop",
                 status="503") == 1
    assert total(after, "dapr_http_client_completed_count", method="GET", status="200") >= 1
    assert total(after, "dapr_http_client_completed_count", method="POST", status="503") == 1
    # pub/sub both ways, bindings both ways
    assert total(after, "dapr_component_pubsub_egress_count", component="pubsub", topic="orders",
                 success="true") == 1
    assert total(after, "dapr_component_pubsub_ingress_count", component="pubsub", topic="orders",
                 process_status="success") == 1
    assert total(after, "dapr_component_output_binding_count", component="devices", operation="create",
                 success="true") == 1
    assert total(after, "dapr_component_input_binding_latencies", "dapr_component_input_binding_latencies_count",
                 component="devices") >= 1
    # process and Pillion's own figures
    assert total(after, "process_resident_memory_bytes") > 5_000_000
    assert total(after, "process_open_fds") > 3
    assert total(after, "pillion_lmdb_map_used_bytes", component="statestore") > 0
    assert total(after, "pillion_lmdb_map_size_bytes", component="statestore") >= \
        total(after, "pillion_lmdb_map_used_bytes", component="statestore")
    assert total(after, "pillion_broker_clients_connected") >= 1
    assert "pillion_broker_queued_messages" in after


@pytest.mark.parametrize("how", ["flag", "configuration"])
def test_metrics_off_means_no_listener(tmp_path, processes, how):
    metrics_port = free_port()
    extra = ["--metrics-port", str(metrics_port)]
    if how == "flag":
        extra.append("--enable-metrics=false")
    else:
        config = tmp_path / "config.yaml"
        config.write_text("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: c}\n"
                          "spec:\n  metrics:\n    enabled: false\n")
        extra += ["--config", str(config)]
    sidecar = Sidecar(tmp_path, "quiet", *extra)
    processes.append(sidecar)
    assert request(sidecar.http_port, "GET", "/v1.0/healthz")[0] == 204
    assert not listening(metrics_port)


def test_a_taken_metrics_port_is_a_warning(tmp_path, processes):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sidecar = Sidecar(tmp_path, "crowded", "--metrics-port", str(port))
        processes.append(sidecar)
        assert request(sidecar.http_port, "GET", "/v1.0/healthz")[0] == 204
        wait_for(lambda: "running without metrics" in sidecar.output(), what="the warning")
