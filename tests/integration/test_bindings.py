"""Bindings through a real sidecar: MQTT both ways on the embedded broker and on Mosquitto, and the
output binding API's errors."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time

import pytest
from _http import json_request, request
from _mqtt import Mosquitto
from test_pubsub import SubscriberApp

from pillion._testing import Sidecar, free_port, wait_for


@pytest.fixture(params=["embedded", "mosquitto"])
def mqtt_binding(request, tmp_path, processes):
    """A resources folder with `devices`, a bindings.mqtt on sensors/+/temp; returns (folder, broker port)."""
    resources = tmp_path / "resources"
    resources.mkdir()
    mqtt_port = free_port()
    url = ""
    broker_port = mqtt_port
    if request.param == "mosquitto":
        (tmp_path / "mosquitto").mkdir()
        mosquitto = Mosquitto(tmp_path / "mosquitto")
        processes.append(mosquitto)
        url = f"  - {{name: url, value: 'tcp://127.0.0.1:{mosquitto.port}'}}\n"
        broker_port = mosquitto.port
    (resources / "devices.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: devices}\n"
        "spec:\n  type: bindings.mqtt3\n  version: v1\n  metadata:\n  - {name: topic, value: 'sensors/+/temp'}\n"
        f"  - {{name: consumerID, value: reader}}\n{url}")
    return resources, mqtt_port, broker_port


def test_mqtt_binding_both_ways(tmp_path, processes, mqtt_binding):
    resources, mqtt_port, broker_port = mqtt_binding
    app = SubscriberApp(tmp_path, {})
    processes.append(app)
    sidecar = Sidecar(tmp_path, "device-app", "--resources-path", str(resources), "--app-port", str(app.port),
                      "--mqtt-port", str(mqtt_port))
    processes.append(sidecar)
    wait_for(lambda: "input binding devices delivers to /devices" in sidecar.output(), what="input binding")
    subprocess.run(["mosquitto_pub", "-p", str(broker_port), "-q", "1", "-t", "sensors/kitchen/temp", "-m", "21.5"],
                   check=True, timeout=10)
    wait_for(lambda: app.received(), what="the device's reading at the app")
    entry = app.received()[0]
    assert (entry["path"], entry["body"], entry["headers"]["topic"]) == ("/devices", "21.5", "sensors/kitchen/temp")
    assert entry["headers"]["content-type"] == "application/json"
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(broker_port), "-t", "actuators/#", "-C", "1", "-W", "10", "-v"],
                           stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        status, _, _ = request(sidecar.http_port, "POST", "/v1.0/bindings/devices", json.dumps(
            {"operation": "create", "data": {"on": True}, "metadata": {"topic": "actuators/fan"}}))
        assert status == 204
        out, _ = sub.communicate(timeout=10)
        assert out.strip() == 'actuators/fan {"on":true}'
    finally:
        sub.kill()
    components = {c["name"]: c for c in json_request(sidecar.http_port, "GET", "/v1.0/metadata")[2]["components"]}
    assert components["devices"]["capabilities"] == ["INPUT_BINDING", "OUTPUT_BINDING"]


def test_output_binding_errors(tmp_path, processes, mqtt_binding):
    resources, mqtt_port, _ = mqtt_binding
    sidecar = Sidecar(tmp_path, "errors", "--resources-path", str(resources), "--mqtt-port", str(mqtt_port))
    processes.append(sidecar)
    status, _, body = json_request(sidecar.http_port, "POST", "/v1.0/bindings/nope", json.dumps({"operation": "create"}))
    assert (status, body["errorCode"]) == (500, "ERR_INVOKE_OUTPUT_BINDING") and "couldn't find" in body["message"]
    status, _, body = json_request(sidecar.http_port, "POST", "/v1.0/bindings/devices", json.dumps({"operation": "get"}))
    assert (status, body["errorCode"]) == (500, "ERR_INVOKE_OUTPUT_BINDING")
    assert "supported operations: create" in body["message"]
    status, _, body = json_request(sidecar.http_port, "POST", "/v1.0/bindings/devices", b"[1]")
    assert (status, body["errorCode"]) == (400, "ERR_MALFORMED_REQUEST")
    assert sidecar.alive()


def _component(resources, name, kind, **metadata):
    items = "".join(f"  - {{name: {k}, value: '{v}'}}\n" for k, v in metadata.items())
    (resources / f"{name}.yaml").write_text(f"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: {name}}}\n"
                                            f"spec:\n  type: {kind}\n  version: v1\n  metadata:\n{items}")


def test_cron_and_local_storage(tmp_path, processes):
    resources = tmp_path / "resources"
    resources.mkdir()
    files = tmp_path / "files"
    files.mkdir()
    _component(resources, "tick", "bindings.cron", schedule="@every 1s")
    _component(resources, "files", "bindings.localstorage", rootPath=str(files))
    app = SubscriberApp(tmp_path, {})
    processes.append(app)
    sidecar = Sidecar(tmp_path, "cron-app", "--resources-path", str(resources), "--app-port", str(app.port))
    processes.append(sidecar)
    wait_for(lambda: len([e for e in app.received() if e["path"] == "/tick"]) >= 2, timeout=10, what="two ticks")
    tick = next(e for e in app.received() if e["path"] == "/tick")
    assert tick["body"] == "" and "readtimeutc" in tick["headers"]

    def call(operation, data=None, **metadata):
        return json_request(sidecar.http_port, "POST", "/v1.0/bindings/files",
                            json.dumps({"operation": operation, "data": data, "metadata": metadata}))

    status, _, body = call("create", "hello", fileName="notes/a.txt")
    assert (status, body) == (200, {"fileName": "notes/a.txt"})
    status, _, _ = request(sidecar.http_port, "POST", "/v1.0/bindings/files",
                           json.dumps({"operation": "get", "metadata": {"fileName": "notes/a.txt"}}))
    assert status == 200 and (files / "notes" / "a.txt").exists()
    for bad in ("../escape", "/etc/passwd", "notes/../../escape"):
        status, _, body = call("get", fileName=bad)
        assert (status, body["errorCode"]) == (500, "ERR_INVOKE_OUTPUT_BINDING"), bad
    assert not (tmp_path / "escape").exists()
    status, _, _ = call("delete", fileName="notes/a.txt")
    assert status in (200, 204) and not (files / "notes" / "a.txt").exists()


def test_bad_cron_spec_stops_start_up(tmp_path):
    resources = tmp_path / "resources"
    resources.mkdir()
    _component(resources, "tick", "bindings.cron", schedule="every minute please")
    result = subprocess.run([sys.executable, "-m", "pillion", "sidecar", "--app-id", "a", "--dapr-http-port",
                             str(free_port()), "--mqtt-port", "0", "--resources-path", str(resources)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "schedule" in result.stderr


def test_http_binding_calls_a_real_server(tmp_path, processes, echo_app):
    server = echo_app()
    resources = tmp_path / "resources"
    resources.mkdir()
    _component(resources, "backend", "bindings.http", url=f"http://127.0.0.1:{server.port}",
               responseTimeout="500ms")
    sidecar = Sidecar(tmp_path, "caller", "--resources-path", str(resources))
    processes.append(sidecar)

    def call(operation, data=None, **metadata):
        return request(sidecar.http_port, "POST", "/v1.0/bindings/backend",
                       json.dumps({"operation": operation, "data": data, "metadata": metadata}))

    status, headers, body = call("post", {"temp": 21}, path="/api/readings", **{"X-Device": "kitchen"})
    assert status == 200
    echoed = json.loads(body)
    assert (echoed["method"], echoed["path"]) == ("POST", "/api/readings")
    assert ["X-Device", "kitchen"] in echoed["headers"]
    assert json.loads(base64.b64decode(echoed["body"])) == {"temp": 21}
    assert headers["metadata.statuscode"] == "200" and headers["metadata.x-echo"] == "yes"
    status, _, body = call("get", path="/api/readings")
    assert status == 200 and json.loads(body)["method"] == "GET"
    status, _, body = call("get", path="/status/503")
    assert status == 500 and b"503" in body  # errorIfNot2XX, Dapr's default
    status, _, body = call("get", path="/sleep/2000")
    assert status == 500 and json.loads(body)["errorCode"] == "ERR_INVOKE_OUTPUT_BINDING"  # responseTimeout
    status, _, body = call("connect")
    assert status == 500 and b"supported operations" in body


def test_local_storage_list_base64_and_symlinks(tmp_path, processes):
    resources = tmp_path / "resources"
    resources.mkdir()
    files = tmp_path / "files"
    files.mkdir()
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    (files / "link").symlink_to(outside)
    (files / "dir-link").symlink_to(tmp_path)
    _component(resources, "files", "bindings.localstorage", rootPath=str(files))
    sidecar = Sidecar(tmp_path, "storage", "--resources-path", str(resources))
    processes.append(sidecar)

    def call(operation, data=None, **metadata):
        return request(sidecar.http_port, "POST", "/v1.0/bindings/files",
                       json.dumps({"operation": operation, "data": data, "metadata": metadata}))

    raw = bytes(range(256))
    status, _, _ = call("create", base64.b64encode(raw).decode(), fileName="blob.bin")  # base64 is decoded
    assert status == 200 and (files / "blob.bin").read_bytes() == raw
    status, _, body = call("get", fileName="blob.bin")
    assert status == 200 and body == raw
    status, _, body = call("list")
    assert status == 200 and str(files / "blob.bin") in json.loads(body)
    for escape in ("link", "dir-link/secret.txt"):
        status, _, body = call("get", fileName=escape)
        assert status == 500 and b"not yours" not in body, escape
        status, _, _ = call("create", "overwrite", fileName=escape)
        assert status == 500, escape
    assert outside.read_text() == "not yours"
