"""Helpers shipped for tests, benches and smoke checks: free ports, real processes.

Nothing here is imported by the runtime.
"""

from __future__ import annotations

import http.client
import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def import_twin(name: str, kind: str):
    """``pillion._pure.<name>`` or ``pillion._ext.<name>``, bypassing ``pillion._impl``.

    For tests run against both twins: a missing compiled module skips the test, except
    under CI (env ``CI`` set), where it fails, so CI never passes with a ``.so`` missing.
    """
    if kind == "pure":
        return importlib.import_module(f"pillion._pure.{name}")
    try:
        return importlib.import_module(f"pillion._ext.{name}")
    except ImportError as exc:
        import pytest

        message = f"compiled extension pillion._ext.{name} is not built ({exc}); run `make compile`"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, timeout: float = 20.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def http_status(port: int, path: str, method: str = "GET", timeout: float = 2.0) -> int | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request(method, path)
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return None


class Process:
    """A child process with its output in a log file, stopped by SIGTERM then SIGKILL."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: str | None = None):
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")  # a restarted process keeps the earlier log
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def pillion_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pillion", *args]


class Sidecar(Process):
    """A real ``pillion sidecar`` (or ``pillion run``) process on free ports."""

    def __init__(self, tmp: Path, app_id: str, *extra: str, command: str = "sidecar", app: list[str] | None = None,
                 env: dict[str, str] | None = None, http_port: int | None = None, wait: str | None = "/v1.0/healthz/outbound"):
        self.http_port = http_port or free_port()
        self.home = tmp / f"home-{app_id}"
        full_env = dict(os.environ)
        full_env.setdefault("PILLION_HOME", str(tmp / "home"))
        full_env.setdefault("PILLION_DATA_DIR", str(tmp / "data"))
        full_env.update(env or {})
        args = pillion_command(command, "--app-id", app_id, "--dapr-http-port", str(self.http_port), *extra)
        if "--mqtt-port" not in extra:  # parallel sidecars must not race for 1883
            args += ["--mqtt-port", "0"]
        if "--dapr-grpc-port" not in extra:  # nor for 50001 (when the grpc extra is installed)
            args += ["--dapr-grpc-port", "0"]
        if not any(a.startswith(("--metrics-port", "--enable-metrics")) for a in extra):
            args += ["--metrics-port", "0"]  # nor for 9090: a free port each
        if app:
            args += ["--", *app]
        super().__init__(args, tmp / f"{app_id}-{self.http_port}.log", env=full_env)
        if wait:
            self.wait_status(wait, 204)

    def wait_status(self, path: str, status: int, timeout: float = 15.0) -> None:
        def ready():
            if not self.alive():
                raise RuntimeError(f"sidecar exited with {self.proc.returncode}:\n{self.output()}")
            return http_status(self.http_port, path) == status

        wait_for(ready, timeout, what=f"{path} -> {status}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"
