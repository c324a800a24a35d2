#!/usr/bin/env python3
"""HTTP throughput / latency / CPU bench: raw uvloop+httptools vs the Pillion sidecar.

One run measures, each target in its own process(es) and loaded by ``wrk`` from another:

  raw       a minimal uvloop + httptools server written here, 204 + Date (the healthz shape)
  healthz   ``python -m pillion sidecar``, GET /v1.0/healthz (204)
  metadata  the same sidecar, GET /v1.0/metadata (200, JSON)
  direct    the raw server answering 200 with a small body, called directly
  invoke    that app behind ``pillion sidecar --app-port``, GET /v1.0/invoke/app/method/hello

plus the sidecar's idle / peak RSS, import time and start-to-ready time.

Usage: python bench/bench_http.py [--duration 10] [--warmup 2] [--json out.json]
(measures the pillion that this interpreter imports: the installed one, or PYTHONPATH=src
after ``make compile``; it prints which, and whether the compiled twins loaded)

Targets are printed with PASS/MISS marks; the exit code is 0 unless something failed to run.
The script also runs its own raw server: ``bench_http.py --serve-raw PORT --status 204|200``.
"""

from __future__ import annotations

import signal
import sys

# ----------------------------------------------------------------------------------------
# the raw server (runs in a child process: --serve-raw PORT --status 204|200)
# ----------------------------------------------------------------------------------------


def serve_raw(port: int, status: int) -> None:
    """A minimal but honest uvloop + httptools server.

    It parses every request (url and headers collected into a list, as any real server
    would), keeps connections alive as HTTP/1.1 asks, and answers with a status line and a
    Date header refreshed once a second (204), or that plus a small body (200).
    """
    import asyncio
    from email.utils import formatdate

    import httptools
    import uvloop

    if status == 204:
        head = b"HTTP/1.1 204 No Content\r\n"
        tail = b"\r\n"
    else:
        body = b'{"hello":"world"}'
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        tail = b"\r\n" + body
    close_tail = b"Connection: close\r\n" + tail
    state = {"date": b""}

    def tick():
        state["date"] = b"Date: %s\r\n" % formatdate(usegmt=True).encode()
        asyncio.get_running_loop().call_later(1.0, tick)

    class Raw(asyncio.Protocol):
        __slots__ = ("transport", "parser", "url", "headers")

        def __init__(self):
            self.transport = None
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""
            self.headers = []

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
            self.headers = []

        def on_url(self, url):
            self.url += url

        def on_header(self, name, value):
            self.headers.append((name, value))

        def on_message_complete(self):
            if self.parser.should_keep_alive():
                self.transport.write(head + state["date"] + tail)
            else:
                self.transport.write(head + state["date"] + close_tail)
                self.transport.close()

    async def main():
        tick()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Raw, "127.0.0.1", port, backlog=1024)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.close()

    uvloop.run(main())


if __name__ == "__main__" and sys.argv[1:2] == ["--serve-raw"]:
    # The raw server's process imports only what it serves with (its RSS is a reference too).
    serve_raw(int(sys.argv[2]), int(sys.argv[sys.argv.index("--status") + 1]) if "--status" in sys.argv else 204)
    sys.exit(0)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


CONNECTIONS = 50
THREADS = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------------------
# process helpers
# ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(tmp: Path, pyc: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    if pyc:
        # As an installed package would: bytecode cached, here under the bench's temp dir so
        # that nothing is written next to the sources (PYTHONDONTWRITEBYTECODE is dropped).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    env["PILLION_HOME"] = str(tmp / "home")
    env["PILLION_DATA_DIR"] = str(tmp / "data")
    env.pop("DAPR_API_TOKEN", None)
    env.pop("APP_API_TOKEN", None)
    return env


class Child:
    """A server process with its output in a log file; stopped by SIGTERM, then SIGKILL."""

    def __init__(self, name: str, args: list[str], tmp: Path, env: dict[str, str]):
        self.name = name
        self.args = args
        self.log_path = tmp / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()


