"""The shell commands (publish, invoke, state, components, logs, run -f) against real sidecars."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from pillion._testing import Process, free_port, http_status, pillion_command, wait_for
from pillion.components.registry import DEFAULT_RESOURCES


def cli(tmp: Path, *args: str, env: dict | None = None, timeout: float = 60):
    """``pillion ARGS`` with this test's registry; (exit code, stdout, stderr)."""
    full = {k: v for k, v in os.environ.items() if k != "DAPR_HTTP_PORT"}
    full.update(PILLION_HOME=str(tmp / "home"), PILLION_DATA_DIR=str(tmp / "data"))
    full.update(env or {})
    done = subprocess.run(pillion_command(*args), check=False, capture_output=True, text=True, env=full, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def resources(tmp_path):
    folder = tmp_path / "resources"
    folder.mkdir()
    for name, text in DEFAULT_RESOURCES.items():
        (folder / name).write_text(text)
    return folder


def test_state_set_get_list_delete_and_exit_codes(tmp_path, sidecar, resources):
    side = sidecar("keeper", "--resources-path", str(resources))
    target = ("--app-id", "keeper")
    assert cli(tmp_path, "state", "set", *target, "order-1", '{"qty": 3}')[0] == 0
    assert cli(tmp_path, "state", "set", *target, "greeting", "hello there")[0] == 0

    code, out, _ = cli(tmp_path, "state", "get", *target, "order-1", "-o", "json")
    assert code == 0
    got = json.loads(out)
    assert got["key"] == "order-1" and got["value"] == {"qty": 3} and got["etag"]
    # The plain form prints the value alone; a string stays a string.
    code, out, _ = cli(tmp_path, "state", "get", "--dapr-http-port", str(side.http_port), "greeting")
    assert (code, out) == (0, "hello there\n")

    code, out, _ = cli(tmp_path, "state", "list", *target, "-o", "json")
    assert code == 0
    listed = {e["key"]: e for e in json.loads(out)}
    assert set(listed) == {"order-1", "greeting"}
    assert listed["order-1"]["value"] == {"qty": 3} and listed["greeting"]["value"] == "hello there"
    assert listed["order-1"]["etag"] == got["etag"]
    code, out, _ = cli(tmp_path, "state", "list", *target)
    assert code == 0 and out.splitlines()[0].split() == ["KEY", "VALUE", "ETAG"] and "order-1" in out

    # Only one sidecar runs: it is found without any flag, and through DAPR_HTTP_PORT too.
    assert cli(tmp_path, "state", "delete", "order-1")[0] == 0
    code, _, err = cli(tmp_path, "state", "get", "order-1", env={"DAPR_HTTP_PORT": str(side.http_port)})
    assert code == 1 and "not found" in err
    code, out, _ = cli(tmp_path, "state", "list", *target, "-o", "json")
    assert [e["key"] for e in json.loads(out)] == ["greeting"]

    # A store that does not exist: the sidecar's Dapr error code, exit 1.
    code, _, err = cli(tmp_path, "state", "get", *target, "--store", "nope", "k")
    assert code == 1 and "ERR_STATE_STORE_NOT_FOUND" in err
    # Usage errors: 2 (argparse), and two sidecars with none chosen: 2.
    assert cli(tmp_path, "state", "get", *target)[0] == 2
    assert cli(tmp_path, "state", "frob", *target)[0] == 2
    sidecar("other")
    code, _, err = cli(tmp_path, "state", "get", "greeting")
    assert code == 2 and "keeper" in err and "other" in err


def test_no_sidecar_is_exit_3(tmp_path):
    code, _, err = cli(tmp_path, "state", "get", "k")
    assert code == 3 and "no sidecar" in err
    code, _, err = cli(tmp_path, "publish", "--app-id", "ghost", "--pubsub", "pubsub", "--topic", "t", "--data", "{}")
    assert code == 3 and "ghost" in err
    code, _, err = cli(tmp_path, "invoke", "--dapr-http-port", str(free_port()), "--app-id", "x", "--method", "m")
    assert code == 3 and "reachable" in err


def test_publish_reaches_a_subscriber(tmp_path, processes, sidecar, resources):
    port = free_port()
    record = tmp_path / "received.jsonl"
    config = {"subscriptions": [{"pubsubname": "pubsub", "topic": "orders", "route": "/orders"}], "record": str(record)}
    app = Process([sys.executable, "-m", "pillion._testing.subscriber_app", str(port)], tmp_path / "subscriber.log",
                  env=dict(os.environ, SUBSCRIBER_CONFIG=json.dumps(config)))
    processes.append(app)
    wait_for(lambda: http_status(port, "/healthz") == 200, what="subscriber app")
    side = sidecar("shop", "--resources-path", str(resources), "--app-port", str(port))
    side.wait_status("/v1.0/healthz", 204)
    payload = tmp_path / "order.json"
    payload.write_text('{"id": 7}')

    def subscribed():
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", side.http_port, timeout=5)
        conn.request("GET", "/v1.0/metadata")
        return json.loads(conn.getresponse().read())["subscriptions"]

    wait_for(subscribed, what="the subscription")
    code, _, err = cli(tmp_path, "publish", "--app-id", "shop", "--pubsub", "pubsub", "--topic", "orders",
                       "--data", f"@{payload}")
    assert code == 0, err
    wait_for(lambda: record.exists() and record.read_text().endswith("\n"), what="delivery")
    event = json.loads(json.loads(record.read_text().splitlines()[0])["body"])
    assert event["data"] == {"id": 7} and event["topic"] == "orders" and event["source"] == "shop"

    code, _, err = cli(tmp_path, "publish", "--app-id", "shop", "--pubsub", "nope", "--topic", "orders", "--data", "x")
    assert code == 1 and "ERR_PUBSUB_NOT_FOUND" in err
    code, _, err = cli(tmp_path, "publish", "--app-id", "shop", "--pubsub", "pubsub", "--topic", "o",
                       "--data", f"@{tmp_path / 'missing.json'}")
    assert code == 2


def test_invoke_calls_the_app(tmp_path, echo_app, sidecar):
    app = echo_app()
    sidecar("echo", "--app-port", str(app.port)).wait_status("/v1.0/healthz", 204)
    code, out, err = cli(tmp_path, "invoke", "--app-id", "echo", "--method", "orders/new", "--data", '{"a": 1}')
    assert code == 0, err
    answer = json.loads(out)
    assert (answer["method"], answer["path"]) == ("POST", "/orders/new")
    assert json.loads(base64.b64decode(answer["body"])) == {"a": 1}
    assert ["Content-Type", "application/json"] in answer["headers"]
    code, out, _ = cli(tmp_path, "invoke", "--app-id", "echo", "--method", "ping", "--verb", "get")
    assert code == 0 and json.loads(out)["method"] == "GET"
    code, _, err = cli(tmp_path, "invoke", "--app-id", "echo", "--method", "status/404")
    assert code == 1 and "404" in err


def test_components_lists_and_validates(tmp_path, resources):
    code, out, _ = cli(tmp_path, "components", "--resources-path", str(resources), "-o", "json")
    assert code == 0
    listed = {(c["name"], c["type"]) for c in json.loads(out)}
    assert {("statestore", "state.lmdb"), ("pubsub", "pubsub.mqtt")} <= listed and len(listed) == len(DEFAULT_RESOURCES)
    code, out, _ = cli(tmp_path, "components", "--resources-path", str(resources))
    assert code == 0 and out.split()[:5] == ["NAME", "TYPE", "VERSION", "SCOPES", "FILE"]

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cache.yaml").write_text("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: cache}\n"
                                    "spec: {type: state.redis-cluster-9000, version: v1}\n")
    code, out, err = cli(tmp_path, "components", "--resources-path", str(bad))
    assert code == 2 and str(bad / "cache.yaml") in err and "spec.type" in err and "state.redis-cluster-9000" in err
    code, out, _ = cli(tmp_path, "components", "--resources-path", str(bad), "-o", "json")
    assert code == 2 and json.loads(out)["error"]["field"] == "spec.type"
    assert cli(tmp_path, "components", "--resources-path", str(tmp_path / "absent"))[0] == 2


