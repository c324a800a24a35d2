#!/usr/bin/env python3
"""Issue 7 building blocks bench: locks, configuration and output bindings through a sidecar, against references.

One run, every figure next to a reference measured in the same run:

  lock        an asyncio (uvloop) client in a child process, --conns keep-alive connections, each
              doing try-lock then unlock of a new resource id (POST /v1.0-alpha1/lock|unlock/lockstore)
              against ``lock.lmdb`` (durability fsync); pairs/s, pair p50/p99, LMDB commits.
              Reference, right after (fsync time drifts on a shared disk): the same read-check-write
              pairs done directly with py-lmdb in this process, one after another (same open flags
              as the store: sync and metasync on; one write transaction per operation), on the same
              file system.
  config-get  wrk GET /v1.0/configuration/configstore?key=k  against  wrk GET /v1.0/state/statestore/k
              on the same sidecar (both one LMDB read of a ~100-byte value), taking turns: two
              rounds of --duration/2 each.
  updates     an app (a threaded HTTP server in this process) subscribed through a sidecar to every
              key of ``configuration.lmdb``; --updates writes from this process (an in-process
              LmdbConfigurationStore on the same path, as ``pillion config set`` does), a new key
              every 20 ms; commit -> app receipt p50/p90/p99/max, once with pollInterval 500ms and once
              with 50ms (one sidecar each). A new key per write, as coalescing would otherwise merge
              several writes of one key between two polls into one update.
  bindings    wrk POST /v1.0/bindings/files (``bindings.localstorage`` create, a 91-byte file, a
              new name per request) and POST /v1.0/bindings/mqttout (``bindings.mqtt3`` create:
              publish on the embedded broker, QoS 1, counted by a raw MQTT subscriber in a child
              process that acknowledges as fast as it reads),
              against wrk POST /v1.0/state/statestore (bench_state's durable save, a new key each)
              on the same sidecar; localstorage also against new files written directly by this
              process, one after another (same flags and bytes, no name checks, no HTTP), measured
              just before and just after the localstorage load (mean of the two).

plus the load sidecar's peak RSS (VmHWM) after each load and at the end.

Usage: python bench/bench_blocks.py [--quick] [--duration 8] [--warmup 2] [--conns 32] [--updates 200]
       [--json out.json] [--no-pyc]
(measures the pillion this interpreter imports; wrk is needed)
Targets are printed with PASS/MISS marks; the exit code is 0 unless something failed to run.
The script also runs its own children: ``--lock-client PORT`` and ``--mqtt-count PORT TOPIC FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_http as b  # noqa: E402
import bench_state as bs  # noqa: E402

APP_ID = "bench"
LOCK_STORE = "lockstore"
CONFIG_STORE = "configstore"
FILES = "files"
MQTT_OUT = "mqttout"
MQTT_TOPIC = "bench/binding"
LOCK_EXPIRY = 60
UPDATE_SPACING = 0.020  # seconds between configuration writes
UPDATE_KEY = "u{:05d}"

RESOURCES = {
    "statestore.yaml": f"""\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {bs.STORE}
spec:
  type: state.lmdb
  version: v1
  metadata:
  - name: path
    value: "{{data}}/state"
  - name: durability
    value: fsync
""",
    "lockstore.yaml": f"""\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {LOCK_STORE}
spec:
  type: lock.lmdb
  version: v1
  metadata:
  - name: path
    value: "{{data}}/locks"
""",
    "configstore.yaml": f"""\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {CONFIG_STORE}
spec:
  type: configuration.lmdb
  version: v1
  metadata:
  - name: path
    value: "{{data}}/configuration"
  - name: pollInterval
    value: "{{poll}}"
""",
    "files.yaml": f"""\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {FILES}
spec:
  type: bindings.localstorage
  version: v1
  metadata:
  - name: rootPath
    value: "{{data}}/files"
""",
    "mqttout.yaml": f"""\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {MQTT_OUT}
spec:
  type: bindings.mqtt3
  version: v1
  metadata:
  - name: topic
    value: "{MQTT_TOPIC}"
""",
}

BINDING_BODY = json.dumps({"operation": "create", "data": bs.GET_VALUE}, separators=(",", ":"))
BINDING_DATA = json.dumps(bs.GET_VALUE, separators=(",", ":")).encode()  # what the binding writes
BINDING_LUA = """\
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


def _pct(values: list[float], f: float) -> float:
    return values[min(len(values) - 1, int(f * len(values)))] if values else float("nan")


def _lat_ms(values: list[float]) -> dict:
    values = sorted(values)
    return {"n": len(values), "p50_ms": _pct(values, 0.50) * 1e3, "p90_ms": _pct(values, 0.90) * 1e3,
            "p99_ms": _pct(values, 0.99) * 1e3,
            "max_ms": values[-1] * 1e3 if values else float("nan")}


# ----------------------------------------------------------------------------------------
# child: lock + unlock pairs (--lock-client PORT)
# ----------------------------------------------------------------------------------------


