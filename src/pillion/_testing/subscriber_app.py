"""A pub/sub subscriber app for tests, on the standard library only.

``python -m pillion._testing.subscriber_app PORT`` with ``SUBSCRIBER_CONFIG`` (JSON):

- ``subscriptions``: what ``GET /dapr/subscribe`` answers (a list), or an int: that status;
- ``record``: a file; every delivery is appended as one JSON line
  ``{"path", "accepted", "body", "headers"}`` (the body as text), so counts survive
  restarts of the app;
- ``fail_rate`` (0..1) and ``fail_with`` (``"RETRY"`` or an HTTP status such as 500):
  that share of deliveries is refused, at random (``seed``);
- ``sleep_ms``: ``/sleep`` waits that long before it answers SUCCESS; ``GET /started``
  answers how many such deliveries began;
- paths with meaning: ``/status/<code>`` answers that status, ``/drop`` answers DROP,
  ``/garbage`` answers 200 with a body that is not JSON, ``/bulk`` answers SUCCESS for
  every entry of a bulk delivery (and records each entry).
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONFIG = json.loads(os.environ.get("SUBSCRIBER_CONFIG") or "{}")
_random = random.Random(CONFIG.get("seed", 1))
_lock = threading.Lock()
_started = 0


def _record(entry: dict) -> None:
    path = CONFIG.get("record")
    if path:
        with _lock, open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


class Subscriber(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def _reply(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/started":
            self._reply(200, str(_started).encode())
        elif self.path == "/dapr/subscribe":
            subscriptions = CONFIG.get("subscriptions", [])
            if isinstance(subscriptions, int):
                self._reply(subscriptions)
            else:
                self._reply(200, json.dumps(subscriptions).encode())
        else:
            self._reply(200, b"{}")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.partition("?")[0]
        headers = {k.lower(): v for k, v in self.headers.items()}
        if path.startswith("/status/"):
            _record({"path": path, "accepted": False, "body": body.decode(errors="replace"), "headers": headers})
            self._reply(int(path.split("/")[2]))
            return
        if path == "/bulk":
            entries = json.loads(body).get("entries", [])
            for entry in entries:
                _record({"path": path, "accepted": True, "body": json.dumps(entry["event"]), "headers": headers,
                         "batch": len(entries)})
            statuses = [{"entryId": e["entryId"], "status": "SUCCESS"} for e in entries]
            self._reply(200, json.dumps({"statuses": statuses}).encode())
            return
        if path == "/sleep":
            global _started
            with _lock:
                _started += 1
            time.sleep(CONFIG.get("sleep_ms", 0) / 1000)
        refused = _random.random() < float(CONFIG.get("fail_rate", 0))
        accepted = not refused and path != "/drop"
        _record({"path": path, "accepted": accepted, "body": body.decode(errors="replace"), "headers": headers})
        if path == "/drop":
            self._reply(200, b'{"status": "DROP"}')
        elif path == "/garbage":
            self._reply(200, b"this is not json", "text/plain")
        elif refused and CONFIG.get("fail_with", "RETRY") == "RETRY":
            self._reply(200, b'{"status": "RETRY"}')
        elif refused:
            self._reply(int(CONFIG["fail_with"]), b"refused")
        else:
            self._reply(200, b'{"status": "SUCCESS"}')

    do_PUT = do_POST

    def do_OPTIONS(self):
        """Input bindings are probed with OPTIONS: this app takes every route but /status/404."""
        self._reply(404 if self.path.startswith("/status/404") else 200)


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ["APP_PORT"])
    ThreadingHTTPServer.request_queue_size = 128  # the default 5 drops a burst of deliveries' connections
    server = ThreadingHTTPServer(("127.0.0.1", port), Subscriber)
    server.daemon_threads = True
    print(f"subscriber app listening on {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
