"""Hello, Pillion (Python half): the "checkout" app, which sends an order every second.

Standard library only, and no server: it calls the ``orders`` app by app id through its
*own* sidecar (``/v1.0/invoke/orders/method/orders``); the sidecars find each other.
"""

import json
import os
import time
import urllib.error
import urllib.request

SIDECAR = f"http://127.0.0.1:{os.environ.get('DAPR_HTTP_PORT', '3501')}"
TARGET = os.environ.get("ORDERS_APP_ID", "orders")


def wait_for_sidecar() -> None:
    while True:
        try:
            with urllib.request.urlopen(f"{SIDECAR}/v1.0/healthz", timeout=1) as resp:
                if resp.status == 204:
                    return
        except OSError:
            pass
        time.sleep(0.1)


def send(number: int) -> None:
    request = urllib.request.Request(
        f"{SIDECAR}/v1.0/invoke/{TARGET}/method/orders",
        data=json.dumps({"id": number, "item": "coffee"}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            print(f"sent order {number}: {resp.status} {resp.read().decode()}", flush=True)
    except urllib.error.HTTPError as exc:  # e.g. orders not started yet: try the next one
        print(f"order {number} failed: {exc.code} {exc.read().decode()}", flush=True)
    except OSError as exc:
        print(f"order {number} failed: {exc}", flush=True)


if __name__ == "__main__":
    wait_for_sidecar()
    for number in range(1, 1_000_000):
        send(number)
        time.sleep(1)
