"""examples/actor-reminder runs as its README says, and its reminder keeps firing across a restart."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from _http import json_request, request

from pillion._testing import Process, free_port, pillion_command, wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "actor-reminder"
ACTOR = "/v1.0/actors/Thermostat/t1"


def _start(tmp_path, app_port: int, http_port: int, **app_env: str) -> Process:
    """`pillion run` as in the README, once the actor runtime hosts Thermostat.

    ``--mqtt-port 0``: the example needs no broker, and parallel tests must not race for 1883.
    """
    env = dict(os.environ, PILLION_HOME=str(tmp_path / "home"), PILLION_DATA_DIR=str(tmp_path / "data"), **app_env)
    proc = Process(pillion_command("run", "--app-id", "thermostat", "--app-port", str(app_port), "--dapr-http-port",
                                   str(http_port), "--resources-path", "./components", "--mqtt-port", "0",
                                   "--", sys.executable, "app.py"),
                   tmp_path / "thermostat.log", env=env, cwd=str(EXAMPLE))

    def hosting():
        assert proc.alive(), proc.output()
        try:
            status, _, metadata = json_request(http_port, "GET", "/v1.0/metadata")
        except OSError:
            return False
        return status == 200 and metadata["actorRuntime"]["runtimeStatus"] == "RUNNING" and \
            [a["type"] for a in metadata["actors"]] == ["Thermostat"]

    wait_for(hosting, 20, what="the Thermostat actor type hosted")
    return proc


def _checks(http_port: int) -> int:
    status, _, body = request(http_port, "GET", f"{ACTOR}/state/checks")
    assert status in (200, 204), (status, body)
    return json.loads(body) if status == 200 else 0


def test_actor_reminder_example(tmp_path):
    app_port, http_port = free_port(), free_port()
    proc = _start(tmp_path, app_port, http_port)
    try:
        status, _, body = json_request(http_port, "PUT", f"{ACTOR}/method/setTarget", b"21.5")
        assert (status, body) == (200, {"target": 21.5})
        wait_for(lambda: _checks(http_port) >= 2, 10, what="two reminder fires")
        status, _, body = json_request(http_port, "GET", f"{ACTOR}/method/getStatus")
        assert status == 200 and body["target"] == 21.5 and body["checks"] >= 2
        status, _, body = json_request(http_port, "GET", f"{ACTOR}/reminders/check")
        assert (status, body) == (200, {"actorID": "t1", "actorType": "Thermostat", "name": "check",
                                        "dueTime": "1s", "period": "1s"})
        assert "== APP == t1: check 2, target 21.5\n" in proc.output()
    finally:
        proc.stop()
    before = _count_in_log(proc.output())

    # Same data dir: the reminder and the counter are in LMDB. A short idle timeout this time,
    # so that t1 is deactivated once its reminder is gone.
    proc = _start(tmp_path, app_port, http_port, IDLE_TIMEOUT="3s")
    try:
        # No call after the restart: only the stored reminder can activate t1 and count.
        wait_for(lambda: _count_in_log(proc.output()) >= before + 2, 10, what="the reminder firing after the restart")
        assert _checks(http_port) >= before + 2
        status, _, body = json_request(http_port, "GET", f"{ACTOR}/method/getStatus")
        assert status == 200 and body["target"] == 21.5
        deactivations = proc.output().count("== APP == t1: deactivated")
        assert request(http_port, "DELETE", f"{ACTOR}/reminders/check")[0] == 204
        stopped_at = _checks(http_port)
        wait_for(lambda: proc.output().count("== APP == t1: deactivated") > deactivations, 10,
                 what="t1 deactivated once idle")
        assert _checks(http_port) <= stopped_at + 1  # one fire may have been under way; then none
    finally:
        proc.stop()


def _count_in_log(output: str) -> int:
    """The last ``check N`` the app printed (the log file keeps both runs)."""
    counts = [int(line.split("check ")[1].split(",")[0]) for line in output.splitlines() if ": check " in line]
    return max(counts, default=0)
