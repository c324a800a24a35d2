"""Hello, Pillion: an app that takes orders by service invocation and places them through its sidecar.

Standard library only. It serves ``POST /orders`` and ``GET /orders`` on APP_PORT, and
once a second it places an order by calling *itself by app id* through the sidecar
(``/v1.0/invoke/<APP_ID>/method/orders``), exactly as it would call another app.
"""

import json
import os
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

APP_ID = os.environ["APP_ID"]
APP_PORT = int(os.environ["APP_PORT"])
SIDECAR = f"http://127.0.0.1:{os.environ['DAPR_HTTP_PORT']}"
orders: list[dict] = []


class Orders(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _reply(self, status: int, payload) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        if self.path != "/orders":
            return self._reply(404, {"error": "not found"})
        order = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        orders.append(order)
        print(f"received order {order['id']}", flush=True)
        self._reply(201, {"accepted": order["id"], "total": len(orders)})

    def do_GET(self):
        self._reply(200, orders[-10:]) if self.path == "/orders" else self._reply(404, {"error": "not found"})


def wait_for_sidecar() -> None:
    """Dapr's start-up handshake: the sidecar says 204 on healthz once it can reach this app."""
    while True:
        try:
            with urllib.request.urlopen(f"{SIDECAR}/v1.0/healthz", timeout=1) as resp:
                if resp.status == 204:
                    return
        except OSError:
            pass
        time.sleep(0.1)


def place_orders() -> None:
    wait_for_sidecar()
    for number in range(1, 1_000_000):
        request = urllib.request.Request(
            f"{SIDECAR}/v1.0/invoke/{APP_ID}/method/orders",
            data=json.dumps({"id": number, "item": "coffee"}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            print(f"placed order {number}: {resp.status} {resp.read().decode()}", flush=True)
        time.sleep(1)


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", APP_PORT), Orders)
    threading.Thread(target=place_orders, daemon=True).start()
    print(f"{APP_ID} listening on {APP_PORT}", flush=True)
    server.serve_forever()
