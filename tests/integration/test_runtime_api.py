"""Runtime endpoints of a real sidecar process: health, metadata, shutdown, API token, errors."""

from __future__ import annotations

import socket
import time

from _http import error_of, json_request, raw_exchange, request, status_of
from pillion._testing import free_port, wait_for


def test_healthz_and_outbound_ready_without_app(sidecar):
    sc = sidecar("plain")
    assert request(sc.http_port, "GET", "/v1.0/healthz")[0] == 204
    assert request(sc.http_port, "GET", "/v1.0/healthz/outbound")[0] == 204
    status, _, body = json_request(sc.http_port, "GET", "/v1.0/healthz?appid=someone-else")
    assert (status, body["errorCode"]) == (500, "ERR_HEALTH_APPID_NOT_MATCH")
    assert request(sc.http_port, "GET", "/v1.0/healthz?appid=plain")[0] == 204


def test_healthz_waits_for_the_app_port(sidecar, echo_app):
    port = free_port()
    sc = sidecar("late", "--app-port", str(port))
    status, _, body = json_request(sc.http_port, "GET", "/v1.0/healthz")
    assert status == 500
    assert body == {"errorCode": "ERR_HEALTH_NOT_READY", "message": "dapr is not ready: [app-channel]"}
    assert request(sc.http_port, "GET", "/v1.0/healthz/outbound")[0] == 204
    status, _, body = json_request(sc.http_port, "GET", "/v1.0/invoke/late/method/x")
    assert (status, body["errorCode"]) == (500, "ERR_DIRECT_INVOKE")
    assert "app channel is not initialized" in body["message"]
    echo_app(port=port)
    sc.wait_status("/v1.0/healthz", 204)


def test_metadata_shape_and_extended_attributes(sidecar, echo_app):
    app = echo_app()
    sc = sidecar("meta", "--app-port", str(app.port), "--app-max-concurrency", "7")
    status, headers, body = json_request(sc.http_port, "GET", "/v1.0/metadata")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert body["id"] == "meta"
    assert body["components"] == [] and body["subscriptions"] == [] and body["httpEndpoints"] == []
    # INITIALIZING until the app's /dapr/config answered, then DISABLED: it hosts no actor type.
    wait_for(lambda: json_request(sc.http_port, "GET", "/v1.0/metadata")[2]["actorRuntime"]["runtimeStatus"]
             == "DISABLED", what="actor runtime status")
    assert body["appConnectionProperties"] == {
        "port": app.port, "protocol": "http", "channelAddress": "127.0.0.1", "maxConcurrency": 7,
    }
    assert request(sc.http_port, "PUT", "/v1.0/metadata/cliPID", b"4242", {"Content-Type": "text/plain"})[0] == 204
    assert json_request(sc.http_port, "GET", "/v1.0/metadata")[2]["extended"]["cliPID"] == "4242"


def test_shutdown_api_stops_the_process(sidecar):
    sc = sidecar("bye")
    assert request(sc.http_port, "POST", "/v1.0/shutdown")[0] == 204
    wait_for(lambda: not sc.alive(), 10, what="sidecar exit")
    assert sc.proc.returncode == 0


def test_api_token_required_except_health(sidecar):
    sc = sidecar("secure", env={"DAPR_API_TOKEN": "s3cret"})
    status, headers, body = request(sc.http_port, "GET", "/v1.0/metadata")
    assert (status, body) == (401, b"invalid api token")
    assert headers["Content-Type"].startswith("text/plain")
    assert request(sc.http_port, "GET", "/v1.0/metadata", headers={"dapr-api-token": "wrong"})[0] == 401
    assert request(sc.http_port, "GET", "/v1.0/metadata", headers={"dapr-api-token": "s3cret"})[0] == 200
    assert request(sc.http_port, "GET", "/v1.0/healthz")[0] == 204
    assert request(sc.http_port, "GET", "/v1.0/healthz/outbound")[0] == 204
    assert request(sc.http_port, "POST", "/v1.0/shutdown")[0] == 401
    assert request(sc.http_port, "GET", "/no/such/route")[0] == 401


def test_unknown_route_and_wrong_method(sidecar):
    sc = sidecar("routes")
    status, _, body = json_request(sc.http_port, "GET", "/v1.0/nothing/here")
    assert status == 404
    assert body == {
        "errorCode": "ERR_DIRECT_INVOKE",
        "message": "failed getting app id either from the URL path or the header dapr-app-id",
    }
    status, headers, body = json_request(sc.http_port, "DELETE", "/v1.0/metadata")
    assert status == 405 and body["errorCode"] == "ERR_METHOD_NOT_ALLOWED"
    assert headers["Allow"] == "GET, HEAD"
    assert request(sc.http_port, "HEAD", "/v1.0/metadata")[0] == 200


