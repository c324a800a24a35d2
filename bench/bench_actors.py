#!/usr/bin/env python3
"""Actor bench: method calls through the sidecar's actor runtime, against plain service invocation.

One run, one actor app (a uvloop + httptools server written here: 200 + a tiny body for
``PUT /actors/...``, ``POST /echo`` and anything else; ``GET /dapr/config`` answers
``{"entities": ["Counter"], "actorIdleTimeout": "24h"}``) behind ``python -m pillion sidecar
--app-port`` with a ``state.lmdb`` component marked ``actorStateStore: "true"``. Loaded by wrk
(``-t1 -c50``, a Lua ``request()`` function for every row, so that wrk's own cost is the same):

  invoke   POST /v1.0/invoke/<app-id>/method/echo (the reference: same app, same sidecar)
  spread   POST /v1.0/actors/Counter/<1..1000>/method/ping (math.random per request)
  one      POST /v1.0/actors/Counter/one/method/ping (every call waits for the one turn lock)

then, in a fresh sidecar on the same app (memory phases; an asyncio + uvloop client in this
process, keep-alive connections, one request in flight on each):

  actors     10,000 distinct actor ids called once each (50 connections): RSS before/after
  reminders  POST /v1.0/actors/Counter/r<i>/reminders/r {"dueTime": "1h"} for --reminders ids
             (default 100,000; --reminder-conns connections): time taken, RSS before/after.
             If the --reminder-budget (seconds) runs out first, what was registered is
             measured and the RSS growth is extrapolated linearly to the full count, labeled so.

and, in this process, the turn lock twins (pillion._pure.actorlock / pillion._ext.actorlock):
uncontended ``async with locks.turn(key)`` and ``await acquire`` + ``release`` per second,
with bench_actorlock.py's functions.

Usage: python bench/bench_actors.py [--duration 5] [--warmup 1] [--reminders 100000]
       [--reminder-conns 128] [--reminder-budget 90] [--json out.json] [--no-pyc]
Targets are printed with PASS/MISS marks; the exit code is 0 unless something failed to run.
The script also runs its own app: ``bench_actors.py --serve-app PORT``.
"""

from __future__ import annotations

import signal
import sys

APP_CONFIG = b'{"entities": ["Counter"], "actorIdleTimeout": "24h", "drainOngoingCallTimeout": "5s"}'


