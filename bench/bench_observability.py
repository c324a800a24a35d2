#!/usr/bin/env python3
"""What an observability feature costs: requests/s of the same sidecar with the feature on and off.

For a feature (``--feature metrics``; another is one more entry in FEATURES: the sidecar
flags with it off and on, and a check that it worked), one run starts two sidecars side
by side, one with the feature off and one with it on, then loads each target with wrk
exactly as bench_http.py and bench_state.py do, in interleaved pairs (off/on, then
on/off, ...) of short runs, so that load from anything else on the machine hits both
sides alike. It prints, per target, the median on/off ratio of requests/s:

  healthz    GET /v1.0/healthz (204): bench_http's sidecar target, the cheapest request
  state-get  GET /v1.0/state/statestore/k of a saved ~100-byte value (bench_state's get)
  state-post POST /v1.0/state/statestore, one item per request, a new key each (bench_state's
             post; durability "nosync" here, so that fsync does not hide the feature's cost)
  invoke     GET /v1.0/invoke/app/method/hello to bench_http's raw app (200 + small body)

Target: the feature costs at most 5% of requests/s (median ratio >= 0.95) on every target.
Median CPU microseconds per request (the sidecar, plus the app for invoke) are printed beside.

Usage: python bench/bench_observability.py --feature metrics [--rounds 6] [--duration 3]
       [--warmup 2] [--targets healthz,state-get,...] [--json out.json]
Exit code 0 unless something failed to run (MISS marks do not fail the run).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_http as b
import bench_state as s

MAX_COST = 0.05  # at most 5% fewer requests/s with the feature on


@dataclass
class Feature:
    """Extra sidecar arguments with the feature off and on; each callable may write files under ``tmp``."""

    off: Callable[[Path], list[str]]
    on: Callable[[Path], list[str]]
    check: Callable[[Path, list[str]], None] | None = None  # after a run with the feature on: did it work?
    max_cost: float = MAX_COST  # the share of requests/s the feature may cost


def _metrics_on(tmp: Path) -> list[str]:
    return ["--enable-metrics=true", "--metrics-port", str(b.free_port())]


def _metrics_check(tmp: Path, args: list[str]) -> None:
    """The metrics listener answered and counted the load (else the "on" figure means nothing)."""
    port = int(args[args.index("--metrics-port") + 1])
    with b.socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    if b"dapr_http_server_request_count{" not in data:
        raise RuntimeError(f"metrics on, but /metrics has no request counts:\n{data[:2000]!r}")


# -- tracing: a Configuration with spec.tracing against one without; spans go to a collector here --------

# A Zipkin/OTLP stand-in in its own process: answers 202 and counts requests and spans in a file
# (cheaply: it shares the two cores with wrk and the sidecar, where a real collector would not).
_COLLECTOR = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
counts = {"requests": 0, "spans": 0, "bytes": 0}
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        spans = body.count(b'"traceId"')  # one per span in both encodings; a real collector runs elsewhere
        counts["requests"] += 1; counts["spans"] += spans; counts["bytes"] += len(body)
        open(sys.argv[2], "w").write(json.dumps(counts))
        self.send_response(202); self.send_header("Content-Length", "0"); self.end_headers()
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""
_collector: dict = {}


def _tracing_config(tmp: Path, rate: str | None, exporters: tuple[str, ...] = ("otel",)) -> list[str]:
    """``--config`` with ``samplingRate: rate`` exporting to ``exporters`` (None: no tracing section)."""
    lines = ["apiVersion: dapr.io/v1alpha1", "kind: Configuration", "metadata: {name: bench}", "spec:"]
    if rate is None:
        lines.append("  features: []")
    else:
        if "port" not in _collector:
            port = b.free_port()
            _collector["port"], _collector["file"] = port, tmp / "collector.json"
            _collector["proc"] = subprocess.Popen([sys.executable, "-c", _COLLECTOR, str(port), str(_collector["file"])])
            import atexit

            atexit.register(_collector["proc"].kill)
            time.sleep(0.5)
        port = _collector["port"]
        lines += ["  tracing:", f"    samplingRate: \"{rate}\""]
        if "zipkin" in exporters:
            lines.append(f"    zipkin: {{endpointAddress: \"http://127.0.0.1:{port}/api/v2/spans\"}}")
        if "otel" in exporters:
            lines.append(f"    otel: {{endpointAddress: \"127.0.0.1:{port}\", isSecure: false, protocol: http}}")
    path = tmp / f"tracing-{rate}-{'-'.join(exporters)}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return ["--config", str(path)]


def _tracing_exported(tmp: Path, args: list[str]) -> None:
    """Spans reached the collector (else the "on" figure measured no export)."""
    time.sleep(1.5)  # one export interval
    counts = json.loads(_collector["file"].read_text()) if _collector["file"].exists() else {}
    if not counts.get("spans"):
        raise RuntimeError(f"tracing on, but the collector got no spans: {counts}")
    print(f"  collector: {counts['requests']} exports, {counts['spans']} spans, {counts['bytes']} bytes so far",
          flush=True)


FEATURES: dict[str, Feature] = {
    "metrics": Feature(off=lambda tmp: ["--enable-metrics=false"], on=_metrics_on, check=_metrics_check),
    # A/A: two identical sidecars with every feature off; the ratios are this machine's noise floor.
    "none": Feature(off=lambda tmp: [], on=lambda tmp: []),
    # samplingRate 0: tracing off (daprd's rule); the cost must be nil.
    "tracing": Feature(off=lambda tmp: _tracing_config(tmp, None), on=lambda tmp: _tracing_config(tmp, "0")),
    # daprd's default rate: every request gets a span id and a traceparent, hardly any is exported.
    "tracing-unsampled": Feature(off=lambda tmp: _tracing_config(tmp, None),
                                 on=lambda tmp: _tracing_config(tmp, "0.0001")),
    # every request sampled, spans exported over OTLP/HTTP (Dapr's recommended protocol) or to Zipkin.
    "tracing-export": Feature(off=lambda tmp: _tracing_config(tmp, None), on=lambda tmp: _tracing_config(tmp, "1"),
                              check=_tracing_exported, max_cost=0.20),
    "tracing-zipkin": Feature(off=lambda tmp: _tracing_config(tmp, None),
                              on=lambda tmp: _tracing_config(tmp, "1", ("zipkin",)),
                              check=_tracing_exported, max_cost=0.20),
}

TARGETS = ("healthz", "state-get", "state-post", "invoke")

COMPONENT = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.lmdb
  version: v1
  metadata:
  - name: path
    value: "{path}"
  - name: durability
    value: "nosync"
"""


