"""Tracing through real sidecars: one trace id from the caller to the app, spans at two collectors.

The collectors are written here: HTTP servers that record what they are sent, one
speaking Zipkin v2 (``POST /api/v2/spans``), one OTLP/HTTP JSON (``POST /v1/traces``).
Each checks the request as its real counterpart would (path, content type, JSON shape)
and answers 400 to anything else, so a wrong export shows up as missing spans.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from _http import json_request, request
from test_pubsub import SubscriberApp, _start, _subscribed

from pillion._testing import wait_for

TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]")
HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")


class Collector:
    """A Zipkin (``kind="zipkin"``) or OTLP/HTTP (``kind="otlp"``) collector on a free port."""

    def __init__(self, kind: str):
        self.kind = kind
        self.path = "/api/v2/spans" if kind == "zipkin" else "/v1/traces"
        self.spans: list[dict] = []  # normalised: traceId, id, parentId, name, kind, tags
        self.rejected: list[str] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                problem = collector.accept(self.path, self.headers.get("Content-Type", ""), body)
                status = 400 if problem else (202 if collector.kind == "zipkin" else 200)
                payload = problem.encode() if problem else (b"" if collector.kind == "zipkin" else b"{}")
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accept(self, path: str, content_type: str, body: bytes) -> str:
        """Record the spans of one export; the reason it is refused, if it is."""
        try:
            if path != self.path:
                raise ValueError(f"wrong path {path}")
            if content_type.split(";")[0].strip() != "application/json":
                raise ValueError(f"wrong content type {content_type!r}")
            data = json.loads(body)
            spans = self._zipkin(data) if self.kind == "zipkin" else self._otlp(data)
        except (ValueError, KeyError, TypeError, AssertionError) as exc:
            with self.lock:
                self.rejected.append(repr(exc))
            return repr(exc)
        with self.lock:
            self.spans.extend(spans)
        return ""

    @staticmethod
    def _zipkin(data) -> list[dict]:
        assert isinstance(data, list)
        out = []
        for span in data:
            assert HEX32.fullmatch(span["traceId"]) and HEX16.fullmatch(span["id"])
            assert "parentId" not in span or HEX16.fullmatch(span["parentId"])
            assert span.get("kind") in ("SERVER", "CLIENT", "PRODUCER", "CONSUMER", None)
            assert isinstance(span["timestamp"], int) and isinstance(span["duration"], int) and span["duration"] > 0
            assert isinstance(span["localEndpoint"]["serviceName"], str)
            assert all(isinstance(v, str) for v in span["tags"].values())
            out.append({"traceId": span["traceId"], "id": span["id"], "parentId": span.get("parentId"),
                        "name": span["name"], "kind": span.get("kind"), "tags": span["tags"],
                        "service": span["localEndpoint"]["serviceName"]})
        return out

    @staticmethod
    def _otlp(data) -> list[dict]:
        kinds = {2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
        out = []
        for resource_spans in data["resourceSpans"]:
            resource = {a["key"]: a["value"]["stringValue"] for a in resource_spans["resource"]["attributes"]}
            for scope_spans in resource_spans["scopeSpans"]:
                assert isinstance(scope_spans["scope"]["name"], str)
                for span in scope_spans["spans"]:
                    assert HEX32.fullmatch(span["traceId"]) and HEX16.fullmatch(span["spanId"])
                    assert "parentSpanId" not in span or HEX16.fullmatch(span["parentSpanId"])
                    assert int(span["endTimeUnixNano"]) >= int(span["startTimeUnixNano"]) > 0
                    assert span["status"]["code"] in (0, 1, 2)
                    tags = {a["key"]: a["value"]["stringValue"] for a in span["attributes"]}
                    out.append({"traceId": span["traceId"], "id": span["spanId"],
                                "parentId": span.get("parentSpanId"), "name": span["name"],
                                "kind": kinds[span["kind"]], "tags": tags, "service": resource["service.name"]})
        return out

    def trace(self, trace_id: str) -> list[dict]:
        with self.lock:
            return [s for s in self.spans if s["traceId"] == trace_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collectors():
    zipkin, otlp = Collector("zipkin"), Collector("otlp")
    yield zipkin, otlp
    zipkin.close()
    otlp.close()


def _config(tmp_path, name: str, rate: str, zipkin: Collector | None, otlp: Collector | None) -> str:
    lines = ["apiVersion: dapr.io/v1alpha1", "kind: Configuration", f"metadata: {{name: {name}}}", "spec:",
             "  tracing:", f"    samplingRate: \"{rate}\""]
    if zipkin:
        lines.append(f"    zipkin: {{endpointAddress: \"http://127.0.0.1:{zipkin.port}/api/v2/spans\"}}")
    if otlp:
        lines.append(f"    otel: {{endpointAddress: \"127.0.0.1:{otlp.port}\", isSecure: false, protocol: http}}")
    path = tmp_path / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _app_traceparent(echo: dict) -> str:
    headers = {k.lower(): v for k, v in echo["headers"]}
    return headers.get("traceparent", "")


def _two_sidecars(tmp_path, sidecar, echo_app, config_a: str | None, config_b: str | None):
    app_b = echo_app(env={**os.environ, "APP_ID": "appb"})
    extra_b = ("--config", config_b) if config_b else ()
    sidecar_b = sidecar("appb", "--app-port", str(app_b.port), *extra_b)
    sidecar_b.wait_status("/v1.0/healthz", 204)
    extra_a = ("--config", config_a) if config_a else ()
    sidecar_a = sidecar("appa", *extra_a)
    return sidecar_a, sidecar_b


def _by_parent(spans: list[dict]) -> dict:
    return {s["parentId"]: s for s in spans}


def test_invocation_across_two_sidecars_is_one_trace(tmp_path, sidecar, echo_app, collectors):
    zipkin, otlp = collectors
    sidecar_a, _ = _two_sidecars(tmp_path, sidecar, echo_app, _config(tmp_path, "a", "1", zipkin, otlp),
                                 _config(tmp_path, "b", "1", zipkin, otlp))
    trace_id, app_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    status, _, echo = json_request(sidecar_a.http_port, "POST", "/v1.0/invoke/appb/method/orders/1", b"{}", {
        "traceparent": f"00-{trace_id}-{app_span}-01", "tracestate": "congo=t61rcWkgMzE", "baggage": "user=7"})
    assert status == 200
    got = TRACEPARENT.fullmatch(_app_traceparent(echo))
    assert got is not None and got.group(1) == trace_id and got.group(2) != app_span
    headers = {k.lower(): v for k, v in echo["headers"]}
    assert headers["tracestate"] == "congo=t61rcWkgMzE" and headers["baggage"] == "user=7"

    for collector in (zipkin, otlp):
        wait_for(lambda c=collector: len(c.trace(trace_id)) >= 3, timeout=10, what=f"3 spans at {collector.kind}")
        spans = collector.trace(trace_id)
        assert len(spans) == 3, spans
        chain = _by_parent(spans)
        api = chain[app_span]  # sidecar A's server span, a child of app A's span
        assert (api["name"], api["kind"], api["service"]) == ("CallLocal/appb/orders/1", "SERVER", "appa")
        assert api["tags"]["rpc.service"] == "ServiceInvocation" and api["tags"]["net.peer.name"] == "appb"
        assert api["tags"]["dapr.api"] == "POST /v1.0/invoke/appb/method/orders/1"
        assert (api["tags"]["dapr.protocol"], api["tags"]["dapr.status_code"]) == ("http", "200")
        internal = chain[api["id"]]  # sidecar B's server span
        assert (internal["name"], internal["kind"], internal["service"]) == ("CallLocal/appb/orders/1", "SERVER",
                                                                           "appb")
        assert internal["tags"]["net.peer.name"] == "appa"
        app_call = chain[internal["id"]]  # sidecar B's call into app B: what app B sees as its parent
        assert (app_call["kind"], app_call["service"], app_call["name"]) == ("CLIENT", "appb", "POST /orders/1")
        assert app_call["id"] == got.group(2)
        assert not collector.rejected


def test_without_a_traceparent_the_sidecar_starts_the_trace(tmp_path, sidecar, echo_app, collectors):
    zipkin, otlp = collectors
    sidecar_a, _ = _two_sidecars(tmp_path, sidecar, echo_app, _config(tmp_path, "a", "1", zipkin, None),
                                 _config(tmp_path, "b", "1", None, otlp))
    status, _, echo = json_request(sidecar_a.http_port, "GET", "/v1.0/invoke/appb/method/ping")
    assert status == 200
    got = TRACEPARENT.fullmatch(_app_traceparent(echo))
    assert got is not None
    trace_id = got.group(1)
    wait_for(lambda: zipkin.trace(trace_id) and len(otlp.trace(trace_id)) >= 2, timeout=10, what="spans")
    (root,) = zipkin.trace(trace_id)  # sidecar A exports to Zipkin only, sidecar B to OTLP only
    assert root["parentId"] is None and root["service"] == "appa"
    internal, app_call = sorted(otlp.trace(trace_id), key=lambda s: s["kind"] != "SERVER")
    assert internal["parentId"] == root["id"] and app_call["parentId"] == internal["id"]
    assert app_call["id"] == got.group(2)


@pytest.mark.parametrize("config", ["none", "rate0"])
def test_tracing_off_propagates_the_callers_context_unchanged(tmp_path, sidecar, echo_app, collectors, config):
    zipkin, otlp = collectors
    configs = ((None, None) if config == "none" else
               (_config(tmp_path, "a", "0", zipkin, otlp), _config(tmp_path, "b", "0", zipkin, otlp)))
    sidecar_a, _ = _two_sidecars(tmp_path, sidecar, echo_app, *configs)
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    status, _, echo = json_request(sidecar_a.http_port, "GET", "/v1.0/invoke/appb/method/x",
                                   headers={"traceparent": incoming})
    assert status == 200 and _app_traceparent(echo) == incoming
    time.sleep(1.5)  # past one export interval: nothing may arrive
    assert zipkin.spans == [] and otlp.spans == []


def test_unsampled_parent_is_propagated_with_new_span_ids_and_not_exported(tmp_path, sidecar, echo_app, collectors):
    zipkin, otlp = collectors
    sidecar_a, _ = _two_sidecars(tmp_path, sidecar, echo_app, _config(tmp_path, "a", "1", zipkin, otlp),
                                 _config(tmp_path, "b", "1", zipkin, otlp))
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    status, _, echo = json_request(sidecar_a.http_port, "GET", "/v1.0/invoke/appb/method/x",
                                   headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-00"})
    assert status == 200
    got = TRACEPARENT.fullmatch(_app_traceparent(echo))
    assert got is not None and got.group(1) == trace_id and got.group(2) != "b7ad6b7169203331"
    assert _app_traceparent(echo).endswith("-00")
    time.sleep(1.5)
    assert zipkin.spans == [] and otlp.spans == []


def test_publish_and_delivery_carry_one_trace(tmp_path, processes, collectors):
    zipkin, otlp = collectors
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "pubsub.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: pubsub}\n"
        "spec:\n  type: pubsub.mqtt\n  version: v1\n  metadata:\n  - {name: qos, value: '1'}\n")
    app = SubscriberApp(tmp_path, {"subscriptions": [{"pubsubname": "pubsub", "topic": "orders", "route": "/orders"}]})
    processes.append(app)
    shop = _start(tmp_path, processes, resources, app.port, "--config", _config(tmp_path, "t", "1", zipkin, otlp),
                  app_id="shop")
    _subscribed(shop)
    trace_id, caller_span = "5bf92f3577b34da6a3ce929d0e0e4736", "10f067aa0ba902b7"
    status, _, _ = request(shop.http_port, "POST", "/v1.0/publish/pubsub/orders", b'{"id": 1}', {
        "Content-Type": "application/json", "traceparent": f"00-{trace_id}-{caller_span}-01",
        "tracestate": "rojo=00f067aa0ba902b7"})
    assert status == 204
    wait_for(lambda: app.received(), what="delivery")
    entry = app.received()[0]
    event = json.loads(entry["body"])
    delivered = TRACEPARENT.fullmatch(entry["headers"]["traceparent"])
    assert delivered is not None and delivered.group(1) == trace_id
    assert entry["headers"]["tracestate"] == "rojo=00f067aa0ba902b7"
    in_event = TRACEPARENT.fullmatch(event["traceparent"])
    assert in_event is not None and in_event.group(1) == trace_id and event["traceid"] == event["traceparent"]
    assert event["tracestate"] == "rojo=00f067aa0ba902b7"

    for collector in (zipkin, otlp):
        wait_for(lambda c=collector: len(c.trace(trace_id)) >= 2, timeout=10, what=f"2 spans at {collector.kind}")
        chain = _by_parent(collector.trace(trace_id))
        publish = chain[caller_span]
        assert (publish["name"], publish["kind"]) == ("/v1.0/publish/pubsub/orders", "SERVER")
        assert publish["tags"]["messaging.system"] == "pubsub"
        assert publish["tags"]["messaging.destination.name"] == "orders"
        assert publish["id"] == in_event.group(2)  # the event carries the publish span as the parent
        delivery = chain[publish["id"]]
        assert (delivery["kind"], delivery["name"]) == ("CLIENT", "POST /orders")
        assert delivery["id"] == delivered.group(2)


def test_state_call_span_has_daprs_attributes(tmp_path, sidecar, collectors):
    zipkin, _ = collectors
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "state.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: statestore}\n"
        "spec:\n  type: state.in-memory\n  version: v1\n")
    sc = sidecar("stateful", "--resources-path", str(resources), "--config",
                 _config(tmp_path, "s", "1", zipkin, None))
    status, _, _ = request(sc.http_port, "POST", "/v1.0/state/statestore", b'[{"key": "k", "value": 1}]',
                           {"traceparent": "00-6bf92f3577b34da6a3ce929d0e0e4736-20f067aa0ba902b7-01"})
    assert status == 204
    status, _, _ = request(sc.http_port, "GET", "/v1.0/state/nostore/k", None,
                           {"traceparent": "00-6bf92f3577b34da6a3ce929d0e0e4736-20f067aa0ba902b7-01"})
    assert status == 400
    wait_for(lambda: len(zipkin.trace("6bf92f3577b34da6a3ce929d0e0e4736")) >= 2, timeout=10, what="state spans")
    failed, saved = sorted(zipkin.trace("6bf92f3577b34da6a3ce929d0e0e4736"), key=lambda s: s["tags"]["dapr.api"])
    assert failed["tags"]["dapr.api"] == "GET /v1.0/state/nostore/k"
    assert saved["name"] == "/v1.0/state/statestore"
    assert (saved["tags"]["db.system"], saved["tags"]["db.name"]) == ("state", "statestore")
    assert saved["tags"]["dapr.status_code"] == "204" and "error" not in saved["tags"]
    assert failed["tags"]["error"] == "Code(400): Bad Request" and failed["tags"]["db.name"] == "nostore"


def test_grpc_calls_are_server_spans_and_invocation_continues_their_trace(tmp_path, sidecar, echo_app, collectors):
    grpc = pytest.importorskip("grpc", reason="the grpc extra (pip install 'pillion[grpc]') is not installed")
    from dapr.proto.common.v1 import common_pb2
    from dapr.proto.runtime.v1 import dapr_pb2_grpc, invoke_pb2, metadata_pb2

    from pillion._testing import free_port

    zipkin, _ = collectors
    app_b = echo_app(env={**os.environ, "APP_ID": "appb"})
    sidecar("appb", "--app-port", str(app_b.port), "--config", _config(tmp_path, "b", "1", zipkin, None))
    grpc_port = free_port()
    sidecar("appa", "--config", _config(tmp_path, "a", "1", zipkin, None), "--dapr-grpc-port", str(grpc_port))
    trace_id, app_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    traceparent = (("traceparent", f"00-{trace_id}-{app_span}-01"),)
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        stub.GetMetadata(metadata_pb2.GetMetadataRequest(), metadata=traceparent, timeout=5)
        reply = stub.InvokeService(invoke_pb2.InvokeServiceRequest(id="appb", message=common_pb2.InvokeRequest(
            method="orders/2", http_extension=common_pb2.HTTPExtension(verb=common_pb2.HTTPExtension.Verb.POST))),
            metadata=traceparent, timeout=10)
    got = TRACEPARENT.fullmatch(_app_traceparent(json.loads(reply.data.value)))
    assert got is not None and got.group(1) == trace_id

    wait_for(lambda: len(zipkin.trace(trace_id)) >= 4, timeout=10, what="4 spans at zipkin")
    spans = zipkin.trace(trace_id)
    served = [s for s in spans if s["service"] == "appa"]
    assert sorted(s["name"] for s in served) == ["/dapr.proto.runtime.v1.Dapr/GetMetadata",
                                                  "/dapr.proto.runtime.v1.Dapr/InvokeService"]
    for span in served:
        assert (span["kind"], span["parentId"]) == ("SERVER", app_span)
        assert (span["tags"]["dapr.protocol"], span["tags"]["dapr.status_code"]) == ("grpc", "OK")
    invoke = next(s for s in served if s["name"].endswith("/InvokeService"))
    internal = next(s for s in spans if s["service"] == "appb" and s["kind"] == "SERVER")
    assert internal["parentId"] == invoke["id"]  # sidecar B continues from sidecar A's gRPC span
    assert not zipkin.rejected
