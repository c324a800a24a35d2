"""Resiliency policies on service invocation, through real sidecars and a real app."""

from __future__ import annotations

import os
import time

from _http import request

from pillion._testing import Sidecar

RESILIENCY = """
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {name: edge}
spec:
  policies:
    timeouts: {short: 300ms}
    retries:
      quick: {policy: constant, duration: 50ms, maxRetries: 4, matching: {httpStatusCodes: "500-599"}}
    circuitBreakers:
      guard: {maxRequests: 1, timeout: 1s, trip: consecutiveFailures >= 3}
  targets:
    apps:
      backend: {timeout: short, retry: quick}
      fragile: {circuitBreaker: guard}
"""


def _start(tmp_path, processes, echo_app, app_id):
    resources = tmp_path / "resources"
    resources.mkdir(exist_ok=True)
    (resources / "resiliency.yaml").write_text(RESILIENCY)
    flags = tmp_path / "flags"
    flags.mkdir(exist_ok=True)
    app = echo_app(env=dict(os.environ, ECHO_FLAG_DIR=str(flags)))
    callee = Sidecar(tmp_path, app_id, "--app-port", str(app.port), "--resources-path", str(resources))
    caller = Sidecar(tmp_path, "caller", "--resources-path", str(resources))
    processes.extend([callee, caller])
    return caller, flags


def _invoke(caller, app_id, method):
    started = time.monotonic()
    status, headers, body = request(caller.http_port, "GET", f"/v1.0/invoke/{app_id}/method/{method}")
    return status, headers, body, time.monotonic() - started


def test_a_flaky_app_is_retried_until_it_answers(tmp_path, processes, echo_app):
    caller, _ = _start(tmp_path, processes, echo_app, "backend")
    status, headers, _, _ = _invoke(caller, "backend", "flaky/3/a")
    assert status == 200 and headers["x-echo-calls"] == "4"  # three 503s, then the answer
    status, headers, _, _ = _invoke(caller, "backend", "flaky/9/b")
    assert status == 503 and headers["x-echo-calls"] == "5"  # 1 + maxRetries 4, then the app's own answer
    status, headers, _, _ = _invoke(caller, "backend", "status/404")
    assert status == 404 and headers["x-echo-calls"] == "1"  # 404 is not in matching: not retried


def test_a_timeout_cuts_a_slow_app(tmp_path, processes, echo_app):
    caller, _ = _start(tmp_path, processes, echo_app, "backend")
    status, _, body, elapsed = _invoke(caller, "backend", "sleep/4000")
    assert status == 500 and b"ERR_DIRECT_INVOKE" in body and b"deadline" in body
    assert elapsed < 3.0  # five attempts of 300ms each and the pauses (1.7s), not the app's 4s


def test_a_breaker_opens_rejects_fast_and_closes_after_a_probe(tmp_path, processes, echo_app):
    caller, flags = _start(tmp_path, processes, echo_app, "fragile")
    (flags / "db").touch()
    for _ in range(3):
        assert _invoke(caller, "fragile", "down/db")[0] == 500
    status, headers, body, elapsed = _invoke(caller, "fragile", "down/db")
    assert status == 500 and b"circuit breaker is open" in body and "x-echo-calls" not in headers
    assert elapsed < 0.5
    (flags / "db").unlink()
    time.sleep(1.1)  # the breaker's timeout: half-open, one probe
    status, headers, _, _ = _invoke(caller, "fragile", "down/db")
    assert status == 200 and headers["x-echo-calls"] == "4"
    assert _invoke(caller, "fragile", "down/db")[0] == 200  # closed again