def lock_client(port: int, conns: int, seconds: float, warmup: float) -> None:
    """``conns`` keep-alive connections, each: try-lock a new id, then unlock it, in a closed loop.

    A pair counts when it completes inside the measured window (after ``warmup``); latency is
    from writing the lock request to the end of the unlock response. A lock that does not
    answer ``"success":true`` or an unlock that does not answer ``"status":0`` is a failure.
    """
    import re

    import uvloop

    clen = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.I)
    clock = time.perf_counter

    def request(path: str, body: bytes) -> bytes:
        return (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body))

    lock_path = f"/v1.0-alpha1/lock/{LOCK_STORE}"
    unlock_path = f"/v1.0-alpha1/unlock/{LOCK_STORE}"

    class Conn(asyncio.Protocol):
        def __init__(self):
            self.buf = b""
            self.waiter = None
            self.transport = None

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            m = clen.search(self.buf, 0, end + 2)
            size = int(m.group(1)) if m else 0
            if len(self.buf) < end + 4 + size:
                return
            answer = (self.buf[9:12], self.buf[end + 4:end + 4 + size])
            self.buf = self.buf[end + 4 + size:]
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(answer)

        def connection_lost(self, exc):
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(ConnectionError("connection lost"))

        async def call(self, data: bytes):
            self.waiter = asyncio.get_running_loop().create_future()
            self.transport.write(data)
            return await self.waiter

    st = {"pairs_all": 0, "failures": 0, "sample": ""}
    pairs: list[float] = []
    locks: list[float] = []
    unlocks: list[float] = []

    async def worker(conn: Conn, index: int, warm_end: float, end: float):
        n = 0
        tag = f"{os.getpid()}-{index}"
        owner = f"owner-{index}".encode()
        while True:
            t0 = clock()
            if t0 >= end:
                return
            n += 1
            rid = f"r{tag}-{n}".encode()
            lock_body = b'{"resourceId":"%s","lockOwner":"%s","expiryInSeconds":%d}' % (rid, owner, LOCK_EXPIRY)
            status, body = await conn.call(request(lock_path, lock_body))
            t1 = clock()
            ok = status == b"200" and b'"success":true' in body
            unlock_body = b'{"resourceId":"%s","lockOwner":"%s"}' % (rid, owner)
            status2, body2 = await conn.call(request(unlock_path, unlock_body))
            t2 = clock()
            ok = ok and status2 == b"200" and b'"status":0' in body2
            st["pairs_all"] += 1
            if not ok:
                st["failures"] += 1
                st["sample"] = st["sample"] or f"lock {status!r} {body[:200]!r}; unlock {status2!r} {body2[:200]!r}"
            elif warm_end <= t2 <= end:
                pairs.append(t2 - t0)
                locks.append(t1 - t0)
                unlocks.append(t2 - t1)

    async def main():
        loop = asyncio.get_running_loop()
        cs = [(await loop.create_connection(Conn, "127.0.0.1", port))[1] for _ in range(conns)]
        t0 = clock()
        warm_end = t0 + warmup
        end = warm_end + seconds
        await asyncio.gather(*(worker(c, i, warm_end, end) for i, c in enumerate(cs)))
        for c in cs:
            c.transport.close()
        return clock() - t0

    wall = uvloop.run(main())
    print(json.dumps({**st, "pairs": len(pairs), "seconds": seconds, "wall_s": wall,
                      "pairs_per_s": len(pairs) / seconds, "pair": _lat_ms(pairs), "lock": _lat_ms(locks),
                      "unlock": _lat_ms(unlocks)}))


# ----------------------------------------------------------------------------------------
# child: a raw MQTT 3.1.1 QoS 1 subscriber that counts (--mqtt-count PORT TOPIC FILE)
# ----------------------------------------------------------------------------------------


def _varlen(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (128 if n else 0))
        if not n:
            return bytes(out)


def _mqtt_str(text: bytes) -> bytes:
    return len(text).to_bytes(2, "big") + text


