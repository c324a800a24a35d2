"""Service invocation through real sidecars to a real app process."""

from __future__ import annotations

import base64
import concurrent.futures
import os
import time

import pytest

from _http import json_request, request
from pillion._testing import free_port, wait_for


def _headers(echo: dict) -> dict[str, str]:
    return {k.lower(): v for k, v in echo["headers"]}


@pytest.fixture
def local(sidecar, echo_app):
    app = echo_app(env={**os.environ, "APP_ID": "orders"})
    return sidecar("orders", "--app-port", str(app.port)), app


@pytest.mark.parametrize("verb", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_every_verb_reaches_the_local_app(local, verb):
    sc, _ = local
    body = b'{"id": 1}' if verb in ("POST", "PUT", "PATCH") else None
    status, headers, echo = json_request(
        sc.http_port, verb, "/v1.0/invoke/orders/method/api/v1/add?a=1&b=%20two&a=3", body,
        {"Content-Type": "application/json", "X-Custom": "kept"},
    )
    assert status == 200
    assert headers["X-Echo"] == "yes"
    assert echo["method"] == verb
    assert echo["path"] == "/api/v1/add"
    assert echo["query"] == "a=1&b=%20two&a=3"
    assert base64.b64decode(echo["body"]) == (body or b"")
    sent = _headers(echo)
    assert sent["x-custom"] == "kept"
    assert sent["content-type"] == "application/json"


def test_head_is_passed_through(local):
    sc, _ = local
    status, headers, body = request(sc.http_port, "HEAD", "/v1.0/invoke/orders/method/x")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


def test_app_status_headers_and_body_returned_as_they_are(local):
    sc, _ = local
    status, headers, echo = json_request(sc.http_port, "POST", "/v1.0/invoke/orders/method/status/418", b"tea")
    assert status == 418
    assert headers["X-Echo"] == "yes" and headers["Content-Type"] == "application/json"
    assert echo["path"] == "/status/418"


def test_hop_by_hop_and_dapr_headers_are_not_forwarded(local):
    sc, _ = local
    _, _, echo = json_request(
        sc.http_port, "GET", "/v1.0/invoke/orders/method/h",
        headers={"Connection": "keep-alive, X-Hop", "X-Hop": "secret", "Keep-Alive": "timeout=5",
                 "TE": "trailers", "dapr-app-id": "orders", "X-End": "kept"},
    )
    sent = _headers(echo)
    assert "x-hop" not in sent and "keep-alive" not in sent and "te" not in sent and "dapr-app-id" not in sent
    assert sent["x-end"] == "kept"


def test_dapr_app_id_header_and_basic_auth_forms(local):
    sc, _ = local
    status, _, echo = json_request(sc.http_port, "POST", "/orders/1?x=y", b"{}", {"dapr-app-id": "orders"})
    assert (status, echo["path"], echo["query"]) == (200, "/orders/1", "x=y")
    token = base64.b64encode(b"dapr-app-id:orders").decode()
    status, _, echo = json_request(sc.http_port, "GET", "/orders/2", headers={"Authorization": f"Basic {token}"})
    assert (status, echo["path"]) == (200, "/orders/2")


def test_trailing_slash_and_encoded_method(local):
    sc, _ = local
    assert json_request(sc.http_port, "GET", "/v1.0/invoke/orders/method/a/b/")[2]["path"] == "/a/b/"
    assert json_request(sc.http_port, "GET", "/v1.0/invoke/orders/method/a%20b")[2]["path"] == "/a%20b"
    assert json_request(sc.http_port, "GET", "/v1.0/invoke/orders/method/../../etc/passwd")[2]["path"] == "/etc/passwd"
    status, _, err = json_request(sc.http_port, "GET", "/v1.0/invoke/orders/method/a%3Fb")
    assert (status, err["errorCode"]) == (500, "ERR_DIRECT_INVOKE")


def test_app_api_token_is_sent_to_the_app(sidecar, echo_app):
    app = echo_app()
    sc = sidecar("tok", "--app-port", str(app.port), env={"APP_API_TOKEN": "for-the-app", "DAPR_API_TOKEN": "for-dapr"})
    _, _, echo = json_request(sc.http_port, "GET", "/v1.0/invoke/tok/method/x", headers={"dapr-api-token": "for-dapr"})
    assert _headers(echo)["dapr-api-token"] == "for-the-app"


def test_unknown_app_id(local):
    sc, _ = local
    status, _, err = json_request(sc.http_port, "GET", "/v1.0/invoke/nobody/method/x")
    assert status == 500
    assert err == {"errorCode": "ERR_DIRECT_INVOKE", "message": "failed to invoke, id: nobody, err: couldn't find service: nobody"}
    assert request(sc.http_port, "GET", "/v1.0/healthz")[0] == 204


def test_app_that_stopped_listening(sidecar, echo_app):
    app = echo_app()
    sc = sidecar("down", "--app-port", str(app.port))
    sc.wait_status("/v1.0/healthz", 204)
    app.stop()
    status, _, err = json_request(sc.http_port, "GET", "/v1.0/invoke/down/method/x")
    assert (status, err["errorCode"]) == (500, "ERR_DIRECT_INVOKE")
    assert err["message"].startswith("failed to invoke, id: down, err: ")


def test_sidecar_on_the_same_host(sidecar, echo_app):
    app = echo_app()
    callee = sidecar("inventory", "--app-port", str(app.port))
    callee.wait_status("/v1.0/healthz", 204)
    caller = sidecar("checkout")
    status, _, echo = json_request(caller.http_port, "PUT", "/v1.0/invoke/inventory/method/items/7?q=1", b"[1]")
    assert status == 200
    assert (echo["method"], echo["path"], echo["query"]) == ("PUT", "/items/7", "q=1")
    sent = _headers(echo)
    assert sent["dapr-caller-app-id"] == "checkout"
    assert sent["dapr-callee-app-id"] == "inventory"
    status, _, echo = json_request(caller.http_port, "GET", "/items", headers={"dapr-app-id": "inventory"})
    assert (status, echo["path"]) == (200, "/items")


def _static_config(tmp_path, name, apps, extra=""):
    lines = "\n".join(f"        {app}: [\"{addr}\"]" for app, addr in apps.items())
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: {name}
spec:
  nameResolution:
    component: static
    configuration:
      apps:
{lines}
{extra}""")
    return str(path)


def test_sidecar_on_another_host_via_static_resolver(tmp_path, sidecar, echo_app):
    app = echo_app()
    internal = free_port()
    sidecar("remote", "--app-port", str(app.port), "--dapr-internal-grpc-port", str(internal),
            "--data-dir", str(tmp_path / "host-b"), wait="/v1.0/healthz")
    config = _static_config(tmp_path, "static", {"remote": f"127.0.0.1:{internal}", "ghost": f"127.0.0.1:{free_port()}"})
    caller = sidecar("edge", "--config", config, "--data-dir", str(tmp_path / "host-a"))
    status, _, echo = json_request(caller.http_port, "DELETE", "/v1.0/invoke/remote/method/thing/1")
    assert (status, echo["method"], echo["path"]) == (200, "DELETE", "/thing/1")
    assert _headers(echo)["dapr-caller-app-id"] == "edge"
    status, _, err = json_request(caller.http_port, "GET", "/v1.0/invoke/ghost/method/x")
    assert (status, err["errorCode"]) == (500, "ERR_DIRECT_INVOKE")
    assert "ghost" in err["message"]
    # A verb the hop cannot carry (gRPC's NONE) comes as a POST naming it; one that is not an HTTP token is refused.
    hop = {"dapr-caller-app-id": "edge", "dapr-callee-app-id": "remote"}
    status, _, _ = request(internal, "POST", "/x", b"", {**hop, "dapr-pillion-verb": "NONE"})
    assert status == 501  # the echo app's answer to a method it does not implement
    status, _, body = request(internal, "POST", "/x", b"", {**hop, "dapr-pillion-verb": "GET /evil HTTP/1.1"})
    assert status == 400 and b"invalid verb" in body


def test_access_control_on_the_receiving_sidecar(tmp_path, sidecar, echo_app):
    app = echo_app()
    acl = tmp_path / "acl.yaml"
    acl.write_text("""\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: acl
spec:
  accessControl:
    defaultAction: deny
    policies:
    - appId: trusted
      defaultAction: deny
      operations:
      - name: /allowed/**
        httpVerb: [GET]
        action: allow
""")
    sidecar("vault", "--app-port", str(app.port), "--config", str(acl), wait="/v1.0/healthz")
    trusted = sidecar("trusted")
    stranger = sidecar("stranger")
    assert request(trusted.http_port, "GET", "/v1.0/invoke/vault/method/allowed/a/b")[0] == 200
    for port, verb, path in (
        (trusted.http_port, "POST", "/v1.0/invoke/vault/method/allowed/a"),
        (trusted.http_port, "GET", "/v1.0/invoke/vault/method/secret"),
        (stranger.http_port, "GET", "/v1.0/invoke/vault/method/allowed/a"),
    ):
        status, _, err = json_request(port, verb, path)
        assert (status, err["errorCode"]) == (403, "ERR_DIRECT_INVOKE"), (verb, path)


def test_app_max_concurrency_serialises_calls(sidecar, echo_app):
    app = echo_app()
    sc = sidecar("one-at-a-time", "--app-port", str(app.port), "--app-max-concurrency", "1")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: json_request(sc.http_port, "GET", "/v1.0/invoke/one-at-a-time/method/sleep/100"), range(6)))
    assert all(status == 200 for status, _, _ in results)
    assert max(echo["maxInflight"] for _, _, echo in results) == 1


def test_without_concurrency_limit_calls_overlap(sidecar, echo_app):
    app = echo_app()
    sc = sidecar("parallel", "--app-port", str(app.port))
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: json_request(sc.http_port, "GET", "/v1.0/invoke/parallel/method/sleep/200"), range(6)))
    assert max(echo["maxInflight"] for _, _, echo in results) > 1


def test_app_health_checks(tmp_path, sidecar, echo_app):
    flag = tmp_path / "unhealthy"
    app = echo_app(env={**os.environ, "ECHO_UNHEALTHY_FILE": str(flag)})
    sc = sidecar("checked", "--app-port", str(app.port), "--enable-app-health-check",
                 "--app-health-probe-interval", "0.1", "--app-health-threshold", "2")
    sc.wait_status("/v1.0/healthz", 204)
    assert request(sc.http_port, "GET", "/v1.0/invoke/checked/method/x")[0] == 200
    flag.touch()

    def unhealthy():
        status, _, body = json_request(sc.http_port, "GET", "/v1.0/invoke/checked/method/x")
        return status == 500 and "app is not in a healthy state" in body["message"]

    wait_for(unhealthy, 5, what="app marked unhealthy")
    flag.unlink()
    wait_for(lambda: request(sc.http_port, "GET", "/v1.0/invoke/checked/method/x")[0] == 200, 5, what="recovery")


def test_sigterm_drains_calls_in_flight(sidecar, echo_app):
    app = echo_app()
    sc = sidecar("draining", "--app-port", str(app.port), wait="/v1.0/healthz")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(json_request, sc.http_port, "GET", "/v1.0/invoke/draining/method/sleep/800")
        time.sleep(0.3)
        sc.proc.terminate()
        status, headers, echo = pending.result(10)
    assert (status, echo["path"]) == (200, "/sleep/800")
    assert headers["Connection"] == "close"
    assert sc.proc.wait(10) == 0
