#!/usr/bin/env python3
"""Pub/sub bench: HTTP publish -> sidecar -> MQTT broker -> sidecar -> app, against references.

One run measures, each party in its own process:

  embedded   ``python -m pillion sidecar`` with a pubsub.mqtt component (qos 1) on its embedded
             broker; the app (a uvloop + httptools server written here) subscribes to ``bench``
  mosquitto  the same, the component's ``url`` pointing at Mosquitto (/usr/sbin/mosquitto, a
             generated config: 127.0.0.1, anonymous, persistence false); --mqtt-port 0
  paho       reference: a paho-mqtt QoS 1 publisher process (a window of 20 unacknowledged
             PUBLISHes, paho's default max_inflight) and a paho subscriber process (QoS 1),
             through the same Mosquitto, payload the size of the CloudEvent the sidecar sends

For each, two phases:

  throughput  closed loop for --duration seconds: the load generator (an asyncio + uvloop client
              in its own process, LOAD_CONNS keep-alive connections, one request in flight on
              each) POSTs /v1.0/publish/pubsub/bench with {"bseq": n, "bts": <send time>}; every
              204 must be delivered. msg/s = delivered / (first publish start -> last delivery)
  latency     LAT_RATE msg/s over LAT_CONNS connections for LAT_SECONDS (after LAT_WARMUP s):
              p50/p99 of publish request start -> app receive (CLOCK_MONOTONIC in both processes)

plus the sidecar's peak RSS (VmHWM) per run and the CPU seconds of sidecar, app, broker and
load generator per phase. The app parses each POST (httptools), takes ``bseq`` / ``bts`` out of
the CloudEvent with a regex, records the receive time and answers 200 with an empty body.

Usage: python bench/bench_pubsub.py [--duration 5] [--conns 32] [--json out.json] [--no-pyc]
       [--runs embedded,mosquitto,paho]
Targets are printed with PASS/MISS marks; the exit code is 0 unless something failed to run.
The script also runs its own children: --serve-app, --loadgen, --paho-pub, --paho-sub.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_http as b  # noqa: E402

TOPIC = "bench"
PUBSUB = "pubsub"
LOAD_CONNS = 32  # closed-loop connections of the throughput phase
LAT_RATE = 1000  # msg/s of the latency phase
LAT_CONNS = 10
LAT_SECONDS = 3.0
LAT_WARMUP = 0.5
WARMUP_SECONDS = 1.0  # closed-loop warm-up before the throughput phase (not counted)
STALL = 5.0  # seconds without a new delivery after the publisher is done: the phase ends
PAHO_WINDOW = 20

COMPONENT = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {name}
spec:
  type: pubsub.mqtt
  version: v1
  metadata:
  - name: qos
    value: "1"
{url}"""

MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 1000000
log_dest stderr
log_type error
log_type warning
"""

SEQ_RE = re.compile(rb'"bseq":\s*(\d+)')
TS_RE = re.compile(rb'"bts":\s*([0-9.eE+-]+)')


def _pct(values: list[float], f: float) -> float:
    return values[min(len(values) - 1, int(f * len(values)))] if values else float("nan")


def _lat_stats(lats: list[float]) -> dict:
    lats = sorted(lats)
    return {"n": len(lats), "p50_ms": _pct(lats, 0.50) * 1e3, "p90_ms": _pct(lats, 0.90) * 1e3,
            "p99_ms": _pct(lats, 0.99) * 1e3, "max_ms": (lats[-1] * 1e3) if lats else float("nan")}


# ----------------------------------------------------------------------------------------
# child: the subscriber app (--serve-app PORT)
# ----------------------------------------------------------------------------------------


def serve_app(port: int) -> None:
    """uvloop + httptools; GET /dapr/subscribe, POST /bench (records), GET /count, /dump, /reset."""
    import asyncio

    import httptools
    import uvloop

    subscribe = json.dumps([{"pubsubname": PUBSUB, "topic": TOPIC, "route": "/bench"}]).encode()
    ok_empty = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    clock = time.perf_counter
    st = {"seqs": [], "sent": [], "recv": [], "bytes": 0, "bad": 0}

    def json_reply(obj) -> bytes:
        body = json.dumps(obj).encode()
        return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    class App(asyncio.Protocol):
        __slots__ = ("transport", "parser", "url", "body")

        def __init__(self):
            self.transport = None
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""
            self.body = []

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                self.transport.close()

        def on_message_begin(self):
            self.url = b""
            self.body = []

        def on_url(self, url):
            self.url += url

        def on_body(self, body):
            self.body.append(body)

        def on_message_complete(self):
            url = self.url
            if self.parser.get_method() == b"POST":
                now = clock()
                body = b"".join(self.body)
                m, t = SEQ_RE.search(body), TS_RE.search(body)
                if m and t:
                    st["seqs"].append(int(m.group(1)))
                    st["sent"].append(float(t.group(1)))
                    st["recv"].append(now)
                    st["bytes"] += len(body)
                else:
                    st["bad"] += 1
                self.transport.write(ok_empty)
            elif url == b"/dapr/subscribe":
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                                     % (len(subscribe), subscribe))
            elif url == b"/count":
                self.transport.write(json_reply({"count": len(st["seqs"])}))
            elif url == b"/dump":
                self.transport.write(json_reply({"seqs": st["seqs"], "sent": st["sent"], "recv": st["recv"],
                                                 "bytes": st["bytes"], "unparsed": st["bad"]}))
            elif url == b"/reset":
                st.update(seqs=[], sent=[], recv=[], bytes=0, bad=0)
                self.transport.write(json_reply({}))
            else:
                self.transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            if not self.parser.should_keep_alive():
                self.transport.close()

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(App, "127.0.0.1", port, backlog=1024)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.close()

    uvloop.run(main())


# ----------------------------------------------------------------------------------------
# child: the HTTP publish load generator (--loadgen PORT MODE SEQ0)
# ----------------------------------------------------------------------------------------


def loadgen(port: int, mode: str, seconds: float, warmup: float) -> None:
    """``closed``: LOAD_CONNS connections, each sends its next request when the previous is answered.
    ``rate``: LAT_RATE msg/s over LAT_CONNS connections (connection i at i/rate + k*conns/rate).

    Prints one JSON line: the seqs answered 204 in the measured part (after ``warmup`` s), the
    count of all 204s, bad statuses, first measured send and last response (perf_counter), and
    publish-request latency of the measured part.
    """
    import asyncio

    import uvloop

    path = f"/v1.0/publish/{PUBSUB}/{TOPIC}".encode()
    head = b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: "
    clen = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.I)
    clock = time.perf_counter
    st = {"seq": 0, "all_ok": 0, "bad": 0, "bad_sample": b"", "first": None, "last": None, "late": 0,
          "stop": False, "measure": False}
    ok_seqs: list[int] = []
    lats: list[float] = []

    class Conn(asyncio.Protocol):
        def __init__(self, closed_loop: bool):
            self.buf = b""
            self.transport = None
            self.closed_loop = closed_loop
            self.inflight = []  # (seq, send time, measured) of the requests in flight, in order
            self.waiter = None

        def connection_made(self, transport):
            self.transport = transport

        def send(self, measured: bool):
            st["seq"] += 1
            now = clock()
            body = b'{"bseq":%d,"bts":%.7f}' % (st["seq"], now)
            if measured and st["first"] is None:
                st["first"] = now
            self.inflight.append((st["seq"], now, measured))
            self.transport.write(head + b"%d\r\n\r\n" % len(body) + body)

        def data_received(self, data):
            self.buf += data
            while True:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                m = clen.search(self.buf, 0, end + 2)
                size = int(m.group(1)) if m else 0
                if len(self.buf) < end + 4 + size:
                    return
                now = clock()
                seq, sent, measured = self.inflight.pop(0)
                if self.buf[9:12] == b"204":
                    st["all_ok"] += 1
                    if measured:
                        ok_seqs.append(seq)
                        lats.append(now - sent)
                        st["last"] = now
                else:
                    st["bad"] += 1
                    if not st["bad_sample"]:
                        st["bad_sample"] = self.buf[:end + 4 + size][:500]
                self.buf = self.buf[end + 4 + size:]
                if self.closed_loop:
                    if not st["stop"]:
                        self.send(st["measure"])
                elif self.waiter is not None and not self.waiter.done():
                    self.waiter.set_result(None)

        def connection_lost(self, exc):
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(ConnectionError("connection lost"))

    async def closed():
        loop = asyncio.get_running_loop()
        conns = [(await loop.create_connection(lambda: Conn(True), "127.0.0.1", port))[1] for _ in range(LOAD_CONNS)]
        if warmup > 0:
            for c in conns:
                c.send(False)
            await asyncio.sleep(warmup)
            st["stop"] = True
            while any(c.inflight for c in conns):
                await asyncio.sleep(0.001)
            st["stop"] = False
        st["measure"] = True
        for c in conns:
            c.send(True)
        await asyncio.sleep(seconds)
        st["stop"] = True
        deadline = clock() + 30
        while any(c.inflight for c in conns) and clock() < deadline:
            await asyncio.sleep(0.001)
        for c in conns:
            c.transport.close()

    async def rate():
        loop = asyncio.get_running_loop()
        conns = [(await loop.create_connection(lambda: Conn(False), "127.0.0.1", port))[1] for _ in range(LAT_CONNS)]
        period = LAT_CONNS / LAT_RATE
        t0 = clock() + 0.05
        warm_end = t0 + warmup
        end = warm_end + seconds

        async def worker(c: Conn, offset: float):
            k = 0
            while True:
                due = t0 + offset + k * period
                if due >= end:
                    return
                delay = due - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -period / 2:
                    st["late"] += 1
                c.waiter = loop.create_future()
                c.send(due >= warm_end)
                await c.waiter
                k += 1

        await asyncio.gather(*(worker(c, i / LAT_RATE) for i, c in enumerate(conns)))
        for c in conns:
            c.transport.close()

    uvloop.run(closed() if mode == "closed" else rate())
    st.pop("stop")
    st.pop("measure")
    st["bad_sample"] = st["bad_sample"].decode(errors="replace")
    print(json.dumps({**st, "ok": len(ok_seqs), "ok_seqs": ok_seqs, "request_latency": _lat_stats(lats)}))


# ----------------------------------------------------------------------------------------
# children: paho reference (--paho-sub PORT OUT, --paho-pub PORT MODE SIZE)
# ----------------------------------------------------------------------------------------


def _paho_client(client_id: str):
    import paho.mqtt.client as mqtt

    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True,
                       protocol=mqtt.MQTTv311)


def paho_sub(port: int, topic: str) -> None:
    """Subscribes QoS 1, prints "ready" once subscribed; counts until an END message then STALL s
    without messages, or until the END's count is reached. Prints one JSON line."""
    seqs: list[int] = []
    sent: list[float] = []
    recv: list[float] = []
    st = {"end": None, "last": None}
    clock = time.perf_counter

    def on_connect(client, userdata, flags, rc, props):
        client.subscribe(topic, qos=1)

    def on_subscribe(client, userdata, mid, rcs, props):
        print("ready", flush=True)

    def on_message(client, userdata, msg):
        now = clock()
        p = msg.payload
        if p.startswith(b"END "):
            st["end"] = json.loads(p[4:])
            return
        m, t = SEQ_RE.search(p), TS_RE.search(p)
        seqs.append(int(m.group(1)))
        sent.append(float(t.group(1)))
        recv.append(now)
        st["last"] = now

    c = _paho_client(f"bench-sub-{os.getpid()}")
    c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
    c.connect("127.0.0.1", port, keepalive=60)
    end_seen = None
    while True:
        c.loop(timeout=0.05)
        if st["end"] is not None:
            end_seen = end_seen or clock()
            if len(seqs) >= st["end"]["total"]:
                break
            if clock() - max(end_seen, st["last"] or 0) > STALL:
                break
    c.disconnect()
    print(json.dumps({"seqs": seqs, "sent": sent, "recv": recv, "bytes": 0}))