def _still_serves(port):
    assert request(port, "GET", "/v1.0/healthz")[0] == 204


def test_malformed_request_line(sidecar):
    sc = sidecar("bad")
    for garbage in (b"NOT HTTP AT ALL\r\n\r\n", b"GET /v1.0/healthz HTTP/9.9\r\n\r\n", b"\x00\xff\x01\r\n\r\n",
                    b"GET /v1.0/healthz HTTP/1.1\r\nBad Header\r\n\r\n"):
        raw = raw_exchange(sc.http_port, garbage)
        assert status_of(raw) == 400, raw
        assert error_of(raw)["errorCode"] == "ERR_MALFORMED_REQUEST"
        _still_serves(sc.http_port)


def test_oversized_headers_get_431(sidecar):
    sc = sidecar("big-head", "--read-buffer-size", "1Ki")
    raw = raw_exchange(sc.http_port, b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n")
    assert status_of(raw) == 431
    assert error_of(raw)["errorCode"] == "ERR_MALFORMED_REQUEST"
    raw = raw_exchange(sc.http_port, b"GET /" + b"p" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(raw) == 431
    _still_serves(sc.http_port)


def test_oversized_body_gets_413(sidecar):
    sc = sidecar("big-body", "--max-body-size", "1Ki")
    status, headers, body = request(sc.http_port, "PUT", "/v1.0/metadata/k", b"x" * 1025)
    assert status == 413
    assert error_of(b"\r\n\r\n" + body)["errorCode"] == "ERR_BODY_READ"
    assert request(sc.http_port, "PUT", "/v1.0/metadata/k", b"x" * 1024)[0] == 204
    chunked = b"PUT /v1.0/metadata/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"400\r\n" + b"y" * 1024 + b"\r\n" + b"1\r\nz\r\n0\r\n\r\n"
    assert status_of(raw_exchange(sc.http_port, chunked)) == 413
    _still_serves(sc.http_port)


def test_daprd_deprecated_size_flag_in_megabytes(sidecar):
    sc = sidecar("mb", "--dapr-http-max-request-size", "1")
    assert request(sc.http_port, "PUT", "/v1.0/metadata/k", b"x" * (1024 * 1024))[0] == 204
    # A real upload one byte over: the sidecar answers 413 from the Content-Length, then
    # half-closes and discards the rest, so the client reads the 413 instead of a reset.
    assert request(sc.http_port, "PUT", "/v1.0/metadata/k", b"x" * (1024 * 1024 + 1))[0] == 413


def test_client_disconnecting_mid_request(sidecar):
    sc = sidecar("gone")
    for partial in (b"GET /v1.0/heal", b"PUT /v1.0/metadata/k HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc"):
        with socket.create_connection(("127.0.0.1", sc.http_port)) as sock:
            sock.sendall(partial)
        _still_serves(sc.http_port)
    assert sc.alive()


def test_slow_client_is_cut_off(sidecar):
    sc = sidecar("slow", "--http-read-timeout", "1")
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", sc.http_port), timeout=5) as sock:
        sock.sendall(b"GET /v1.0/healthz HTTP/1.1\r\nHo")
        raw = sock.recv(4096)
        while True:
            more = sock.recv(4096)
            if not more:
                break
            raw += more
    assert status_of(raw) == 408
    assert time.monotonic() - started < 4
    _still_serves(sc.http_port)


def test_pipelined_requests_answered_in_order(sidecar):
    sc = sidecar("pipe")
    reqs = b"".join(
        b"PUT /v1.0/metadata/k%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%d" % (i, len(str(i)), i)
        for i in range(20)
    ) + b"GET /v1.0/metadata HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    raw = raw_exchange(sc.http_port, reqs)
    assert raw.count(b"HTTP/1.1 204 No Content") == 20
    extended = error_of(raw[raw.index(b"HTTP/1.1 200"):])["extended"]
    assert all(extended[f"k{i}"] == str(i) for i in range(20))


def test_public_port_serves_health_and_metadata_only_without_token(sidecar):
    public = free_port()
    sc = sidecar("pub", "--dapr-public-port", str(public), env={"DAPR_API_TOKEN": "t0ken"})
    assert request(public, "GET", "/v1.0/healthz")[0] == 204
    status, _, body = json_request(public, "GET", "/v1.0/metadata")
    assert (status, body["id"]) == (200, "pub")
    assert request(public, "POST", "/v1.0/shutdown")[0] == 404
    assert request(public, "PUT", "/v1.0/metadata/x", b"y")[0] == 404
    assert request(sc.http_port, "GET", "/v1.0/metadata")[0] == 401
