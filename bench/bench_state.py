#!/usr/bin/env python3
"""State API bench: GET / durable POST through a sidecar with a state.lmdb store, against references.

One run measures, each server in its own process and loaded from another:

  raw        bench_http's minimal uvloop + httptools server (204 + Date), the HTTP ceiling
  get        ``python -m pillion sidecar`` with a state.lmdb component (durability fsync),
             GET /v1.0/state/statestore/k (a saved ~100-byte JSON value)
  redis-get  redis-server (no persistence) GET of a 100-byte value, ``redis-benchmark -c 50``
  post       the same sidecar, POST /v1.0/state/statestore, one item per request, a new key each
             (a wrk lua script), every write acknowledged only after its fsync'd commit

references, measured in the same run on the same file system as the sidecar's data dir:

  lmdb 1 key / synced txn      py-lmdb in a child process, sync=True, one put per commit, ~2 s
  lmdb 1000 keys / synced txn  the same, 1,000 puts per commit
  redis SET appendfsync always redis-server --appendonly yes --appendfsync always, SET -c 50

and the latency the sidecar adds at a moderate fixed rate: an asyncio client in a child process
sends 1 request per ms over 10 keep-alive connections for 3 s, to the raw server and to the
sidecar GET; the p50 difference is the sidecar's share.

Usage: python bench/bench_state.py [--duration 10] [--warmup 2] [--json out.json] [--no-pyc]
Redis rows are skipped (with a note) when redis-server / redis-benchmark are not installed.
Targets are printed with PASS/MISS marks; the exit code is 0 unless something failed to run.
The script also runs its own children: ``--lmdb-ref DIR`` and ``--latency-client PORT PATH``.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import io
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_http as b  # noqa: E402

STORE = "statestore"
GET_KEY = "k"
GET_VALUE = {"device": "edge-gw-07", "temperature": 21.5, "humidity": 48, "tags": ["bench", "state"], "ok": True}
REDIS_CLIENTS = 50
LAT_RATE = 1000  # requests per second
LAT_CONNS = 10
LAT_SECONDS = 3.0
LAT_WARMUP = 0.5

COMPONENT = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {name}
spec:
  type: state.lmdb
  version: v1
  metadata:
  - name: path
    value: "{path}"
  - name: durability
    value: "fsync"
"""

POST_LUA = """\
-- one single-item save per request, a new key each: k<n>
local n = {offset}
request = function()
  n = n + 1
  local body = '[{{"key":"k' .. n .. '","value":{{"n":' .. n .. '}}}}]'
  return wrk.format("POST", nil, {{["Content-Type"] = "application/json"}}, body)
end
"""


# ----------------------------------------------------------------------------------------
# child: py-lmdb synced-write reference (--lmdb-ref DIR)
# ----------------------------------------------------------------------------------------


def lmdb_ref(path: str, seconds: float) -> None:
    import lmdb

    os.makedirs(path, exist_ok=True)
    env = lmdb.open(path, map_size=1 << 30, subdir=True, sync=True, metasync=True, max_dbs=2, lock=True)
    db = env.open_db(b"state")
    value = b'{"n":%d}'
    out = {}
    # (a) one key per synced write transaction
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        with env.begin(write=True, db=db) as txn:
            txn.put(b"a%d" % n, value % n)
        n += 1
    dt = time.perf_counter() - t0
    out["one_key_per_txn"] = {"txns": n, "seconds": dt, "writes_per_s": n / dt}
    # (b) 1,000 keys per synced write transaction
    n = txns = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        with env.begin(write=True, db=db) as txn:
            for _ in range(1000):
                txn.put(b"b%d" % n, value % n)
                n += 1
        txns += 1
    dt = time.perf_counter() - t0
    out["thousand_keys_per_txn"] = {"txns": txns, "keys": n, "seconds": dt, "keys_per_s": n / dt}
    env.close()
    print(json.dumps(out))


# ----------------------------------------------------------------------------------------
# child: fixed-rate latency client (--latency-client PORT PATH)
# ----------------------------------------------------------------------------------------