def mqtt_count(port: int, topic: str, path: Path) -> None:
    """Subscribes ``topic`` at QoS 1 (MQTT 5, clean start, no keep-alive) and counts PUBLISHes.

    MQTT 5 so that it can announce a receive maximum of 65535: a 3.1.1 client gets the
    broker's window of 20 unacknowledged messages, and on 2 busy cores the PUBACK round
    trips then set the pace (the broker's queue fills and the binding's publishes are
    refused). Every PUBLISH of one read is acknowledged in one write. The count goes to
    ``path`` (written whole, then renamed) every 20 ms when it moved; the file appears
    once the SUBACK is in.
    """
    import signal

    import uvloop

    st = {"count": 0}
    tmp = path.with_suffix(".tmp")

    def publish_count() -> None:
        tmp.write_text(str(st["count"]))
        os.replace(tmp, path)

    class Sub(asyncio.Protocol):
        def __init__(self, subscribed: asyncio.Future):
            self.buf = b""
            self.subscribed = subscribed
            self.transport = None

        def connection_made(self, transport):
            self.transport = transport
            # level 5, clean start, keep-alive 0, properties: receive maximum (0x21) 65535
            body = b"\x00\x04MQTT\x05\x02\x00\x00\x03\x21\xff\xff" + _mqtt_str(b"bench-blocks-count-%d" % os.getpid())
            self.transport.write(b"\x10" + _varlen(len(body)) + body)
            # packet id 1, no properties, the filter, options: QoS 1
            body = b"\x00\x01\x00" + _mqtt_str(topic.encode()) + b"\x01"
            self.transport.write(b"\x82" + _varlen(len(body)) + body)

        def data_received(self, data):
            buf = self.buf + data
            i, size, acks = 0, len(buf), []
            while i + 2 <= size:
                length, mult, j = 0, 1, i + 1
                while j < size:
                    byte = buf[j]
                    length += (byte & 127) * mult
                    mult *= 128
                    j += 1
                    if byte < 128:
                        break
                else:
                    break
                if j + length > size:
                    break
                kind = buf[i] >> 4
                if kind == 3:  # PUBLISH
                    st["count"] += 1
                    if buf[i] & 0x06:  # QoS 1: PUBACK with its packet id (after the topic), success
                        tlen = int.from_bytes(buf[j:j + 2], "big")
                        acks.append(b"\x40\x02" + buf[j + 2 + tlen:j + 4 + tlen])
                elif kind == 9 and not self.subscribed.done():  # SUBACK
                    self.subscribed.set_result(None)
                i = j + length
            self.buf = buf[i:]
            if acks:
                self.transport.write(b"".join(acks))

        def connection_lost(self, exc):
            if not self.subscribed.done():
                self.subscribed.set_exception(ConnectionError("broker closed the connection"))

    async def main():
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        subscribed = loop.create_future()
        transport, _ = await loop.create_connection(lambda: Sub(subscribed), "127.0.0.1", port)
        await asyncio.wait_for(subscribed, 10)
        publish_count()
        written = 0
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 0.02)
            except asyncio.TimeoutError:
                pass
            if st["count"] != written:
                written = st["count"]
                publish_count()
        transport.close()

    uvloop.run(main())


# ----------------------------------------------------------------------------------------
# references and helpers run in this process
# ----------------------------------------------------------------------------------------


def lock_reference(path: Path, seconds: float) -> dict:
    """py-lmdb try-lock + unlock pairs, one synced write transaction per operation, in this process.

    Opened as ``state/writer.py`` opens the lock store's environment (sync and metasync on:
    durability fsync); records in the store's format, the same checks (holder alive? owner?).
    """
    import lmdb

    from pillion.components.state import records

    path.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(path), map_size=16 << 20, subdir=True, sync=True, metasync=True, max_dbs=2,
                    readahead=False, lock=True)
    db = env.open_db(b"state")
    owner = b"owner-ref"
    lats: list[float] = []
    failures = 0
    n = 0
    clock = time.perf_counter
    start = clock()
    while clock() - start < seconds:
        n += 1
        key = b"lock||bench||ref-%d" % n
        t0 = clock()
        now = time.time()
        with env.begin(write=True, db=db) as txn:  # try-lock: read, check, write, commit
            raw = txn.get(key)
            free = raw is None or not records.is_live(records.unpack(raw)[1], now)
            if free:
                txn.put(key, records.pack(n, now + LOCK_EXPIRY, None, owner))
        with env.begin(write=True, db=db) as txn:  # unlock: read, check owner, delete, commit
            raw = txn.get(key)
            mine = raw is not None and records.unpack(raw)[3] == owner
            if mine:
                txn.delete(key)
        lats.append(clock() - t0)
        failures += not (free and mine)
    wall = clock() - start
    env.close()
    return {"pairs": n, "seconds": wall, "pairs_per_s": n / wall, "failures": failures, "pair": _lat_ms(lats)}


def file_create_reference(root: Path, seconds: float) -> dict:
    """New small files in one directory, written directly by this process, one after another.

    As the binding's create does it (a new name, ``O_CREAT | O_TRUNC | O_NOFOLLOW``, one
    write, close; no fsync), without the name checks, the thread hop and HTTP.
    """
    import uuid

    root.mkdir(parents=True, exist_ok=True)
    data = BINDING_DATA
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    n = 0
    clock = time.perf_counter
    cpu0 = time.process_time()
    start = clock()
    while clock() - start < seconds:
        fd = os.open(os.path.join(root, str(uuid.uuid4())), flags, 0o666)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        n += 1
    wall = clock() - start
    return {"files": n, "seconds": wall, "per_s": n / wall, "cpu_us": (time.process_time() - cpu0) / n * 1e6}


class WrkScript:
    """Patches bench_http's wrk command to add ``-s script`` (a fixed POST body) while in use."""

    def __init__(self, tmp: Path, name: str, lua: str):
        self.script = tmp / f"{name}.lua"
        self.script.write_text(lua)
        self.orig = b.wrk_command

    def command(self, url: str, duration: float) -> list[str]:
        cmd = self.orig(url, duration)
        return [*cmd[:-1], "-s", str(self.script), cmd[-1]]

    def __enter__(self):
        b.wrk_command = self.command
        return self

    def __exit__(self, *exc):
        b.wrk_command = self.orig


