"""Actors through a real sidecar and a real actor app: turns, state, timers, reminders across kill -9."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from _http import json_request, request

from pillion._testing import Process, Sidecar, free_port, http_status, wait_for

STATE = ("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: statestore}\nspec:\n  type: state.lmdb\n"
         "  version: v1\n  metadata:\n  - {name: actorStateStore, value: 'true'}\n")


# A deadlocked call chain ends after 3 s with Dapr's error instead of hanging.
RESILIENCY = """
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {name: r}
spec:
  policies:
    timeouts: {short: 3s}
    retries:
      twice: {policy: constant, duration: 50ms, maxRetries: 2}
    circuitBreakers:
      guard: {timeout: 60s, trip: consecutiveFailures >= 2}
  targets:
    actors:
      Counter: {timeout: short}
      Flaky: {retry: twice}
      Fragile: {circuitBreaker: guard, circuitBreakerScope: id}
"""


class ActorApp(Process):
    def __init__(self, tmp: Path, sidecar_port: int, config: dict):
        self.port = free_port()
        self.record = tmp / f"actor-calls-{self.port}.jsonl"
        env = dict(os.environ, ACTOR_RECORD=str(self.record), DAPR_HTTP_PORT=str(sidecar_port),
                   ACTOR_CONFIG=json.dumps(config))  # fmt: skip
        super().__init__([sys.executable, "-m", "pillion._testing.actor_app", str(self.port)],
                         tmp / f"actor-app-{self.port}.log", env=env)
        wait_for(lambda: http_status(self.port, "/dapr/config") == 200, what="actor app")

    def entries(self, kind: str = "call") -> list[dict]:
        if not self.record.exists():
            return []
        complete = self.record.read_text().split("\n")[:-1]  # the app may be writing the last line
        return [e for e in map(json.loads, complete) if e["kind"] == kind]


@pytest.fixture
def actors(tmp_path, processes):
    """Start an actor app (its /dapr/config from ``config``) and its sidecar; returns (app, sidecar, restart)."""
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "state.yaml").write_text(STATE)
    (resources / "resiliency.yaml").write_text(RESILIENCY)
    http_port = free_port()

    def start_sidecar():
        sidecar = Sidecar(tmp_path, "actors", "--resources-path", str(resources), "--app-port", str(app.port),
                          http_port=http_port)  # fmt: skip
        processes.append(sidecar)
        wait_for(lambda: json_request(http_port, "GET", "/v1.0/metadata")[2]["actorRuntime"]["runtimeStatus"]
                 == "RUNNING", what="actor runtime")  # fmt: skip
        return sidecar

    def start(config: dict):
        nonlocal app
        app = ActorApp(tmp_path, http_port, config)
        processes.append(app)
        return app, start_sidecar(), start_sidecar

    app = None
    return start


def _call(sidecar, actor_type, actor_id, method, body=b"", verb="POST"):
    return request(sidecar.http_port, verb, f"/v1.0/actors/{actor_type}/{actor_id}/method/{method}", body)


def test_turns_state_and_metadata(actors):
    app, sidecar, _ = actors({"entities": ["Counter"]})
    errors = []

    def add():
        status, _, body = _call(sidecar, "Counter", "c1", "add", b"1")
        if status != 200:
            errors.append((status, body))

    threads = [threading.Thread(target=add) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    status, _, body = request(sidecar.http_port, "GET", "/v1.0/actors/Counter/c1/state/count")
    assert (status, body) == (200, b"50")  # no lost update: the calls never overlapped
    calls = sorted(app.entries(), key=lambda c: c["start"])
    assert all(b["start"] >= a["end"] for a, b in zip(calls, calls[1:]))
    assert {c["method"] for c in calls} == {"add"}
    assert request(sidecar.http_port, "GET", "/v1.0/actors/Counter/c1/state/missing")[0] == 204
    assert json_request(sidecar.http_port, "GET", "/v1.0/metadata")[2]["actors"] == [{"type": "Counter", "count": 1}]


def test_different_actors_run_in_parallel_and_every_verb_is_a_put(actors):
    app, sidecar, _ = actors({"entities": ["Counter"]})
    started = time.monotonic()
    threads = [threading.Thread(target=_call, args=(sidecar, "Counter", f"p{n}", "sleep", b"500", "GET"))
               for n in range(8)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started < 2.5  # eight 0.5 s calls, not 4 s in a row
    assert len(app.entries()) == 8


def test_reentrancy(actors):
    app, sidecar, _ = actors({"entities": ["Counter"], "reentrancy": {"enabled": True, "maxStackDepth": 32}})
    status, _, body = _call(sidecar, "Counter", "a", "call", json.dumps({"type": "Counter", "id": "a"}).encode())
    assert status == 200 and json.loads(body)["status"] == 200  # A -> A re-entered its own turn
    assert {c["reentrancy"] for c in app.entries()} != {None}


def test_without_reentrancy_a_call_chain_back_into_the_actor_times_out(actors):
    """A -> B -> A deadlocks without reentrancy; the Resiliency timeout ends it with Dapr's error."""
    _, sidecar, _ = actors({"entities": ["Counter"]})
    chain = {"type": "Counter", "id": "B", "method": "call", "body": {"type": "Counter", "id": "A"}}
    started = time.monotonic()
    status, _, body = json_request(sidecar.http_port, "POST", "/v1.0/actors/Counter/A/method/call",
                                   json.dumps(chain))
    assert (status, body["errorCode"]) == (500, "ERR_ACTOR_INVOKE_METHOD")
    assert "deadline exceeded" in body["message"] and time.monotonic() - started < 10
    assert _call(sidecar, "Counter", "A", "sleep", b"0")[0] == 200  # nothing stays locked