def start_side(name: str, extra: list[str], tmp: Path, app_port: int, spawn) -> tuple[b.Child, dict[str, str]]:
    """A sidecar with ``extra`` flags, a saved state key, and the URL of each target."""
    resources = tmp / f"resources-{name}"
    resources.mkdir(parents=True, exist_ok=True)
    (resources / "statestore.yaml").write_text(COMPONENT.format(path=tmp / f"state-{name}"))
    port = b.free_port()
    if not any(arg.startswith("--enable-metrics") for arg in extra):
        extra = ["--enable-metrics=false", *extra]  # metrics are on by default (daprd's rule): measure one feature
    sc = spawn(name, b.sidecar_args("app", port, "--resources-path", str(resources), "--app-port", str(app_port),
                                    "--mqtt-port", "0", *extra))
    b.wait_status(sc, port, "/v1.0/healthz", 204)
    status, answer = s.http_call(port, "POST", "/v1.0/state/statestore",
                                 json.dumps([{"key": s.GET_KEY, "value": s.GET_VALUE}]).encode())
    if status != 204:
        raise RuntimeError(f"{name}: saving the GET key answered {status}: {answer!r}\n{sc.output()}")
    base = f"http://127.0.0.1:{port}"
    return sc, {"healthz": f"{base}/v1.0/healthz", "state-get": f"{base}/v1.0/state/statestore/{s.GET_KEY}",
                "state-post": f"{base}/v1.0/state/statestore", "invoke": f"{base}/v1.0/invoke/app/method/hello"}