class MqttCounter:
    """Counts what the binding publishes: bench_blocks.py --mqtt-count in a child process.

    A paho (MQTT 3.1.1) subscriber in a thread of this process could not keep up with the
    binding on 2 shared cores: the broker's queue for it filled and publishes were refused
    (500, "a subscriber's queue is full"), which measures the subscriber, not the binding.
    This one asks for a large in-flight window and acknowledges each read in one write.
    """

    def __init__(self, spawn, port: int, topic: str, path: Path):
        self.path = path
        self.child = spawn("mqtt-count", [sys.executable, str(Path(__file__).resolve()), "--mqtt-count", str(port),
                                          topic, str(path)])
        deadline = time.perf_counter() + 10
        while not path.exists():
            if not self.child.alive() or time.perf_counter() > deadline:
                raise RuntimeError(f"mqtt subscriber not subscribed on port {port}:\n{self.child.output()}")
            time.sleep(0.01)

    @property
    def count(self) -> int:
        return int(self.path.read_text() or 0)

    def settle(self, quiet: float = 0.5, timeout: float = 20.0) -> int:
        """The count once it has not moved for ``quiet`` seconds (the broker's queue drained)."""
        deadline = time.perf_counter() + timeout
        last, since = self.count, time.perf_counter()
        while time.perf_counter() < deadline:
            time.sleep(0.05)
            now = self.count
            if now != last:
                last, since = now, time.perf_counter()
            elif time.perf_counter() - since >= quiet:
                break
        return last

    def close(self) -> None:
        self.child.stop()