def test_reentrant_chains_back_into_the_actor_succeed(actors):
    app, sidecar, _ = actors({"entities": ["Counter"], "reentrancy": {"enabled": True}})
    chain = {"type": "Counter", "id": "B", "method": "call", "body": {"type": "Counter", "id": "A"}}
    status, _, body = request(sidecar.http_port, "POST", "/v1.0/actors/Counter/A/method/call", json.dumps(chain))
    assert status == 200 and json.loads(json.loads(body)["body"])["status"] == 200


def test_without_reentrancy_a_call_back_into_the_turn_waits(actors):
    app, sidecar, _ = actors({"entities": ["Counter"]})
    other = threading.Thread(target=_call, args=(sidecar, "Counter", "b", "sleep", b"1500"))
    other.start()
    time.sleep(0.2)
    started = time.monotonic()
    status, _, _ = _call(sidecar, "Counter", "b", "sleep", b"0")
    assert status == 200 and time.monotonic() - started > 1.0  # waited for the running turn
    other.join()


def test_timers_and_reminders_survive_kill_9(actors):
    app, sidecar, restart = actors({"entities": ["Counter"]})
    base = "/v1.0/actors/Counter/{}/{}/{}"
    assert request(sidecar.http_port, "POST", base.format("r1", "reminders", "three"),
                   json.dumps({"dueTime": "1s", "period": "R3/PT1S", "data": {"x": 1}}))[0] == 204
    status, _, body = json_request(sidecar.http_port, "GET", base.format("r1", "reminders", "three"))
    assert status == 200 and body["period"] == "R3/PT1S" and body["data"] == {"x": 1}
    assert request(sidecar.http_port, "POST", base.format("t1", "timers", "tick"),
                   json.dumps({"dueTime": "0s", "period": "1s", "callback": "onTick", "data": "d"}))[0] == 204
    assert request(sidecar.http_port, "POST", base.format("r2", "reminders", "later"),
                   json.dumps({"dueTime": "5s"}))[0] == 204
    wait_for(lambda: len([c for c in app.entries() if c["method"] == "remind/three"]) == 3, timeout=10,
             what="three reminder fires")
    time.sleep(1.2)
    reminders = [c for c in app.entries() if c["method"] == "remind/three"]
    assert len(reminders) == 3 and json.loads(reminders[0]["body"])["data"] == {"x": 1}
    ticks = [c for c in app.entries() if c["method"] == "timer/tick"]
    assert len(ticks) >= 3 and json.loads(ticks[0]["body"])["callback"] == "onTick"
    assert request(sidecar.http_port, "DELETE", base.format("t1", "timers", "tick"))[0] == 204
    sidecar.stop(signal.SIGKILL)
    time.sleep(2.0)  # "later" falls due while the sidecar is down
    restart()
    wait_for(lambda: [c for c in app.entries() if c["method"] == "remind/later"], timeout=10,
             what="the reminder due while the sidecar was down")
    assert len([c for c in app.entries() if c["method"] == "remind/later"]) == 1


def test_the_sdk_error_convention_passes_through(actors):
    """200 with X-DaprErrorResponseHeader reaches the caller unchanged (the JS/.NET SDKs raise from it)."""
    _, sidecar, _ = actors({"entities": ["Counter"]})
    status, headers, body = _call(sidecar, "Counter", "e", "fail")
    assert (status, headers["X-DaprErrorResponseHeader"], json.loads(body)) == (200, "Actor error",
                                                                               {"message": "it failed"})


