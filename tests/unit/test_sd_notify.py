"""sd_notify without libsystemd, the watchdog's decision and thread, and journal log lines."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import socket
import threading
import time

import pytest

from pillion.logformat import JournalFormatter, JsonFormatter, TextFormatter, formatter_for, is_journal
from pillion.systemd.notify import Notifier, SystemdLifecycle, from_environ, socket_address, watchdog_interval
from pillion.systemd.watchdog import Pinger, WatchdogPolicy, lmdb_probe


@pytest.fixture
def listener(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(2.0)
    yield path, sock
    sock.close()


def test_datagram_reaches_a_path_socket(listener):
    path, sock = listener
    assert Notifier(socket_address(path)).send("READY=1", "STATUS=up")
    assert sock.recv(4096) == b"READY=1\nSTATUS=up"


def test_at_means_the_abstract_namespace():
    name = f"pillion-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2.0)
    try:
        assert socket_address("@" + name) == b"\0" + name.encode()
        Notifier(socket_address("@" + name)).send("WATCHDOG=1")
        assert sock.recv(100) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_send_to_a_vanished_socket_returns_false_without_raising(tmp_path, caplog):
    notifier = Notifier(str(tmp_path / "gone.sock"))
    with caplog.at_level(logging.WARNING, "pillion.systemd.notify"):
        assert notifier.send("READY=1") is False
        assert notifier.send("READY=1") is False
    assert len(caplog.records) == 1  # warned once, not per message


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
])
def test_watchdog_interval_only_for_our_pid(env, expected):
    assert watchdog_interval(env, 4242) == expected


def test_from_environ_removes_the_variables_so_children_cannot_notify_as_us(listener):
    path, _ = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "7", "PATH": "/bin"}
    lifecycle = from_environ(env, pid=7)
    assert env == {"PATH": "/bin"}
    assert lifecycle is not None and lifecycle.watchdog_seconds == 2.0
    assert from_environ({"WATCHDOG_USEC": "1"}, pid=7) is None  # no socket: nothing to do


def test_ready_and_stopping_are_sent_once(listener):
    path, sock = listener
    lifecycle = SystemdLifecycle(Notifier(path))
    lifecycle.status("loading components")
    lifecycle.ready("ready: a")
    lifecycle.ready("ready: b")
    lifecycle.stopping("received SIGTERM")
    lifecycle.stopping("again")
    lifecycle.ready("too late")
    lifecycle.stopped()
    sock.settimeout(0.2)
    got = []
    while True:
        try:
            got.append(sock.recv(4096).decode())
        except socket.timeout:
            break
    assert got == ["STATUS=loading components", "READY=1\nSTATUS=ready: a",
                   "STOPPING=1\nSTATUS=draining (received SIGTERM)", "STATUS=stopped"]


# -- the watchdog's decision, with a fake clock --------------------------------------------


def test_policy_pings_only_with_a_fresh_heartbeat_and_a_fresh_probe():
    policy = WatchdogPolicy(10.0)
    assert (policy.period, policy.beat_every) == (5.0, 2.5)
    assert policy.why_not(0.0) == "the event loop made no progress"
    policy.beat(0.0)
    assert policy.why_not(0.0) == "LMDB did not answer"
    policy.probed(0.0, ok=False)
    assert not policy.should_ping(0.0)
    policy.probed(1.0, ok=True)
    assert policy.should_ping(1.0)
    # The loop keeps beating but LMDB stops answering (a probe that hangs never reports).
    for t in (2.5, 5.0, 7.5):
        policy.beat(t)
    assert policy.should_ping(6.0)
    assert policy.why_not(6.5) == "LMDB did not answer"
    # LMDB answers again, but now the loop is stuck: the last beat ages past the period.
    policy.probed(8.0, ok=True)
    assert policy.should_ping(8.0)
    assert policy.why_not(12.6) == "the event loop made no progress"
    policy.beat(13.0)
    policy.probed(13.0, ok=True)
    assert policy.should_ping(13.0)


def test_policy_rejects_a_zero_interval():
    with pytest.raises(ValueError):
        WatchdogPolicy(0)


class _Recorder:
    def __init__(self):
        self.sent = []

    def send(self, *fields):
        self.sent.append(fields)
        return True


def _run_pinger(probe, seconds, interval=0.2, block_loop_after=None):
    """Pinger on a real loop for ``seconds``; optionally block the loop (time.sleep) midway."""
    recorder = _Recorder()

    async def main():
        pinger = Pinger(recorder, interval, probe)
        pinger.start(asyncio.get_running_loop())
        if block_loop_after is None:
            await asyncio.sleep(seconds)
        else:
            await asyncio.sleep(block_loop_after)
            mark = len(recorder.sent)
            time.sleep(seconds - block_loop_after)  # the loop is hung: no heartbeat runs
            pinger.stop()
            return mark, pinger
        pinger.stop()
        return None, pinger

    mark, pinger = asyncio.run(main())
    return recorder.sent, mark, pinger


def test_pinger_pings_at_half_the_interval_while_healthy():
    sent, _, pinger = _run_pinger(lambda: True, 1.0)
    assert 5 <= len(sent) <= 11, sent  # every 0.1 s (fewer when the machine is busy)
    assert set(sent) == {("WATCHDOG=1",)}
    assert not pinger._thread.is_alive()


def test_pinger_stops_pinging_while_the_loop_is_blocked():
    sent, mark, _ = _run_pinger(lambda: True, 1.2, block_loop_after=0.35)
    assert mark >= 1
    # After blocking, at most the pings whose heartbeat was still fresh (within one period).
    assert len(sent) - mark <= 2, (mark, len(sent))


def test_pinger_stops_pinging_while_lmdb_hangs():
    release = threading.Event()
    hanging = threading.Event()

    def probe():
        if hanging.is_set():
            release.wait(5)
        return True

    recorder = _Recorder()

    async def main():
        pinger = Pinger(recorder, 0.2, probe)
        pinger.start(asyncio.get_running_loop())
        await asyncio.sleep(0.35)
        hanging.set()
        await asyncio.sleep(0.15)
        before = len(recorder.sent)
        await asyncio.sleep(0.6)  # the loop is fine, the probe is stuck
        during = len(recorder.sent) - before
        release.set()
        hanging.clear()
        await asyncio.sleep(0.35)
        pinger.stop()
        return before, during

    before, during = asyncio.run(main())
    assert before >= 1
    assert during == 0
    assert len(recorder.sent) > before  # pings resume once LMDB answers


def test_pinger_treats_a_failing_probe_as_a_missed_ping():
    def probe():
        raise OSError("mdb_txn_begin: Input/output error")

    sent, _, _ = _run_pinger(probe, 0.5)
    assert sent == []


def test_lmdb_probe_reads_the_host_registry(tmp_path):
    from pillion.runtime.registry import HostRegistry

    class FakeSidecar:
        registry = HostRegistry(tmp_path)
        state_stores = {}

    assert lmdb_probe(FakeSidecar) is True
    FakeSidecar.registry.close()
    with pytest.raises(Exception):
        lmdb_probe(FakeSidecar)  # a closed environment is a failed probe


# -- journald-friendly log lines ------------------------------------------------------------


def _record(level, msg="hello \"x\"", name="pillion.test"):
    return logging.LogRecord(name, level, __file__, 1, msg, (), None)


@pytest.mark.parametrize(("level", "prefix"), [
    (logging.DEBUG, "<7>"), (logging.INFO, "<6>"), (logging.WARNING, "<4>"), (logging.ERROR, "<3>"),
    (logging.CRITICAL, "<2>"), (logging.INFO + 5, "<6>"),
])
def test_journal_lines_carry_the_syslog_priority_and_no_time(level, prefix):
    line = JournalFormatter("orders").format(_record(level))
    assert line.startswith(prefix)
    assert "time=" not in line
    assert line.endswith(' msg="hello \\"x\\"" app_id=orders scope=pillion.test')


def test_text_and_json_lines_keep_the_time():
    assert TextFormatter("a").format(_record(logging.INFO)).startswith('time="')
    assert '"time": ' in JsonFormatter("a").format(_record(logging.INFO))


def test_journal_stream_must_match_the_stream(tmp_path):
    with open(tmp_path / "log", "w") as stream:
        st = os.fstat(stream.fileno())
        assert is_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not is_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not is_journal(stream, {"JOURNAL_STREAM": "garbage"})
        assert not is_journal(stream, {})
        assert not is_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})  # no file descriptor


def test_formatter_for_picks_the_journal_format_only_on_the_journal_stream(tmp_path, monkeypatch):
    with open(tmp_path / "log", "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert type(formatter_for("a", False, stream)) is JournalFormatter
        assert type(formatter_for("a", True, stream)) is JsonFormatter  # --log-as-json wins
        monkeypatch.delenv("JOURNAL_STREAM")
        assert type(formatter_for("a", False, stream)) is TextFormatter


def test_notify_and_watchdog_are_not_imported_without_systemd():
    """No sd_notify code on a sidecar that systemd did not start (idle cost stays zero)."""
    import subprocess
    import sys
    from pathlib import Path

    import pillion

    code = ("import sys, pillion.cli, pillion.runtime.sidecar\n"
            "pillion.cli.build_parser()\n"
            "print(sorted(m for m in sys.modules if m in ('pillion.systemd.notify', 'pillion.systemd.watchdog')))")
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(pillion.__file__).parents[1]), env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