def load(target: str, side: str, url: str, pids: dict[str, int], tmp: Path, duration: float, warmup: float) -> dict:
    name = f"{target}/{side}"
    if target == "state-post":
        with s.PostScripts(tmp):
            res = b.load(name, url, pids, duration, warmup)
    else:
        res = b.load(name, url, pids, duration, warmup)
    res.pop("raw_output", None)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--feature", required=True, choices=sorted(FEATURES))
    p.add_argument("--rounds", type=int, default=6, help="off/on pairs per target, alternating order (default 6)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds of measured load per run (default 3)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up load per target (default 2)")
    p.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated subset of {','.join(TARGETS)}")
    p.add_argument("--json", metavar="FILE", default=None, help="write every number to FILE as JSON")
    args = p.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        p.error(f"unknown targets: {', '.join(sorted(unknown))}")
    feature = FEATURES[args.feature]

    cmdline = shlex.join([sys.executable, *sys.argv])
    print(f"command: {cmdline}")
    if shutil.which("wrk") is None:
        print("wrk is not installed", file=sys.stderr)
        return 1
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpu(s), feature {args.feature}, {args.rounds} round(s), "
          f"{args.warmup:g}s warm-up + {args.duration:g}s per target")
    print(f"loadavg at start: {Path('/proc/loadavg').read_text().strip()}")
    print(f"load: {shlex.join(b.wrk_command('http://127.0.0.1:PORT/PATH', args.duration))}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="pillion-bench-obs-"))
    env = b.child_env(tmp)
    loaded = subprocess.run([sys.executable, "-c", "import pillion.server.protocol, pillion.server.router, pillion._impl as i; print(sorted(i.loaded().items()))"],
                            capture_output=True, text=True, env=env, check=False).stdout.strip()
    print(f"twins: {loaded}", flush=True)
    children: list[b.Child] = []

    def spawn(name: str, cmd: list[str]) -> b.Child:
        c = b.Child(name, cmd, tmp, env)
        children.append(c)
        return c

    results: dict[str, list[dict]] = {}
    t_start = time.perf_counter()
    try:
        app_port = b.free_port()
        app = spawn("app", b.raw_args(app_port, 200))
        b.wait_status(app, app_port, "/", 200)
        sides: dict[str, tuple[b.Child, dict[str, str], list[str]]] = {}
        for side in ("off", "on"):
            extra = (feature.on if side == "on" else feature.off)(tmp)
            print(f"feature {side}: {shlex.join(extra)}", flush=True)
            sc, urls = start_side(side, extra, tmp, app_port, spawn)
            sides[side] = (sc, urls, extra)
        for target in targets:
            for side, (sc, urls, _) in sides.items():  # warm both up before the measured pairs
                if args.warmup > 0:
                    load(target, side, urls[target], {"sidecar": sc.pid}, tmp, args.warmup, 0)
            pairs = results[target] = []
            for r in range(args.rounds):
                pair = {}
                for side in (("off", "on") if r % 2 == 0 else ("on", "off")):
                    sc, urls, _ = sides[side]
                    pids = {"sidecar": sc.pid, **({"app": app.pid} if target == "invoke" else {})}
                    pair[side] = load(target, side, urls[target], pids, tmp, args.duration, 0)
                pairs.append(pair)
        if feature.check is not None:
            feature.check(tmp, sides["on"][2])
        for sc, _, _ in sides.values():
            sc.stop()
    except Exception as exc:  # noqa: BLE001 - report and exit 1: something failed to run
        print(f"bench failed: {type(exc).__name__}: {exc}\n(child logs kept in {tmp})", file=sys.stderr)
        return 1
    finally:
        for c in children:
            c.stop()

    print(f"\n{args.feature}: requests/s with the feature on / off, {args.rounds} interleaved pairs per target "
          f"(target: median >= {1 - feature.max_cost:.2f})")
    print(f"  {'target':<11} {'off req/s':>10} {'on req/s':>10} {'median':>7} {'min':>6} {'max':>6} "
          f"{'cpu us/req off':>15} {'on':>6}  mark")
    checks = []
    for target, pairs in results.items():
        ratios = [pair["on"]["rps"] / pair["off"]["rps"] for pair in pairs]
        median = statistics.median(ratios)
        ok = median >= 1 - feature.max_cost
        off_rps = statistics.median(pair["off"]["rps"] for pair in pairs)
        on_rps = statistics.median(pair["on"]["rps"] for pair in pairs)
        off_cpu = statistics.median(pair["off"]["cpu_us"] for pair in pairs)
        on_cpu = statistics.median(pair["on"]["cpu_us"] for pair in pairs)
        checks.append({"target": target, "ratios": ratios, "median": median, "ok": ok,
                       "cpu_us_off": off_cpu, "cpu_us_on": on_cpu})
        print(f"  {target:<11} {off_rps:>10.0f} {on_rps:>10.0f} {median:>7.3f} {min(ratios):>6.3f} "
              f"{max(ratios):>6.3f} {off_cpu:>15.1f} {on_cpu:>6.1f}  {b.mark(ok)}")
    print(f"total {time.perf_counter() - t_start:.0f}s; loadavg at end: {Path('/proc/loadavg').read_text().strip()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": cmdline, "feature": args.feature, "results": results,
                                               "checks": checks, "duration": args.duration,
                                               "warmup": args.warmup}, indent=2, default=str))
        print(f"wrote {args.json}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