def raw_get(port: int, path: str, timeout: float = 1.0) -> bytes | None:
    """One GET on a fresh raw socket; the response head (first recv), or None if refused."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path.encode())
            return sock.recv(4096)
    except OSError:
        return None


def wait_status(child: Child, port: int, path: str, status: int, timeout: float = 20.0, interval: float = 0.002) -> float:
    """Poll until ``path`` answers ``status``; returns seconds since the child was spawned."""
    want = b"HTTP/1.1 %d " % status
    deadline = time.perf_counter() + timeout
    while True:
        data = raw_get(port, path)
        if data is not None and data.startswith(want):
            return time.perf_counter() - child.t0
        if not child.alive():
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.output()}")
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{child.name}: {path} did not answer {status} within {timeout:g}s:\n{child.output()}")
        time.sleep(interval)


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # after the comm field: state is fields[0]; utime and stime are stat fields 14 and 15
    return int(fields[11]) + int(fields[12])


def proc_status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


# ----------------------------------------------------------------------------------------
# wrk
# ----------------------------------------------------------------------------------------

_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.match(r"^([\d.]+)(us|ms|s|m)$", text)
    if not m:
        raise ValueError(f"cannot read a wrk duration from {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def wrk_command(url: str, duration: float) -> list[str]:
    return ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{max(1, round(duration))}s", "--latency", url]


def run_wrk(url: str, duration: float) -> dict:
    cmd = wrk_command(url, duration)
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    text = out.stdout
    result: dict = {"command": shlex.join(cmd)}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    n = re.search(r"(\d+) requests in ([\d.]+\w+)", text)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    if not (m and n and p50 and p99):
        raise RuntimeError(f"cannot parse wrk output of {shlex.join(cmd)}:\n{text}")
    result["rps"] = float(m.group(1))
    result["requests"] = int(n.group(1))
    result["p50_ms"] = _ms(p50.group(1))
    result["p99_ms"] = _ms(p99.group(1))
    errs = re.search(r"Socket errors: (.*)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    result["socket_errors"] = errs.group(1).strip() if errs else ""
    result["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    result["raw_output"] = text
    return result


def load(name: str, url: str, pids: dict[str, int], duration: float, warmup: float) -> dict:
    """Warm up, then the measured run with CPU ticks of every server process around it."""
    if warmup > 0:
        run_wrk(url, warmup)
    before = {k: cpu_ticks(p) for k, p in pids.items()}
    res = run_wrk(url, duration)
    after = {k: cpu_ticks(p) for k, p in pids.items()}
    n = max(1, res["requests"])
    res["cpu_us_per_req"] = {k: (after[k] - before[k]) / CLK_TCK * 1e6 / n for k in pids}
    res["cpu_us"] = sum(res["cpu_us_per_req"].values())
    res["name"] = name
    res["url"] = url
    if res["non_2xx"] or res["socket_errors"]:
        print(f"  ! {name}: non-2xx={res['non_2xx']} socket errors: {res['socket_errors'] or '-'}", flush=True)
    print(f"  {name:<9} {res['rps']:>10.0f} req/s  p50 {res['p50_ms']:.3f} ms  p99 {res['p99_ms']:.3f} ms  "
          f"cpu {res['cpu_us']:.1f} us/req", flush=True)
    return res


# ----------------------------------------------------------------------------------------
# start-up figures
# ----------------------------------------------------------------------------------------


def import_time_ms(env: dict[str, str], runs: int = 5) -> dict:
    def once(code: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
        return time.perf_counter() - t0

    # warm the file system and bytecode caches for everything a sidecar start imports
    once("import pillion.cli, pillion.runtime.sidecar, pillion._ext.router, uvloop, httptools, email.utils")
    once("import pillion.runtime.sidecar")
    base = [once("pass") for _ in range(runs)]
    full = [once("import pillion.runtime.sidecar") for _ in range(runs)]
    return {
        "python_pass_ms": statistics.median(base) * 1e3,
        "with_import_ms": statistics.median(full) * 1e3,
        "import_ms": (statistics.median(full) - statistics.median(base)) * 1e3,
    }


def ready_time_ms(tmp: Path, env: dict[str, str], runs: int = 5) -> list[float]:
    times = []
    for i in range(runs):
        port = free_port()
        sc = Child(f"ready-{i}", sidecar_args("ready", port), tmp, env)
        try:
            times.append(wait_status(sc, port, "/v1.0/healthz", 204, interval=0.002) * 1e3)
        finally:
            sc.stop()
    return times


def sidecar_args(app_id: str, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pillion", "sidecar", "--app-id", app_id, "--dapr-http-port", str(port), *extra]


def raw_args(port: int, status: int) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--serve-raw", str(port), "--status", str(status)]


# ----------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(rows: dict, extra: dict) -> list[dict]:
    raw, hz, md, direct, inv = rows["raw"], rows["healthz"], rows["metadata"], rows["direct"], rows["invoke"]
    print()
    print(f"{'target':<10}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'cpu us/req':>12}  process(es)")
    print("-" * 78)
    for key, label in (("raw", "raw"), ("healthz", "healthz"), ("metadata", "metadata"), ("direct", "direct"), ("invoke", "invoke")):
        r = rows[key]
        procs = " + ".join(f"{k} {v:.1f}" for k, v in r["cpu_us_per_req"].items())
        print(f"{label:<10}{r['rps']:>10.0f}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}{r['cpu_us']:>12.1f}  {procs}")
    print()

    checks = Checks(label_width=40)
    check = checks.add
    r = hz["rps"] / raw["rps"]
    check("healthz / raw  req/s", r, "{:.2f}x", ">= 0.85x", r >= 0.85)
    r = hz["cpu_us"] / raw["cpu_us"]
    check("healthz / raw  cpu/req", r, "{:.2f}x", "<= 1.15x", r <= 1.15)
    check("metadata / raw req/s", md["rps"] / raw["rps"], "{:.2f}x", "(info)", None)
    check("metadata / raw cpu/req", md["cpu_us"] / raw["cpu_us"], "{:.2f}x", "(info)", None)
    r = inv["rps"] / direct["rps"]
    check("invoke / direct req/s", r, "{:.2f}x", ">= 0.40x", r >= 0.40)
    d = inv["p50_ms"] - direct["p50_ms"]
    check("invoke - direct p50 (ms)", d, "{:+.3f}", "<= +0.5 ms", d <= 0.5)
    r = inv["cpu_us_per_req"]["sidecar"] / raw["cpu_us"]
    check("invoke sidecar cpu/req / raw cpu/req", r, "{:.2f}x", "<= 3x", r <= 3.0)
    check("  (invoke sidecar cpu us/req)", inv["cpu_us_per_req"]["sidecar"], "{:.1f}", "(info)", None)
    check("  (invoke app cpu us/req)", inv["cpu_us_per_req"]["app"], "{:.1f}", "(info)", None)
    check("sidecar idle RSS (MB)", extra["idle_rss_kb"] / 1024, "{:.1f}", "<= 25 MB", extra["idle_rss_kb"] / 1024 <= 25)
    check("sidecar peak RSS healthz/metadata (MB)", extra["peak_rss_kb"] / 1024, "{:.1f}", "(info)", None)
    check("sidecar peak RSS invoke (MB)", extra["invoke_peak_rss_kb"] / 1024, "{:.1f}", "(info)", None)
    check("raw server idle RSS (MB)", extra["raw_idle_rss_kb"] / 1024, "{:.1f}", "(info)", None)
    imp = extra["imports"]
    check("import pillion.runtime.sidecar (ms)", imp["import_ms"], "{:.1f}", "< 150 ms", imp["import_ms"] < 150)
    ready = statistics.median(extra["ready_ms"])
    check("start -> first healthz 204 (ms, median)", ready, "{:.1f}", "< 300 ms", ready < 300)
    print(f"  ready runs (ms): {', '.join(f'{t:.1f}' for t in extra['ready_ms'])}; "
          f"python -c pass {imp['python_pass_ms']:.1f} ms, with import {imp['with_import_ms']:.1f} ms")
    print_summary(checks)
    return checks


class Checks(list):
    """The PASS/MISS rows of a bench's summary (every bench uses it), printed as they come."""

    def __init__(self, label_width: int = 42, target_width: int = 16) -> None:
        super().__init__()
        self.widths = (label_width, target_width)
        print(f"{'ratio / figure':<{label_width}}{'value':>10}   {'target':<{target_width}}")
        print("-" * 78)

    def add(self, label: str, value: float | None, fmt: str, target: str, ok: bool | None, note: str = "") -> None:
        """``ok`` None: a figure for information; ``value`` None: not measured, ``note`` says why."""
        self.append({"check": label, "value": value, "target": target, "pass": ok, "note": note})
        status = note if value is None else ("" if ok is None else mark(ok))
        shown = "-" if value is None else fmt.format(value)
        print(f"{label:<{self.widths[0]}}{shown:>10}   {target:<{self.widths[1]}}{status}")