def paho_pub(port: int, topic: str, mode: str, size: int, seconds: float, warmup: float) -> None:
    """QoS 1 publisher with a window of PAHO_WINDOW unacknowledged messages (on_publish frees a slot),
    closed loop for ``seconds`` or LAT_RATE msg/s; then an END message with the counts."""
    import threading

    window = threading.Semaphore(PAHO_WINDOW)
    acked = {"n": 0}
    clock = time.perf_counter

    def on_publish(client, userdata, mid, rc, props):
        acked["n"] += 1
        window.release()

    c = _paho_client(f"bench-pub-{os.getpid()}")
    c.max_inflight_messages_set(PAHO_WINDOW)
    c.on_publish = on_publish
    c.connect("127.0.0.1", port, keepalive=60)
    c.loop_start()
    seq = 0
    pad = b" " * max(0, size - 40)

    def publish():
        nonlocal seq
        seq += 1
        window.acquire()
        now = clock()
        c.publish(topic, b'{"bseq":%d,"bts":%.7f,"p":"%s"}' % (seq, now, pad), qos=1)
        return now

    t0 = clock()
    if mode == "closed":
        while clock() - t0 < warmup:
            publish()
        measure_from = seq + 1
        first = publish()
        end = first + seconds
        while clock() < end:
            publish()
    else:
        period = 1.0 / LAT_RATE
        start = t0 + 0.01
        warm_end = start + warmup
        end = warm_end + seconds
        k = 0
        measure_from = None
        first = None
        while True:
            due = start + k * period
            if due >= end:
                break
            if due >= warm_end and measure_from is None:
                measure_from = seq + 1
            delay = due - clock()
            if delay > 0:
                time.sleep(delay)
            sent = publish()
            if first is None and measure_from is not None:
                first = sent
            k += 1
    for _ in range(PAHO_WINDOW):  # every PUBACK in
        window.acquire()
    last = clock()
    ok = seq - measure_from + 1
    info = c.publish(topic, b"END " + json.dumps({"ok": ok, "measure_from": measure_from, "total": seq}).encode(), qos=1)
    info.wait_for_publish(10)
    c.loop_stop()
    c.disconnect()
    print(json.dumps({"ok": ok, "ok_seqs": list(range(measure_from, seq + 1)), "first": first, "last": last,
                      "total_published": seq}))


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------


