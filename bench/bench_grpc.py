#!/usr/bin/env python3
"""gRPC front bench: state get, state save and invocation over gRPC against the same over HTTP.

One sidecar (state.lmdb, the gRPC API on, bench_http's raw server as its app) is loaded by
h2load (nghttp2-client), the same C load generator for both fronts so the client costs
the same: HTTP/1.1 keep-alive (``--h1``) for the HTTP API, HTTP/2 with one stream per
connection (``-m 1``) and a pre-encoded gRPC frame for the gRPC API. Each pair runs
``--rounds`` times, alternating fronts, and the rounds are averaged.

  get     GET /v1.0/state/statestore/k            | Dapr/GetState {statestore, k}
  save    POST /v1.0/state/statestore (one item)  | Dapr/SaveState (one item)
  invoke  POST /v1.0/invoke/bench/method/ping     | Dapr/InvokeService {bench, ping, POST}

Reference, measured in the same run: grpc.aio on uvloop answering GetState with a constant
(no sidecar behind it), the ceiling of any front built on grpcio.

The sidecar's CPU time per request (user plus system, from /proc) is printed beside req/s:
the two fronts' req/s move with whatever else the machine runs, their CPU cost per request
much less.

Memory: the idle RSS of the same sidecar started without the gRPC API (--dapr-grpc-port 0)
and with it, and the peak RSS (VmHWM) after the loads.

Usage: python bench/bench_grpc.py [--duration 5] [--warmup 1] [--rounds 2] [--conns 50] [--json out.json]
Needs h2load (Debian: nghttp2-client) and the grpc extra.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_http as b  # noqa: E402
from bench_state import COMPONENT  # noqa: E402 - state.lmdb, every write fsync'd

APP_ID = "bench"
STORE = "statestore"
VALUE = {"device": "edge-gw-07", "temperature": 21.5, "humidity": 48, "tags": ["bench", "state"], "ok": True}


def grpc_frame(message) -> bytes:
    """One length-prefixed, uncompressed gRPC message."""
    payload = message.SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def requests(tmp: Path) -> dict:
    """Per operation: (HTTP path, body file or None: a GET), (gRPC method path, frame file)."""
    import orjson
    from dapr.proto.common.v1 import common_pb2
    from dapr.proto.runtime.v1 import dapr_pb2  # noqa: F401 - registers the service's imports
    from dapr.proto.runtime.v1 import invoke_pb2, state_pb2
    from google.protobuf import any_pb2

    value = orjson.dumps(VALUE)
    bodies = {
        "save.json": orjson.dumps([{"key": "s", "value": VALUE}]),
        "invoke.json": b'{"n":1}',
        "get.grpc": grpc_frame(state_pb2.GetStateRequest(store_name=STORE, key="k")),
        "save.grpc": grpc_frame(state_pb2.SaveStateRequest(
            store_name=STORE, states=[common_pb2.StateItem(key="s", value=value)])),
        "invoke.grpc": grpc_frame(invoke_pb2.InvokeServiceRequest(id=APP_ID, message=common_pb2.InvokeRequest(
            method="ping", data=any_pb2.Any(value=b'{"n":1}'), content_type="application/json",
            http_extension=common_pb2.HTTPExtension(verb=common_pb2.HTTPExtension.Verb.POST)))),
    }
    for name, data in bodies.items():
        (tmp / name).write_bytes(data)
    service = "/dapr.proto.runtime.v1.Dapr/"
    return {
        "get": ((f"/v1.0/state/{STORE}/k", None), (service + "GetState", tmp / "get.grpc")),
        "save": ((f"/v1.0/state/{STORE}", tmp / "save.json"), (service + "SaveState", tmp / "save.grpc")),
        "invoke": ((f"/v1.0/invoke/{APP_ID}/method/ping", tmp / "invoke.json"),
                   (service + "InvokeService", tmp / "invoke.grpc")),
    }


def check_grpc(port: int) -> None:
    """Each gRPC request once through the real stubs: h2load cannot see a gRPC error (HTTP 200)."""
    import grpc
    from dapr.proto.common.v1 import common_pb2
    from dapr.proto.runtime.v1 import dapr_pb2_grpc, invoke_pb2, state_pb2
    from google.protobuf import any_pb2

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        got = stub.GetState(state_pb2.GetStateRequest(store_name=STORE, key="k"), timeout=5)
        assert got.data, "GetState returned no data"
        stub.SaveState(state_pb2.SaveStateRequest(store_name=STORE, states=[common_pb2.StateItem(key="s", value=b"1")]),
                       timeout=5)
        stub.InvokeService(invoke_pb2.InvokeServiceRequest(id=APP_ID, message=common_pb2.InvokeRequest(
            method="ping", data=any_pb2.Any(value=b"{}"),
            http_extension=common_pb2.HTTPExtension(verb=common_pb2.HTTPExtension.Verb.POST))), timeout=5)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far."""
    import os

    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def h2load(url: str, args: list[str], duration: float, warmup: float, conns: int, log: Path,
           server_pid: int | None = None) -> dict:
    """One h2load run: req/s from its summary, p50/p99 from its per-request log, and the server's
    CPU time per request (over warm-up and measurement, at the measured rate): less swayed than
    req/s by what else the machine runs."""
    command = ["h2load", "-c", str(conns), "-t", "1", "-m", "1", "-D", f"{round(duration * 1000)}ms",
               "--warm-up-time", f"{round(warmup * 1000)}ms", "--log-file", str(log), *args, url]
    cpu = cpu_seconds(server_pid) if server_pid else 0.0
    out = subprocess_run(command)
    cpu = cpu_seconds(server_pid) - cpu if server_pid else float("nan")
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    if not rate or not done:
        raise RuntimeError(f"cannot read h2load's output:\n{out}")
    if int(done.group(3)) or int(done.group(4)):
        raise RuntimeError(f"h2load saw failed requests against {url}:\n{out}")
    times = sorted(int(line.split("\t")[2]) / 1000.0 for line in log.read_text().splitlines() if line.count("\t") >= 2)
    rps = float(rate.group(1))
    return {"rps": rps, "p50_ms": _pct(times, 0.50), "p99_ms": _pct(times, 0.99), "n": len(times),
            "cpu_us": cpu / (rps * (duration + warmup)) * 1e6}