def latency_client(port: int, path: str, rate: float, conns: int, seconds: float, warmup: float) -> None:
    """``conns`` keep-alive connections, connection i sending at i/rate + k*conns/rate.

    Latency is from the write of a request to the end of its response (read by a small
    Protocol, Content-Length framed). A request whose slot comes while the previous one on
    its connection is still out waits for it (counted as ``late``).
    """
    import asyncio
    import re

    import uvloop

    request = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path.encode()
    clen = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.I)

    class Client(asyncio.Protocol):
        def __init__(self):
            self.buf = b""
            self.waiter = None
            self.transport = None

        def connection_made(self, transport):
            self.transport = transport

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
                status = self.buf[9:12]
                self.buf = self.buf[end + 4 + size:]
                waiter, self.waiter = self.waiter, None
                if waiter is not None and not waiter.done():
                    waiter.set_result((time.perf_counter(), status))

        def connection_lost(self, exc):
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(ConnectionError("connection lost"))

    async def worker(proto, offset, period, t0, warm_end, end, lats, stats):
        loop = asyncio.get_running_loop()
        k = 0
        while True:
            due = t0 + offset + k * period
            if due >= end:
                return
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -period / 2:
                stats["late"] += 1
            fut = loop.create_future()
            proto.waiter = fut
            sent = time.perf_counter()
            proto.transport.write(request)
            done, status = await fut
            if due >= warm_end:
                lats.append(done - sent)
                if status not in (b"200", b"204"):
                    stats["bad_status"] += 1
            k += 1

    async def main():
        loop = asyncio.get_running_loop()
        protos = []
        for _ in range(conns):
            _, proto = await loop.create_connection(Client, "127.0.0.1", port)
            protos.append(proto)
        lats: list[float] = []
        stats = {"late": 0, "bad_status": 0}
        period = conns / rate
        t0 = time.perf_counter() + 0.05
        warm_end = t0 + warmup
        end = warm_end + seconds
        await asyncio.gather(*(worker(p, i / rate, period, t0, warm_end, end, lats, stats)
                               for i, p in enumerate(protos)))
        for p in protos:
            p.transport.close()
        lats.sort()
        n = len(lats)

        def q(f):
            return lats[min(n - 1, int(f * n))] * 1e3

        print(json.dumps({"requests": n, "achieved_rps": n / seconds, "p50_ms": q(0.50), "p90_ms": q(0.90),
                          "p99_ms": q(0.99), "max_ms": lats[-1] * 1e3, **stats}))

    uvloop.run(main())


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------


