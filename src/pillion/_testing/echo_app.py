"""A plain app for tests: echoes each request back as JSON, on the standard library only.

``python -m pillion._testing.echo_app PORT``. Paths with meaning:
``/status/<code>`` answers that status, ``/sleep/<ms>`` waits first,
``/healthz`` answers 200 unless the file named by ``ECHO_UNHEALTHY_FILE`` exists,
``/flaky/<n>/<name>`` answers 503 to the first n calls of that name and 200 after,
``/down/<name>`` answers 500 while the file ``<name>`` exists in ``ECHO_FLAG_DIR``;
every answer carries ``X-Echo-Calls``, the calls of its path so far.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


_lock = threading.Lock()
_inflight = 0
_max_inflight = 0
_calls: dict[str, int] = {}


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def _handle(self):
        global _inflight, _max_inflight
        with _lock:
            _inflight += 1
            _max_inflight = max(_max_inflight, _inflight)
        try:
            self._answer()
        finally:
            with _lock:
                _inflight -= 1

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        with _lock:
            calls = _calls[path] = _calls.get(path, 0) + 1
        status = 200
        if path == "/healthz":
            flag = os.environ.get("ECHO_UNHEALTHY_FILE")
            status = 503 if flag and os.path.exists(flag) else 200
        elif path.startswith("/status/"):
            status = int(path.split("/")[2])
        elif path.startswith("/sleep/"):
            time.sleep(int(path.split("/")[2]) / 1000)
        elif path.startswith("/flaky/"):
            status = 503 if calls <= int(path.split("/")[2]) else 200
        elif path.startswith("/down/"):
            flag = os.path.join(os.environ.get("ECHO_FLAG_DIR", "."), path.split("/")[2])
            status = 500 if os.path.exists(flag) else 200
        payload = json.dumps({
            "method": self.command,
            "path": path,
            "query": query,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": base64.b64encode(body).decode(),
            "app": os.environ.get("APP_ID", ""),
            "maxInflight": _max_inflight,
        }).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Echo", "yes")
        self.send_header("X-Echo-Calls", str(calls))
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ["APP_PORT"])
    server = ThreadingHTTPServer(("127.0.0.1", port), Echo)
    server.daemon_threads = True
    print(f"echo app listening on {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
