"""An actor app for tests, on the standard library only.

``python -m pillion._testing.actor_app PORT`` with ``ACTOR_CONFIG`` (JSON: what
``GET /dapr/config`` answers), ``ACTOR_RECORD`` (a file: one JSON line per call, with
entry and exit times) and ``DAPR_HTTP_PORT`` (its sidecar). Methods of any actor type:

- ``sleep``: waits the number of milliseconds in the body;
- ``add``: reads the actor state ``count`` through the sidecar, adds the body's number
  and saves it (lost updates show when two calls overlap);
- ``call``: calls another actor through the sidecar (body ``{"type", "id", "method",
  "body"}``; method ``sleep`` with body 0 by default), copying ``Dapr-Reentrancy-Id``;
- ``remind/<name>`` and ``timer/<name>``: recorded; ``remind/cancel-me`` answers with
  ``X-DaprReminderCancel: true``;
- ``fail``: the SDKs' actor error convention, 200 with ``X-DaprErrorResponseHeader``;
- ``flaky``: 500 to the first n calls of that actor (n in the body), 200 after.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONFIG = json.loads(os.environ.get("ACTOR_CONFIG") or '{"entities": ["Counter"]}')
RECORD = os.environ.get("ACTOR_RECORD")
_lock = threading.Lock()
_flaky_calls: dict[str, int] = {}


def _record(entry: dict) -> None:
    if RECORD:
        with _lock, open(RECORD, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


def _sidecar(method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", int(os.environ["DAPR_HTTP_PORT"]), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Actor(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/dapr/config":
            self._reply(200, json.dumps(CONFIG).encode())
        else:
            self._reply(200, b"{}")

    def do_DELETE(self):
        parts = self.path.strip("/").split("/")
        _record({"kind": "deactivate", "type": parts[1], "id": parts[2], "at": time.time()})
        self._reply(200)

    def do_PUT(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = self.path.split("?")[0].strip("/").split("/")  # actors, type, id, method, name...
        actor_type, actor_id, method = parts[1], parts[2], "/".join(parts[4:])
        entry = {"kind": "call", "type": actor_type, "id": actor_id, "method": method, "start": time.time(),
                 "reentrancy": self.headers.get("Dapr-Reentrancy-Id"), "body": body.decode(errors="replace")}
        headers = {}
        result = b""
        answer = 200
        if method == "sleep":
            time.sleep((json.loads(body or b"0") or 0) / 1000)
        elif method == "add":
            base = f"/v1.0/actors/{actor_type}/{actor_id}/state"
            status, data = _sidecar("GET", f"{base}/count")
            count = json.loads(data) if status == 200 and data else 0
            count += json.loads(body or b"1")
            ops = [{"operation": "upsert", "request": {"key": "count", "value": count}}]
            _sidecar("POST", base, json.dumps(ops).encode())
            result = json.dumps(count).encode()
        elif method == "call":
            target = json.loads(body)
            forwarded = {"Dapr-Reentrancy-Id": self.headers["Dapr-Reentrancy-Id"]} \
                if self.headers.get("Dapr-Reentrancy-Id") else {}
            method_path = f"/v1.0/actors/{target['type']}/{target['id']}/method/{target.get('method', 'sleep')}"
            status, data = _sidecar("PUT", method_path, json.dumps(target.get("body", 0)).encode(), forwarded)
            result = json.dumps({"status": status, "body": data.decode(errors="replace")}).encode()
        elif method == "remind/cancel-me":
            headers["X-DaprReminderCancel"] = "true"
        elif method == "fail":
            headers["X-DaprErrorResponseHeader"] = "Actor error"
            result = b'{"message": "it failed"}'
        elif method == "flaky":
            with _lock:
                calls = _flaky_calls[actor_id] = _flaky_calls.get(actor_id, 0) + 1
            answer = 500 if calls <= json.loads(body or b"0") else 200
        entry["end"] = time.time()
        entry["status"] = answer
        _record(entry)
        self._reply(answer, result, headers)


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ["APP_PORT"])
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer(("127.0.0.1", port), Actor)
    server.daemon_threads = True
    print(f"actor app listening on {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
