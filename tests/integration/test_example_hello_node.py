"""examples/hello-node runs as its README says: a Node.js "orders" app and a Python "checkout"
app, each under its own ``pillion run``; orders arrive by invocation and land in state."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from _http import json_request

from pillion._testing import Process, free_port, pillion_command, wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples/hello-node"
NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node (Node.js 20) is not installed")
def test_hello_node_example(tmp_path):
    env = dict(os.environ, PILLION_HOME=str(tmp_path / "home"), PILLION_DATA_DIR=str(tmp_path / "data"))
    init = Process(pillion_command("init"), tmp_path / "init.log", env=env)
    assert init.proc.wait(30) == 0, init.output()
    init.stop()  # closes its log
    orders_port, orders_http, checkout_http = free_port(), free_port(), free_port()
    started = []
    try:
        # Both sidecars share PILLION_HOME/PILLION_DATA_DIR, as two `pillion run` shells on one device do;
        # mqtt-port 0: the test must not take (or collide on) 1883.
        orders = Process(pillion_command("run", "--app-id", "orders", "--app-port", str(orders_port),
                                         "--dapr-http-port", str(orders_http), "--mqtt-port", "0",
                                         "--metrics-port", "0", "--", NODE, str(EXAMPLE / "orders/app.js")),
                         tmp_path / "orders.log", env=env)  # fmt: skip
        started.append(orders)
        checkout = Process(pillion_command("run", "--app-id", "checkout", "--dapr-http-port", str(checkout_http),
                                           "--mqtt-port", "0", "--metrics-port", "0",
                                           "--", sys.executable, str(EXAMPLE / "checkout/app.py")),
                           tmp_path / "checkout.log", env=env)  # fmt: skip
        started.append(checkout)

        def sent():
            return [int(n) for n in re.findall(r"== APP == sent order (\d+): 201", checkout.output())]

        wait_for(lambda: len(sent()) >= 2, 30, what="two orders sent")
        first, second = sent()[:2]
        assert f"== APP == received order {first}, saved as order-{first}" in orders.output()
        # In the state store, under the orders app's keys...
        status, _, saved = json_request(orders_http, "GET", f"/v1.0/state/statestore/order-{first}")
        assert status == 200 and saved == {"id": first, "item": "coffee"}
        # ...and read back from there by GET /orders, invoked through the other sidecar.
        status, _, listed = json_request(checkout_http, "GET", "/v1.0/invoke/orders/method/orders")
        assert status == 200 and {first, second} <= {o["id"] for o in listed}
    finally:
        for proc in reversed(started):
            proc.stop()