def self_cmd(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def http_json(port: int, path: str, timeout: float = 10.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path.encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"GET {path} on {port}: {head[:100]!r}")
    return json.loads(body)


def wait_subscribed(child: b.Child, port: int, timeout: float = 20.0) -> float:
    deadline = time.perf_counter() + timeout
    while True:
        try:
            md = http_json(port, "/v1.0/metadata")
            if any(s.get("topic") == TOPIC for s in md.get("subscriptions") or []):
                return time.perf_counter() - child.t0
        except (OSError, RuntimeError, ValueError):
            pass
        if not child.alive():
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.output()}")
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{child.name}: no subscription in /v1.0/metadata within {timeout:g}s:\n{child.output()}")
        time.sleep(0.02)


def wait_port(child: b.Child, port: int, timeout: float = 10.0) -> None:
    deadline = time.perf_counter() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            pass
        if not child.alive():
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.output()}")
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{child.name}: port {port} not open within {timeout:g}s:\n{child.output()}")
        time.sleep(0.01)


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_child(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[dict, float]:
    """Run a short-lived child to the end; its last stdout line as JSON and its CPU seconds."""
    cpu0 = children_cpu()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    cpu = children_cpu() - cpu0
    if out.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1]), cpu


def wait_delivered(app_port: int, want: int, procs: dict[str, int]) -> dict:
    """Poll the app until ``want`` deliveries or STALL s without progress; then its record."""
    last_count, last_change = -1, time.perf_counter()
    while True:
        count = http_json(app_port, "/count")["count"]
        if count >= want:
            break
        now = time.perf_counter()
        if count != last_count:
            last_count, last_change = count, now
        elif now - last_change > STALL:
            break
        for name, pid in procs.items():
            if not os.path.exists(f"/proc/{pid}"):
                raise RuntimeError(f"{name} exited")
        time.sleep(0.05)
    return http_json(app_port, "/dump")


def account(ok_seqs: list[int], dump: dict) -> dict:
    """Match the publisher's acknowledged seqs with what the subscriber received."""
    got: dict[int, tuple[float, float]] = {}
    for seq, sent, recv in zip(dump["seqs"], dump["sent"], dump["recv"]):
        got.setdefault(seq, (sent, recv))
    hit = [got[s] for s in ok_seqs if s in got]
    missing = [s for s in ok_seqs if s not in got]
    return {"received": len(dump["seqs"]), "distinct": len(got), "duplicates": len(dump["seqs"]) - len(got),
            "delivered": len(hit), "lost": len(missing), "lost_sample": missing[:10],
            "last_recv": max((r for _, r in hit), default=None), "latency": _lat_stats([r - t for t, r in hit]),
            "avg_bytes": dump.get("bytes", 0) / max(1, len(dump["seqs"]))}


def flags(acc: dict) -> str:
    out = ""
    if acc["lost"]:
        out += f"  LOST {acc['lost']} (e.g. seq {acc['lost_sample']})"
    if acc["duplicates"]:
        out += f"  DUPLICATES {acc['duplicates']}"
    return out