def test_reminder_cancelled_by_its_callback(actors):
    app, sidecar, _ = actors({"entities": ["Counter"]})
    assert request(sidecar.http_port, "POST", "/v1.0/actors/Counter/c/reminders/cancel-me",
                   json.dumps({"dueTime": "0s", "period": "500ms"}))[0] == 204
    wait_for(lambda: app.entries(), what="the first fire")
    time.sleep(1.5)
    assert len([c for c in app.entries() if c["method"] == "remind/cancel-me"]) == 1


def test_ttl_ends_a_reminder(actors):
    app, sidecar, _ = actors({"entities": ["Counter"]})
    assert request(sidecar.http_port, "POST", "/v1.0/actors/Counter/t/reminders/short",
                   json.dumps({"dueTime": "0s", "period": "1s", "ttl": "2500ms"}))[0] == 204
    time.sleep(4.5)
    fires = [c for c in app.entries() if c["method"] == "remind/short"]
    assert 2 <= len(fires) <= 3  # at 0 s, 1 s and 2 s; none at or after the 2.5 s ttl
    status, _, body = json_request(sidecar.http_port, "GET", "/v1.0/actors/Counter/t/reminders/short")
    assert (status, body) == (200, {})  # gone once the ttl ended it


def test_bad_input(actors):
    _, sidecar, _ = actors({"entities": ["Counter"]})
    status, _, body = json_request(sidecar.http_port, "POST", "/v1.0/actors/Counter/x/reminders/r",
                                   json.dumps({"dueTime": "soon"}))
    assert (status, body["errorCode"]) == (500, "ERR_ACTOR_REMINDER_CREATE")
    status, _, body = json_request(sidecar.http_port, "POST", "/v1.0/actors/Counter/x/reminders/r",
                                   json.dumps({"period": "R0/PT1S"}))
    assert body["errorCode"] == "ERR_ACTOR_REMINDER_CREATE" and "zero repetitions" in body["message"]
    status, _, body = json_request(sidecar.http_port, "POST", "/v1.0/actors/Counter/x/timers/t", b"[1]")
    assert (status, body["errorCode"]) == (400, "ERR_MALFORMED_REQUEST")
    status, _, body = json_request(sidecar.http_port, "POST", "/v1.0/actors/Nope/x/method/m", b"")
    assert (status, body["errorCode"]) == (500, "ERR_ACTOR_INVOKE_METHOD")
    status, _, body = json_request(sidecar.http_port, "POST", "/v1.0/actors/Nope/x/reminders/r", b"{}")
    assert (status, body["errorCode"]) == (403, "ERR_ACTOR_REMINDER_NON_HOSTED")
    status, _, body = json_request(sidecar.http_port, "POST", "/v1.0/actors/Counter/idle/state",
                                   json.dumps([{"operation": "upsert", "request": {"key": "k", "value": 1}}]))
    assert (status, body["errorCode"]) == (400, "ERR_ACTOR_INSTANCE_MISSING")
    assert sidecar.alive()


def test_idle_actors_are_deactivated(actors):
    app, sidecar, _ = actors({"entities": ["Counter"], "actorIdleTimeout": "1s"})
    assert _call(sidecar, "Counter", "sleepy", "sleep", b"0")[0] == 200
    wait_for(lambda: app.entries("deactivate"), timeout=5, what="deactivation")
    assert app.entries("deactivate")[0]["id"] == "sleepy"
    assert json_request(sidecar.http_port, "GET", "/v1.0/metadata")[2]["actors"] == [{"type": "Counter", "count": 0}]


def test_resiliency_retries_and_breaks_actor_calls(actors):
    app, sidecar, _ = actors({"entities": ["Flaky", "Fragile"]})
    assert _call(sidecar, "Flaky", "f1", "flaky", b"2")[0] == 200  # two 500s, retried twice
    assert [c["status"] for c in app.entries() if c["id"] == "f1"] == [500, 500, 200]
    assert _call(sidecar, "Flaky", "f2", "flaky", b"5")[0] == 500  # still failing after the retries: its answer
    assert len([c for c in app.entries() if c["id"] == "f2"]) == 3
    for _ in range(2):
        assert _call(sidecar, "Fragile", "g1", "flaky", b"9")[0] == 500
    status, _, body = _call(sidecar, "Fragile", "g1", "flaky", b"9")
    assert status == 500 and b"circuit breaker is open" in body  # refused without calling the app
    assert len([c for c in app.entries() if c["id"] == "g1"]) == 2
    assert _call(sidecar, "Fragile", "g2", "flaky", b"0")[0] == 200  # scope id: another actor is not affected
