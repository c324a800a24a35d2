"""``pillion healthcheck`` against a real HTTP server in a thread."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

from pillion import healthcheck


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 204
    body = b""

    def do_GET(self):  # http.server calls do_<METHOD>
        self.server.paths.append(self.path)
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def _serve(status: int, body: bytes = b""):
    handler = type("Handler", (_Handler,), {"status": status, "body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.paths = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def serve():
    started = []

    def start(status: int, body: bytes = b""):
        server, thread = _serve(status, body)
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_204_is_healthy(serve, capsys):
    server = serve(204)
    assert healthcheck.main(["--port", str(server.server_address[1])]) == 0
    assert server.paths == ["/v1.0/healthz"]
    assert capsys.readouterr().err == ""


def test_500_is_unhealthy_with_one_line_reason(serve, capsys):
    server = serve(500, b"ERR_HEALTH_NOT_READY\nstill loading")
    assert healthcheck.main(["--port", str(server.server_address[1])]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "500" in err and "ERR_HEALTH_NOT_READY still loading" in err


def test_200_is_not_204(serve, capsys):
    # daprd's healthz answers 204; a 200 means something else holds the port.
    server = serve(200, b"hello")
    assert healthcheck.main(["--port", str(server.server_address[1])]) == 1
    assert "200" in capsys.readouterr().err


def test_nothing_listening(capsys):
    port = _free_port()
    assert healthcheck.main(["--port", str(port), "--timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and err.count("\n") == 1


def test_silent_server_times_out(capsys):
    # A listener that accepts and never answers: the probe must give up after --timeout.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        started = time.monotonic()
        assert healthcheck.main(["--port", str(port), "--timeout", "0.3"]) == 1
        assert time.monotonic() - started < 3
    assert "timed out" in capsys.readouterr().err


def test_port_from_environment(serve, monkeypatch):
    server = serve(204)
    monkeypatch.setenv("DAPR_HTTP_PORT", str(server.server_address[1]))
    assert healthcheck.main([]) == 0
    assert server.paths == ["/v1.0/healthz"]


@pytest.mark.parametrize("value", ["", "abc", "0", "70000"])
def test_bad_environment_port_falls_back_to_3500(monkeypatch, value):
    monkeypatch.setenv("DAPR_HTTP_PORT", value)
    assert healthcheck.default_port() == 3500
