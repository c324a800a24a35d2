"""The official Dapr Python SDK's actor runtime (``dapr.ext.fastapi.DaprActor``) and actor client
(``ActorProxy``), unchanged, against a real sidecar over HTTP: state, reminders, timers, metadata."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

pytest.importorskip("dapr.ext.fastapi", reason="the Dapr Python SDK with its FastAPI extra (dapr[fastapi]) is missing")

from _http import json_request, request  # noqa: E402
from dapr.actor import ActorId, ActorProxy  # noqa: E402

from pillion._testing import Process, Sidecar, free_port, http_status, wait_for  # noqa: E402
from pillion._testing.sdk_actor_app import DemoActorInterface  # noqa: E402

STATE = ("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: statestore}\nspec:\n  type: state.lmdb\n"
         "  version: v1\n  metadata:\n  - {name: actorStateStore, value: 'true'}\n")


class SdkActorApp(Process):
    def __init__(self, tmp: Path, sidecar_port: int):
        self.port = free_port()
        self.record = tmp / f"sdk-actor-{self.port}.jsonl"
        env = dict(os.environ, DAPR_HTTP_PORT=str(sidecar_port), DAPR_RUNTIME_HOST="127.0.0.1",
                   DAPR_HEALTH_TIMEOUT="20", SDK_ACTOR_RECORD=str(self.record))  # fmt: skip
        env.pop("DAPR_HTTP_ENDPOINT", None)
        env.pop("DAPR_API_TOKEN", None)
        # Not waited for here: registering the actor makes the SDK wait for the sidecar's outbound health.
        super().__init__([sys.executable, "-m", "pillion._testing.sdk_actor_app", str(self.port)],
                         tmp / f"sdk-actor-app-{self.port}.log", env=env)

    def entries(self, kind: str, actor_id: str = "1") -> list[dict]:
        if not self.record.exists():
            return []
        lines = self.record.read_text().split("\n")[:-1]  # complete lines only: the app may be writing
        return [e for e in map(json.loads, lines) if e["kind"] == kind and e["id"] == actor_id]


@pytest.fixture
def sdk_actors(tmp_path, processes, monkeypatch):
    """The SDK actor app and its sidecar, actor runtime RUNNING; the SDK client in this process targets it."""
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "state.yaml").write_text(STATE)
    http_port = free_port()
    app = SdkActorApp(tmp_path, http_port)
    processes.append(app)
    sidecar = Sidecar(tmp_path, "sdkactors", "--resources-path", str(resources), "--app-port", str(app.port),
                      http_port=http_port)  # fmt: skip
    processes.append(sidecar)

    def app_up():
        if not app.alive():
            raise RuntimeError(f"actor app exited:\n{app.output()}")
        return http_status(app.port, "/dapr/config") == 200

    wait_for(app_up, timeout=20, what="SDK actor app")

    def runtime_running():
        metadata = json_request(http_port, "GET", "/v1.0/metadata")[2]
        return metadata["actorRuntime"]["runtimeStatus"] == "RUNNING" and metadata.get("actors")

    wait_for(runtime_running, timeout=15, what="actor runtime with DemoActor")
    for name in ("DAPR_HTTP_ENDPOINT", "DAPR_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAPR_RUNTIME_HOST", "127.0.0.1")
    monkeypatch.setenv("DAPR_HTTP_PORT", str(http_port))  # the SDK reads its settings at each call
    monkeypatch.setenv("DAPR_HEALTH_TIMEOUT", "10")
    return app, sidecar


def proxy(actor_id: str):
    return ActorProxy.create("DemoActor", ActorId(actor_id), DemoActorInterface)


def run(coro):
    return asyncio.run(coro)


def test_state_round_trip_independent_ids_and_metadata(sdk_actors):
    app, sidecar = sdk_actors
    one, two = proxy("1"), proxy("2")
    data = {"name": "pillion", "n": 3, "list": [1, 2.5, None], "nested": {"ok": True}}
    assert run(one.GetMyData()) is None
    run(one.SetMyData(data))
    assert run(one.GetMyData()) == data
    assert run(two.GetMyData()) is None  # another id has its own state
    run(two.SetMyData("two"))
    assert (run(one.GetMyData()), run(two.GetMyData())) == (data, "two")
    # saved by the SDK's state manager through the sidecar's actor state transaction API into LMDB
    status, _, body = request(sidecar.http_port, "GET", "/v1.0/actors/DemoActor/1/state/mydata")
    assert status == 200 and json.loads(body) == data
    assert request(sidecar.http_port, "GET", "/v1.0/actors/DemoActor/2/state/mydata")[2] == b'"two"'
    assert json_request(sidecar.http_port, "GET", "/v1.0/metadata")[2]["actors"] == [{"type": "DemoActor", "count": 2}]
    assert [e["id"] for e in map(json.loads, app.record.read_text().splitlines())] == ["1", "2"]  # activations


def test_reminders_fire_and_stop_after_unregister(sdk_actors):
    app, _ = sdk_actors
    one = proxy("1")
    run(one.SetReminder(True))
    wait_for(lambda: len(app.entries("reminder")) >= 2, timeout=6, what="two reminder fires")
    fires = app.entries("reminder")
    assert {(f["name"], f["state"]) for f in fires} == {("demo_reminder", "reminder-state")}  # base64 data round trip
    assert {(f["due_time"], f["period"]) for f in fires} == {(str(timedelta(seconds=1)),) * 2}  # "0h0m1s0ms0μs" echoed
    assert fires[1]["at"] - fires[0]["at"] > 0.5  # period 1 s, not a burst
    run(one.SetReminder(False))
    stopped = len(app.entries("reminder"))
    time.sleep(2.5)
    assert len(app.entries("reminder")) <= stopped + 1  # at most one fire already queued behind the unregister turn
    counts = run(one.GetCounts())
    assert counts["reminder"] == len(app.entries("reminder")) and counts["timer"] == 0  # state saved in reminder turns
    assert app.entries("reminder", "2") == [] and run(proxy("2").GetCounts()) == {"reminder": 0, "timer": 0}


def test_timers_fire_and_stop_after_unregister(sdk_actors):
    app, _ = sdk_actors
    one = proxy("1")
    run(one.SetTimer(True))
    wait_for(lambda: len(app.entries("timer")) >= 2, timeout=6, what="two timer fires")
    assert {json.dumps(f["state"]) for f in app.entries("timer")} == {json.dumps({"from": "1"})}
    run(one.SetTimer(False))
    stopped = len(app.entries("timer"))
    time.sleep(2.5)
    assert len(app.entries("timer")) <= stopped + 1
    counts = run(one.GetCounts())
    assert counts["timer"] == len(app.entries("timer")) and counts["reminder"] == 0
    assert app.entries("timer", "2") == []
