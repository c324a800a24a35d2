"""The `pillion` command line, run as real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from _http import json_request, request
from pillion import __version__
from pillion._testing import Process, free_port, http_status, pillion_command, wait_for


def _env(tmp_path, **extra):
    env = dict(os.environ)
    env.update(PILLION_HOME=str(tmp_path / "home"), PILLION_DATA_DIR=str(tmp_path / "data"), **extra)
    return env


def _pillion(tmp_path, *args, timeout=30, **kw):
    return subprocess.run(pillion_command(*args), capture_output=True, text=True, timeout=timeout,
                          env=_env(tmp_path), **kw)


def test_version_both_entry_points(tmp_path):
    assert _pillion(tmp_path, "--version").stdout.strip() == f"pillion {__version__}"
    out = subprocess.run(["pillion", "--version"], capture_output=True, text=True, env=_env(tmp_path))
    assert out.stdout.strip() == f"pillion {__version__}"


APP = textwrap.dedent("""
    import os, signal, sys, time, json
    print(json.dumps({k: os.environ.get(k) for k in ("APP_ID", "APP_PORT", "DAPR_HTTP_PORT", "DAPR_GRPC_PORT")}), flush=True)
    print("partial line without newline", end="", flush=True)
    mode = sys.argv[1]
    if mode == "exit":
        sys.exit(int(sys.argv[2]))
    def term(signum, frame):
        print("\\ngot", signal.Signals(signum).name, flush=True)
        sys.exit(7)
    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGINT, term)
    while True:
        time.sleep(0.05)