def test_logs_command_and_fallback(tmp_path):
    code, out, _ = cli(tmp_path, "logs", "--app-id", "sensor", "-n", "20", "--print-command")
    assert (code, out.split()) == (0, ["journalctl", "--no-pager", "-u", "pillion@sensor.service", "-n", "20"])
    (tmp_path / "etc/pillion").mkdir(parents=True)
    (tmp_path / "etc/pillion/pillion.env").write_text("# the app of pillion.service\nAPP_ID=sensor\n")
    code, out, _ = cli(tmp_path, "logs", "--app-id", "sensor", "-f", "--root", str(tmp_path), "--print-command")
    assert out.split() == ["journalctl", "--no-pager", "-u", "pillion.service", "-f"]
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("systemd is PID 1 here: the fallback without journald cannot be seen")
    code, _, err = cli(tmp_path, "logs", "--app-id", "sensor")
    assert code == 1 and "pillion run" in err and "journalctl --no-pager -u pillion@sensor.service" in err


_APP = """\
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (print("bye from", os.environ["APP_ID"], flush=True), sys.exit(0)))
print("hello from", os.environ["APP_ID"], "port", os.environ["DAPR_HTTP_PORT"], os.environ["GREETING"],
      os.getcwd(), flush=True)
while True:
    time.sleep(0.1)
"""


