#!/usr/bin/env python3
"""MQTT broker bench: ``pillion broker`` against Mosquitto, loaded by the same C clients.

One run starts each broker in its own process (Pillion: ``python -m pillion broker``; Mosquitto:
``mosquitto -c <generated config>``, listener on 127.0.0.1, allow_anonymous, no persistence,
max_queued_messages 100000, max_inflight_messages default) and measures, for each:

  throughput  100-byte payloads, QoS 0 and QoS 1, one publisher to 1 subscriber and to 50
              subscribers. Load is ``mosquitto_pub -l`` (fed a file of 100-byte lines) and
              ``mosquitto_sub -C N+1 -F %r`` (one "0"/"1" line per message into a file), so
              both brokers see the same C load generator. Elapsed is from the publisher's start
              to the last subscriber's exit (or, for a subscriber that stalls, its last write).
              Also CPU seconds of the broker, the publisher(s) and the subscribers per case.
  idle        RSS before/after 1,000 idle MQTT 3.1.1 connections (keepalive 60) opened from
              this process; KB per client. Then the broker's peak RSS (VmHWM) over the run.

Readiness of the subscribers: a retained message is published on the case's topic before they
start; each one receives it right after its SUBACK (``-C`` counts it, hence N+1), and the
publisher starts once every subscriber has written it. QoS 1 publishers are run in chunks of at
most 60,000 messages (one ``mosquitto_pub`` per chunk, one after the other, each with its own client
id), QoS 0 ones too: mosquitto_pub 2.0.11
in ``-l`` mode disconnects when the PUBACK whose message id equals the last message's id
arrives, so past 65,535 messages it quits early after the id wraps.

QoS 0 losses at long durations are the broker's queue limit at work, not a fault: a
subscriber that falls MAX_QUEUED messages behind the publisher loses the oldest queued QoS 0
messages (Pillion's documented policy), which shows as one contiguous gap. Set BENCH_LOG=debug
to run Pillion's broker with debug logging.

Usage: python bench/bench_mqtt.py [--duration 5] [--json out.json] [--brokers pillion,mosquitto]
Targets are printed with PASS/MISS marks; the exit code is 0 unless something failed to run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_http as b  # noqa: E402

PAYLOAD = 100  # bytes per message
FANOUT = 50
IDLE_CLIENTS = 1000
CHUNK = 60000  # messages per mosquitto_pub process (see the module docstring)
MAX_QUEUED = 100000
STALL = 3.0  # seconds without progress after the publisher is done: the case ends
# messages per second of --duration, per case: N = rate * duration (the same N for both brokers)
CASES = [
    # name, qos, subscribers, publishes per second of --duration
    ("q0 1->1", 0, 1, 80000),
    ("q1 1->1", 1, 1, 25000),
    ("q0 1->50", 0, FANOUT, 1300),
    ("q1 1->50", 1, FANOUT, 900),
]
MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages {max_queued}
log_dest stderr
log_type error
log_type warning
"""


# ----------------------------------------------------------------------------------------
# MQTT on a raw socket (readiness probe, idle clients)
# ----------------------------------------------------------------------------------------


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect_packet(client_id: str, keepalive: int = 60) -> bytes:
    """A minimal MQTT 3.1.1 CONNECT, clean session."""
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02" + struct.pack("!H", keepalive) + struct.pack("!H", len(cid)) + cid
    return b"\x10" + _remaining_length(len(body)) + body