def ticks(pids: dict[str, int]) -> dict[str, int]:
    return {k: b.cpu_ticks(p) for k, p in pids.items()}


def cpu_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    return {k: (after[k] - before[k]) / b.CLK_TCK for k in before}


# ----------------------------------------------------------------------------------------
# the runs
# ----------------------------------------------------------------------------------------


def sidecar_run(name: str, tmp: Path, env: dict[str, str], spawn, duration: float, broker_url: str | None,
                broker_pid: int | None) -> dict:
    resources = tmp / f"resources-{name}"
    resources.mkdir()
    url = f"  - name: url\n    value: \"{broker_url}\"\n" if broker_url else ""
    (resources / "pubsub.yaml").write_text(COMPONENT.format(name=PUBSUB, url=url))
    app_port = b.free_port()
    app = spawn(f"{name}-app", self_cmd("--serve-app", str(app_port)))
    wait_port(app, app_port)
    port = b.free_port()
    mqtt_port = "0" if broker_url else str(b.free_port())
    sc = spawn(f"{name}-sidecar", b.sidecar_args("bench", port, "--app-port", str(app_port), "--resources-path",
                                                str(resources), "--mqtt-port", mqtt_port, "--log-level", "warning"))
    b.wait_status(sc, port, "/v1.0/healthz", 204)
    subscribed = wait_subscribed(sc, port)
    print(f"{name}: sidecar pid {sc.pid} (http {port}, mqtt {mqtt_port}{', ' + broker_url if broker_url else ''}), "
          f"app pid {app.pid}; subscribed {subscribed * 1e3:.0f} ms after spawn", flush=True)
    time.sleep(0.2)
    idle_rss = b.proc_status_kb(sc.pid, "VmRSS")
    pids = {"sidecar": sc.pid, "app": app.pid}
    if broker_pid:
        pids["broker"] = broker_pid
    res: dict = {"idle_rss_kb": idle_rss}

    # throughput
    http_json(app_port, "/reset")
    before = ticks(pids)
    lg, lg_cpu = run_child(self_cmd("--loadgen", str(port), "closed", "--duration", str(duration),
                                    "--conns", str(LOAD_CONNS)), env,
                           timeout=duration + 120)
    if lg["bad"]:
        print(f"  ! {name}: {lg['bad']} publish(es) not answered 204, e.g. {lg['bad_sample']!r}", flush=True)
    acc = account(lg["ok_seqs"], wait_delivered(app_port, lg["all_ok"], pids))
    after = ticks(pids)
    elapsed = acc["last_recv"] - lg["first"] if acc["last_recv"] else float("nan")
    cpu = cpu_delta(before, after)
    cpu["loadgen"] = lg_cpu
    thr = {
        "published_ok": lg["ok"], "publish_bad": lg["bad"], **{k: v for k, v in acc.items() if k != "latency"},
        "elapsed_s": elapsed, "msg_per_s": acc["delivered"] / elapsed,
        "publish_per_s": lg["ok"] / max(1e-9, lg["last"] - lg["first"]), "delivery_latency": acc["latency"],
        "publish_request": lg["request_latency"], "cpu_s": cpu,
    }
    thr["cpu_pct"] = {k: 100 * v / elapsed for k, v in cpu.items()}
    res["throughput"] = thr
    print(f"  {name:<10} throughput {thr['msg_per_s']:>8.0f} msg/s delivered ({acc['delivered']} in {elapsed:.2f} s; "
          f"publish {thr['publish_per_s']:.0f}/s, request p50 {lg['request_latency']['p50_ms']:.2f} ms, "
          f"delivery p50 {acc['latency']['p50_ms']:.2f} ms)  cpu% "
          + " ".join(f"{k} {v:.0f}" for k, v in thr["cpu_pct"].items()) + flags(acc), flush=True)

    # fixed-rate latency
    http_json(app_port, "/reset")
    before = ticks(pids)
    lg, lg_cpu = run_child(self_cmd("--loadgen", str(port), "rate"), env, timeout=120)
    if lg["bad"]:
        print(f"  ! {name}: {lg['bad']} publish(es) not answered 204, e.g. {lg['bad_sample']!r}", flush=True)
    acc = account(lg["ok_seqs"], wait_delivered(app_port, lg["all_ok"], pids))
    after = ticks(pids)
    cpu = cpu_delta(before, after)
    cpu["loadgen"] = lg_cpu
    lat = {"published_ok": lg["ok"], "publish_bad": lg["bad"], **{k: v for k, v in acc.items() if k != "latency"},
           "late": lg["late"], "achieved_rate": lg["ok"] / LAT_SECONDS, **acc["latency"],
           "publish_request": lg["request_latency"], "cpu_s": cpu}
    res["latency"] = lat
    print(f"  {name:<10} latency at {LAT_RATE}/s: p50 {lat['p50_ms']:.3f} ms  p90 {lat['p90_ms']:.3f} ms  "
          f"p99 {lat['p99_ms']:.3f} ms  max {lat['max_ms']:.1f} ms  ({acc['delivered']} delivered, late {lg['late']};"
          f" publish request p50 {lg['request_latency']['p50_ms']:.3f} p99 {lg['request_latency']['p99_ms']:.3f} ms)"
          + flags(acc), flush=True)
    res["peak_rss_kb"] = b.proc_status_kb(sc.pid, "VmHWM")
    res["app_peak_rss_kb"] = b.proc_status_kb(app.pid, "VmHWM")
    sc.stop()
    app.stop()
    log = sc.log_path.read_text(errors="replace").strip()
    res["sidecar_log_tail"] = log.splitlines()[-20:]
    if log:
        print(f"  {name} sidecar log ({len(log.splitlines())} lines), last ones:\n    "
              + "\n    ".join(log.splitlines()[-10:]), flush=True)
    return res


