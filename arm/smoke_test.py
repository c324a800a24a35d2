"""Smoke test of an installed Pillion wheel, meant to run on the target machine type.

arm/test-wheel-arm64.sh runs it with the rootfs's Python 3.11 under
``qemu-aarch64-static``, with the aarch64 wheel and its dependencies unzipped into one
directory on PYTHONPATH. It proves three things:

1. the compiled twins load (``pillion._ext.<name>`` shared objects from the installed
   wheel, for this machine), not their pure-Python twins;
2. a real ``pillion sidecar`` process starts on this machine and serves the state API and
   pub/sub through its embedded MQTT broker;
3. it stops cleanly on SIGTERM.

Only the stdlib and the wheel's own dependencies (paho-mqtt) are used, so it runs in a
bare rootfs. Each check prints PASS or FAIL; the exit code is 1 when any failed.
Nothing here is benchmark material: Python under qemu is 6-14x slower.

Usage: smoke_test.py --expect-ext "name ..." [--machine aarch64] [--site DIR]
The environment variable SMOKE_PYTHON (a shell-quoted command, default: this
interpreter) is how the sidecar is started: without binfmt, a process started under
``qemu -L`` cannot exec an aarch64 binary itself, so the caller passes the qemu command.
"""

from __future__ import annotations

import argparse
import http.client
import importlib
import importlib.util
import json
import os
import platform
import queue
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

# The facades that pick each twin through pillion._impl (as the sidecar imports them).
FACADES = (
    "pillion.server.router", "pillion.server.protocol", "pillion.server.http",
    "pillion.broker.codec", "pillion.broker.topics", "pillion.cloudevents",
    "pillion.runtime.actorlock",
)
# The gRPC front's twins import hpack, which comes with the grpc extra (pip install 'pillion[grpc]').
NEEDS_GRPC_EXTRA = frozenset(("h2", "grpcproto"))
# e_machine of the ELF header, for the machines we build wheels for.
ELF_MACHINES = {"aarch64": 183, "x86_64": 62}

HEALTH_TIMEOUT = float(os.environ.get("SMOKE_HEALTH_TIMEOUT", "240"))  # qemu starts slowly
STOP_TIMEOUT = 60.0

