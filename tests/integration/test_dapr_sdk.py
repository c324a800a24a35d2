"""The official Dapr Python SDK, unchanged, against a real sidecar (HTTP invocation)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("dapr.clients", reason="the official Dapr Python SDK (pip package 'dapr') is not installed")

CLIENT = textwrap.dedent("""
    import json
    from dapr.clients import DaprClient
    with DaprClient() as client:
        resp = client.invoke_method("sdkapp", "orders/42", data=b'{"qty": 3}', http_verb="POST",
                                    content_type="application/json")
        print(json.dumps({"status": resp.status_code, "body": resp.json(), "type": resp.content_type}))
""")


def test_python_sdk_client_constructs_and_invokes_over_http(sidecar, echo_app):
    app = echo_app()
    sc = sidecar("sdkapp", "--app-port", str(app.port), wait="/v1.0/healthz")
    env = dict(os.environ, DAPR_HTTP_PORT=str(sc.http_port), DAPR_API_METHOD_INVOCATION_PROTOCOL="http",
               DAPR_HEALTH_TIMEOUT="10")
    out = subprocess.run([sys.executable, "-c", CLIENT], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == 200 and result["type"] == "application/json"
    assert (result["body"]["method"], result["body"]["path"]) == ("POST", "/orders/42")