def http_call(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def mount_of(path: Path) -> str:
    path = str(path.resolve())
    best = ("", "?", "?")
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, fstype = line.split()[:3]
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
                best = (mnt, dev, fstype)
    return f"{best[1]} on {best[0]} ({best[2]})"


class PostScripts:
    """Patches bench_http's wrk command to add ``-s script``: a fresh key range per wrk run."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.runs = 0
        self.orig = b.wrk_command

    def command(self, url: str, duration: float) -> list[str]:
        self.runs += 1
        script = self.tmp / f"post-{self.runs}.lua"
        script.write_text(POST_LUA.format(offset=self.runs * 10_000_000))
        cmd = self.orig(url, duration)
        return [*cmd[:-1], "-s", str(script), cmd[-1]]

    def __enter__(self):
        b.wrk_command = self.command
        return self

    def __exit__(self, *exc):
        b.wrk_command = self.orig


def last_txnid(path: Path, env: dict[str, str]) -> int:
    """LMDB's last committed write transaction id of the sidecar's environment (read from a child)."""
    out = subprocess.run(
        [sys.executable, "-c", "import lmdb,sys; e=lmdb.open(sys.argv[1], readonly=True, max_dbs=2, lock=True);"
         "print(e.info()['last_txnid'])", str(path)],
        capture_output=True, text=True, env=env, check=True)
    return int(out.stdout.strip())


def load_post(url: str, pid: int, tmp: Path, env: dict[str, str], state_path: Path, duration: float,
              warmup: float) -> dict:
    """Like bench_http.load, with the lua script and LMDB's commit count around the measured run."""
    with PostScripts(tmp):
        if warmup > 0:
            b.run_wrk(url, warmup)
        txn0 = last_txnid(state_path, env)
        cpu0 = b.cpu_ticks(pid)
        res = b.run_wrk(url, duration)
        cpu1 = b.cpu_ticks(pid)
        txn1 = last_txnid(state_path, env)
    n = max(1, res["requests"])
    res["cpu_us_per_req"] = {"sidecar": (cpu1 - cpu0) / b.CLK_TCK * 1e6 / n}
    res["cpu_us"] = res["cpu_us_per_req"]["sidecar"]
    res["name"] = "post"
    res["url"] = url
    res["commits"] = txn1 - txn0
    res["keys_per_commit"] = res["requests"] / max(1, txn1 - txn0)
    if res["non_2xx"] or res["socket_errors"]:
        print(f"  ! post: non-2xx={res['non_2xx']} socket errors: {res['socket_errors'] or '-'}", flush=True)
    print(f"  {'post':<9} {res['rps']:>10.0f} req/s  p50 {res['p50_ms']:.3f} ms  p99 {res['p99_ms']:.3f} ms  "
          f"cpu {res['cpu_us']:.1f} us/req  ({res['commits']} commits, {res['keys_per_commit']:.1f} keys/commit)",
          flush=True)
    return res


def run_latency(name: str, port: int, path: str, env: dict[str, str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--latency-client", str(port), path]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["command"] = shlex.join(cmd)
    print(f"  {name:<9} {res['achieved_rps']:>10.0f} req/s  p50 {res['p50_ms']:.3f} ms  p90 {res['p90_ms']:.3f} ms  "
          f"p99 {res['p99_ms']:.3f} ms  (late {res['late']}, bad status {res['bad_status']})", flush=True)
    return res


# -- redis ------------------------------------------------------------------------------


def redis_available() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-benchmark") is not None


def redis_args(port: int, data: Path, aof: bool) -> list[str]:
    data.mkdir(parents=True, exist_ok=True)
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", "",
            "--daemonize", "no", "--protected-mode", "no", "--logfile", ""]
    if aof:
        args += ["--appendonly", "yes", "--appendfsync", "always"]
    else:
        args += ["--appendonly", "no"]
    return args


def wait_redis(child: b.Child, port: int, timeout: float = 10.0) -> None:
    deadline = time.perf_counter() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        if not child.alive():
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.output()}")
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{child.name} did not answer PING:\n{child.output()}")
        time.sleep(0.01)


def redis_benchmark(port: int, test: str, n: int, extra: list[str]) -> dict:
    cmd = ["redis-benchmark", "-p", str(port), "-t", test, "-c", str(REDIS_CLIENTS), "-n", str(n), "-d", "100",
           *extra, "--csv"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    rows = list(csv.reader(io.StringIO(out.stdout)))
    header = next((r for r in rows if r and r[0] == "test"), None)
    row = next((r for r in rows if r and r[0].upper() == test.upper()), None)
    if row is None:
        raise RuntimeError(f"cannot parse redis-benchmark output of {shlex.join(cmd)}:\n{out.stdout}{out.stderr}")
    res = {"command": shlex.join(cmd), "rps": float(row[1]), "requests": n, "wall_s": wall}
    if header:
        fields = dict(zip(header, row))
        if "p50_latency_ms" in fields:
            res["p50_ms"] = float(fields["p50_latency_ms"])
        if "p99_latency_ms" in fields:
            res["p99_ms"] = float(fields["p99_latency_ms"])
    return res


def load_redis(name: str, port: int, pid: int, test: str, duration: float, calib_n: int, extra: list[str]) -> dict:
    """A calibration run (also the warm-up) sizes -n so that the measured run lasts ~duration."""
    calib = redis_benchmark(port, test, calib_n, extra)
    n = max(calib_n, int(calib["rps"] * duration))
    cpu0 = b.cpu_ticks(pid)
    res = redis_benchmark(port, test, n, extra)
    cpu1 = b.cpu_ticks(pid)
    res["cpu_us_per_req"] = {"redis": (cpu1 - cpu0) / b.CLK_TCK * 1e6 / n}
    res["cpu_us"] = res["cpu_us_per_req"]["redis"]
    res["name"] = name
    print(f"  {name:<9} {res['rps']:>10.0f} req/s  p50 {res.get('p50_ms', float('nan')):.3f} ms  "
          f"p99 {res.get('p99_ms', float('nan')):.3f} ms  cpu {res['cpu_us']:.1f} us/req  ({n} requests, "
          f"{res['wall_s']:.1f} s)", flush=True)
    return res


# ----------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------


def report(rows: dict, refs: dict, lat: dict, notes: list[str]) -> list[dict]:
    print()
    print(f"{'target':<12}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'cpu us/req':>12}  notes")
    print("-" * 78)
    for key in ("raw", "get", "redis-get", "post"):
        r = rows.get(key)
        if r is None:
            print(f"{key:<12}{'-':>10}{'-':>9}{'-':>9}{'-':>12}  skipped (redis not installed)")
            continue
        note = {"raw": "uvloop+httptools 204", "get": "sidecar, state.lmdb fsync",
                "redis-get": "redis-benchmark -c 50, 100 B",
                "post": f"durable, {r.get('keys_per_commit', 0):.1f} keys/commit"}[key]
        p50 = r.get("p50_ms", float("nan"))
        p99 = r.get("p99_ms", float("nan"))
        print(f"{key:<12}{r['rps']:>10.0f}{p50:>9.3f}{p99:>9.3f}{r['cpu_us']:>12.1f}  {note}")
    print()
    print(f"{'durable-write reference':<40}{'rate':>12}  unit")
    print("-" * 78)
    a = refs["lmdb"]["one_key_per_txn"]
    t = refs["lmdb"]["thousand_keys_per_txn"]
    print(f"{'py-lmdb 1 key / synced txn':<40}{a['writes_per_s']:>12.0f}  writes/s ({a['txns']} txns)")
    print(f"{'py-lmdb 1000 keys / synced txn':<40}{t['keys_per_s']:>12.0f}  keys/s ({t['txns']} txns)")
    aof = refs.get("redis-aof")
    if aof is None:
        print(f"{'redis SET appendfsync always':<40}{'-':>12}  skipped (redis not installed)")
    else:
        print(f"{'redis SET appendfsync always':<40}{aof['rps']:>12.0f}  writes/s "
              f"(p50 {aof.get('p50_ms', float('nan')):.3f} ms, p99 {aof.get('p99_ms', float('nan')):.3f} ms)")
    print(f"{'sidecar POST (fsync)':<40}{rows['post']['rps']:>12.0f}  writes/s")
    print()
    print(f"{'fixed rate ' + str(LAT_RATE) + ' req/s, ' + str(LAT_CONNS) + ' conns':<28}"
          f"{'req/s':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    print("-" * 78)
    for key in ("raw", "get"):
        r = lat[key]
        print(f"{key:<28}{r['achieved_rps']:>8.0f}{r['p50_ms']:>9.3f}{r['p90_ms']:>9.3f}{r['p99_ms']:>9.3f}"
              f"{r['max_ms']:>9.3f}")
    print()

    checks = b.Checks(42, 16)
    check = checks.add
    get, post, raw = rows["get"], rows["post"], rows["raw"]
    r = get["rps"] / raw["rps"]
    check("get / raw req/s", r, "{:.2f}x", ">= 0.60x", r >= 0.60)
    if "redis-get" in rows:
        r = get["rps"] / rows["redis-get"]["rps"]
        check("get / redis GET req/s", r, "{:.2f}x", ">= 0.60x", r >= 0.60)
    else:
        check("get / redis GET req/s", None, "", ">= 0.60x", None, "SKIP (redis not installed)")
    check("  (get sidecar cpu us/req)", get["cpu_us"], "{:.1f}", "(info)", None)
    d = lat["get"]["p50_ms"] - lat["raw"]["p50_ms"]
    check(f"sidecar-added p50 at {LAT_RATE} req/s (ms)", d, "{:+.3f}", "< 0.15 ms", d < 0.15)
    r = post["rps"] / a["writes_per_s"]
    check("post / lmdb 1 key per synced txn", r, "{:.2f}x", ">= 5x", r >= 5.0)
    r = post["rps"] / t["keys_per_s"]
    check("post / lmdb 1000 keys per synced txn", r, "{:.3f}x", ">= 0.5x", r >= 0.5)
    if aof is not None:
        check("post / redis SET appendfsync always", post["rps"] / aof["rps"], "{:.2f}x", "(info)", None)
    check("  (post keys per commit)", post["keys_per_commit"], "{:.1f}", "(info)", None)
    check("  (post sidecar cpu us/req)", post["cpu_us"], "{:.1f}", "(info)", None)
    for note in notes:
        print(f"  note: {note}")
    b.print_summary(checks)
    return checks


# ----------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds of measured load per target (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up load per target (default 2, 0: none)")
    p.add_argument("--json", metavar="FILE", default=None, help="write every number to FILE as JSON")
    p.add_argument("--no-pyc", action="store_true",
                   help="children inherit the environment's bytecode settings (default: bytecode cached in a temp dir)")
    p.add_argument("--lmdb-ref", metavar="DIR", default=None, help=argparse.SUPPRESS)
    p.add_argument("--ref-seconds", type=float, default=2.0, help=argparse.SUPPRESS)
    p.add_argument("--latency-client", nargs=2, metavar=("PORT", "PATH"), default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.lmdb_ref is not None:
        lmdb_ref(args.lmdb_ref, args.ref_seconds)
        return 0
    if args.latency_client is not None:
        latency_client(int(args.latency_client[0]), args.latency_client[1], LAT_RATE, LAT_CONNS, LAT_SECONDS,
                       LAT_WARMUP)
        return 0

    cmdline = shlex.join([sys.executable, *sys.argv])
    print(f"command: {cmdline}")
    if shutil.which("wrk") is None:
        print("wrk is not installed", file=sys.stderr)
        return 1
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[:1]
    have_redis = redis_available()
    redis_version = (subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
                     if have_redis else "redis not installed (redis rows skipped)")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpu(s), {wrk_version[0] if wrk_version else 'wrk'}, "
          f"{b.THREADS} thread / {b.CONNECTIONS} connections, {args.warmup:g}s warm-up + {args.duration:g}s per target")
    print(f"{redis_version}")
    print(f"loadavg at start: {Path('/proc/loadavg').read_text().strip()}")
    print(f"load: {shlex.join(b.wrk_command('http://127.0.0.1:PORT/PATH', args.duration))} "
          f"(post adds -s <lua: new key per request>)")

    tmp = Path(tempfile.mkdtemp(prefix="pillion-bench-state-"))
    env = b.child_env(tmp, pyc=not args.no_pyc)
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    state_path = data / "state"
    ref_path = tmp / "lmdb-ref"
    resources = tmp / "resources"
    resources.mkdir()
    (resources / f"{STORE}.yaml").write_text(COMPONENT.format(name=STORE, path=state_path))
    loaded = subprocess.run(
        [sys.executable, "-c", "import pillion, pillion.server.protocol, pillion.server.router, pillion._impl as i;"
         "print(pillion.__file__, sorted(i.loaded().items()))"],
        capture_output=True, text=True, env=env,
    ).stdout.strip()
    print(f"pillion under test: {loaded}")
    if "'pure'" in loaded:
        print("WARNING: pure-Python twins loaded; build the extensions (make compile, or pip install .)")
    print(f"data dir: {data} on {mount_of(data)}; lmdb reference dir: {ref_path}; "
          f"state.lmdb durability fsync at {state_path}")
    print(flush=True)

    children: list[b.Child] = []

    def spawn(name: str, cmd: list[str]) -> b.Child:
        c = b.Child(name, cmd, tmp, env)
        children.append(c)
        return c

    rows: dict = {}
    refs: dict = {}
    lat: dict = {}
    notes: list[str] = []
    try:
        # 1. raw server (HTTP ceiling)
        raw_port = b.free_port()
        raw = spawn("raw", b.raw_args(raw_port, 204))
        b.wait_status(raw, raw_port, "/", 204)
        rows["raw"] = b.load("raw", f"http://127.0.0.1:{raw_port}/v1.0/healthz", {"raw": raw.pid},
                             args.duration, args.warmup)

        # 2. sidecar with state.lmdb: GET of a saved key
        port = b.free_port()
        sc = spawn("sidecar", b.sidecar_args("bench", port, "--resources-path", str(resources)))
        b.wait_status(sc, port, "/v1.0/healthz", 204)
        body = json.dumps([{"key": GET_KEY, "value": GET_VALUE}], separators=(",", ":")).encode()
        status, answer = http_call(port, "POST", f"/v1.0/state/{STORE}", body)
        if status != 204:
            raise RuntimeError(f"saving {GET_KEY!r} answered {status}: {answer!r}\n{sc.output()}")
        status, answer = http_call(port, "GET", f"/v1.0/state/{STORE}/{GET_KEY}")
        if status != 200:
            raise RuntimeError(f"GET {GET_KEY!r} answered {status}: {answer!r}")
        print(f"  (saved {GET_KEY!r}: GET answers {len(answer)} bytes)", flush=True)
        get_url = f"http://127.0.0.1:{port}/v1.0/state/{STORE}/{GET_KEY}"
        rows["get"] = b.load("get", get_url, {"sidecar": sc.pid}, args.duration, args.warmup)

        # 3. fixed-rate latency, raw and sidecar GET (both idle otherwise)
        lat["raw"] = run_latency("lat-raw", raw_port, "/v1.0/healthz", env)
        lat["get"] = run_latency("lat-get", port, f"/v1.0/state/{STORE}/{GET_KEY}", env)
        raw.stop()

        # 4. durable POST, a new key per request
        status, _ = http_call(port, "POST", f"/v1.0/state/{STORE}", b'[{"key":"probe","value":{"n":0}}]')
        if status != 204:
            raise RuntimeError(f"POST probe answered {status}")
        rows["post"] = load_post(f"http://127.0.0.1:{port}/v1.0/state/{STORE}", sc.pid, tmp, env, state_path,
                                 args.duration, args.warmup)
        sc.stop()

        # 5. py-lmdb synced-write references, same file system
        cmd = [sys.executable, str(Path(__file__).resolve()), "--lmdb-ref", str(ref_path)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
        refs["lmdb"] = json.loads(out.stdout.strip().splitlines()[-1])
        refs["lmdb"]["command"] = shlex.join(cmd)
        a, t = refs["lmdb"]["one_key_per_txn"], refs["lmdb"]["thousand_keys_per_txn"]
        print(f"  {'lmdb-1':<9} {a['writes_per_s']:>10.0f} writes/s (1 key per synced txn)", flush=True)
        print(f"  {'lmdb-1000':<9} {t['keys_per_s']:>10.0f} keys/s   (1000 keys per synced txn)", flush=True)

        # 6. redis: GET (no persistence), then SET with appendfsync always
        if have_redis:
            rport = b.free_port()
            rs = spawn("redis", redis_args(rport, tmp / "redis", aof=False))
            wait_redis(rs, rport)
            redis_benchmark(rport, "set", 1000, [])  # the key GET reads: key:__rand_int__, 100 bytes
            rows["redis-get"] = load_redis("redis-get", rport, rs.pid, "get", args.duration, 20000, [])
            rs.stop()
            rport = b.free_port()
            ra = spawn("redis-aof", redis_args(rport, tmp / "redis-aof", aof=True))
            wait_redis(ra, rport)
            refs["redis-aof"] = load_redis("redis-aof", rport, ra.pid, "set", args.duration, 2000,
                                           ["-r", "100000000"])
            ra.stop()
        else:
            notes.append("redis-server / redis-benchmark not installed: redis rows skipped")

        checks = report(rows, refs, lat, notes)
    except Exception as exc:  # noqa: BLE001 - report and exit 1: something failed to run
        print(f"bench failed: {type(exc).__name__}: {exc}\n(child logs kept in {tmp})", file=sys.stderr)
        return 1
    finally:
        for c in children:
            c.stop()

    if args.json:
        for r in rows.values():
            r.pop("raw_output", None)
        Path(args.json).write_text(json.dumps({
            "command": cmdline, "duration": args.duration, "warmup": args.warmup, "connections": b.CONNECTIONS,
            "threads": b.THREADS, "cpus": os.cpu_count(), "pyc": not args.no_pyc, "python": sys.version.split()[0],
            "pillion": loaded, "redis": redis_version, "rows": rows, "references": refs, "latency": lat,
            "checks": checks,
        }, indent=2))
        print(f"wrote {args.json}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