def mqtt_connect(port: int, client_id: str, timeout: float = 2.0) -> socket.socket:
    """Open a connection, CONNECT, read the CONNACK; the connected socket."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(connect_packet(client_id))
        ack = b""
        while len(ack) < 4:
            chunk = sock.recv(4 - len(ack))
            if not chunk:
                raise ConnectionError("closed before CONNACK")
            ack += chunk
        if ack[0] != 0x20 or ack[3] != 0:
            raise ConnectionError(f"CONNACK refused: {ack!r}")
    except BaseException:
        sock.close()
        raise
    return sock


def wait_broker(child: b.Child, port: int, timeout: float = 20.0) -> float:
    """Poll until the broker answers a CONNECT with CONNACK 0; seconds since spawn."""
    deadline = time.perf_counter() + timeout
    while True:
        try:
            mqtt_connect(port, "bench-probe", timeout=1.0).close()
            return time.perf_counter() - child.t0
        except OSError:
            pass
        if not child.alive():
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.output()}")
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{child.name}: no CONNACK within {timeout:g}s:\n{child.output()}")
        time.sleep(0.01)


# ----------------------------------------------------------------------------------------
# idle clients
# ----------------------------------------------------------------------------------------


def idle_clients(name: str, pid: int, port: int, count: int) -> dict:
    time.sleep(0.3)
    before = b.proc_status_kb(pid, "VmRSS")
    socks = []
    t0 = time.perf_counter()
    try:
        for i in range(count):
            socks.append(mqtt_connect(port, f"idle-{i}", timeout=10.0))
        connect_s = time.perf_counter() - t0
        time.sleep(0.5)
        after = b.proc_status_kb(pid, "VmRSS")
    finally:
        for s in socks:
            s.close()
    per = (after - before) / count
    print(f"  {name:<10} idle RSS {before / 1024:.1f} MB -> {after / 1024:.1f} MB with {count} clients: "
          f"{per:.2f} KB/client (connected in {connect_s:.2f} s)", flush=True)
    return {"rss_before_kb": before, "rss_after_kb": after, "clients": count, "kb_per_client": per,
            "connect_s": connect_s}


# ----------------------------------------------------------------------------------------
# throughput
# ----------------------------------------------------------------------------------------


def payload_file(tmp: Path, lines: int) -> Path:
    path = tmp / f"payload-{lines}.txt"
    if not path.exists():
        # 100 printable bytes per line (mosquitto_pub -l strips the newline)
        path.write_bytes(b"".join(b"%08d" % i + b"x" * (PAYLOAD - 8) + b"\n" for i in range(lines)))
    return path


def cpu_s(ru: resource.struct_rusage) -> float:
    return ru.ru_utime + ru.ru_stime


def run_case(broker: str, bpid: int, port: int, case: tuple, duration: float, tmp: Path, seq: int) -> dict:
    name, qos, nsubs, rate = case
    n = max(1000, int(rate * duration))
    topic = f"bench/{seq}/{broker}/q{qos}s{nsubs}"
    host = ["-h", "127.0.0.1", "-p", str(port)]
    # the retained message every subscriber gets on SUBACK: proof that it is subscribed
    subprocess.run(["mosquitto_pub", *host, "-q", "1", "-r", "-t", topic, "-m", "ready"], check=True, timeout=10)
    case_dir = tmp / f"case-{seq}-{broker}"
    case_dir.mkdir()
    subs: dict[int, dict] = {}
    procs: dict[int, subprocess.Popen] = {}
    sub_cmd = ["mosquitto_sub", *host, "-q", str(qos), "-t", topic, "-C", str(n + 1), "-F", "%r"]
    for i in range(nsubs):
        out = case_dir / f"sub-{i}.out"
        with open(out, "wb") as f:
            p = subprocess.Popen([*sub_cmd, "-i", f"{broker}-s{seq}-{i}"], stdout=f, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
        procs[p.pid] = p
        subs[p.pid] = {"out": out, "exit": None, "rc": None, "cpu": 0.0}
    deadline = time.perf_counter() + 15
    while not all(s["out"].stat().st_size >= 2 for s in subs.values()):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{broker} {name}: subscribers did not all get the retained message in 15 s")
        time.sleep(0.005)

    chunks = [min(CHUNK, n - i) for i in range(0, n, CHUNK)]
    pub_cmd = ["mosquitto_pub", *host, "-q", str(qos), "-t", topic, "-l"]
    pub_cpu = 0.0
    pub_rcs = []
    pending = list(chunks)
    pub = None
    broker_before = b.cpu_ticks(bpid)
    t0 = time.time()
    t0p = time.perf_counter()
    hard_deadline = t0p + max(60.0, 20 * duration)
    pub_done_at = None
    last_progress = t0p
    last_sizes = None
    timed_out = False
    while True:
        if pub is None and pending:
            with open(payload_file(tmp, pending.pop(0)), "rb") as f:
                # a client id per chunk: reusing one makes the next chunk's CONNECT take over the
                # previous connection, whose unread tail Mosquitto then discards (QoS 0 loss)
                pub_id = f"{broker}-p{seq}-{len(chunks) - len(pending)}"
                pub = subprocess.Popen([*pub_cmd, "-i", pub_id], stdin=f, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            procs[pub.pid] = pub
        # reap whatever exited
        while True:
            try:
                pid, status, ru = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid == 0:
                break
            now = time.time()
            p = procs.pop(pid, None)
            if p is not None:
                p.returncode = os.waitstatus_to_exitcode(status)
            if pid == bpid:
                raise RuntimeError(f"{broker} exited during {name} (status {status})")
            if pub is not None and pid == pub.pid:
                pub_cpu += cpu_s(ru)
                pub_rcs.append(p.returncode)
                pub = None
                if not pending:
                    pub_done_at = time.perf_counter()
            elif pid in subs:
                subs[pid].update(exit=now, rc=p.returncode, cpu=cpu_s(ru))
        running = [pid for pid, s in subs.items() if s["exit"] is None]
        if not running and pub is None and not pending:
            break
        nowp = time.perf_counter()
        if pub_done_at is not None:
            sizes = [subs[pid]["out"].stat().st_size for pid in running]
            if sizes != last_sizes:
                last_sizes, last_progress = sizes, nowp
            elif nowp - max(last_progress, pub_done_at) > STALL:
                timed_out = True
        if nowp > hard_deadline:
            timed_out = True
        if timed_out:
            for pid in list(procs):
                if pid != bpid:
                    os.kill(pid, signal.SIGTERM)
            pub_done_at = pub_done_at or nowp
            # reap the killed ones (their CPU counts too)
            while procs:
                pid, status, ru = os.wait4(-1, 0)
                p = procs.pop(pid, None)
                if p is not None:
                    p.returncode = os.waitstatus_to_exitcode(status)
                if pub is not None and pid == pub.pid:
                    pub_cpu += cpu_s(ru)
                    pub = None
                elif pid in subs:
                    s = subs[pid]
                    s.update(exit=s["out"].stat().st_mtime, rc=p.returncode, cpu=cpu_s(ru), killed=True)
            pending = []
            break
        time.sleep(0.002)
    broker_cpu = (b.cpu_ticks(bpid) - broker_before) / b.CLK_TCK

    received = []
    bad = 0
    for s in subs.values():
        data = s["out"].read_bytes()
        lines = data.split(b"\n")[:-1]
        if not lines or lines[0] != b"1":
            bad += 1
        received.append(sum(1 for x in lines[1:] if x == b"0"))
    end = max(s["exit"] for s in subs.values())
    elapsed = max(1e-6, end - t0)
    lost = n * nsubs - sum(received)
    res = {
        "case": name, "qos": qos, "subscribers": nsubs, "messages": n, "chunks": chunks, "topic": topic,
        "elapsed_s": elapsed, "publish_rate": n / elapsed, "delivered_rate": sum(received) / elapsed,
        "received_min": min(received), "received_max": max(received), "lost": lost, "timed_out": timed_out,
        "no_retained_first": bad, "publisher_rcs": pub_rcs,
        "cpu_s": {"broker": broker_cpu, "publisher": pub_cpu, "subscribers": sum(s["cpu"] for s in subs.values())},
        "publisher_cmd": shlex.join(pub_cmd + ["<", f"{CHUNK}-line file"]),
        "subscriber_cmd": shlex.join(sub_cmd),
    }
    res["cpu_pct"] = {k: 100 * v / elapsed for k, v in res["cpu_s"].items()}
    res["broker_us_per_delivery"] = broker_cpu * 1e6 / max(1, sum(received))
    flag = ""
    if lost:
        flag += f"  LOST {lost} ({100 * lost / (n * nsubs):.2f}%)"
    if timed_out:
        flag += "  TIMED OUT/STALLED"
    if bad:
        flag += f"  {bad} subscriber(s) without the retained first"
    pct = res["cpu_pct"]
    print(f"  {broker:<10} {name:<9} N={n:<7} {elapsed:6.2f} s  {res['publish_rate']:>8.0f} pub/s "
          f"{res['delivered_rate']:>9.0f} deliv/s  cpu% broker {pct['broker']:.0f} pub {pct['publisher']:.0f} "
          f"subs {pct['subscribers']:.0f}{flag}", flush=True)
    shutil.rmtree(case_dir, ignore_errors=True)
    return res


# ----------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------


def saturating(r: dict) -> str:
    pct = r["cpu_pct"]
    if pct["broker"] >= 85:
        return "broker"
    clients = pct["publisher"] + pct["subscribers"]
    if pct["publisher"] >= 85:
        return "publisher"
    if clients + pct["broker"] >= 170:
        return "both cores"
    return "neither"


def report(results: dict, idle: dict, peak: dict, ncpu: int) -> list[dict]:
    print()
    print(f"{'broker':<10}{'case':<10}{'N':>7}{'secs':>7}{'pub/s':>9}{'deliv/s':>10}{'lost':>7}"
          f"{'cpu% brk':>9}{'pub':>5}{'subs':>6}{'us/dlv':>8}  saturated")
    print("-" * 96)
    for broker, rows in results.items():
        for r in rows:
            pct = r["cpu_pct"]
            print(f"{broker:<10}{r['case']:<10}{r['messages']:>7}{r['elapsed_s']:>7.2f}{r['publish_rate']:>9.0f}"
                  f"{r['delivered_rate']:>10.0f}{r['lost']:>7}{pct['broker']:>9.0f}{pct['publisher']:>5.0f}"
                  f"{pct['subscribers']:>6.0f}{r['broker_us_per_delivery']:>8.2f}  {saturating(r)}"
                  + ("  (stalled)" if r["timed_out"] else ""))
    print(f"  ({ncpu} cpu(s); cpu% is CPU time / elapsed, 100 = one core; us/dlv = broker CPU per delivered message)")
    print()

    checks = b.Checks(44, 14)
    check = checks.add
    both = "pillion" in results and "mosquitto" in results
    if both:
        for p, m in zip(results["pillion"], results["mosquitto"]):
            r = p["delivered_rate"] / m["delivered_rate"]
            check(f"{p['case']} pillion/mosquitto deliv/s", r, "{:.2f}x", ">= 0.50x", r >= 0.50)
    else:
        check("pillion/mosquitto throughput", None, "", ">= 0.50x", None, "SKIP (one broker only)")
    for broker, rows in results.items():
        for r in rows:
            if r["qos"] == 1:
                check(f"{broker} {r['case']} messages lost", r["lost"], "{:d}", "== 0", r["lost"] == 0)
            elif r["lost"]:
                check(f"{broker} {r['case']} messages lost", r["lost"], "{:d}", "(info)", None)
    for broker, d in idle.items():
        check(f"{broker} KB per idle client", d["kb_per_client"], "{:.2f}",
              "<= 10 KB" if broker == "pillion" else "(info)", d["kb_per_client"] <= 10 if broker == "pillion" else None)
    for broker, kb in peak.items():
        check(f"{broker} peak RSS over the run (MB)", kb / 1024, "{:.1f}", "(info)", None)
    b.print_summary(checks)
    return checks


# ----------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5.0,
                   help="scales the messages per case: about this many seconds for the slower broker (default 5)")
    p.add_argument("--json", metavar="FILE", default=None, help="write every number to FILE as JSON")
    p.add_argument("--brokers", default="pillion,mosquitto", help="comma-separated subset of pillion,mosquitto")
    p.add_argument("--cases", default=None, help="comma-separated indexes of the cases to run (0-3, default all)")
    p.add_argument("--no-pyc", action="store_true",
                   help="children inherit the environment's bytecode settings (default: bytecode cached in a temp dir)")
    args = p.parse_args(argv)
    brokers = [x.strip() for x in args.brokers.split(",") if x.strip()]
    cases = CASES if args.cases is None else [CASES[int(i)] for i in args.cases.split(",")]

    cmdline = shlex.join([sys.executable, *sys.argv])
    print(f"command: {cmdline}")
    for tool in ("mosquitto_pub", "mosquitto_sub") + (("mosquitto",) if "mosquitto" in brokers else ()):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            print(f"{tool} is not installed", file=sys.stderr)
            return 1
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    version = subprocess.run(["mosquitto_pub", "--help"], capture_output=True, text=True).stdout.splitlines()[1:2]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = IDLE_CLIENTS + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY else want, hard))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpu(s), {version[0] if version else 'mosquitto'}; "
          f"RLIMIT_NOFILE {resource.getrlimit(resource.RLIMIT_NOFILE)[0]} (inherited by the brokers)")
    print(f"loadavg at start: {Path('/proc/loadavg').read_text().strip()}")
    print(f"load: mosquitto_sub -q Q -t T -C N+1 -F %r > file (x1 or x{FANOUT}); "
          f"mosquitto_pub -q Q -t T -l < file ({PAYLOAD}-byte lines, <= {CHUNK} per process)")

    tmp = Path(tempfile.mkdtemp(prefix="pillion-bench-mqtt-"))
    env = b.child_env(tmp, pyc=not args.no_pyc)
    loaded = subprocess.run([sys.executable, "-c", "import pillion, pillion.broker.session as s; print(s.__file__)"],
                            capture_output=True, text=True, env=env).stdout.strip()
    print(f"pillion under test: {loaded}")
    print(flush=True)

    children: list[b.Child] = []
    results: dict[str, list[dict]] = {}
    idle: dict[str, dict] = {}
    peak: dict[str, int] = {}
    seq = 0
    try:
        for broker in brokers:
            port = b.free_port()
            if broker == "pillion":
                cmd = [sys.executable, "-m", "pillion", "broker", "--host", "127.0.0.1", "--port", str(port),
                       "--max-queued", str(MAX_QUEUED), "--log-level", os.environ.get("BENCH_LOG", "warning")]
            elif broker == "mosquitto":
                conf = tmp / "mosquitto.conf"
                conf.write_text(MOSQUITTO_CONF.format(port=port, max_queued=MAX_QUEUED))
                cmd = [mosquitto, "-c", str(conf)]
            else:
                raise ValueError(f"unknown broker {broker!r}")
            child = b.Child(broker, cmd, tmp, env)
            children.append(child)
            ready = wait_broker(child, port)
            print(f"{broker}: pid {child.pid}, port {port}, CONNACK {ready * 1e3:.0f} ms after spawn: {shlex.join(cmd)}",
                  flush=True)
            idle[broker] = idle_clients(broker, child.pid, port, IDLE_CLIENTS)
            rows = []
            for case in cases:
                seq += 1
                rows.append(run_case(broker, child.pid, port, case, args.duration, tmp, seq))
                if not child.alive():
                    raise RuntimeError(f"{broker} died:\n{child.output()}")
            results[broker] = rows
            peak[broker] = b.proc_status_kb(child.pid, "VmHWM")
            child.stop()
            out = child.log_path.read_text(errors="replace").strip()
            if out:
                print(f"  {broker} log:\n    " + "\n    ".join(out.splitlines()[-10:]))
        checks = report(results, idle, peak, os.cpu_count() or 1)
    except Exception as exc:  # noqa: BLE001 - report and exit 1: something failed to run
        print(f"bench failed: {type(exc).__name__}: {exc}\n(child logs kept in {tmp})", file=sys.stderr)
        return 1
    finally:
        for c in children:
            c.stop()

    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": cmdline, "duration": args.duration, "cpus": os.cpu_count(), "python": sys.version.split()[0],
            "pillion": loaded, "results": results, "idle": idle, "peak_rss_kb": peak, "checks": checks,
        }, indent=2))
        print(f"wrote {args.json}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
