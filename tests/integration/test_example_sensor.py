"""examples/sensor runs as its README says: mosquitto_pub in, state, mosquitto_sub out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from _http import json_request

from pillion._testing import Process, free_port, pillion_command, wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sensor"


def _publish(mqtt_port: int, payload: str) -> None:
    subprocess.run(["mosquitto_pub", "-p", str(mqtt_port), "-q", "1", "-t", "sensors/kitchen/temperature",
                    "-m", payload], check=True, timeout=10)


def _summary(http_port: int):
    status, _, body = json_request(http_port, "GET", "/v1.0/state/statestore/kitchen-average")
    return body if status == 200 else None


def test_sensor_example(tmp_path):
    app_port, http_port, mqtt_port = free_port(), free_port(), free_port()
    env = dict(os.environ, PILLION_HOME=str(tmp_path / "home"), PILLION_DATA_DIR=str(tmp_path / "data"))
    proc = Process(pillion_command("run", "--app-id", "sensor", "--app-port", str(app_port), "--dapr-http-port",
                                   str(http_port), "--resources-path", "./components", "--mqtt-port", str(mqtt_port),
                                   "--", sys.executable, "app.py"),
                   tmp_path / "sensor.log", env=env, cwd=str(EXAMPLE))
    alerts = None
    try:
        def subscribed():
            assert proc.alive(), proc.output()
            try:
                status, _, metadata = json_request(http_port, "GET", "/v1.0/metadata")
            except OSError:
                return False
            return status == 200 and [s["topic"] for s in metadata["subscriptions"]] == ["sensors/kitchen/temperature"]

        wait_for(subscribed, 20, what="the declarative raw subscription")
        wait_for(lambda: "subscribed: pubsub/sensors/kitchen/temperature" in proc.output(), 10,
                 what="the subscription on the broker")
        # -d: mosquitto_sub also prints its protocol exchange (line-buffered by stdbuf, to a file),
        # so the test publishes only once it is subscribed.
        with open(tmp_path / "alerts.txt", "w") as out:
            alerts = subprocess.Popen(["stdbuf", "-oL", "mosquitto_sub", "-d", "-p", str(mqtt_port), "-t", "alerts",
                                       "-C", "1", "-W", "20"], stdout=out, stderr=subprocess.STDOUT)

        def received() -> list[str]:
            return (tmp_path / "alerts.txt").read_text().splitlines()

        wait_for(lambda: any("SUBACK" in line for line in received()), 10, what="mosquitto_sub subscribed")
        _publish(mqtt_port, "31.5")
        assert alerts.wait(25) == 0, received()
        payloads = [line for line in received() if not line.startswith(("Client ", "Subscribed "))]
        assert [json.loads(line) for line in payloads] == [{"sensor": "kitchen", "average": 31.5, "threshold": 30.0}]
        # The app publishes the alert before it saves the state (a failed save means a retry and a
        # second alert, never a lost one), so the state may be a moment behind mosquitto_sub.
        wait_for(lambda: _summary(http_port), 10, what="the average in state")
        assert _summary(http_port) == {"average": 31.5, "readings": [31.5], "alerting": True}
        assert "== APP == ALERT: average 31.5 is above 30.0\n" in proc.output()

        _publish(mqtt_port, "20")
        wait_for(lambda: _summary(http_port)["readings"] == [31.5, 20.0], 10, what="the second reading in state")
        assert _summary(http_port) == {"average": 25.75, "readings": [31.5, 20.0], "alerting": False}
        _publish(mqtt_port, "hot")
        wait_for(lambda: "== APP == not a temperature: b'hot'\n" in proc.output(), 10,
                 what="the garbage reading dropped")
        assert _summary(http_port)["readings"] == [31.5, 20.0]
        assert proc.output().count("== APP == ALERT") == 1
    finally:
        if alerts is not None and alerts.poll() is None:
            alerts.kill()
            alerts.wait()
        proc.stop()
