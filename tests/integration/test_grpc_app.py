"""A gRPC app (--app-protocol grpc) written with the official SDK's ``dapr.ext.grpc.App``.

The sidecar calls the app's AppCallback services: invocation over HTTP reaches OnInvoke
(gRPC codes mapped to HTTP statuses as daprd maps them), published events and MQTT
messages reach OnTopicEvent (RETRY redelivers, DROP drops), an mqtt3 input binding reaches
OnBindingEvent, and HealthCheck drives app health.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _http import json_request, request

from pillion._testing import Process, Sidecar, free_port, wait_for

pytest.importorskip("grpc", reason="the grpc extra (pip install 'pillion[grpc]') is not installed")
pytest.importorskip("dapr.ext.grpc", reason="the official Dapr Python SDK (pip package 'dapr') is not installed")


class GrpcApp(Process):
    """``pillion._testing.grpc_app``: what it received is in a JSON-lines file."""

    def __init__(self, tmp: Path, port: int | None = None, wait: bool = True):
        self.port = port or free_port()
        self.record = tmp / f"grpc-app-{self.port}.jsonl"
        super().__init__([sys.executable, "-m", "pillion._testing.grpc_app", str(self.port), str(self.record)],
                         tmp / f"grpc-app-{self.port}.log")
        if wait:
            wait_for(self._listening, what="gRPC app")

    def _listening(self) -> bool:
        import socket

        if not self.alive():
            raise RuntimeError(f"gRPC app exited:\n{self.output()}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def received(self, kind: str | None = None) -> list[dict]:
        if not self.record.exists():
            return []
        lines = [json.loads(line) for line in self.record.read_text().split("\n")[:-1] if line.strip()]
        return [entry for entry in lines if kind is None or entry["kind"] == kind]


def _resources(tmp_path: Path) -> Path:
    """``pubsub`` on the embedded broker and an mqtt3 input binding ``devices`` on sensors/+/temp."""
    resources = tmp_path / "resources"
    resources.mkdir(exist_ok=True)
    (resources / "pubsub.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: pubsub}\n"
        "spec:\n  type: pubsub.mqtt\n  version: v1\n  metadata:\n  - {name: qos, value: '1'}\n")
    (resources / "devices.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: devices}\n"
        "spec:\n  type: bindings.mqtt3\n  version: v1\n  metadata:\n  - {name: topic, value: 'sensors/+/temp'}\n"
        "  - {name: consumerID, value: reader}\n")
    return resources


def _sidecar(tmp_path, processes, app_port: int, *extra: str, app_id: str = "gapp", **kwargs) -> Sidecar:
    sc = Sidecar(tmp_path, app_id, "--app-port", str(app_port), "--app-protocol", "grpc", *extra, **kwargs)
    processes.append(sc)
    return sc


def test_invocation_maps_grpc_codes_like_daprd(tmp_path, processes):
    app = GrpcApp(tmp_path)
    processes.append(app)
    sc = _sidecar(tmp_path, processes, app.port, env={"APP_API_TOKEN": "s3cret"})
    status, headers, body = request(sc.http_port, "POST", "/v1.0/invoke/gapp/method/echo?a=b", b"hello",
                                    {"Content-Type": "text/plain", "X-Thing": "one"})
    assert (status, body) == (200, b"echo:hello")
    assert headers["Content-Type"] == "text/plain" and headers["x-echo"] == "yes"
    [seen] = app.received("invoke")
    assert (seen["body"], seen["content_type"]) == ("hello", "text/plain")
    assert seen["metadata"]["x-thing"] == "one"  # HTTP headers travel as gRPC metadata
    assert seen["metadata"]["dapr-api-token"] == "s3cret"  # APP_API_TOKEN, as metadata for a gRPC app
    # An exception in the app is gRPC Unknown -> 500; a method the app lacks is Unimplemented -> 501.
    # The body is the google.rpc.Status as JSON, as daprd answers.
    status, _, body = json_request(sc.http_port, "POST", "/v1.0/invoke/gapp/method/boom", b"{}")
    assert status == 500
    assert body == {"code": 2, "message": "Exception calling application: boom went the app", "details": []}
    status, _, body = json_request(sc.http_port, "GET", "/v1.0/invoke/gapp/method/missing")
    assert (status, body["code"]) == (501, 12)
    assert "missing method not implemented" in body["message"]
    # From another sidecar (no app of its own) through the internal listener.
    caller = Sidecar(tmp_path, "caller")
    processes.append(caller)
    status, _, body = request(caller.http_port, "PUT", "/v1.0/invoke/gapp/method/echo", b"via peer")
    assert (status, body) == (200, b"echo:via peer")
    assert app.received("invoke")[-1]["metadata"]["dapr-caller-app-id"] == "caller"


def test_app_not_up_then_gone(tmp_path, processes):
    port = free_port()
    sc = _sidecar(tmp_path, processes, port)
    status, _, body = json_request(sc.http_port, "POST", "/v1.0/invoke/gapp/method/echo", b"x")
    assert (status, body) == (500, {"errorCode": "ERR_DIRECT_INVOKE",
                                    "message": "failed to invoke, id: gapp, err: app channel is not initialized"})
    app = GrpcApp(tmp_path, port)
    processes.append(app)
    sc.wait_status("/v1.0/healthz", 204)
    assert request(sc.http_port, "POST", "/v1.0/invoke/gapp/method/echo", b"x")[0::2] == (200, b"echo:x")
    app.stop()
    # daprd's gRPC channel turns the transport error into the call's status: Unavailable -> 503.
    status, _, body = json_request(sc.http_port, "POST", "/v1.0/invoke/gapp/method/echo", b"x")
    assert (status, body["code"], body["details"]) == (503, 14, [])
    assert sc.alive()


def test_health_check_rpc_drives_app_health(tmp_path, processes):
    app = GrpcApp(tmp_path)
    processes.append(app)
    sc = _sidecar(tmp_path, processes, app.port, "--enable-app-health-check", "--app-health-probe-interval", "0.2",
                  "--app-health-threshold", "2")
    wait_for(lambda: request(sc.http_port, "POST", "/v1.0/invoke/gapp/method/echo", b"a")[0] == 200,
             what="healthy app")
    sick = Path(str(app.record) + ".sick")
    sick.write_text("")
    unhealthy = {"errorCode": "ERR_DIRECT_INVOKE", "message": "failed to invoke, id: gapp, err: app is not in a "
                                                              "healthy state"}

    def refused() -> bool:
        status, _, body = request(sc.http_port, "POST", "/v1.0/invoke/gapp/method/echo", b"a")
        return status == 500 and json.loads(body) == unhealthy

    wait_for(refused, what="unhealthy app")
    sick.unlink()
    wait_for(lambda: request(sc.http_port, "POST", "/v1.0/invoke/gapp/method/echo", b"b")[0] == 200,
             what="healthy again")
    assert "app is unhealthy after 2 failed probes (HealthCheck)" in sc.output()
    assert "app is healthy again" in sc.output()


def test_topic_events_reach_on_topic_event(tmp_path, processes):
    app = GrpcApp(tmp_path)
    processes.append(app)
    mqtt_port = free_port()
    sc = _sidecar(tmp_path, processes, app.port, "--resources-path", str(_resources(tmp_path)),
                  "--mqtt-port", str(mqtt_port))
    wait_for(lambda: "subscribed:" in sc.output(), what="subscriptions")
    _, _, body = json_request(sc.http_port, "GET", "/v1.0/metadata")
    topics = {(s["pubsubname"], s["topic"]): s for s in body["subscriptions"]}
    assert set(topics) == {("pubsub", "orders"), ("pubsub", "flaky"), ("pubsub", "junk"), ("pubsub", "raw")}
    assert topics[("pubsub", "raw")]["metadata"] == {"rawPayload": "true"}

    assert request(sc.http_port, "POST", "/v1.0/publish/pubsub/orders", b'{"n": 1}',
                   {"Content-Type": "application/json"})[0] == 204
    wait_for(lambda: app.received("topic"), what="the order at the app")
    [order] = app.received("topic")
    assert (order["topic"], json.loads(order["data"]), order["content_type"]) == ("orders", {"n": 1},
                                                                                  "application/json")
    assert order["extensions"]["pubsubname"] == "pubsub"  # CloudEvent fields beyond the envelope's own

    # RETRY: delivered again (after the 0.5 s back-off), then SUCCESS.
    assert request(sc.http_port, "POST", "/v1.0/publish/pubsub/flaky", b"again", {"Content-Type": "text/plain"})[0] == 204
    wait_for(lambda: len([e for e in app.received("topic") if e["topic"] == "flaky"]) == 2, what="redelivery")
    first, second = [e for e in app.received("topic") if e["topic"] == "flaky"]
    assert (first["answer"], second["answer"], first["id"], second["data"]) == ("retry", "success", second["id"],
                                                                                "again")
    # DROP: delivered once, never again.
    assert request(sc.http_port, "POST", "/v1.0/publish/pubsub/junk", b"bad", {"Content-Type": "text/plain"})[0] == 204
    wait_for(lambda: [e for e in app.received("topic") if e["topic"] == "junk"], what="junk at the app")
    time.sleep(2.0)  # a RETRY would have come back within 0.5 s
    assert len([e for e in app.received("topic") if e["topic"] == "junk"]) == 1
    assert "the app dropped a message" in sc.output()

    # A device's plain MQTT message on the embedded broker reaches the rawPayload subscription as is.
    subprocess.run(["mosquitto_pub", "-p", str(mqtt_port), "-q", "1", "-t", "raw", "-m", "21.5"], check=True,
                   timeout=10)
    wait_for(lambda: [e for e in app.received("topic") if e["topic"] == "raw"], what="raw payload at the app")
    [raw] = [e for e in app.received("topic") if e["topic"] == "raw"]
    assert (raw["data"], raw["content_type"]) == ("21.5", "application/octet-stream")
    assert len([e for e in app.received("topic") if e["topic"] == "orders"]) == 1  # SUCCESS: never redelivered


def test_input_binding_reaches_on_binding_event(tmp_path, processes):
    app = GrpcApp(tmp_path)
    processes.append(app)
    mqtt_port = free_port()
    sc = _sidecar(tmp_path, processes, app.port, "--resources-path", str(_resources(tmp_path)),
                  "--mqtt-port", str(mqtt_port))
    wait_for(lambda: "input binding devices delivers to" in sc.output(), what="input binding")
    subprocess.run(["mosquitto_pub", "-p", str(mqtt_port), "-q", "1", "-t", "sensors/kitchen/temp", "-m", "21.5"],
                   check=True, timeout=10)
    wait_for(lambda: app.received("binding"), what="the reading at the app")
    [event] = app.received("binding")
    assert (event["name"], event["data"], event["metadata"]["topic"]) == ("devices", "21.5", "sensors/kitchen/temp")


def test_actors_are_not_asked_of_a_grpc_app(tmp_path, processes):
    """daprd never asks a gRPC app for actor types (GetAppConfig is empty for gRPC channels)."""
    app = GrpcApp(tmp_path)
    processes.append(app)
    sc = _sidecar(tmp_path, processes, app.port)
    wait_for(lambda: "it hosts no actors" in sc.output(), what="actor start-up")
    status, _, body = json_request(sc.http_port, "GET", "/v1.0/metadata")
    assert status == 200 and not body.get("actors")
    assert app.received() == []  # no OnInvoke("dapr/config") reached the app
    assert json_request(sc.http_port, "POST", "/v1.0/actors/T/1/method/m", b"")[0] != 200


def test_envelope_and_subscription_records_follow_daprd():
    """The pure conversions: TopicEventRequest.data by content type, and ListTopicSubscriptions entries."""
    from dapr.proto.runtime.v1 import appcallback_pb2

    from pillion.grpcapi.events import _envelope_data, topic_event_request
    from pillion.runtime.app_channel_grpc import topic_subscription

    assert _envelope_data({"datacontenttype": "application/json", "data": {"b": 1, "a": [2]}}) == b'{"a":[2],"b":1}'
    assert _envelope_data({"datacontenttype": "text/plain; charset=utf-8", "data": "hi"}) == b"hi"
    assert _envelope_data({"datacontenttype": "application/octet-stream", "data_base64": "AAE="}) == b"\x00\x01"
    assert _envelope_data({"datacontenttype": "application/octet-stream", "data": "neither"}) == b""  # as daprd
    event = {"id": "e1", "source": "s", "type": "t", "specversion": "1.0", "datacontenttype": "text/plain",
             "data": "hi", "traceid": "tr", "custom": 7}
    request = topic_event_request(event, "p", "orders", "/in")
    assert (request.id, request.data, request.topic, request.pubsub_name, request.path) == ("e1", b"hi", "orders", "p", "/in")
    assert dict(request.extensions) == {"traceid": "tr", "custom": 7}
    broken = topic_event_request({"id": "e2", "data_base64": "not base64!"}, "p", "orders", "")
    assert broken.data == b""  # sent without data, not retried for ever
    plain = topic_subscription(appcallback_pb2.TopicSubscription(pubsub_name="p", topic="t"))
    assert (plain.rules, plain.default_route, plain.dead_letter_topic) == ([("", "")], None, None)
    plain.compile()
    assert plain.route({}) == ""  # gRPC's implicit default route: an empty path
    routed = topic_subscription(appcallback_pb2.TopicSubscription(
        pubsub_name="p", topic="t", dead_letter_topic="dead", metadata={"rawPayload": "true"},
        routes=appcallback_pb2.TopicRoutes(rules=[appcallback_pb2.TopicRule(match='event.type == "x"', path="px")],
                                           default="other")))
    assert (routed.rules, routed.default_route, routed.dead_letter_topic, routed.raw) == (
        [('event.type == "x"', "px")], "other", "dead", True)
    routed.compile()
    assert (routed.route({"type": "x"}), routed.route({"type": "y"})) == ("px", "other")
    with pytest.raises(ValueError):
        topic_subscription(appcallback_pb2.TopicSubscription(pubsub_name="p"))


def test_error_body_is_the_status_with_its_details():
    """A failed OnInvoke answers the google.rpc.Status as JSON, rich error details included (daprd's body)."""
    import grpc
    from google.protobuf import any_pb2
    from google.rpc import error_details_pb2, status_pb2

    from pillion.errors import HTTP_BY_GRPC
    from pillion.runtime.app_channel_grpc import status_body

    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason="OUT_OF_STOCK", domain="shop"))
    status = status_pb2.Status(code=9, message="no more", details=[detail])
    body = json.loads(status_body(grpc.StatusCode.FAILED_PRECONDITION, "no more",
                                  [("grpc-status-details-bin", status.SerializeToString())]))
    assert body == {"code": 9, "message": "no more", "details": [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "OUT_OF_STOCK", "domain": "shop"}]}
    assert json.loads(status_body(grpc.StatusCode.NOT_FOUND, "", [("grpc-status-details-bin", b"\xff")])) == {
        "code": 5, "message": "", "details": []}
    assert (HTTP_BY_GRPC["FAILED_PRECONDITION"], HTTP_BY_GRPC["CANCELLED"], HTTP_BY_GRPC["DEADLINE_EXCEEDED"],
            HTTP_BY_GRPC["RESOURCE_EXHAUSTED"]) == (400, 408, 504, 429)
    assert set(HTTP_BY_GRPC) == {code.name for code in grpc.StatusCode}  # every status has its HTTP one
