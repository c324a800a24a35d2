"""--enable-api-logging and spec.logging.apiLogging: one line per API call, through a real sidecar."""

from __future__ import annotations

import re

from _http import request

from pillion._testing import Sidecar

CONFIG = ("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: c}\nspec:\n  logging:\n"
          "    apiLogging: {enabled: true, obfuscateURLs: true, omitHealthChecks: true}\n")


def _lines(sidecar) -> list[str]:
    return [line for line in sidecar.output().splitlines() if "HTTP API Called" in line]


def test_flag_logs_every_call_with_method_path_status_duration_and_app_id(tmp_path, processes):
    sidecar = Sidecar(tmp_path, "logged", "--enable-api-logging")
    processes.append(sidecar)
    request(sidecar.http_port, "GET", "/v1.0/metadata")
    request(sidecar.http_port, "GET", "/v1.0/state/nostore/k")
    lines = _lines(sidecar)
    assert any("method=GET path=/v1.0/metadata code=200" in line and "app_id=logged" in line for line in lines)
    assert any("path=/v1.0/state/nostore/k code=500" in line for line in lines)  # no state store configured
    assert all(re.search(r"duration=\d+\.\d{3}ms", line) for line in lines)
    assert any("/v1.0/healthz" in line for line in lines)  # the start-up probes are calls too


def test_configuration_obfuscates_and_omits_health_checks_and_the_flag_can_turn_it_off(tmp_path, processes):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    sidecar = Sidecar(tmp_path, "quiet", "--config", str(config))
    processes.append(sidecar)
    request(sidecar.http_port, "GET", "/v1.0/invoke/someone/method/orders/42")
    lines = _lines(sidecar)
    assert not any("healthz" in line for line in lines)
    assert any("path=/v1.0/invoke/{id}/method/{method...} code=500" in line for line in lines)
    assert not any("orders/42" in line for line in lines)
    off = Sidecar(tmp_path, "off", "--config", str(config), "--enable-api-logging=false")
    processes.append(off)
    request(off.http_port, "GET", "/v1.0/metadata")
    assert _lines(off) == []
