"""middleware.http.ratelimit in the Configuration's pipelines, through a real sidecar and app."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from _http import request

from pillion._testing import Sidecar, free_port

LIMIT = ("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: limit}\n"
         "spec:\n  type: middleware.http.ratelimit\n  version: v1\n  metadata:\n"
         "  - {name: maxRequestsPerSecond, value: '10'}\n")


def _setup(tmp_path, pipeline: str):
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "limit.yaml").write_text(LIMIT)
    config = tmp_path / "config.yaml"
    config.write_text("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: c}\n"
                      f"spec:\n  {pipeline}:\n    handlers:\n    - {{name: limit, type: middleware.http.ratelimit}}\n")
    return resources, config


def _burst(port: int, path: str, count: int = 40) -> tuple[list[int], float]:
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(lambda _: request(port, "GET", path)[0], range(count)))
    return statuses, time.monotonic() - started


def test_api_pipeline_answers_429_beyond_the_limit(tmp_path, processes, echo_app):
    app = echo_app()
    resources, config = _setup(tmp_path, "httpPipeline")
    sidecar = Sidecar(tmp_path, "limited", "--resources-path", str(resources), "--config", str(config),
                      "--app-port", str(app.port), wait=None)
    processes.append(sidecar)
    sidecar.wait_status("/v1.0/healthz", 204)
    time.sleep(1.1)  # the bucket refills after the start-up probes
    statuses, elapsed = _burst(sidecar.http_port, "/v1.0/invoke/limited/method/hello")
    allowed = statuses.count(200)
    assert set(statuses) <= {200, 429}
    assert 10 <= allowed <= 10 + int(10 * elapsed) + 1  # the burst, plus what refilled meanwhile
    # The bucket is (nearly) empty now: of the next 15 requests most get 429; check one's answer.
    refused = next(r for r in (request(sidecar.http_port, "GET", "/v1.0/metadata") for _ in range(15))
                   if r[0] == 429)
    status, headers, body = refused
    assert body == b"You have reached maximum request limit."
    assert headers["content-type"].startswith("text/plain")


def test_app_pipeline_lets_the_app_see_at_most_the_limit(tmp_path, processes, echo_app):
    app = echo_app()
    resources, config = _setup(tmp_path, "appHttpPipeline")
    sidecar = Sidecar(tmp_path, "guarded", "--resources-path", str(resources), "--config", str(config),
                      "--app-port", str(app.port))
    processes.append(sidecar)
    time.sleep(1.1)
    statuses, elapsed = _burst(sidecar.http_port, "/v1.0/invoke/guarded/method/count")
    seen = int(request(app.port, "GET", "/count")[1]["x-echo-calls"]) - 1  # this probe is one more call
    assert statuses.count(429) >= 40 - (10 + int(10 * elapsed) + 1)
    assert seen == statuses.count(200) <= 10 + int(10 * elapsed) + 1
    assert request(sidecar.http_port, "GET", "/v1.0/metadata")[0] == 200  # the API itself is not limited


def test_a_pipeline_naming_no_component_stops_start_up(tmp_path):
    resources, config = _setup(tmp_path, "httpPipeline")
    (resources / "limit.yaml").unlink()
    result = subprocess.run([sys.executable, "-m", "pillion", "sidecar", "--app-id", "a", "--dapr-http-port",
                             str(free_port()), "--mqtt-port", "0", "--resources-path", str(resources),
                             "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "spec.httpPipeline.handlers[0].name" in result.stderr