class UpdateApp:
    """The subscribed app: a threaded HTTP server that records when each configuration POST arrives."""

    def __init__(self):
        self.received: list[tuple[float, str, bytes]] = []
        lock = threading.Lock()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):
                pass

            def do_POST(self):
                now = time.perf_counter()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith(f"/configuration/{CONFIG_STORE}/"):
                    with lock:
                        received.append((now, self.path.rsplit("/", 1)[1], body))
                    self._reply(200)
                else:
                    self._reply(404)

            def do_GET(self):
                self._reply(404)

            do_OPTIONS = do_GET

            def _reply(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="update-app", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def config_component(path: Path):
    """The writer's own component on the sidecar's path (no subscriptions, so no pollInterval)."""
    from pillion.config.manifests import Component, MetadataItem, Source

    return Component(name=CONFIG_STORE, namespace=None, type="configuration.lmdb", version="v1",
                     metadata=(MetadataItem("path", str(path)),), scopes=(), init_timeout="", ignore_errors=False,
                     auth_secret_store=None, source=Source("bench_blocks.py", 0))


def config_set(path: Path, data_dir: Path, items: dict[str, str]) -> None:
    """What ``pillion config set k=v`` does: one write through an in-process store on ``path``."""
    from pillion.components.configuration.lmdb import LmdbConfigurationStore
    from pillion.components.registry import Context

    async def go():
        store = LmdbConfigurationStore(config_component(path), Context(APP_ID, str(data_dir)))
        try:
            await store.set({k: (v, {}) for k, v in items.items()})
        finally:
            await store.close()

    asyncio.run(go())


def write_updates(path: Path, data_dir: Path, app: UpdateApp, n: int, interval: float) -> dict:
    """``n`` writes, a new key every UPDATE_SPACING s; waits for every key to reach the app."""
    from pillion.components.configuration.lmdb import LmdbConfigurationStore
    from pillion.components.registry import Context

    clock = time.perf_counter
    committed: dict[str, float] = {}
    write_ms: list[float] = []

    async def go():
        store = LmdbConfigurationStore(config_component(path), Context(APP_ID, str(data_dir)))
        try:
            t0 = clock() + 0.05
            for i in range(n):
                delay = t0 + i * UPDATE_SPACING - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                key = UPDATE_KEY.format(i)
                start = clock()
                await store.set({key: (str(i), {})})
                committed[key] = clock()
                write_ms.append((committed[key] - start) * 1e3)
        finally:
            await store.close()
        deadline = clock() + interval + 5.0
        while clock() < deadline and len({k for _, k, _ in list(app.received)}) < n:
            await asyncio.sleep(0.02)

    asyncio.run(go())
    first: dict[str, float] = {}
    for t, key, _ in list(app.received):
        first.setdefault(key, t)
    lats = [first[k] - t for k, t in committed.items() if k in first]
    bodies = {body for _, _, body in app.received}
    return {"written": n, "delivered": len(lats), "posts": len(app.received), "updates": len(bodies),
            "keys_per_update": len(lats) / max(1, len(bodies)), **_lat_ms(lats),
            "write_p50_ms": statistics.median(write_ms)}


def write_resources(root: Path, data: Path, poll: str, names: tuple[str, ...]) -> Path:
    root.mkdir(parents=True)
    for name in names:
        (root / name).write_text(RESOURCES[name].format(data=data, poll=poll))
    return root


def alternate(urls: dict[str, str], pid: int, duration: float, warmup: float, rounds: int = 2) -> dict:
    """Each load ``rounds`` times, taking turns, ``duration / rounds`` s each: a burst of noise
    from other work on the machine then lands on both sides of a ratio, not on one.

    Per load: req/s, CPU/request and latencies are the means of its rounds, requests the sum.
    """
    runs: dict[str, list[dict]] = {name: [] for name in urls}
    for i in range(rounds):
        for name, url in urls.items():
            runs[name].append(b.load(name, url, {"sidecar": pid}, duration / rounds, warmup if i == 0 else 0))
    out = {}
    for name, rs in runs.items():
        mean = {k: statistics.fmean(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms", "cpu_us")}
        out[name] = {**rs[-1], **mean, "requests": sum(r["requests"] for r in rs),
                     "non_2xx": sum(r["non_2xx"] for r in rs),
                     "socket_errors": "; ".join(r["socket_errors"] for r in rs if r["socket_errors"]),
                     "rounds": [{k: r[k] for k in ("rps", "p50_ms", "p99_ms", "cpu_us", "requests")} for r in rs]}
        out[name].pop("raw_output", None)
    return out


def binding_load(name: str, port: int, binding: str, pid: int, tmp: Path, duration: float, warmup: float) -> dict:
    lua = BINDING_LUA.format(body=BINDING_BODY)
    with WrkScript(tmp, name, lua):
        return b.load(name, f"http://127.0.0.1:{port}/v1.0/bindings/{binding}", {"sidecar": pid}, duration, warmup)


# ----------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------


def report(rows: dict, lock: dict, refs: dict, updates: dict, extra: dict) -> list[dict]:
    ref, fref = refs["lock"], refs["files"]
    print()
    print(f"{'target':<16}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'cpu us/req':>12}  notes")
    print("-" * 78)
    notes = {"state-get": "GET state, ~100 B", "config-get": "GET configuration ?key=k",
             "state-save": f"durable, {rows['state-save'].get('keys_per_commit', 0):.1f} keys/commit",
             "localstorage": "binding create, a new file each", "mqtt3": "binding create, QoS 1, embedded broker"}
    for key, note in notes.items():
        r = rows[key]
        print(f"{key:<16}{r['rps']:>10.0f}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}{r['cpu_us']:>12.1f}  {note}")
    print(f"{'files-ref':<16}{fref['per_s']:>10.0f}{'-':>9}{'-':>9}{fref['cpu_us']:>12.1f}  "
          "new files written directly, sequential")
    print()
    print(f"{'lock + unlock pairs':<28}{'pairs/s':>9}{'p50 ms':>9}{'p99 ms':>9}  notes")
    print("-" * 78)
    print(f"{'sidecar (' + str(extra['conns']) + ' conns)':<28}{lock['pairs_per_s']:>9.0f}"
          f"{lock['pair']['p50_ms']:>9.3f}{lock['pair']['p99_ms']:>9.3f}  {lock['ops_per_commit']:.1f} ops/commit, "
          f"cpu {lock['cpu_us_per_pair']:.0f} us/pair")
    print(f"{'py-lmdb, 1 synced txn / op':<28}{ref['pairs_per_s']:>9.0f}{ref['pair']['p50_ms']:>9.3f}"
          f"{ref['pair']['p99_ms']:>9.3f}  sequential, this process")
    print()
    print(f"{'config updates':<20}{'delivered':>10}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'max ms':>8}"
          "  keys/update, write p50")
    print("-" * 78)
    for label, u in updates.items():
        print(f"{'pollInterval ' + label:<20}{str(u['delivered']) + '/' + str(u['written']):>10}{u['p50_ms']:>8.1f}"
              f"{u['p90_ms']:>8.1f}{u['p99_ms']:>8.1f}{u['max_ms']:>8.1f}  {u['keys_per_update']:.1f}, "
              f"{u['write_p50_ms']:.2f} ms")
    print()

    checks = b.Checks(46, 16)
    check = checks.add
    r = lock["pairs_per_s"] / ref["pairs_per_s"]
    check("lock pairs/s / py-lmdb synced pairs/s", r, "{:.2f}x", ">= 2.00x", r >= 2.0)
    check("  (lock pair p50 ms)", lock["pair"]["p50_ms"], "{:.2f}", "(info)", None)
    check("  (lock pair p99 ms)", lock["pair"]["p99_ms"], "{:.2f}", "(info)", None)
    check("lock failures (not success / status 0)", lock["failures"], "{:d}", "== 0", lock["failures"] == 0)
    r = rows["config-get"]["rps"] / rows["state-get"]["rps"]
    check("config get / state get req/s", r, "{:.2f}x", ">= 0.80x", r >= 0.80)
    r = rows["config-get"]["cpu_us"] / rows["state-get"]["cpu_us"]
    check("  (config get / state get cpu/req)", r, "{:.2f}x", "(info)", None)
    for label, u in updates.items():
        interval = u["interval_s"] * 1e3
        check(f"updates {label}: delivered / written", u["delivered"] / u["written"], "{:.3f}", "== 1",
              u["delivered"] == u["written"])
        # ~ interval/2 (a write waits for the next poll), give or take 20% of the interval + 5 ms
        lo, hi = 0.3 * interval - 5, 0.7 * interval + 5
        check(f"updates {label}: p50 (ms)", u["p50_ms"], "{:.1f}", f"{lo:.0f}..{hi:.0f} ms", lo <= u["p50_ms"] <= hi)
        limit = interval + max(25.0, 0.1 * interval)
        check(f"updates {label}: p90 (ms)", u["p90_ms"], "{:.1f}", f"<= {limit:.0f} ms", u["p90_ms"] <= limit)
        check(f"  (updates {label}: p99 / max ms)", u["p99_ms"], "{:.1f}", f"max {u['max_ms']:.1f}", None)
    save = rows["state-save"]["rps"]
    # No target: on a shared disk the direct-create reference moved 10x between its two runs.
    check("localstorage create / state save req/s", rows["localstorage"]["rps"] / save, "{:.2f}x", "(info)", None)
    r = rows["localstorage"]["rps"] / fref["per_s"]
    check("localstorage create / direct file creates", r, "{:.2f}x", "(info)", None)
    r = rows["mqtt3"]["rps"] / save
    check("mqtt3 create / state save req/s", r, "{:.2f}x", ">= 1.00x", r >= 1.0)
    m = rows["mqtt3"]
    check("mqtt3 received / 2xx answers", m["received"] / max(1, m["requests"] - m["non_2xx"]), "{:.3f}", ">= 1",
          m["received"] >= m["requests"] - m["non_2xx"])
    for key in ("state-get", "config-get", "state-save", "localstorage", "mqtt3"):
        r = rows[key]
        bad = r["non_2xx"]
        check(f"{key} non-2xx answers", bad, "{:d}", "== 0", bad == 0 and not r["socket_errors"],
              "" if not r["socket_errors"] else f"socket errors: {r['socket_errors']}")
    check("sidecar peak RSS after all loads (MB)", extra["peak_rss_kb"] / 1024, "{:.1f}", "(info)", None)
    for label, u in updates.items():
        check(f"  (updates {label} sidecar peak RSS MB)", u["peak_rss_kb"] / 1024, "{:.1f}", "(info)", None)
    b.print_summary(checks)
    return checks


# ----------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="2 s of load + 0.5 s warm-up per load, 100 updates (under a minute)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds of measured load per target (default 8)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up load per target (default 2)")
    p.add_argument("--conns", type=int, default=32, help="connections of the lock client (default 32)")
    p.add_argument("--updates", type=int, default=200, help="configuration writes per pollInterval (default 200)")
    p.add_argument("--json", metavar="FILE", default=None, help="write every number to FILE as JSON")
    p.add_argument("--no-pyc", action="store_true",
                   help="children inherit the environment's bytecode settings (default: bytecode cached in a temp dir)")
    p.add_argument("--lock-client", type=int, metavar="PORT", default=None, help=argparse.SUPPRESS)
    p.add_argument("--mqtt-count", nargs=3, metavar=("PORT", "TOPIC", "FILE"), default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.updates = 2.0, 0.5, 100

    if args.lock_client is not None:
        lock_client(args.lock_client, args.conns, args.duration, args.warmup)
        return 0
    if args.mqtt_count is not None:
        mqtt_count(int(args.mqtt_count[0]), args.mqtt_count[1], Path(args.mqtt_count[2]))
        return 0

    t_start = time.perf_counter()
    cmdline = shlex.join([sys.executable, *sys.argv])
    print(f"command: {cmdline}")
    if shutil.which("wrk") is None:
        print("wrk is not installed", file=sys.stderr)
        return 1
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[:1]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpu(s), {wrk_version[0] if wrk_version else 'wrk'}; "
          f"{args.warmup:g}s warm-up + {args.duration:g}s per load")
    print(f"loadavg at start: {Path('/proc/loadavg').read_text().strip()}")
    print(f"load: {shlex.join(b.wrk_command('http://127.0.0.1:PORT/PATH', args.duration))} "
          f"(POSTs add -s <lua>); lock: asyncio client, {args.conns} connections, closed loop")

    tmp = Path(tempfile.mkdtemp(prefix="pillion-bench-blocks-"))
    env = b.child_env(tmp, pyc=not args.no_pyc)
    data = tmp / "data"
    data.mkdir(parents=True)
    loaded = subprocess.run(
        [sys.executable, "-c", "import pillion, pillion.server.protocol, pillion._impl as i;"
         "print(pillion.__file__, sorted(i.loaded().items()))"],
        capture_output=True, text=True, env=env,
    ).stdout.strip()
    print(f"pillion under test: {loaded}")
    if "'pure'" in loaded:
        print("WARNING: pure-Python twins loaded; build the extensions (make compile, or pip install .)")
    print(f"data dir: {data} on {bs.mount_of(data)}")
    print(flush=True)

    children: list[b.Child] = []

    def spawn(name: str, cmd: list[str]) -> b.Child:
        c = b.Child(name, cmd, tmp, env)
        children.append(c)
        return c

    rows: dict = {}
    lock: dict = {}
    refs: dict = {}
    updates: dict = {}
    extra: dict = {"conns": args.conns}
    counter: MqttCounter | None = None
    app: UpdateApp | None = None
    try:
        # -- the load sidecar: every component, no app ------------------------------------
        resources = write_resources(tmp / "resources", data, "500ms", tuple(RESOURCES))
        config_set(data / "configuration", data, {bs.GET_KEY: json.dumps(bs.GET_VALUE, separators=(",", ":"))})
        port, mqtt_port = b.free_port(), b.free_port()
        sc = spawn("sidecar", b.sidecar_args(APP_ID, port, "--resources-path", str(resources), "--data-dir",
                                             str(data), "--mqtt-port", str(mqtt_port), "--log-level", "warning"))
        b.wait_status(sc, port, "/v1.0/healthz", 204)
        body = json.dumps([{"key": bs.GET_KEY, "value": bs.GET_VALUE}], separators=(",", ":")).encode()
        status, answer = bs.http_call(port, "POST", f"/v1.0/state/{bs.STORE}", body)
        if status != 204:
            raise RuntimeError(f"saving {bs.GET_KEY!r} answered {status}: {answer!r}\n{sc.output()}")
        s_status, s_answer = bs.http_call(port, "GET", f"/v1.0/state/{bs.STORE}/{bs.GET_KEY}")
        c_status, c_answer = bs.http_call(port, "GET", f"/v1.0/configuration/{CONFIG_STORE}?key={bs.GET_KEY}")
        if s_status != 200 or c_status != 200:
            raise RuntimeError(f"GET state {s_status} {s_answer!r}, GET configuration {c_status} {c_answer!r}")
        extra["hwm_after"] = {"start": b.proc_status_kb(sc.pid, "VmHWM")}

        def hwm(phase: str) -> None:
            extra["hwm_after"][phase] = b.proc_status_kb(sc.pid, "VmHWM")

        print(f"sidecar pid {sc.pid} (http {port}, mqtt {mqtt_port}); state GET answers {len(s_answer)} bytes, "
              f"configuration GET {len(c_answer)} bytes", flush=True)

        # 1. configuration get against state get, alternated
        rows.update(alternate({
            "state-get": f"http://127.0.0.1:{port}/v1.0/state/{bs.STORE}/{bs.GET_KEY}",
            "config-get": f"http://127.0.0.1:{port}/v1.0/configuration/{CONFIG_STORE}?key={bs.GET_KEY}",
        }, sc.pid, args.duration, args.warmup))
        hwm("gets")

        # 2. lock + unlock pairs
        lock_path = data / "locks"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--lock-client", str(port), "--conns", str(args.conns),
               "--duration", str(args.duration), "--warmup", str(args.warmup)]
        txn0, cpu0 = bs.last_txnid(lock_path, env), b.cpu_ticks(sc.pid)
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.duration + args.warmup + 120)
        txn1, cpu1 = bs.last_txnid(lock_path, env), b.cpu_ticks(sc.pid)
        if out.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
        lock = json.loads(out.stdout.strip().splitlines()[-1])
        lock["commits"] = txn1 - txn0
        lock["ops_per_commit"] = 2 * lock["pairs_all"] / max(1, txn1 - txn0)
        lock["cpu_us_per_pair"] = (cpu1 - cpu0) / b.CLK_TCK * 1e6 / max(1, lock["pairs_all"])
        hwm("lock")
        print(f"  {'lock':<9} {lock['pairs_per_s']:>10.0f} pairs/s  p50 {lock['pair']['p50_ms']:.3f} ms  "
              f"p99 {lock['pair']['p99_ms']:.3f} ms  cpu {lock['cpu_us_per_pair']:.1f} us/pair  "
              f"({lock['commits']} commits, {lock['ops_per_commit']:.1f} ops/commit, failures {lock['failures']})",
              flush=True)
        if lock["failures"]:
            print(f"  ! lock: {lock['failures']} failed pair(s), e.g. {lock['sample']}", flush=True)
        # its reference right after, in this process while the sidecar idles (fsync time drifts)
        refs["lock"] = ref = lock_reference(tmp / "lmdb-ref", max(1.0, args.duration / 4))
        print(f"  {'lmdb-ref':<9} {ref['pairs_per_s']:>10.0f} pairs/s  p50 {ref['pair']['p50_ms']:.3f} ms  "
              f"p99 {ref['pair']['p99_ms']:.3f} ms  ({ref['pairs']} pairs in {ref['seconds']:.1f} s, "
              f"failures {ref['failures']})", flush=True)

        # 3. output bindings against state save
        rows["state-save"] = bs.load_post(f"http://127.0.0.1:{port}/v1.0/state/{bs.STORE}", sc.pid, tmp, env,
                                          data / "state", args.duration, args.warmup)
        rows["state-save"]["name"] = "state-save"
        hwm("state-save")
        # localstorage between two runs of its reference: the disk's pace drifts with other work
        fref = [file_create_reference(tmp / "files-ref", max(1.0, args.duration / 4))]
        rows["localstorage"] = binding_load("localstorage", port, FILES, sc.pid, tmp, args.duration, args.warmup)
        hwm("localstorage")
        fref.append(file_create_reference(tmp / "files-ref", max(1.0, args.duration / 4)))
        refs["files"] = {"runs": fref, "per_s": statistics.fmean(r["per_s"] for r in fref),
                         "cpu_us": statistics.fmean(r["cpu_us"] for r in fref)}
        print(f"  {'files-ref':<9} {refs['files']['per_s']:>10.0f} files/s  cpu {refs['files']['cpu_us']:.1f} us/file  "
              f"(before {fref[0]['per_s']:.0f}/s, after {fref[1]['per_s']:.0f}/s)", flush=True)
        files = sum(1 for _ in (data / "files").iterdir())
        print(f"  ({files} files under {data / 'files'})", flush=True)
        counter = MqttCounter(spawn, mqtt_port, MQTT_TOPIC, tmp / "mqtt-count")
        lua = BINDING_LUA.format(body=BINDING_BODY)
        with WrkScript(tmp, "mqtt3", lua):
            url = f"http://127.0.0.1:{port}/v1.0/bindings/{MQTT_OUT}"
            if args.warmup > 0:
                b.run_wrk(url, args.warmup)
            before = counter.settle()
            res = b.load("mqtt3", url, {"sidecar": sc.pid}, args.duration, 0)
            res["received"] = counter.settle() - before
        rows["mqtt3"] = res
        hwm("mqtt3")
        print(f"  (mqtt3: {res['received']} messages received for {res['requests']} answers)", flush=True)
        counter.close()
        counter = None
        # VmHWM is refreshed lazily by the kernel and can read lower later: keep the highest seen
        extra["peak_rss_kb"] = max(b.proc_status_kb(sc.pid, "VmHWM"), *extra["hwm_after"].values())
        print("  sidecar VmHWM after each load (MB): " + ", ".join(
            f"{k} {v / 1024:.1f}" for k, v in extra["hwm_after"].items()), flush=True)
        sc.stop()

        # 4. configuration updates, one sidecar per pollInterval
        app = UpdateApp()
        for label, interval in (("500ms", 0.5), ("50ms", 0.05)):
            udata = tmp / f"updates-{label}"
            ures = write_resources(tmp / f"resources-{label}", udata, label, ("configstore.yaml",))
            uport = b.free_port()
            usc = spawn(f"sidecar-{label}", b.sidecar_args(APP_ID, uport, "--app-port", str(app.port),
                                                           "--resources-path", str(ures), "--data-dir", str(udata),
                                                           "--mqtt-port", str(b.free_port()), "--log-level", "warning"))
            b.wait_status(usc, uport, "/v1.0/healthz", 204)
            status, answer = bs.http_call(uport, "GET", f"/v1.0/configuration/{CONFIG_STORE}/subscribe")
            if status != 200 or b'"id"' not in answer:
                raise RuntimeError(f"subscribe answered {status}: {answer!r}\n{usc.output()}")
            app.received.clear()
            u = write_updates(udata / "configuration", udata, app, args.updates, interval)
            u["interval_s"] = interval
            u["peak_rss_kb"] = b.proc_status_kb(usc.pid, "VmHWM")
            updates[label] = u
            usc.stop()
            print(f"  {'upd ' + label:<9} {u['delivered']}/{u['written']} delivered  p50 {u['p50_ms']:.1f} ms  "
                  f"p99 {u['p99_ms']:.1f} ms  max {u['max_ms']:.1f} ms  ({u['updates']} updates, "
                  f"{u['keys_per_update']:.1f} keys each, {u['posts']} POSTs; write p50 {u['write_p50_ms']:.2f} ms)",
                  flush=True)

        checks = report(rows, lock, refs, updates, extra)
    except Exception as exc:  # noqa: BLE001 - report and exit 1: something failed to run
        print(f"bench failed: {type(exc).__name__}: {exc}\n(child logs kept in {tmp})", file=sys.stderr)
        return 1
    finally:
        if counter is not None:
            counter.close()
        if app is not None:
            app.close()
        for c in children:
            c.stop()

    if args.json:
        for r in rows.values():
            r.pop("raw_output", None)
        Path(args.json).write_text(json.dumps({
            "command": cmdline, "duration": args.duration, "warmup": args.warmup, "cpus": os.cpu_count(),
            "python": sys.version.split()[0], "pillion": loaded, "rows": rows, "lock": lock, "references": refs,
            "updates": updates, "extra": extra, "checks": checks,
        }, indent=2))
        print(f"wrote {args.json}")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"bench time {time.perf_counter() - t_start:.0f} s (with clean-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