def serve_app(port: int) -> None:
    """uvloop + httptools: GET /dapr/config -> the config, anything else -> 200 {"ok":1}."""
    import asyncio

    import httptools
    import uvloop

    def reply(body: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    ok = reply(b'{"ok":1}')
    config = reply(APP_CONFIG)

    class App(asyncio.Protocol):
        __slots__ = ("transport", "parser", "url")

        def __init__(self):
            self.transport = None
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""

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

        def on_url(self, url):
            self.url += url

        def on_message_complete(self):
            out = config if self.url == b"/dapr/config" else ok
            self.transport.write(out)
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


if __name__ == "__main__" and sys.argv[1:2] == ["--serve-app"]:
    serve_app(int(sys.argv[2]))
    sys.exit(0)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import bench_http as b  # noqa: E402

APP_ID = "actorsbench"
SPREAD = 1000
ACTIVE = 10_000
ACTIVE_CONNS = 50

STATE = ("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: statestore}\nspec:\n  type: state.lmdb\n"
         "  version: v1\n  metadata:\n  - {name: actorStateStore, value: 'true'}\n")

LUA = {
    "invoke": 'request = function() return wrk.format("POST", "/v1.0/invoke/%s/method/echo") end\n' % APP_ID,
    "spread": ("request = function() return wrk.format(\"POST\", \"/v1.0/actors/Counter/\" .. math.random(%d) .. "
               "\"/method/ping\") end\n" % SPREAD),
    "one": 'request = function() return wrk.format("POST", "/v1.0/actors/Counter/one/method/ping") end\n',
}


# ----------------------------------------------------------------------------------------
# wrk with a script
# ----------------------------------------------------------------------------------------


def wrk_command(port: int, script: Path, duration: float) -> list[str]:
    return ["wrk", f"-t{b.THREADS}", f"-c{b.CONNECTIONS}", f"-d{max(1, round(duration))}s", "--latency",
            "-s", str(script), f"http://127.0.0.1:{port}"]  # fmt: skip


def run_wrk(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    text = out.stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    n = re.search(r"(\d+) requests in ([\d.]+\w+)", text)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    if not (m and n and p50 and p99):
        raise RuntimeError(f"cannot parse wrk output of {shlex.join(cmd)}:\n{text}")
    errs = re.search(r"Socket errors: (.*)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {"command": shlex.join(cmd), "rps": float(m.group(1)), "requests": int(n.group(1)),
            "p50_ms": b._ms(p50.group(1)), "p99_ms": b._ms(p99.group(1)),
            "socket_errors": errs.group(1).strip() if errs else "", "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def load(name: str, port: int, script: Path, pids: dict[str, int], duration: float, warmup: float) -> dict:
    if warmup > 0:
        run_wrk(wrk_command(port, script, warmup))
    before = {k: b.cpu_ticks(p) for k, p in pids.items()}
    res = run_wrk(wrk_command(port, script, duration))
    after = {k: b.cpu_ticks(p) for k, p in pids.items()}
    n = max(1, res["requests"])
    res["cpu_us_per_req"] = {k: (after[k] - before[k]) / b.CLK_TCK * 1e6 / n for k in pids}
    res["cpu_us"] = sum(res["cpu_us_per_req"].values())
    res["name"] = name
    if res["non_2xx"] or res["socket_errors"]:
        print(f"  ! {name}: non-2xx={res['non_2xx']} socket errors: {res['socket_errors'] or '-'}", flush=True)
    procs = " + ".join(f"{k} {v:.1f}" for k, v in res["cpu_us_per_req"].items())
    print(f"  {name:<7} {res['rps']:>9.0f} req/s  p50 {res['p50_ms']:.3f} ms  p99 {res['p99_ms']:.3f} ms  "
          f"cpu {res['cpu_us']:.1f} us/req ({procs})", flush=True)
    return res


# ----------------------------------------------------------------------------------------
# a bulk client: many keep-alive connections, one request in flight on each
# ----------------------------------------------------------------------------------------


async def _bulk(port: int, requests, conns: int, deadline: float | None) -> dict:
    import httptools

    loop = asyncio.get_running_loop()
    it = iter(requests)
    stats = {"sent": 0, "ok": 0, "bad": 0, "errors": [], "stopped_early": False}
    done = loop.create_future()
    active = [0]

    class Conn(asyncio.Protocol):
        def __init__(self):
            self.parser = httptools.HttpResponseParser(self)
            self.transport = None
            self.body = b""

        def connection_made(self, transport):
            self.transport = transport
            self.next()

        def next(self):
            if deadline is not None and time.perf_counter() > deadline:
                stats["stopped_early"] = True
                req = None
            else:
                req = next(it, None)
            if req is None:
                self.finish()
                return
            stats["sent"] += 1
            self.transport.write(req)

        def finish(self):
            if self.transport is not None:
                self.transport.close()
                self.transport = None
                active[0] -= 1
                if active[0] == 0 and not done.done():
                    done.set_result(None)

        def data_received(self, data):
            self.parser.feed_data(data)

        def on_body(self, body):
            self.body += body

        def on_message_complete(self):
            status = self.parser.get_status_code()
            if 200 <= status < 300:
                stats["ok"] += 1
            else:
                stats["bad"] += 1
                if len(stats["errors"]) < 5:
                    stats["errors"].append((status, self.body[:300]))
            self.body = b""
            self.next()

        def connection_lost(self, exc):
            if self.transport is not None:  # not closed by us
                if len(stats["errors"]) < 5:
                    stats["errors"].append(("connection lost", repr(exc)))
                self.finish()

    active[0] = conns
    start = time.perf_counter()
    for _ in range(conns):
        await loop.create_connection(Conn, "127.0.0.1", port)
    await done
    stats["seconds"] = time.perf_counter() - start
    return stats


def bulk(port: int, requests, conns: int, budget: float | None = None) -> dict:
    import uvloop

    deadline = None if budget is None else time.perf_counter() + budget
    return uvloop.run(_bulk(port, requests, conns, deadline))


def http_req(method: str, path: str, body: bytes = b"") -> bytes:
    return (b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (method.encode(), path.encode(), len(body), body))


def get_json(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


def wait_actors_running(child: b.Child, port: int, timeout: float = 20.0) -> None:
    deadline = time.perf_counter() + timeout
    while True:
        try:
            if get_json(port, "/v1.0/metadata").get("actorRuntime", {}).get("runtimeStatus") == "RUNNING":
                return
        except OSError:
            pass
        if not child.alive():
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.output()}")
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{child.name}: actor runtime not RUNNING within {timeout:g}s:\n{child.output()}")
        time.sleep(0.02)


def rss(pid: int) -> dict:
    return {k: b.proc_status_kb(pid, k) for k in ("VmRSS", "RssAnon", "RssFile")}


def rss_line(label: str, before: dict, after: dict) -> str:
    return (f"  {label}: VmRSS {before['VmRSS'] / 1024:.1f} -> {after['VmRSS'] / 1024:.1f} MB "
            f"(+{(after['VmRSS'] - before['VmRSS']) / 1024:.1f}; anon +{(after['RssAnon'] - before['RssAnon']) / 1024:.1f}, "
            f"file +{(after['RssFile'] - before['RssFile']) / 1024:.1f})")


def settle(seconds: float = 0.5) -> None:
    """Let the sidecar finish what it was doing (pending commits, closed connections)."""
    time.sleep(seconds)


# ----------------------------------------------------------------------------------------
# the turn lock twins (bench_actorlock's functions)
# ----------------------------------------------------------------------------------------


def turn_lock_rates() -> dict:
    import uvloop

    import bench_actorlock as bal

    out = {}
    for kind, modname in (("pure", "pillion._pure.actorlock"), ("compiled", "pillion._ext.actorlock")):
        try:
            mod = importlib.import_module(modname)
        except ImportError as exc:
            out[kind] = {"error": str(exc)}
            continue
        with_s = bal.run(bal.uncontended_with, mod, uvloop.run)
        acq_s = bal.run(bal.uncontended_acquire, mod, uvloop.run)
        out[kind] = {"turn_per_s": 1 / with_s, "acquire_release_per_s": 1 / acq_s}
        print(f"  {kind:<9} async with turn(k) {1 / with_s:>12,.0f} /s ({with_s * 1e9:.0f} ns); "
              f"await acquire + release {1 / acq_s:>12,.0f} /s ({acq_s * 1e9:.0f} ns)", flush=True)
    return out


# ----------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds of measured wrk load per row (default 5)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of wrk warm-up per row (default 1, 0: none)")
    p.add_argument("--reminders", type=int, default=100_000, help="reminders to register (default 100000)")
    p.add_argument("--reminder-conns", type=int, default=128, help="connections registering them (default 128)")
    p.add_argument("--reminder-budget", type=float, default=90.0,
                   help="seconds allowed for the registration; then measure what is there and extrapolate (default 90)")
    p.add_argument("--json", metavar="FILE", default=None, help="write every number to FILE as JSON")
    p.add_argument("--no-pyc", action="store_true", help="children inherit the environment's bytecode settings")
    args = p.parse_args(argv)

    cmdline = shlex.join([sys.executable, *sys.argv])
    print(f"command: {cmdline}")
    if shutil.which("wrk") is None:
        print("wrk is not installed", file=sys.stderr)
        return 1
    t_start = time.perf_counter()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpu(s), wrk {b.THREADS} thread / {b.CONNECTIONS} "
          f"connections, {args.warmup:g}s warm-up + {args.duration:g}s per row")
    print(f"loadavg at start: {Path('/proc/loadavg').read_text().strip()}")
    tmp = Path(tempfile.mkdtemp(prefix="pillion-bench-actors-"))
    env = b.child_env(tmp, pyc=not args.no_pyc)
    loaded = subprocess.run(
        [sys.executable, "-c", "import pillion, pillion.runtime.actors, pillion.server.protocol, pillion.server.router, pillion._impl as i;"
         "print(pillion.__file__, sorted(i.loaded().items()))"],
        capture_output=True, text=True, env=env,
    ).stdout.strip()
    print(f"pillion under test: {loaded}")
    if "'pure'" in loaded:
        print("WARNING: pure-Python twins loaded; build the extensions (make compile, or pip install .)")
    resources = tmp / "resources"
    resources.mkdir()
    (resources / "state.yaml").write_text(STATE)
    scripts = {}
    for name, text in LUA.items():
        scripts[name] = tmp / f"{name}.lua"
        scripts[name].write_text(text)
    print(f"load: {shlex.join(wrk_command(0, scripts['spread'], args.duration)).replace(':0', ':PORT')}; "
          f"spread.lua: {LUA['spread'].strip()}")
    print(flush=True)

    children: list[b.Child] = []

    def spawn(name: str, cmd: list[str]) -> b.Child:
        c = b.Child(name, cmd, tmp, env)
        children.append(c)
        return c

    def start_sidecar(name: str, port: int, app_port: int) -> b.Child:
        sc = spawn(name, b.sidecar_args(APP_ID, port, "--app-port", str(app_port), "--resources-path", str(resources)))
        b.wait_status(sc, port, "/v1.0/healthz", 204)
        wait_actors_running(sc, port)
        return sc

    rows: dict = {}
    mem: dict = {}
    try:
        app_port = b.free_port()
        app = spawn("app", [sys.executable, str(Path(__file__).resolve()), "--serve-app", str(app_port)])
        b.wait_status(app, app_port, "/echo", 200)

        # 1-3: wrk rows on one sidecar
        port = b.free_port()
        sc = start_sidecar("sidecar", port, app_port)
        pids = {"sidecar": sc.pid, "app": app.pid}
        print("wrk rows:")
        for name in ("invoke", "spread", "one"):
            rows[name] = load(name, port, scripts[name], pids, args.duration, args.warmup)
        active = get_json(port, "/v1.0/metadata").get("actors")
        print(f"  active actors after the wrk rows: {active}")
        mem["wrk_peak_rss_kb"] = b.proc_status_kb(sc.pid, "VmHWM")
        sc.stop()
        sc_errors = [ln for ln in sc.log_path.read_text(errors="replace").splitlines() if re.search(r"ERROR|Traceback|WARNING", ln)]

        # 4: memory on a fresh sidecar
        print("\nmemory (fresh sidecar):")
        port = b.free_port()
        sc2 = start_sidecar("sidecar-mem", port, app_port)
        # warm the paths (connections, buffers) on a single actor, not counted as an active one
        warm = bulk(port, (http_req("POST", "/v1.0/actors/Counter/warm/method/ping") for _ in range(5000)), ACTIVE_CONNS)
        bulk(port, (http_req("POST", "/v1.0/actors/Counter/warm/reminders/w", b'{"dueTime": "1h"}') for _ in range(2000)),
             args.reminder_conns)  # fmt: skip
        settle()
        r0 = rss(sc2.pid)
        act = bulk(port, (http_req("POST", f"/v1.0/actors/Counter/a{i}/method/ping") for i in range(ACTIVE)), ACTIVE_CONNS)
        settle()
        r1 = rss(sc2.pid)
        counts = get_json(port, "/v1.0/metadata").get("actors")
        print(f"  warm-up: {warm['ok']} calls; {ACTIVE:,} actors: {act['ok']} ok, {act['bad']} bad in {act['seconds']:.2f} s "
              f"({act['ok'] / act['seconds']:,.0f}/s); metadata actors: {counts}")
        if act["errors"]:
            print(f"  ! errors: {act['errors']}")
        print(rss_line(f"{ACTIVE:,} active actors", r0, r1))
        mem.update(active=ACTIVE, active_ok=act["ok"], active_seconds=act["seconds"], rss_before_actors=r0,
                   rss_after_actors=r1, metadata_actors=counts)  # fmt: skip

        rem = bulk(port, (http_req("POST", f"/v1.0/actors/Counter/r{i}/reminders/r", b'{"dueTime": "1h"}')
                          for i in range(args.reminders)), args.reminder_conns, args.reminder_budget)  # fmt: skip
        settle(1.0)
        r2 = rss(sc2.pid)
        probe = get_json(port, f"/v1.0/actors/Counter/r{max(0, rem['ok'] - 1)}/reminders/r")
        print(f"  reminders: {rem['ok']:,} ok, {rem['bad']} bad of {args.reminders:,} in {rem['seconds']:.2f} s "
              f"({rem['ok'] / rem['seconds']:,.0f}/s, {args.reminder_conns} connections)"
              + (f" -- budget of {args.reminder_budget:g} s ran out" if rem["stopped_early"] else ""))
        print(f"  reminder probe GET: {probe}")
        if rem["errors"]:
            print(f"  ! errors: {rem['errors']}")
        print(rss_line(f"{rem['ok']:,} reminders", r1, r2))
        mem.update(reminders=args.reminders, reminders_ok=rem["ok"], reminders_seconds=rem["seconds"],
                   reminders_stopped_early=rem["stopped_early"], rss_after_reminders=r2)  # fmt: skip
        mem["mem_peak_rss_kb"] = b.proc_status_kb(sc2.pid, "VmHWM")
        t_stop = time.perf_counter()
        sc2.stop()
        mem["stop_seconds"] = time.perf_counter() - t_stop
        print(f"  sidecar stop (deactivates {ACTIVE + 1:,} actors): {mem['stop_seconds']:.2f} s")
        sc_errors += [ln for ln in sc2.log_path.read_text(errors="replace").splitlines() if re.search(r"ERROR|Traceback|WARNING", ln)]
        app.stop()

        # 5: turn lock twins
        print("\nturn lock twins (uncontended, uvloop, best of 3 x 200,000):")
        locks = turn_lock_rates()
    except Exception as exc:  # noqa: BLE001 - report and exit 1: something failed to run
        print(f"bench failed: {type(exc).__name__}: {exc}\n(child logs kept in {tmp})", file=sys.stderr)
        return 1
    finally:
        for c in children:
            c.stop()

    # ------------------------------------------------------------------ report
    print()
    print(f"{'row':<8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'cpu us/req':>12}  sidecar + app")
    print("-" * 78)
    for key in ("invoke", "spread", "one"):
        r = rows[key]
        print(f"{key:<8}{r['rps']:>10.0f}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}{r['cpu_us']:>12.1f}  "
              f"{r['cpu_us_per_req']['sidecar']:.1f} + {r['cpu_us_per_req']['app']:.1f}")
    print()
    checks = b.Checks(label_width=46, target_width=14)
    check = checks.add
    inv, spread, one = rows["invoke"], rows["spread"], rows["one"]
    ratio = spread["rps"] / inv["rps"]
    check("spread 1,000 actors / invoke req/s", ratio, "{:.2f}x", ">= 0.80x", ratio >= 0.80)
    check("one actor / invoke req/s", one["rps"] / inv["rps"], "{:.2f}x", "(info)", None)
    check("  invoke / spread cpu us/req (steadier)", inv["cpu_us"] / spread["cpu_us"], "{:.2f}x", "(info)", None)
    check("spread - invoke sidecar cpu (us/req)", spread["cpu_us_per_req"]["sidecar"] - inv["cpu_us_per_req"]["sidecar"],
          "{:+.1f}", "(info)", None)  # fmt: skip
    check("one actor p50 (ms)", one["p50_ms"], "{:.3f}", "(info)", None)
    check("one actor p99 (ms)", one["p99_ms"], "{:.3f}", "(info)", None)
    check("spread p50 - invoke p50 (ms)", spread["p50_ms"] - inv["p50_ms"], "{:+.3f}", "(info)", None)
    d_act = (r1["VmRSS"] - r0["VmRSS"]) * 1024
    check(f"{ACTIVE:,} active actors: RSS growth (MB)", d_act / 2**20, "{:.1f}", "(info)", None)
    check("  bytes per active actor", d_act / ACTIVE, "{:.0f}", "(info)", None)
    n_ok = mem["reminders_ok"]
    d_rem = (r2["VmRSS"] - r1["VmRSS"]) * 1024
    check(f"reminders registered over HTTP ({n_ok:,})", mem["reminders_seconds"], "{:.1f} s", "(info)", None)
    check("  registrations per second", n_ok / mem["reminders_seconds"], "{:,.0f}", "(info)", None)
    label = f"{args.reminders:,} reminders: RSS growth (MB)"
    if n_ok >= args.reminders:
        check(label, d_rem / 2**20, "{:.1f}", "< 50 MB", d_rem / 2**20 < 50)
    elif n_ok > 0:
        est = d_rem / n_ok * args.reminders / 2**20
        check(label + " EXTRAPOLATED", est, "{:.1f}", "< 50 MB", est < 50,
              f"(linear from {n_ok:,}: +{d_rem / 2**20:.1f} MB)")
    else:
        check(label, None, "", "< 50 MB", False, "no reminder registered")
    check("  bytes per reminder", d_rem / max(1, n_ok), "{:.0f}", "(info)", None)
    check("  of which anon (heap) MB", (r2["RssAnon"] - r1["RssAnon"]) / 1024, "{:.1f}", "(info)", None)
    check("  of which file-backed (LMDB map) MB", (r2["RssFile"] - r1["RssFile"]) / 1024, "{:.1f}", "(info)", None)
    for kind in ("pure", "compiled"):
        if "error" in locks.get(kind, {}):
            check(f"turn lock {kind} (async with, /s)", None, "", "(info)", None, locks[kind]["error"])
        else:
            check(f"turn lock {kind} (async with, /s)", locks[kind]["turn_per_s"], "{:,.0f}", "(info)", None)
    if "turn_per_s" in locks.get("pure", {}) and "turn_per_s" in locks.get("compiled", {}):
        check("turn lock compiled / pure", locks["compiled"]["turn_per_s"] / locks["pure"]["turn_per_s"], "{:.2f}x",
              "(info)", None)  # fmt: skip
    b.print_summary(checks)
    print(f"sidecar log lines with ERROR/WARNING/Traceback: {len(sc_errors)}")
    for ln in sc_errors[:20]:
        print(f"  | {ln}")
    print(f"total bench time: {time.perf_counter() - t_start:.1f} s")

    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": cmdline, "duration": args.duration, "warmup": args.warmup, "connections": b.CONNECTIONS,
            "cpus": os.cpu_count(), "python": sys.version.split()[0], "rows": rows, "memory": mem, "turn_lock": locks,
            "checks": checks, "sidecar_log_errors": sc_errors,
        }, indent=2))
        print(f"wrote {args.json}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
