"""A sensor on the device: temperatures in over MQTT, a rolling average in state, alerts out.

Standard library only. A thermometer (here ``mosquitto_pub``) publishes bare numbers such
as ``31.5`` on ``sensors/kitchen/temperature``; the raw-payload subscription in
``components/subscription.yaml`` brings each one to ``POST /temperature`` as a CloudEvent
whose ``data_base64`` holds the payload's bytes. The app keeps the last WINDOW readings and
their average under the state key ``kitchen-average``; when the average rises above
THRESHOLD it publishes a plain JSON alert on ``alerts`` (raw, so any MQTT client reads it).
"""

import base64
import http.client
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

APP_PORT = int(os.environ["APP_PORT"])
DAPR_HTTP_PORT = int(os.environ["DAPR_HTTP_PORT"])
THRESHOLD = float(os.environ.get("THRESHOLD", "30.0"))
WINDOW = int(os.environ.get("WINDOW", "5"))
KEY = "kitchen-average"
lock = threading.Lock()  # deliveries come concurrently; one read-modify-write at a time


def sidecar(method: str, path: str, body=None, query: str = "") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", DAPR_HTTP_PORT, timeout=10)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        conn.request(method, path + query, body=payload, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def record(reading: float) -> dict:
    """Adds a reading to the window kept in state; publishes an alert when the average crosses THRESHOLD."""
    with lock:
        status, data = sidecar("GET", f"/v1.0/state/statestore/{KEY}")
        summary = json.loads(data) if status == 200 else {"readings": [], "alerting": False}
        readings = (summary["readings"] + [reading])[-WINDOW:]
        average = round(sum(readings) / len(readings), 2)
        alerting = average > THRESHOLD
        if alerting and not summary["alerting"]:  # once per crossing, not for every reading above
            alert = {"sensor": "kitchen", "average": average, "threshold": THRESHOLD}
            status, data = sidecar("POST", "/v1.0/publish/pubsub/alerts", alert, "?metadata.rawPayload=true")
            if status != 204:
                raise RuntimeError(f"publish failed: {status} {data!r}")
            print(f"ALERT: average {average} is above {THRESHOLD}", flush=True)
        summary = {"average": average, "readings": readings, "alerting": alerting}
        status, data = sidecar("POST", "/v1.0/state/statestore", [{"key": KEY, "value": summary}])
        if status != 204:
            raise RuntimeError(f"state save failed: {status} {data!r}")
        return summary


class Sensor(BaseHTTPRequestHandler):
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

    def do_GET(self):
        self._reply(404, {"error": "not found"})  # also /dapr/subscribe: the subscription is declarative

    def do_POST(self):
        event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/temperature":
            return self._reply(404, {"error": "not found"})
        payload = base64.b64decode(event["data_base64"])  # the bytes mosquitto_pub sent
        try:
            reading = float(payload)
        except ValueError:
            print(f"not a temperature: {payload!r}", flush=True)
            return self._reply(200, {"status": "DROP"})  # garbage is not worth retrying
        try:
            summary = record(reading)
        except (OSError, RuntimeError) as exc:
            print(f"will be delivered again: {exc}", flush=True)
            return self._reply(500, {"status": "RETRY"})
        print(f"reading {reading}: average of {len(summary['readings'])} is {summary['average']}", flush=True)
        self._reply(200, {"status": "SUCCESS"})


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", APP_PORT), Sensor)
    print(f"sensor app listening on {APP_PORT}, alert above {THRESHOLD}", flush=True)
    server.serve_forever()