def paho_run(mport: int, mpid: int, env: dict[str, str], duration: float, size: int) -> dict:
    res: dict = {"payload_bytes": size}
    for phase in ("throughput", "latency"):
        topic = f"bench/paho/{phase}"
        sub = subprocess.Popen(self_cmd("--paho-sub", str(mport), topic), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
        line = sub.stdout.readline().strip()
        if line != "ready":
            sub.kill()
            raise RuntimeError(f"paho subscriber: {line!r} {sub.stderr.read()}")
        before = ticks({"broker": mpid})
        mode = "closed" if phase == "throughput" else "rate"
        args = ["--duration", str(duration)] if mode == "closed" else []
        pub, pub_cpu = run_child(self_cmd("--paho-pub", str(mport), topic, mode, str(size), *args), env,
                                 timeout=duration + 120)
        cpu_before_sub = children_cpu()
        out, err = sub.communicate(timeout=60)
        sub_cpu = children_cpu() - cpu_before_sub
        after = ticks({"broker": mpid})
        if sub.returncode != 0:
            raise RuntimeError(f"paho subscriber failed ({sub.returncode}): {out}{err}")
        acc = account(pub["ok_seqs"], json.loads(out.strip().splitlines()[-1]))
        cpu = {**cpu_delta(before, after), "publisher": pub_cpu, "subscriber": sub_cpu}
        base = {"published_ok": pub["ok"], **{k: v for k, v in acc.items() if k not in ("latency", "avg_bytes")}}
        if phase == "throughput":
            elapsed = acc["last_recv"] - pub["first"]
            r = {**base, "elapsed_s": elapsed, "msg_per_s": acc["delivered"] / elapsed,
                 "delivery_latency": acc["latency"], "cpu_s": cpu,
                 "cpu_pct": {k: 100 * v / elapsed for k, v in cpu.items()}}
            print(f"  {'paho':<10} throughput {r['msg_per_s']:>8.0f} msg/s delivered ({acc['delivered']} in "
                  f"{elapsed:.2f} s, QoS 1, window {PAHO_WINDOW}, {size}-byte payload)  cpu% "
                  + " ".join(f"{k} {v:.0f}" for k, v in r["cpu_pct"].items()) + flags(acc), flush=True)
        else:
            r = {**base, **acc["latency"], "cpu_s": cpu}
            print(f"  {'paho':<10} latency at {LAT_RATE}/s: p50 {r['p50_ms']:.3f} ms  p90 {r['p90_ms']:.3f} ms  "
                  f"p99 {r['p99_ms']:.3f} ms  max {r['max_ms']:.1f} ms  ({acc['delivered']} delivered)"
                  + flags(acc), flush=True)
        res[phase] = r
    return res


# ----------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------


def report(results: dict) -> list[dict]:
    print()
    print(f"{'run':<11}{'msg/s':>9}{'lost':>6}{'p50 ms':>9}{'p99 ms':>9}{'peak RSS':>10}  cpu s (throughput phase)")
    print("-" * 96)
    for name, r in results.items():
        t, lt = r["throughput"], r["latency"]
        rss = f"{r['peak_rss_kb'] / 1024:.1f} MB" if "peak_rss_kb" in r else "-"
        print(f"{name:<11}{t['msg_per_s']:>9.0f}{t['lost'] + lt['lost']:>6}{lt['p50_ms']:>9.3f}{lt['p99_ms']:>9.3f}"
              f"{rss:>10}  " + ", ".join(f"{k} {v:.2f}" for k, v in t["cpu_s"].items()))
    print(f"  (latency at {LAT_RATE} msg/s over {LAT_CONNS} connections; throughput closed loop, {LOAD_CONNS} connections)")
    print()

    checks = b.Checks(44, 14)
    check = checks.add
    emb = results.get("embedded")
    mos = results.get("mosquitto")
    paho = results.get("paho")
    if emb:
        v = emb["throughput"]["msg_per_s"]
        check("embedded msg/s end to end", v, "{:.0f}", ">= 10000", v >= 10000)
    if emb and mos:
        r = emb["throughput"]["msg_per_s"] / mos["throughput"]["msg_per_s"]
        check("embedded / mosquitto-path msg/s", r, "{:.2f}x", ">= 1.00x", r >= 1.0)
    else:
        check("embedded / mosquitto-path msg/s", None, "", ">= 1.00x", None, "SKIP")
    if emb and paho:
        r = emb["throughput"]["msg_per_s"] / paho["throughput"]["msg_per_s"]
        check("embedded / paho QoS 1 pair msg/s", r, "{:.2f}x", ">= 3.00x", r >= 3.0)
    else:
        check("embedded / paho QoS 1 pair msg/s", None, "", ">= 3.00x", None, "SKIP")
    if emb:
        v = emb["latency"]["p50_ms"]
        check(f"embedded p50 at {LAT_RATE}/s (ms)", v, "{:.3f}", "< 2 ms", v < 2.0)
        check(f"embedded p99 at {LAT_RATE}/s (ms)", emb["latency"]["p99_ms"], "{:.3f}", "(info)", None)
    if mos:
        check("mosquitto-path msg/s", mos["throughput"]["msg_per_s"], "{:.0f}", "(info)", None)
        check(f"mosquitto-path p50 / p99 at {LAT_RATE}/s (ms)", mos["latency"]["p50_ms"], "{:.3f}",
              f"p99 {mos['latency']['p99_ms']:.3f}", None)
    if paho:
        check("paho QoS 1 pair msg/s", paho["throughput"]["msg_per_s"], "{:.0f}", "(info)", None)
        check(f"paho p50 / p99 at {LAT_RATE}/s (ms)", paho["latency"]["p50_ms"], "{:.3f}",
              f"p99 {paho['latency']['p99_ms']:.3f}", None)
    for name, r in results.items():
        lost = r["throughput"]["lost"] + r["latency"]["lost"]
        check(f"{name} messages lost", lost, "{:d}", "== 0", lost == 0)
    for name, r in results.items():
        if "peak_rss_kb" in r:
            check(f"{name} sidecar peak RSS (MB)", r["peak_rss_kb"] / 1024, "{:.1f}", "(info)", None)
    b.print_summary(checks)
    return checks


# ----------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    global LOAD_CONNS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds of closed-loop publishing per run (default 5)")
    p.add_argument("--json", metavar="FILE", default=None, help="write every number to FILE as JSON")
    p.add_argument("--conns", type=int, default=LOAD_CONNS,
                   help=f"closed-loop connections of the throughput phase (default {LOAD_CONNS})")
    p.add_argument("--runs", default="embedded,mosquitto,paho", help="comma-separated subset of embedded,mosquitto,paho")
    p.add_argument("--no-pyc", action="store_true",
                   help="children inherit the environment's bytecode settings (default: bytecode cached in a temp dir)")
    p.add_argument("--serve-app", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--loadgen", nargs=2, default=None, help=argparse.SUPPRESS)
    p.add_argument("--paho-sub", nargs=2, default=None, help=argparse.SUPPRESS)
    p.add_argument("--paho-pub", nargs=4, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    LOAD_CONNS = args.conns

    if args.serve_app is not None:
        serve_app(args.serve_app)
        return 0
    if args.loadgen is not None:
        port, mode = args.loadgen
        if mode == "closed":
            loadgen(int(port), mode, args.duration, WARMUP_SECONDS)
        else:
            loadgen(int(port), mode, LAT_SECONDS, LAT_WARMUP)
        return 0
    if args.paho_sub is not None:
        paho_sub(int(args.paho_sub[0]), args.paho_sub[1])
        return 0
    if args.paho_pub is not None:
        port, topic, mode, size = args.paho_pub
        if mode == "closed":
            paho_pub(int(port), topic, mode, int(size), args.duration, WARMUP_SECONDS)
        else:
            paho_pub(int(port), topic, mode, int(size), LAT_SECONDS, LAT_WARMUP)
        return 0

    runs = [x.strip() for x in args.runs.split(",") if x.strip()]
    cmdline = shlex.join([sys.executable, *sys.argv])
    print(f"command: {cmdline}")
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if ("mosquitto" in runs or "paho" in runs) and not Path(mosquitto).exists():
        print("mosquitto is not installed", file=sys.stderr)
        return 1
    mversion = subprocess.run([mosquitto, "-h"], capture_output=True, text=True).stdout.splitlines()[:1]
    import paho.mqtt

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpu(s), {mversion[0] if mversion else 'mosquitto'}, "
          f"paho-mqtt {paho.mqtt.__version__}")
    print(f"loadavg at start: {Path('/proc/loadavg').read_text().strip()}")
    print(f"load: asyncio+uvloop client process, throughput {LOAD_CONNS} keep-alive connections closed loop "
          f"({WARMUP_SECONDS:g}s warm-up + {args.duration:g}s), latency {LAT_RATE} msg/s over {LAT_CONNS} connections "
          f"({LAT_WARMUP:g}s warm-up + {LAT_SECONDS:g}s)")

    tmp = Path(tempfile.mkdtemp(prefix="pillion-bench-pubsub-"))
    env = b.child_env(tmp, pyc=not args.no_pyc)
    loaded = subprocess.run(
        [sys.executable, "-c", "import pillion, pillion.server.protocol, pillion._impl as i;"
         "print(pillion.__file__, sorted(i.loaded().items()))"],
        capture_output=True, text=True, env=env,
    ).stdout.strip()
    print(f"pillion under test: {loaded}")
    if "'pure'" in loaded:
        print("WARNING: pure-Python twins loaded; build the extensions (make compile, or pip install .)")
    print(flush=True)

    children: list[b.Child] = []

    def spawn(name: str, cmd: list[str]) -> b.Child:
        c = b.Child(name, cmd, tmp, env)
        children.append(c)
        return c

    results: dict = {}
    try:
        if "embedded" in runs:
            results["embedded"] = sidecar_run("embedded", tmp, env, spawn, args.duration, None, None)
        if "mosquitto" in runs or "paho" in runs:
            mport = b.free_port()
            conf = tmp / "mosquitto.conf"
            conf.write_text(MOSQUITTO_CONF.format(port=mport))
            mq = spawn("mosquitto", [mosquitto, "-c", str(conf)])
            wait_port(mq, mport)
            print(f"mosquitto: pid {mq.pid}, port {mport}", flush=True)
            if "mosquitto" in runs:
                results["mosquitto"] = sidecar_run("mosquitto", tmp, env, spawn, args.duration,
                                                   f"tcp://127.0.0.1:{mport}", mq.pid)
            if "paho" in runs:
                size = int(next(iter(results.values()))["throughput"]["avg_bytes"]) if results else 300
                results["paho"] = paho_run(mport, mq.pid, env, args.duration, size)
            results["mosquitto_peak_rss_kb"] = b.proc_status_kb(mq.pid, "VmHWM")
            mq.stop()
        mq_rss = results.pop("mosquitto_peak_rss_kb", None)
        checks = report(results)
        if mq_rss:
            print(f"mosquitto peak RSS {mq_rss / 1024:.1f} MB")
    except Exception as exc:  # noqa: BLE001 - report and exit 1: something failed to run
        print(f"bench failed: {type(exc).__name__}: {exc}\n(child logs kept in {tmp})", file=sys.stderr)
        return 1
    finally:
        for c in children:
            c.stop()

    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": cmdline, "duration": args.duration, "cpus": os.cpu_count(), "python": sys.version.split()[0],
            "pillion": loaded, "results": results, "checks": checks,
        }, indent=2))
        print(f"wrote {args.json}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
