"""The examples in examples/ run end to end, as their READMEs say."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from _http import json_request
from pillion._testing import Process, free_port, pillion_command, wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_hello_example(tmp_path):
    app_port, http_port = free_port(), free_port()
    env = dict(os.environ, PILLION_HOME=str(tmp_path / "home"), PILLION_DATA_DIR=str(tmp_path / "data"))
    proc = Process(pillion_command("run", "--app-id", "orders", "--app-port", str(app_port), "--dapr-http-port",
                                   str(http_port), "--", sys.executable, str(ROOT / "examples/hello/app.py")),
                   tmp_path / "hello.log", env=env)
    try:
        wait_for(lambda: "placed order 2: 201" in proc.output(), 15, what="two orders placed")
        out = proc.output()
        assert "== APP == received order 1\n" in out
        status, _, orders = json_request(http_port, "GET", "/v1.0/invoke/orders/method/orders")
        assert status == 200 and [o["id"] for o in orders][:2] == [1, 2]
    finally:
        proc.stop()