def subprocess_run(command: list[str]) -> str:
    import subprocess

    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def _pct(values: list[float], f: float) -> float:
    return values[min(len(values) - 1, int(f * len(values)))] if values else float("nan")


def serve_grpc_reference(port: int) -> None:
    """The grpcio ceiling: grpc.aio on uvloop answering GetState with a constant, nothing else."""

    import grpc
    import uvloop
    from dapr.proto.runtime.v1 import state_pb2

    answer = state_pb2.GetStateResponse(data=orjson_value(), etag="1")

    async def get_state(request, context):
        return answer

    async def main():
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("dapr.proto.runtime.v1.Dapr", {
            "GetState": grpc.unary_unary_rpc_method_handler(
                get_state, request_deserializer=state_pb2.GetStateRequest.FromString,
                response_serializer=state_pb2.GetStateResponse.SerializeToString)}),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    uvloop.run(main())


def orjson_value() -> bytes:
    import orjson

    return orjson.dumps(VALUE)


def start_sidecar(tmp: Path, env: dict, name: str, grpc_port: int, app_port: int) -> tuple[b.Child, int]:
    http_port = b.free_port()
    extra = ["--resources-path", str(tmp / "resources"), "--dapr-grpc-port", str(grpc_port), "--mqtt-port", "0",
             "--metrics-port", "0", "--log-level", "warn", "--app-port", str(app_port)]
    child = b.Child(name, b.sidecar_args(APP_ID, http_port, *extra), tmp, env)
    b.wait_status(child, http_port, "/v1.0/healthz", 204)
    return child, http_port


def wait_port(child: b.Child, port: int, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if not child.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} does not listen on {port}:\n{child.output()}") from None
            time.sleep(0.05)