failures: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> bool:
    print(f"{'PASS' if ok else 'FAIL'}: {name}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        failures.append(name)
    return ok


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def elf_machine(path: str) -> int:
    with open(path, "rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF":
        return -1
    order = "little" if head[5] == 1 else "big"
    return int.from_bytes(head[18:20], order)


def request(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 30.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# -- 1. compiled modules ------------------------------------------------------------------


def check_compiled(names: list[str], machine: str, site: str | None) -> None:
    check("PILLION_NO_EXTENSIONS is unset", "PILLION_NO_EXTENSIONS" not in os.environ)
    check(f"platform.machine() is {machine}", platform.machine() == machine, platform.machine())
    grpc_extra = importlib.util.find_spec("hpack") is not None
    for name in names:
        if name in NEEDS_GRPC_EXTRA and not grpc_extra:  # the file is checked, not imported
            spec = importlib.util.find_spec(f"pillion._ext.{name}")
            path = spec.origin if spec is not None else ""
        else:
            try:
                module = importlib.import_module(f"pillion._ext.{name}")
            except ImportError as exc:
                check(f"pillion._ext.{name} imports", False, str(exc))
                continue
            path = module.__file__ or ""
        where = "" if site is None or path.startswith(site) else f" (not from {site})"
        check(f"pillion._ext.{name} is a compiled {machine} ELF module" + (" from the wheel" if site else ""),
              path.endswith(".so") and elf_machine(path) == ELF_MACHINES[machine] and not where,
              os.path.basename(path) + where)

    from pillion import _impl

    for facade in FACADES:
        try:
            importlib.import_module(facade)
        except ImportError as exc:
            check(f"{facade} imports", False, str(exc))
    loaded = _impl.loaded()
    for name in names:
        if name in NEEDS_GRPC_EXTRA and not grpc_extra:  # no facade loads them without the extra
            continue
        check(f"_impl chose the compiled {name}", loaded.get(name) == "compiled",
              loaded.get(name, "not loaded by any facade"))
    from pillion.server.router import Router

    check("Router is the compiled one", Router.__module__ == "pillion._ext.router", Router.__module__)


# -- 2. a real sidecar ----------------------------------------------------------------------


def wait_healthy(proc: subprocess.Popen, port: int, timeout: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            return None
        try:
            status, _ = request(port, "GET", "/v1.0/healthz", timeout=5)
        except OSError:
            status = 0
        if status == 204:
            return time.monotonic() - start
        time.sleep(0.5)
    return None


def check_state(port: int) -> None:
    value = {"machine": platform.machine(), "token": uuid.uuid4().hex}
    body = json.dumps([{"key": "arm-smoke", "value": value}]).encode()
    status, text = request(port, "POST", "/v1.0/state/statestore", body)
    check("save state (POST /v1.0/state/statestore)", status in (200, 204), f"HTTP {status} {text[:200]!r}")
    status, text = request(port, "GET", "/v1.0/state/statestore/arm-smoke")
    got = json.loads(text) if status == 200 and text else None
    check("read state back (GET /v1.0/state/statestore/arm-smoke)", got == value, f"HTTP {status} {text[:200]!r}")


def check_pubsub(port: int, mqtt_port: int) -> None:
    import paho.mqtt.client as mqtt

    messages: queue.Queue = queue.Queue()
    connected: queue.Queue = queue.Queue()
    subscribed: queue.Queue = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"arm-smoke-{os.getpid()}")
    client.on_connect = lambda c, u, flags, rc, props=None: connected.put(rc)
    client.on_subscribe = lambda c, u, mid, rcs, props=None: subscribed.put(rcs)
    client.on_message = lambda c, u, msg: messages.put((msg.topic, msg.payload))
    run = uuid.uuid4().hex[:8]
    topic_http, topic_mqtt = f"arm-smoke/{run}/http", f"arm-smoke/{run}/mqtt"
    try:
        client.connect("127.0.0.1", mqtt_port, keepalive=60)
        client.loop_start()
        rc = connected.get(timeout=60)
        if not check("MQTT client connects to the embedded broker", not rc.is_failure, str(rc)):
            return
        client.subscribe(f"arm-smoke/{run}/#", qos=1)
        rcs = subscribed.get(timeout=60)
        if not check("MQTT subscribe", all(not r.is_failure for r in rcs), str(rcs)):
            return

        data = {"hello": "from the HTTP API", "run": run}
        status, text = request(port, "POST", f"/v1.0/publish/pubsub/{topic_http}", json.dumps(data).encode())
        check(f"publish (POST /v1.0/publish/pubsub/{topic_http})", status == 204, f"HTTP {status} {text[:200]!r}")
        topic, payload = _next(messages, 60)
        event = _json(payload)
        delivered = event.get("data") if isinstance(event, dict) and "specversion" in event else event
        check("the MQTT subscriber receives the HTTP publish", topic == topic_http and delivered == data,
              f"{topic!r} {payload[:200]!r}")

        client.publish(topic_mqtt, b"from an MQTT client", qos=1)
        topic, payload = _next(messages, 60)
        check("an MQTT publish reaches the MQTT subscriber", (topic, payload) == (topic_mqtt, b"from an MQTT client"),
              f"{topic!r} {payload[:200]!r}")
    except queue.Empty:
        check("MQTT round trip within 60 s", False, "timed out")
    except OSError as exc:
        check("MQTT round trip", False, repr(exc))
    finally:
        client.loop_stop()
        client.disconnect()


def _next(q: queue.Queue, timeout: float):
    return q.get(timeout=timeout)


def _json(payload: bytes):
    try:
        return json.loads(payload)
    except ValueError:
        return payload


def mapped_ext(pid: int) -> set[str]:
    """Names of pillion._ext shared objects mapped by a (host) process.

    Under qemu-user the guest's file mappings are the emulator's own, so this works for
    the qemu process that runs the sidecar as well as for a native one."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return set()
    return {Path(line.split()[-1]).name.split(".")[0] for line in maps.splitlines()
            if "/pillion/_ext/" in line and line.rstrip().endswith(".so")}


def run_sidecar(names: list[str]) -> None:
    python = shlex.split(os.environ.get("SMOKE_PYTHON", "")) or [sys.executable]
    with tempfile.TemporaryDirectory(prefix="pillion-arm-smoke-") as tmp:
        env = {k: v for k, v in os.environ.items() if k != "PILLION_NO_EXTENSIONS"}
        env.update(PILLION_HOME=f"{tmp}/home", PILLION_DATA_DIR=f"{tmp}/data", HOME=tmp)
        resources = f"{tmp}/resources"
        init = subprocess.run(python + ["-m", "pillion", "init", "--resources-path", resources],
                              check=False, env=env, cwd=tmp, capture_output=True, text=True, timeout=300)
        written = sorted(p.name for p in Path(resources).glob("*.yaml"))
        check("pillion init writes the default resources", init.returncode == 0 and
              {"statestore.yaml", "pubsub.yaml"} <= set(written), f"exit {init.returncode}, {written} {init.stderr[-300:]}")

        port, mqtt_port = free_port(), free_port()
        log_path = Path(tmp, "sidecar.log")
        cmd = python + ["-m", "pillion", "sidecar", "--app-id", "armsmoke", "--dapr-http-port", str(port),
                        "--data-dir", f"{tmp}/data", "--resources-path", resources, "--mqtt-port", str(mqtt_port)]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
        try:
            took = wait_healthy(proc, port, HEALTH_TIMEOUT)
            healthy = check(f"sidecar healthz answers 204 (timeout {HEALTH_TIMEOUT:.0f} s)", took is not None,
                            f"after {took:.1f} s" if took is not None else f"exit code {proc.poll()}")
            if healthy:
                mapped = mapped_ext(proc.pid)
                expected = set(names) if importlib.util.find_spec("hpack") else set(names) - NEEDS_GRPC_EXTRA
                check("the sidecar process mapped the compiled modules", expected <= mapped,
                      f"mapped {sorted(mapped)}")
                check_state(port)
                check_pubsub(port, mqtt_port)
            proc.send_signal(signal.SIGTERM)
            start = time.monotonic()
            try:
                code = proc.wait(timeout=STOP_TIMEOUT)
                check("SIGTERM stops the sidecar with exit code 0", code == 0,
                      f"exit {code} after {time.monotonic() - start:.1f} s")
            except subprocess.TimeoutExpired:
                check("SIGTERM stops the sidecar", False, f"still running after {STOP_TIMEOUT:.0f} s")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if failures:
                print("---- sidecar log (last 40 lines) ----")
                print("\n".join(log_path.read_text(errors="replace").splitlines()[-40:]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expect-ext", required=True, help="space-separated ext module names (ext/*.pyx stems)")
    parser.add_argument("--machine", default="aarch64", choices=sorted(ELF_MACHINES))
    parser.add_argument("--site", default=None, help="the compiled modules must come from under this directory")
    args = parser.parse_args()
    names = args.expect_ext.split()
    print(f"smoke test on {platform.machine()}, Python {platform.python_version()}, {sys.executable}", flush=True)
    start = time.monotonic()
    check_compiled(names, args.machine, args.site)
    run_sidecar(names)
    print(f"{'FAILED' if failures else 'ALL PASSED'}: {len(failures)} failure(s) in {time.monotonic() - start:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