""")


def test_run_gives_the_app_its_environment_and_exit_code(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(APP)
    port = free_port()
    out = _pillion(tmp_path, "run", "--app-id", "runner", "--dapr-http-port", str(port), "--dapr-grpc-port", "0",
                   "--", sys.executable, str(app), "exit", "3")
    assert out.returncode == 3, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("== APP == ")
    env = json.loads(lines[0][len("== APP == "):])
    assert env == {"APP_ID": "runner", "APP_PORT": None, "DAPR_HTTP_PORT": str(port), "DAPR_GRPC_PORT": None}
    assert lines[1] == "== APP == partial line without newline"
    assert "the app exited with code 3" in out.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_forwards_signals_and_returns_the_app_code(tmp_path, sig):
    app = tmp_path / "app.py"
    app.write_text(APP)
    port = free_port()
    proc = Process(pillion_command("run", "--app-id", "sig", "--dapr-http-port", str(port), "--",
                                   sys.executable, str(app), "wait"),
                   tmp_path / "run.log", env=_env(tmp_path))
    wait_for(lambda: http_status(port, "/v1.0/healthz") == 204 and "APP_ID" in proc.output(), what="app start")
    proc.proc.send_signal(sig)
    assert proc.proc.wait(10) == 7
    assert f"== APP == got {sig.name}" in proc.output()
    proc.stop()


def test_run_waits_for_the_app_port_and_invokes_it(tmp_path):
    app_port, http_port = free_port(), free_port()
    proc = Process(pillion_command("run", "--app-id", "echo", "--app-port", str(app_port), "--dapr-http-port",
                                   str(http_port), "--", sys.executable, "-m", "pillion._testing.echo_app", str(app_port)),
                   tmp_path / "run.log", env=_env(tmp_path))
    try:
        wait_for(lambda: http_status(http_port, "/v1.0/healthz") == 204, what="healthz")
        status, _, echo = json_request(http_port, "GET", "/v1.0/invoke/echo/method/hello")
        assert (status, echo["path"], echo["app"]) == (200, "/hello", "echo")
        metadata = json_request(http_port, "GET", "/v1.0/metadata")[2]
        assert metadata["extended"]["appCommand"].endswith(f"pillion._testing.echo_app {app_port}")
    finally:
        assert proc.stop() == 128 + signal.SIGTERM or proc.proc.returncode in (0, 143)


def test_sidecar_accepts_a_daprd_command_line(tmp_path):
    resources = tmp_path / "components"
    resources.mkdir()
    port = free_port()
    proc = Process(pillion_command(
        "sidecar", "-app-id", "legacy", "-dapr-http-port", str(port), "--dapr-grpc-port", "50009",
        "--components-path", str(resources), "--placement-host-address", "localhost:50005",
        "--scheduler-host-address", "localhost:50006", "--max-body-size", "4Mi", "--read-buffer-size", "4Ki",
        "--enable-app-health-check=false", "--log-level", "debug", "--app-protocol", "http",
        "--enable-metrics=true", "--metrics-port", "9099", "--mode", "standalone",
    ), tmp_path / "legacy.log", env=_env(tmp_path))
    try:
        wait_for(lambda: http_status(port, "/v1.0/healthz") == 204, what="healthz")
        assert json_request(port, "GET", "/v1.0/metadata")[2]["id"] == "legacy"
    finally:
        assert proc.stop() == 0


def test_init_list_stop(tmp_path):
    out = _pillion(tmp_path, "init")
    assert out.returncode == 0
    assert (tmp_path / "home" / "config.yaml").is_file()
    assert (tmp_path / "home" / "components").is_dir()
    assert json.loads(_pillion(tmp_path, "list", "-o", "json").stdout) == []

    ports = [free_port(), free_port()]
    procs = [Process(pillion_command("sidecar", "--app-id", f"svc{i}", "--dapr-http-port", str(p), "--dapr-grpc-port", "0"),
                     tmp_path / f"svc{i}.log", env=_env(tmp_path)) for i, p in enumerate(ports)]
    for p in ports:
        wait_for(lambda: http_status(p, "/v1.0/healthz") == 204, what="healthz")
    listed = json.loads(_pillion(tmp_path, "list", "-o", "json").stdout)
    assert sorted((e["appId"], e["httpPort"], e["pid"]) for e in listed) == [
        ("svc0", ports[0], procs[0].pid), ("svc1", ports[1], procs[1].pid)]
    table = _pillion(tmp_path, "list").stdout
    assert "APP ID" in table and "svc0" in table and "svc1" in table

    procs[1].proc.kill()
    procs[1].proc.wait()
    listed = json.loads(_pillion(tmp_path, "list", "-o", "json").stdout)
    assert [e["appId"] for e in listed] == ["svc0"]

    out = _pillion(tmp_path, "stop", "--app-id", "svc0")
    assert out.returncode == 0, out.stderr
    assert procs[0].proc.wait(5) == 0
    assert _pillion(tmp_path, "stop", "--app-id", "svc0").returncode == 1
    assert "No Pillion sidecars" in _pillion(tmp_path, "list").stdout


def _start_with(tmp_path, files: dict[str, str], *extra):
    resources = tmp_path / "res"
    resources.mkdir(exist_ok=True)
    for name, text in files.items():
        (resources / name).write_text(text)
    return _pillion(tmp_path, "sidecar", "--app-id", "cfg", "--dapr-http-port", str(free_port()),
                    "--resources-path", str(resources), *extra, timeout=15)


def test_broken_yaml_stops_start_up_with_exit_code_2(tmp_path):
    out = _start_with(tmp_path, {"a.yaml": "apiVersion: dapr.io/v1alpha1\nkind: Component\n---\nmetadata: [unclosed\n"})
    assert out.returncode == 2
    assert "a.yaml" in out.stderr and "document 1" in out.stderr and "(yaml)" in out.stderr
    assert len([line for line in out.stderr.splitlines() if line.strip()]) == 1


def test_unknown_component_type_is_a_start_up_error(tmp_path):
    out = _start_with(tmp_path, {"store.yaml": textwrap.dedent("""\
        apiVersion: dapr.io/v1alpha1
        kind: Component
        metadata:
          name: statestore
        spec:
          type: state.redis
          version: v1
          metadata:
          - name: redisHost
            value: localhost:6379
        """)})
    assert out.returncode == 2
    assert "store.yaml (document 0)" in out.stderr and "spec.type" in out.stderr and "'state.redis'" in out.stderr


def test_missing_field_names_file_document_and_field(tmp_path):
    out = _start_with(tmp_path, {"x.yaml": "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: x\nspec: {}\n"})
    assert out.returncode == 2
    assert "x.yaml (document 0)" in out.stderr and "spec.type" in out.stderr


def test_bad_configuration_file(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n"
                      "  accessControl:\n    defaultAction: maybe\n")
    out = _start_with(tmp_path, {}, "--config", str(config))
    assert out.returncode == 2
    assert "config.yaml" in out.stderr and "accessControl" in out.stderr


def test_missing_resources_folder(tmp_path):
    out = _pillion(tmp_path, "sidecar", "--app-id", "x", "--resources-path", str(tmp_path / "nope"))
    assert out.returncode == 2 and "--resources-path" in out.stderr


def test_port_in_use_fails_cleanly(tmp_path, sidecar):
    first = sidecar("first")
    out = _pillion(tmp_path, "sidecar", "--app-id", "second", "--dapr-http-port", str(first.http_port))
    assert out.returncode == 1
    assert "address already in use" in out.stderr.lower()
    assert request(first.http_port, "GET", "/v1.0/healthz")[0] == 204



def test_run_with_a_missing_command_exits_127(tmp_path):
    out = _pillion(tmp_path, "run", "--app-id", "nocmd", "--dapr-http-port", str(free_port()), "--",
                   str(tmp_path / "no-such-program"))
    assert out.returncode == 127
    assert "cannot start the app" in out.stderr


def test_stop_ends_a_run_and_its_app(tmp_path):
    app_port, http_port = free_port(), free_port()
    proc = Process(pillion_command("run", "--app-id", "stoppable", "--app-port", str(app_port), "--dapr-http-port",
                                   str(http_port), "--", sys.executable, "-m", "pillion._testing.echo_app", str(app_port)),
                   tmp_path / "run.log", env=_env(tmp_path))
    wait_for(lambda: http_status(http_port, "/v1.0/healthz") == 204, what="healthz")
    app_pid = int(json_request(http_port, "GET", "/v1.0/metadata")[2]["extended"]["appPID"])
    assert _pillion(tmp_path, "stop", "--app-id", "stoppable").returncode == 0
    assert proc.proc.wait(10) == 128 + signal.SIGTERM
    wait_for(lambda: not os.path.exists(f"/proc/{app_pid}") or open(f"/proc/{app_pid}/stat").read().split()[2] == "Z",
             5, what="app exit")
    proc.stop()


def test_init_with_a_resources_path_creates_the_home_it_writes_to(tmp_path):
    resources = tmp_path / "elsewhere"
    out = _pillion(tmp_path, "init", "--resources-path", str(resources))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "home" / "config.yaml").is_file() and (resources / "statestore.yaml").is_file()


def test_run_deactivates_actors_before_it_stops_the_app(tmp_path):
    """On SIGTERM the sidecar drains first: the app, still running, gets its actors' DELETEs."""
    app_port, http_port = free_port(), free_port()
    record = tmp_path / "calls.jsonl"
    env = dict(_env(tmp_path), ACTOR_RECORD=str(record), ACTOR_CONFIG=json.dumps({"entities": ["Counter"]}))
    assert _pillion(tmp_path, "init").returncode == 0  # a state store for actors
    proc = Process(pillion_command("run", "--app-id", "actors", "--app-port", str(app_port), "--dapr-http-port",
                                   str(http_port), "--", sys.executable, "-m", "pillion._testing.actor_app",
                                   str(app_port)), tmp_path / "run.log", env=dict(env, DAPR_HTTP_PORT=str(http_port)))
    wait_for(lambda: http_status(http_port, "/v1.0/healthz") == 204, what="healthz")
    assert json_request(http_port, "PUT", "/v1.0/actors/Counter/c1/method/sleep", "0")[0] == 200
    proc.proc.send_signal(signal.SIGTERM)
    proc.proc.wait(15)
    kinds = [json.loads(line)["kind"] for line in record.read_text().splitlines()]
    assert kinds == ["call", "deactivate"], proc.output()
    assert "deactivating" not in proc.output()  # no failed deactivation warning