def settle_rss_kb(pid: int, seconds: float = 1.0) -> int:
    time.sleep(seconds)
    return b.proc_status_kb(pid, "VmRSS")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of measurement per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2, help="runs per front and operation, alternating fronts")
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--json", default=None, help="write the figures here")
    parser.add_argument("--serve-grpc-reference", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_grpc_reference:
        serve_grpc_reference(args.serve_grpc_reference)
        return 0
    if not shutil.which("h2load"):
        print("bench_grpc: h2load is not installed (Debian: apt-get install nghttp2-client)", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="pillion-bench-grpc-"))
    (tmp / "resources").mkdir()
    (tmp / "resources" / "state.yaml").write_text(COMPONENT.format(name=STORE, path=tmp / "state"))
    env = b.child_env(tmp)
    children: list[b.Child] = []
    try:
        app_port = b.free_port()
        app = b.Child("app", b.raw_args(app_port, 200), tmp, env)
        children.append(app)
        b.wait_status(app, app_port, "/", 200)
        # Idle memory of the same sidecar without and with the gRPC API.
        plain, _ = start_sidecar(tmp, env, "sidecar-no-grpc", 0, app_port)
        children.append(plain)
        rss_plain = settle_rss_kb(plain.pid)
        plain.stop()
        grpc_port = b.free_port()
        sidecar, http_port = start_sidecar(tmp, env, "sidecar", grpc_port, app_port)
        children.append(sidecar)
        rss_grpc = settle_rss_kb(sidecar.pid)
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{http_port}/v1.0/state/{STORE}", data=json.dumps([{"key": "k", "value": VALUE}]).encode(),
            headers={"Content-Type": "application/json"}), timeout=5).read()
        check_grpc(grpc_port)

        rows: dict = {}
        for op, ((path, body), (rpc, frame)) in requests(tmp).items():
            runs: dict[str, list[dict]] = {"http": [], "grpc": []}
            for _ in range(args.rounds):
                http_args = ["--h1"] + (["-d", str(body), "-H", "Content-Type: application/json"] if body else [])
                runs["http"].append(h2load(f"http://127.0.0.1:{http_port}{path}", http_args, args.duration,
                                           args.warmup, args.conns, tmp / "h2load.log", sidecar.pid))
                grpc_args = ["-d", str(frame), "-H", "content-type: application/grpc", "-H", "te: trailers"]
                runs["grpc"].append(h2load(f"http://127.0.0.1:{grpc_port}{rpc}", grpc_args, args.duration,
                                           args.warmup, args.conns, tmp / "h2load.log", sidecar.pid))
            rows[op] = {front: {key: statistics.mean(r[key] for r in results) for key in ("rps", "p50_ms", "p99_ms",
                                                                                         "cpu_us")}
                        | {"runs": [round(r["rps"]) for r in results]} for front, results in runs.items()}
        peak = b.proc_status_kb(sidecar.pid, "VmHWM")
        sidecar.stop()
        ref_port = b.free_port()
        reference = b.Child("grpc-reference", [sys.executable, __file__, "--serve-grpc-reference", str(ref_port)], tmp, env)
        children.append(reference)
        wait_port(reference, ref_port)
        get_frame = requests(tmp)["get"][1][1]
        ref_runs = [h2load(f"http://127.0.0.1:{ref_port}/dapr.proto.runtime.v1.Dapr/GetState",
                           ["-d", str(get_frame), "-H", "content-type: application/grpc", "-H", "te: trailers"],
                           args.duration, args.warmup, args.conns, tmp / "h2load.log", reference.pid)
                    for _ in range(args.rounds)]
        rows["get"]["grpcio"] = {key: statistics.mean(r[key] for r in ref_runs)
                                 for key in ("rps", "p50_ms", "p99_ms", "cpu_us")} \
            | {"runs": [round(r["rps"]) for r in ref_runs]}
    finally:
        for child in children:
            child.stop()

    print()
    print(f"{'operation':<10}{'front':<6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/req':>12}  runs (req/s)")
    print("-" * 90)
    for op, fronts in rows.items():
        for front, r in fronts.items():
            print(f"{op:<10}{front:<6}{r['rps']:>10.0f}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}{r['cpu_us']:>12.1f}  "
                  f"{', '.join(map(str, r['runs']))}")
    print()
    checks = b.Checks(label_width=44)
    ratio = rows["get"]["grpc"]["rps"] / rows["get"]["http"]["rps"]
    checks.add("state get gRPC / HTTP req/s", ratio, "{:.2f}x", ">= 0.70x", ratio >= 0.70)
    checks.add("  grpcio's own ceiling / HTTP state get", rows["get"]["grpcio"]["rps"] / rows["get"]["http"]["rps"],
               "{:.2f}x", "(info)", None)
    checks.add("  state get gRPC / grpcio's ceiling", rows["get"]["grpc"]["rps"] / rows["get"]["grpcio"]["rps"],
               "{:.2f}x", "(info)", None)
    for op in ("save", "invoke"):
        checks.add(f"{op} gRPC / HTTP req/s", rows[op]["grpc"]["rps"] / rows[op]["http"]["rps"], "{:.2f}x", "(info)", None)
    for op in ("get", "save", "invoke"):
        checks.add(f"{op}: sidecar CPU per request, gRPC / HTTP", rows[op]["grpc"]["cpu_us"] / rows[op]["http"]["cpu_us"],
                   "{:.2f}x", "(info)", None)
    extra_mb = (rss_grpc - rss_plain) / 1024
    checks.add("idle RSS without gRPC (MB)", rss_plain / 1024, "{:.1f}", "(info)", None)
    checks.add("idle RSS with gRPC (MB)", rss_grpc / 1024, "{:.1f}", "(info)", None)
    checks.add("RSS the gRPC extra costs (MB)", extra_mb, "{:.1f}", "<= 15 MB", extra_mb <= 15)
    checks.add("sidecar peak RSS after the loads (MB)", peak / 1024, "{:.1f}", "(info)", None)
    b.print_summary(checks)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "rss_kb": {"no_grpc": rss_plain, "grpc": rss_grpc,
                                                                          "peak": peak}, "checks": checks}, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