def test_run_file_starts_every_app_and_stops_them_on_sigterm(tmp_path):
    ports = {}
    for name in ("alpha", "beta"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "app.py").write_text(_APP)
        ports[name] = free_port()
    ports["gamma"] = free_port()  # the echo app: a sidecar that waits for its app's port
    (tmp_path / "dapr.yaml").write_text(f"""\
version: 1
common:
  env: {{GREETING: hi}}
  metricsPort: 0
  mqttPort: 0
apps:
  - appID: alpha
    appDirPath: ./alpha
    daprHTTPPort: {ports['alpha']}
    command: ["{sys.executable}", "app.py"]
  - appDirPath: ./beta
    daprHTTPPort: {ports['beta']}
    env: {{GREETING: hey}}
    command: ["{sys.executable}", "app.py"]
  - appID: gamma
    appDirPath: ./alpha
    appPort: {ports['gamma']}
    command: ["{sys.executable}", "-m", "pillion._testing.echo_app"]
""")
    env = dict(os.environ, PILLION_HOME=str(tmp_path / "home"), PILLION_DATA_DIR=str(tmp_path / "data"))
    proc = Process(pillion_command("run", "-f", str(tmp_path)), tmp_path / f"run-{uuid.uuid4().hex[:4]}.log", env=env)
    try:
        wait_for(lambda: "beta  | == APP == hello" in proc.output() and "waiting for gamma on port" in proc.output()
                 and "alpha | == APP == hello" in proc.output(), timeout=30, what="the apps")
        wait_for(lambda: "waiting for gamma on port " + str(ports["gamma"]) + ": done" in proc.output()
                 and "gamma | == APP == echo app listening on" in proc.output(), timeout=30, what="gamma's port")
        out = proc.output()
        assert f"alpha | == APP == hello from alpha port {ports['alpha']} hi {tmp_path / 'alpha'}" in out
        assert f"beta  | == APP == hello from beta port {ports['beta']} hey {tmp_path / 'beta'}" in out
        code, listed, _ = cli(tmp_path, "list", "-o", "json")
        pids = {e["appId"]: e["pid"] for e in json.loads(listed)}
        assert set(pids) == {"alpha", "beta", "gamma"}
        assert http_status(ports["alpha"], "/v1.0/healthz") == 204
        # Not on a terminal: plain progress lines, and the wait for gamma's port is one of them.
        assert [line for line in out.splitlines() if line.startswith("waiting for gamma") and ": done (" in line]
        code, answer, err = cli(tmp_path, "invoke", "--app-id", "gamma", "--method", "hello", "--verb", "PUT")
        assert code == 0 and json.loads(answer)["method"] == "PUT" and json.loads(answer)["app"] == "gamma", err
    finally:
        code = proc.stop(signal.SIGTERM, timeout=30)
    out = proc.output()
    assert code == 0, out
    assert "alpha | == APP == bye from alpha" in out and "beta  | == APP == bye from beta" in out
    assert "gamma | time=" in out  # the sidecars' own log lines carry the prefix too
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert json.loads(cli(tmp_path, "list", "-o", "json")[1]) == []


def test_run_file_exits_with_an_app_failure_and_rejects_a_bad_template(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "app.py").write_text("import time; time.sleep(3); raise SystemExit(7)\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "app.py").write_text(_APP)
    (tmp_path / "run.yaml").write_text(f"""\
version: 1
common: {{metricsPort: 0, mqttPort: 0, env: {{GREETING: x}}}}
apps:
  - {{appDirPath: a, command: ["{sys.executable}", "app.py"]}}
  - {{appDirPath: b, command: ["{sys.executable}", "app.py"]}}
""")
    code, out, err = cli(tmp_path, "run", "-f", str(tmp_path / "run.yaml"))
    assert code == 7, out + err
    assert "a exited with code 7" in err and "b | == APP == bye from b" in out
    (tmp_path / "bad.yaml").write_text("version: 1\napps:\n  - appID: nodir\n")
    code, _, err = cli(tmp_path, "run", "-f", str(tmp_path / "bad.yaml"))
    assert code == 2 and "appDirPath" in err
