"""An actor with a reminder: a Thermostat that, once set, checks itself every second.

Standard library only. The sidecar hosts the actor runtime; this app only answers its
callbacks, each of which arrives within the actor's turn (one at a time per actor):

- ``GET /dapr/config``: the actor types hosted here;
- ``PUT /actors/Thermostat/{id}/method/setTarget``: saves ``target`` in actor state and
  registers the reminder ``check`` (due in 1 s, then every 1 s);
- ``PUT /actors/Thermostat/{id}/method/getStatus``: the target and the number of checks;
- ``PUT /actors/Thermostat/{id}/method/remind/check``: the reminder firing; adds one to
  ``checks`` in actor state;
- ``DELETE /actors/Thermostat/{id}``: the sidecar deactivates an actor idle for
  IDLE_TIMEOUT (default 1h); nothing is kept in this process, so there is nothing to do.

Actor state and reminders live in the sidecar's LMDB files, so both survive a restart.
"""

import http.client
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

APP_PORT = int(os.environ["APP_PORT"])
DAPR_HTTP_PORT = int(os.environ["DAPR_HTTP_PORT"])
# An actor not called (nor reminded) for this long is deactivated: DELETE below.
CONFIG = {"entities": ["Thermostat"], "actorIdleTimeout": os.environ.get("IDLE_TIMEOUT", "1h")}


def sidecar(method: str, path: str, body=None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", DAPR_HTTP_PORT, timeout=10)
    try:
        conn.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Thermostat:
    """One actor's methods; ``self.base`` is its sidecar path /v1.0/actors/Thermostat/{id}."""

    def __init__(self, actor_id: str):
        self.id = actor_id
        self.base = f"/v1.0/actors/Thermostat/{actor_id}"

    def get(self, key: str, default=None):
        status, data = sidecar("GET", f"{self.base}/state/{key}")
        return json.loads(data) if status == 200 and data else default  # 204: no such key

    def set(self, key: str, value) -> None:
        status, data = sidecar("POST", f"{self.base}/state",
                               [{"operation": "upsert", "request": {"key": key, "value": value}}])
        if status != 204:
            raise RuntimeError(f"actor state: {status} {data!r}")

    def setTarget(self, celsius):
        self.set("target", celsius)
        status, data = sidecar("POST", f"{self.base}/reminders/check", {"dueTime": "1s", "period": "1s"})
        if status != 204:
            raise RuntimeError(f"reminder: {status} {data!r}")
        print(f"{self.id}: target {celsius}, checking every second", flush=True)
        return {"target": celsius}

    def getStatus(self, _body):
        return {"target": self.get("target"), "checks": self.get("checks", 0)}

    def remind_check(self, _reminder):
        checks = self.get("checks", 0) + 1
        self.set("checks", checks)
        print(f"{self.id}: check {checks}, target {self.get('target')}", flush=True)


METHODS = {"setTarget": Thermostat.setTarget, "getStatus": Thermostat.getStatus,
           "remind/check": Thermostat.remind_check}


class Actors(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _reply(self, status: int, payload=None) -> None:
        body = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _parts(self) -> list[str]:
        return self.path.partition("?")[0].strip("/").split("/")

    def do_GET(self):
        if self.path == "/dapr/config":
            return self._reply(200, CONFIG)
        self._reply(404, {"error": "not found"})

    def do_PUT(self):  # actors/Thermostat/{id}/method/{name...}
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        parts = self._parts()
        method = METHODS.get("/".join(parts[4:])) if parts[:2] == ["actors", "Thermostat"] else None
        if method is None:
            return self._reply(404, {"error": f"no such actor method: {self.path}"})
        try:
            self._reply(200, method(Thermostat(parts[2]), body))
        except (OSError, RuntimeError) as exc:
            self._reply(500, {"error": str(exc)})

    def do_DELETE(self):  # actors/Thermostat/{id}: deactivation
        print(f"{self._parts()[2]}: deactivated", flush=True)
        self._reply(200)


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", APP_PORT), Actors)
    print(f"Thermostat actors on {APP_PORT}", flush=True)
    server.serve_forever()