def print_summary(checks: list[dict]) -> None:
    """The closing PASS/MISS line of a bench."""
    missed = [c["check"] for c in checks if c["pass"] is False]
    print()
    print(f"{len([c for c in checks if c['pass']])} PASS, {len(missed)} MISS" + (f": {'; '.join(missed)}" if missed else ""))


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
    p.add_argument("--serve-raw", metavar="PORT", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--status", type=int, default=204, choices=[200, 204], help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.serve_raw is not None:
        serve_raw(args.serve_raw, args.status)
        return 0

    cmdline = shlex.join([sys.executable, *sys.argv])
    print(f"command: {cmdline}")
    if shutil.which("wrk") is None:
        print("wrk is not installed", file=sys.stderr)
        return 1
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[:1]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpu(s), {wrk_version[0] if wrk_version else 'wrk'}, "
          f"{THREADS} thread / {CONNECTIONS} connections, {args.warmup:g}s warm-up + {args.duration:g}s per target")
    print(f"loadavg at start: {Path('/proc/loadavg').read_text().strip()}")
    print(f"load: {shlex.join(wrk_command('http://127.0.0.1:PORT/PATH', args.duration))}")

    tmp = Path(tempfile.mkdtemp(prefix="pillion-bench-"))
    env = child_env(tmp, pyc=not args.no_pyc)
    loaded = subprocess.run(
        [sys.executable, "-c", "import pillion, pillion.server.protocol, pillion.server.router, pillion._impl as i;"
         "print(pillion.__file__, sorted(i.loaded().items()))"],
        capture_output=True, text=True, env=env,
    ).stdout.strip()
    print(f"pillion under test: {loaded}")
    if "'pure'" in loaded:
        print("WARNING: pure-Python twins loaded; build the extensions (make compile, or pip install .)")
    print("children: " + (
        f"bytecode cached under {tmp / 'pycache'} (PYTHONDONTWRITEBYTECODE dropped)" if not args.no_pyc else
        f"bytecode settings inherited (PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r})"))
    print(flush=True)
    children: list[Child] = []

    def spawn(name: str, cmd: list[str]) -> Child:
        c = Child(name, cmd, tmp, env)
        children.append(c)
        return c

    rows: dict = {}
    extra: dict = {}
    try:
        # start-up figures first: they also warm the bytecode cache for the servers below
        extra["imports"] = import_time_ms(env)
        extra["ready_ms"] = ready_time_ms(tmp, env)

        # 1. raw 204
        port = free_port()
        raw = spawn("raw", raw_args(port, 204))
        wait_status(raw, port, "/", 204)
        time.sleep(0.1)
        extra["raw_idle_rss_kb"] = proc_status_kb(raw.pid, "VmRSS")
        rows["raw"] = load("raw", f"http://127.0.0.1:{port}/v1.0/healthz", {"raw": raw.pid}, args.duration, args.warmup)
        raw.stop()

        # 2. sidecar healthz + metadata
        port = free_port()
        sc = spawn("sidecar", sidecar_args("bench", port))
        wait_status(sc, port, "/v1.0/healthz", 204)
        time.sleep(0.2)
        extra["idle_rss_kb"] = proc_status_kb(sc.pid, "VmRSS")
        rows["healthz"] = load("healthz", f"http://127.0.0.1:{port}/v1.0/healthz", {"sidecar": sc.pid}, args.duration, args.warmup)
        rows["metadata"] = load("metadata", f"http://127.0.0.1:{port}/v1.0/metadata", {"sidecar": sc.pid}, args.duration, args.warmup)
        extra["peak_rss_kb"] = proc_status_kb(sc.pid, "VmHWM")
        sc.stop()

        # 3. direct app
        app_port = free_port()
        app = spawn("app", raw_args(app_port, 200))
        wait_status(app, app_port, "/", 200)
        rows["direct"] = load("direct", f"http://127.0.0.1:{app_port}/hello", {"app": app.pid}, args.duration, args.warmup)

        # 4. invoke through a sidecar
        port = free_port()
        isc = spawn("invoke-sidecar", sidecar_args("app", port, "--app-port", str(app_port)))
        wait_status(isc, port, "/v1.0/healthz", 204)
        rows["invoke"] = load("invoke", f"http://127.0.0.1:{port}/v1.0/invoke/app/method/hello",
                              {"sidecar": isc.pid, "app": app.pid}, args.duration, args.warmup)
        extra["invoke_peak_rss_kb"] = proc_status_kb(isc.pid, "VmHWM")
        isc.stop()
        app.stop()

        checks = report(rows, extra)
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
            "command": cmdline, "duration": args.duration, "warmup": args.warmup, "connections": CONNECTIONS,
            "threads": THREADS, "cpus": os.cpu_count(), "pyc": not args.no_pyc, "python": sys.version.split()[0],
            "rows": rows, "startup": extra, "checks": checks,
        }, indent=2))
        print(f"wrote {args.json}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
