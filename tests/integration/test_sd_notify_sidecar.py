"""A real `pillion sidecar` under a fake systemd: the notify socket is ours.

The test binds the AF_UNIX datagram socket that `$NOTIFY_SOCKET` names, with
SO_PASSCRED so each message carries the sender's pid (NotifyAccess=main: only the
sidecar's own pid may speak).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import sys
import time

import pytest

from pillion._testing import Sidecar, free_port, http_status, wait_for


class NotifySocket:
    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        self.messages: list[tuple[float, int, str]] = []  # (monotonic time, sender pid, text)

    def pump(self, timeout: float = 0.05) -> None:
        while select.select([self.sock], [], [], timeout)[0]:
            data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            pid = next((struct.unpack("3i", d)[0] for level, kind, d in ancdata
                        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS), -1)
            self.messages.append((time.monotonic(), pid, data.decode()))
            timeout = 0

    def wait(self, predicate, timeout=15.0, what="message"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump()
            for message in self.messages:
                if predicate(message[2]):
                    return message
        raise AssertionError(f"no {what} in {[m[2] for m in self.messages]}")

    def texts(self):
        return [m[2] for m in self.messages]

    def close(self):
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path):
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def test_status_ready_watchdog_and_stopping(tmp_path, notify_socket, echo_app, processes):
    app_port = free_port()
    http_port = free_port()
    log = tmp_path / f"orders-{http_port}.log"
    log.touch()
    st = os.stat(log)
    sidecar = Sidecar(tmp_path, "orders", "--app-port", str(app_port), http_port=http_port, wait=None, env={
        "NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "1000000",
        "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
    })
    processes.append(sidecar)

    # Up to the app channel: the sidecar says what it waits for, and is not ready.
    notify_socket.wait(lambda t: t == f"STATUS=waiting for the app on port {app_port}", what="waiting status")
    assert http_status(http_port, "/v1.0/healthz") == 500
    time.sleep(0.3)
    notify_socket.pump()
    assert not any("READY=1" in t for t in notify_socket.texts())

    echo_app(port=app_port)
    ready_at, _, ready = notify_socket.wait(lambda t: t.startswith("READY=1"), what="READY=1")
    assert http_status(http_port, "/v1.0/healthz") == 204
    assert ready == f"READY=1\nSTATUS=ready: HTTP API on port {http_port}, 0 component(s)"
    statuses = [t for t in notify_socket.texts() if t.startswith("STATUS=")]
    assert statuses[:4] == ["STATUS=loading configuration", "STATUS=starting the MQTT broker",
                            "STATUS=loading components", f"STATUS=opening the HTTP API on port {http_port}"]

    # WATCHDOG_USEC=1s: a ping every half second while the loop and LMDB answer.
    time.sleep(1.6)
    notify_socket.pump()
    pings = [m for m in notify_socket.messages if m[2] == "WATCHDOG=1"]
    assert len(pings) >= 3, notify_socket.texts()

    sidecar.proc.send_signal(signal.SIGTERM)
    assert sidecar.proc.wait(15) == 0
    notify_socket.pump()
    texts = notify_socket.texts()
    stopping = texts.index("STOPPING=1\nSTATUS=draining (received SIGTERM)")
    assert texts[-1] == "STATUS=stopped"
    assert "WATCHDOG=1" not in texts[stopping:]
    assert {pid for _, pid, _ in notify_socket.messages} == {sidecar.pid}  # only the main pid speaks

    # stderr was the "journal": syslog priorities, no timestamps.
    lines = [line for line in sidecar.output().splitlines() if line]
    assert lines and all(line.startswith(("<6>", "<4>", "<7>", "<3>")) for line in lines), lines[:5]
    assert not any("time=" in line for line in lines)
    assert any(line.startswith("<6>level=info") and "systemd watchdog: 1s" in line for line in lines)


def test_run_keeps_the_notify_variables_from_the_app(tmp_path, notify_socket, processes):
    code = "import os; print('APP-ENV', os.environ.get('NOTIFY_SOCKET'), os.environ.get('WATCHDOG_USEC'))"
    sidecar = Sidecar(tmp_path, "runner", command="run", app=[sys.executable, "-c", code], wait=None,
                      env={"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "2000000"})
    processes.append(sidecar)
    assert sidecar.proc.wait(20) == 0
    assert "== APP == APP-ENV None None" in sidecar.output()
    notify_socket.pump()
    texts = notify_socket.texts()
    assert any(t.startswith("READY=1") for t in texts)
    assert any(t.startswith("STOPPING=1") for t in texts)
    assert {pid for _, pid, _ in notify_socket.messages} == {sidecar.pid}


def test_without_notify_socket_nothing_is_sent_and_logs_keep_the_time(tmp_path, notify_socket, processes):
    sidecar = Sidecar(tmp_path, "plain", env={"WATCHDOG_USEC": "1000000"})
    processes.append(sidecar)
    time.sleep(0.6)
    sidecar.stop()
    notify_socket.pump()
    assert notify_socket.messages == []
    assert sidecar.output().startswith('time="')


def test_hangup_is_logged_not_fatal_under_systemd(tmp_path, notify_socket, processes):
    sidecar = Sidecar(tmp_path, "hup", env={"NOTIFY_SOCKET": notify_socket.path})
    processes.append(sidecar)
    notify_socket.wait(lambda t: t.startswith("READY=1"), what="READY=1")
    sidecar.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "SIGHUP ignored" in sidecar.output(), what="SIGHUP log line")
    assert sidecar.alive() and http_status(sidecar.http_port, "/v1.0/healthz") == 204
    assert not any(t.startswith("RELOADING=1") for t in notify_socket.texts())
    assert sidecar.stop() == 0
