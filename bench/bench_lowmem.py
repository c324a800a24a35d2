#!/usr/bin/env python3
"""Low-memory bench: the sidecar's state, invocation and pub/sub throughput uncapped and under memory caps.

Three runs side by side (``--caps 0,128,64``: uncapped, 128 MB, 64 MB), each a real
``python -m pillion sidecar`` with the default resources of ``pillion init`` (a
``state.lmdb`` store, durability fsync, and ``pubsub.mqtt`` on the embedded broker, QoS 1)
and one app (bench_pubsub's uvloop + httptools subscriber app, which also answers
invocations). Only the sidecar is capped: it is started through ``sh -c 'echo $$ >
cgroup.procs; exec ...'`` so that its start-up runs in the cgroup too; the app and the load
generators are not. Loads, ``--duration`` seconds each after ``--warmup`` (pubsub: 1 s):

  state-save  wrk POST /v1.0/state/statestore, one new key per request (bench_state's lua)
  state-get   wrk GET /v1.0/state/statestore/k
  invoke      wrk GET /v1.0/invoke/bench/method/count (sidecar -> app)
  pubsub      bench_pubsub's closed-loop publisher: POST /v1.0/publish/pubsub/bench, msg/s
              delivered to the app through the embedded broker (every 204 must arrive)

and per run: the cgroup's peak usage (v1 ``memory.max_usage_in_bytes``; v2 ``memory.peak``)
and its page-cache share at the end, the sidecar's VmHWM, and whether it was OOM-killed (exit
status SIGKILL, the cgroup's ``oom_kill`` count, ``failcnt``). Printed: capped / uncapped
throughput per load and PASS/MISS for the target (64 MB: no OOM kill, >= 0.80x uncapped).

--stress adds two probes per run after the loads, on the same sidecars (figures per probe):

  backlog-8k   the app is stopped, then wrk -c16 publishes 8 KB messages for 5 s: they queue
               for the app (in LMDB and in memory) until ``maxQueuedMessages``, then are refused
  bodies-256k  wrk -c50 saves a 256 KB value for 5 s: 50 bodies in flight at once

The loads run interleaved: each load on every sidecar back to back (who goes first rotates),
``--rounds`` times, and each figure is the median of its rounds, so that the other work of
a shared machine weighs on every run alike.

The cgroup: cgroup v2 (``memory.max``) when this process's v2 cgroup has the memory
controller, else a child of this process's cgroup v1 memory cgroup (``memory.limit_in_bytes``
and ``memory.memsw.limit_in_bytes``). The uncapped run uses an unlimited cgroup, so that its
peak is read the same way. Cgroups are removed at the end. (Only v1 was available where this
was written; the v2 path follows the kernel documentation and is untested.)

Usage: python bench/bench_lowmem.py [--quick] [--stress] [--duration 8] [--warmup 2] [--rounds 2]
       [--caps 0,128,64] [--json out.json]
(root, wrk; measures the pillion this interpreter imports: PYTHONPATH=src for the tree)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_http as b  # noqa: E402
import bench_pubsub as ps  # noqa: E402
import bench_state as bs  # noqa: E402

from pillion.components.registry import DEFAULT_RESOURCES  # noqa: E402
from pillion.runtime import memory  # noqa: E402

MB = 1 << 20
LOADS = ("state-save", "state-get", "invoke", "pubsub")
TARGET_RATIO = 0.80
# --stress probes: name -> (wrk connections, value bytes, path)
STRESS = {
    "backlog-8k": (16, 8 * 1024, "/v1.0/publish/pubsub/bench"),  # stops the app: messages queue
    "bodies-256k": (50, 256 * 1024, "/v1.0/state/statestore"),
}
APP_ID = "bench"


# ----------------------------------------------------------------------------------------
# cgroups
# ----------------------------------------------------------------------------------------


class MemCgroup:
    """A child memory cgroup of this process's own, with an optional limit; removed by ``remove``."""

    def __init__(self, name: str, limit_mb: int):
        v2, v1 = memory.cgroup_dirs()
        self.limit = limit_mb * MB if limit_mb else 0
        self.version = 0
        if v2 and "memory" in (Path(v2) / "cgroup.controllers").read_text().split() \
                and os.access(v2, os.W_OK):
            self.version, parent = 2, Path(v2)
        elif v1 and os.access(v1, os.W_OK):
            self.version, parent = 1, Path(v1)
        else:
            raise RuntimeError("no writable memory cgroup: neither cgroup v2 memory.max nor v1 memory.limit_in_bytes")
        self.dir = parent / name
        self.dir.mkdir()
        if self.version == 2:
            # v2: the parent must hand the memory controller down to its children.
            sub = parent / "cgroup.subtree_control"
            if "memory" not in sub.read_text().split():
                try:
                    sub.write_text("+memory")
                except OSError as exc:  # v2's no-internal-processes rule: the parent must hold no process
                    self.dir.rmdir()
                    raise RuntimeError(f"cgroup v2: cannot give the memory controller to children of {parent} "
                                       f"({exc}); start the bench in a delegated cgroup of its own") from None
            if self.limit:
                self._write("memory.max", self.limit)
                if (self.dir / "memory.swap.max").exists():
                    self._write("memory.swap.max", 0)
        elif self.limit:
            self._write("memory.limit_in_bytes", self.limit)
            if (self.dir / "memory.memsw.limit_in_bytes").exists():
                self._write("memory.memsw.limit_in_bytes", self.limit)

    def _write(self, name: str, value: int | str) -> None:
        (self.dir / name).write_text(str(value))

    def _read(self, name: str) -> str | None:
        try:
            return (self.dir / name).read_text()
        except OSError:
            return None

    def _int(self, name: str) -> int | None:
        text = self._read(name)
        return int(text.strip()) if text and text.strip().isdigit() else None

    def _keyed(self, name: str) -> dict[str, int]:
        out = {}
        for line in (self._read(name) or "").splitlines():
            k, _, v = line.partition(" ")
            if v.strip().lstrip("-").isdigit():
                out[k] = int(v)
        return out

    def reset_peak(self) -> None:
        """Start a new peak (v1: write 0 to max_usage_in_bytes; v2 kernels >= 6.12 take any write to memory.peak)."""
        try:
            self._write("memory.max_usage_in_bytes" if self.version == 1 else "memory.peak", 0)
        except OSError:
            pass

    def wrap(self, args: list[str]) -> list[str]:
        """``args`` run by a shell that first moves itself into this cgroup (so start-up is capped)."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.dir / "cgroup.procs"), *args]

    def figures(self) -> dict:
        """Peak usage, page cache and OOM evidence, as far as this cgroup version tells."""
        if self.version == 2:
            events = self._keyed("memory.events")
            stat = self._keyed("memory.stat")
            return {"peak_bytes": self._int("memory.peak"), "current_bytes": self._int("memory.current"),
                    "cache_bytes": stat.get("file"), "anon_bytes": stat.get("anon"),
                    "oom_kills": events.get("oom_kill", 0), "failcnt": events.get("max", 0)}
        stat = self._keyed("memory.stat")
        return {"peak_bytes": self._int("memory.max_usage_in_bytes"),
                "current_bytes": self._int("memory.usage_in_bytes"),
                "cache_bytes": stat.get("cache"), "anon_bytes": stat.get("rss"),
                "oom_kills": self._keyed("memory.oom_control").get("oom_kill", 0),
                "failcnt": self._int("memory.failcnt")}

    def remove(self) -> None:
        """Move anything left to the parent, then rmdir."""
        procs = self.dir / "cgroup.procs"
        parent = self.dir.parent / "cgroup.procs"
        for _ in range(50):
            try:
                left = procs.read_text().split()
            except OSError:
                return
            for pid in left:
                try:
                    parent.write_text(pid)
                except OSError:
                    pass
            try:
                self.dir.rmdir()
                return
            except OSError:
                time.sleep(0.1)
        print(f"  ! could not remove cgroup {self.dir}", flush=True)


# ----------------------------------------------------------------------------------------
# one run
# ----------------------------------------------------------------------------------------


def wrk_load(name: str, url: str, duration: float, warmup: float, script: bs.PostScripts | None = None) -> dict:
    """bench_http's wrk run (with bench_state's POST script when given); errors are recorded, not raised."""
    try:
        if script is not None:
            with script:
                if warmup > 0:
                    b.run_wrk(url, warmup)
                res = b.run_wrk(url, duration)
        else:
            if warmup > 0:
                b.run_wrk(url, warmup)
            res = b.run_wrk(url, duration)
    except Exception as exc:  # noqa: BLE001 - the sidecar may have been killed: record it
        print(f"  {name:<11} FAILED: {exc}".splitlines()[0], flush=True)
        return {"name": name, "rate": 0.0, "error": str(exc)[:2000]}
    res.pop("raw_output", None)
    res["name"] = name
    # A non-2xx answer is not throughput: count only the good ones.
    res["rate"] = res["rps"] * (1 - min(1.0, res["non_2xx"] / max(1, res["requests"])))
    bad = f"  non-2xx {res['non_2xx']}" if res["non_2xx"] else ""
    err = f"  socket errors: {res['socket_errors']}" if res["socket_errors"] else ""
    print(f"  {name:<11} {res['rate']:>9.0f} /s   p50 {res['p50_ms']:.2f} ms  p99 {res['p99_ms']:.2f} ms{bad}{err}",
          flush=True)
    return res


def pubsub_load(port: int, app_port: int, env: dict[str, str], duration: float, warmup: float, pid: int) -> dict:
    """bench_pubsub's closed-loop publisher; msg/s delivered to the app."""
    try:
        ps.http_json(app_port, "/reset")
        lg, _ = ps.run_child(ps.self_cmd("--loadgen", str(port), "closed", "--duration", str(duration),
                                         "--conns", str(ps.LOAD_CONNS)), env, timeout=duration + warmup + 120)
        acc = ps.account(lg["ok_seqs"], ps.wait_delivered(app_port, lg["all_ok"], {"sidecar": pid}))
    except Exception as exc:  # noqa: BLE001 - the sidecar may have been killed: record it
        print(f"  {'pubsub':<11} FAILED: {exc}".splitlines()[0], flush=True)
        return {"name": "pubsub", "rate": 0.0, "error": str(exc)[:2000]}
    elapsed = acc["last_recv"] - lg["first"] if acc["last_recv"] else float("nan")
    rate = acc["delivered"] / elapsed if acc["last_recv"] else 0.0
    res = {"name": "pubsub", "rate": rate, "published_ok": lg["ok"], "publish_bad": lg["bad"],
           "delivered": acc["delivered"], "lost": acc["lost"], "duplicates": acc["duplicates"], "elapsed_s": elapsed,
           "delivery_p50_ms": acc["latency"]["p50_ms"], "delivery_p99_ms": acc["latency"]["p99_ms"]}
    print(f"  {'pubsub':<11} {rate:>9.0f} /s   delivery p50 {res['delivery_p50_ms']:.2f} ms  "
          f"p99 {res['delivery_p99_ms']:.2f} ms  ({acc['delivered']} delivered, {lg['bad']} publish errors)"
          + ps.flags(acc), flush=True)
    return res


class Target:
    """One capped (or uncapped) sidecar with its app, alive for the whole bench."""

    def __init__(self, cap_mb: int, tmp: Path, env: dict[str, str], tag: str, index: int):
        self.cap_mb = cap_mb
        self.label = f"{cap_mb} MB" if cap_mb else "uncapped"
        self.env = env
        self.dir = tmp / f"run-{index}-{cap_mb or 'none'}"
        self.children: list[b.Child] = []
        self.sc: b.Child | None = None
        self.rc: int | None = None
        self.snapped = False
        self.res: dict = {"cap_mb": cap_mb, "loads": {}, "rounds": {n: [] for n in LOADS}}
        self.cg = MemCgroup(f"pillion-lowmem-{os.getpid()}-{tag}-{index}-{cap_mb or 'none'}", cap_mb)
        self.res.update(cgroup=str(self.cg.dir), cgroup_version=self.cg.version)

    def start(self) -> None:
        resources = self.dir / "resources"
        resources.mkdir(parents=True)
        for name, text in DEFAULT_RESOURCES.items():
            (resources / name).write_text(text)
        self.app_port = b.free_port()
        app = b.Child(f"app-{self.cap_mb}", ps.self_cmd("--serve-app", str(self.app_port)), self.dir, self.env)
        self.children.append(app)
        ps.wait_port(app, self.app_port)
        self.port, mqtt_port = b.free_port(), b.free_port()
        args = b.sidecar_args(APP_ID, self.port, "--app-port", str(self.app_port), "--resources-path", str(resources),
                              "--data-dir", str(self.dir / "data"), "--mqtt-port", str(mqtt_port),
                              "--log-level", "warning")
        self.sc = sc = b.Child(f"sidecar-{self.cap_mb}", self.cg.wrap(args), self.dir, self.env)
        self.children.append(sc)
        ready = b.wait_status(sc, self.port, "/v1.0/healthz", 204, timeout=60)
        ps.wait_subscribed(sc, self.port, timeout=60)
        self.res["ready_ms"] = ready * 1e3
        time.sleep(0.3)
        self.res["idle_rss_kb"] = b.proc_status_kb(sc.pid, "VmRSS")
        self.res["idle_cgroup"] = idle = self.cg.figures()
        status, answer = bs.http_call(self.port, "POST", f"/v1.0/state/{bs.STORE}",
                                      json.dumps([{"key": bs.GET_KEY, "value": bs.GET_VALUE}]).encode())
        if status != 204:
            raise RuntimeError(f"saving {bs.GET_KEY!r} answered {status}: {answer!r}")
        print(f"[{self.label}] cgroup v{self.cg.version} {self.cg.dir.name}"
              + (f" limit {self.cap_mb} MB" if self.cap_mb else " (no limit)")
              + f"; sidecar pid {sc.pid} ready in {ready * 1e3:.0f} ms, idle RSS "
              f"{self.res['idle_rss_kb'] / 1024:.1f} MB, cgroup usage {(idle['current_bytes'] or 0) / MB:.1f} MB",
              flush=True)

    def measure_once(self, load: str, duration: float, warmup: float) -> dict:
        base = f"http://127.0.0.1:{self.port}"
        if load == "state-save":
            return wrk_load(load, f"{base}/v1.0/state/{bs.STORE}", duration, warmup, bs.PostScripts(self.dir))
        if load == "state-get":
            return wrk_load(load, f"{base}/v1.0/state/{bs.STORE}/{bs.GET_KEY}", duration, warmup)
        if load == "invoke":
            return wrk_load(load, f"{base}/v1.0/invoke/{APP_ID}/method/count", duration, warmup)
        return pubsub_load(self.port, self.app_port, self.env, duration, warmup, self.sc.pid)

    def measure(self, load: str, duration: float, warmup: float) -> dict:
        if self.sc is None or not self.sc.alive():
            res = {"name": load, "rate": 0.0, "error": "sidecar not running"}
        else:
            print(f"  {self.label:<9}", end="", flush=True)
            res = self.measure_once(load, duration, warmup)
            if res.get("error") and self.sc.alive():
                # The sidecar lives: a fault of the load driver (seen once: bench_pubsub's JSON
                # read cut at 128 KiB). Measure again once and say so.
                print(f"  {self.label:<9}(again) ", end="", flush=True)
                res = self.measure_once(load, duration, warmup) | {"retried_after": res["error"][:500]}
        self.res["rounds"][load].append(res)
        return res

    def snapshot(self) -> None:
        """The run's memory figures and exit status, taken after the throughput loads (before any stress)."""
        res, sc = self.res, self.sc
        self.rc = None
        if sc is not None:
            if sc.alive():
                res["peak_rss_kb"] = b.proc_status_kb(sc.pid, "VmHWM")
                res["end_rss_kb"] = b.proc_status_kb(sc.pid, "VmRSS")
            else:
                self.rc = sc.proc.returncode
        res["cgroup_end"] = self.cg.figures()
        self.snapped = True

    def stress(self, seconds: float) -> None:
        """Loads that make memory grow: big bodies in flight, then a backlog for an app that is down."""
        out = self.res["stress"] = {}
        for probe in STRESS:
            sc = self.sc
            if sc is None or not sc.alive():
                out[probe] = {"skipped": "sidecar not running"}
                continue
            kills0 = self.cg.figures()["oom_kills"] or 0
            self.cg.reset_peak()
            conns, size, path = STRESS[probe]
            if probe.startswith("backlog"):
                self.children[0].stop()  # the app: nothing can be delivered, so messages queue
            script = self.dir / f"{probe}.lua"
            body = (f'[{{"key":"big","value":"{"x" * size}"}}]' if path.startswith("/v1.0/state")
                    else f'{{"v":"{"x" * size}"}}')
            script.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                              f"wrk.body = '{body}'\n")
            cmd = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "-s", str(script),
                   f"http://127.0.0.1:{self.port}{path}"]
            text = subprocess.run(cmd, capture_output=True, text=True).stdout
            time.sleep(1.0)
            fig = self.cg.figures()
            n = re.search(r"(\d+) requests in", text)
            bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
            requests, refused = int(n.group(1)) if n else 0, int(bad.group(1)) if bad else 0
            oom = not sc.alive() or (fig["oom_kills"] or 0) > kills0
            out[probe] = {"command": shlex.join(cmd), "requests": requests, "refused": refused,
                          "accepted": requests - refused, "oom_killed": oom, "peak_bytes": fig["peak_bytes"],
                          "anon_bytes": fig["anon_bytes"], "cache_bytes": fig["cache_bytes"]}
            print(f"  {self.label:<9} {probe:<12} {requests - refused:>7} accepted {refused:>7} refused  "
                  f"cgroup peak {(fig['peak_bytes'] or 0) / MB:6.1f} MB (anon {(fig['anon_bytes'] or 0) / MB:.1f})"
                  f"  OOM {'yes' if oom else 'no'}", flush=True)

    def finish(self) -> dict:
        """Stop everything, read the cgroup's figures, remove it; the run's record."""
        res, sc = self.res, self.sc
        try:
            if not self.snapped:
                self.snapshot()
        finally:
            for c in reversed(self.children):
                c.stop()
            self.cg.remove()
        rc = self.rc
        if sc is not None:
            tail = sc.log_path.read_text(errors="replace").strip().splitlines()[-15:]
            res["sidecar_log_tail"] = tail
            if rc is not None:
                print(f"  [{self.label}] sidecar had exited with {rc}; log tail:\n    " + "\n    ".join(tail),
                      flush=True)
        for n in LOADS:
            rates = [r["rate"] for r in res["rounds"][n]]
            res["loads"][n] = {"rate": statistics.median(rates) if rates else 0.0, "rates": rates}
        fig = res["cgroup_end"]
        res["exit_code"] = rc
        res["oom_killed"] = bool(rc in (-signal.SIGKILL, 128 + signal.SIGKILL) or fig.get("oom_kills"))
        res["cgroup_peak_bytes"] = fig.get("peak_bytes")
        errors = [r["error"] for n in LOADS for r in res["rounds"][n] if r.get("error")]
        if sc is None or (rc is not None and not res["oom_killed"]) or (errors and not res["oom_killed"]):
            res["error"] = f"sidecar exited with {rc}" if rc is not None else (errors[0] if errors else "not started")
        print(f"  [{self.label}] peak: cgroup {(fig.get('peak_bytes') or 0) / MB:.1f} MB (page cache at end "
              f"{(fig.get('cache_bytes') or 0) / MB:.1f} MB), VmHWM {(res.get('peak_rss_kb') or 0) / 1024:.1f} MB; "
              f"failcnt {fig.get('failcnt')}, oom kills {fig.get('oom_kills')}, exit {rc if rc is not None else '-'}",
              flush=True)
        return res


# ----------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------


def report(runs: list[dict]) -> list[dict]:
    print()
    head = (f"{'run':<10}" + "".join(f"{n:>12}" for n in LOADS)
            + f"{'cg peak MB':>12}{'VmHWM MB':>10}{'failcnt':>9}{'OOM':>5}")
    print(head)
    print("-" * len(head))
    for r in runs:
        label = f"{r['cap_mb']} MB" if r["cap_mb"] else "uncapped"
        rates = "".join(f"{r['loads'].get(n, {}).get('rate', 0.0):>12.0f}" for n in LOADS)
        peak = r.get("cgroup_peak_bytes")
        hwm = r.get("peak_rss_kb")
        print(f"{label:<10}{rates}{(peak or 0) / MB:>12.1f}{(hwm or 0) / 1024:>10.1f}"
              f"{str(r['cgroup_end'].get('failcnt')):>9}{'yes' if r['oom_killed'] else 'no':>5}")
    print("(state-save, state-get, invoke: req/s answered 2xx; pubsub: msg/s delivered; median of the rounds)")
    if any(len(r["loads"][n]["rates"]) > 1 for r in runs for n in LOADS):
        for r in runs:
            label = f"{r['cap_mb']} MB" if r["cap_mb"] else "uncapped"
            print(f"  rounds {label:<9}" + "".join(
                f"{'/'.join(f'{x:.0f}' for x in r['loads'][n]['rates']):>16}" for n in LOADS))
    if any(r.get("stress") for r in runs):
        print(f"\n{'stress':<10}" + "".join(f"{n:>26}" for n in STRESS))
        for r in runs:
            label = f"{r['cap_mb']} MB" if r["cap_mb"] else "uncapped"
            cells = []
            for n in STRESS:
                s = r.get("stress", {}).get(n, {})
                cells.append("skipped" if "skipped" in s or not s else
                             f"{s['accepted']} ok, {(s['peak_bytes'] or 0) / MB:.0f} MB, "
                             f"{'OOM' if s['oom_killed'] else 'no OOM'}")
            print(f"{label:<10}" + "".join(f"{c:>26}" for c in cells))
        print("(accepted requests, cgroup peak during the probe, OOM kill)")
    print()
    checks = b.Checks(label_width=44)
    base = next((r for r in runs if not r["cap_mb"]), None)  # the first uncapped run
    for r in runs:
        if not r["cap_mb"]:
            continue
        target = r["cap_mb"] <= 64
        if r.get("error") and not r["oom_killed"]:
            checks.add(f"{r['cap_mb']} MB run", None, "", "runs", False if target else None, "FAILED (not OOM)")
        checks.add(f"{r['cap_mb']} MB: OOM-killed", 1.0 if r["oom_killed"] else 0.0, "{:.0f}", "0 (no)",
                   (not r["oom_killed"]) if target else None)
        # 0: the cgroup never reached its limit during the loads, so the cap cannot have slowed them.
        failcnt = r["cgroup_end"].get("failcnt")
        checks.add(f"{r['cap_mb']} MB: cap reached (failcnt)", failcnt, "{:.0f}", "(info)", None,
                   "" if failcnt is not None else "not reported")
        for n in LOADS:
            if base is None or not base["loads"].get(n, {}).get("rate"):
                checks.add(f"{r['cap_mb']} MB / uncapped {n}", None, "", f">= {TARGET_RATIO:.2f}x", None,
                           "no uncapped figure")
                continue
            ratio = r["loads"].get(n, {}).get("rate", 0.0) / base["loads"][n]["rate"]
            checks.add(f"{r['cap_mb']} MB / uncapped {n}", ratio, "{:.2f}x",
                       f">= {TARGET_RATIO:.2f}x" if target else "(info)", ratio >= TARGET_RATIO if target else None)
        for n, s in r.get("stress", {}).items():
            if "oom_killed" in s:
                checks.add(f"{r['cap_mb']} MB stress {n}: OOM-killed", float(s["oom_killed"]), "{:.0f}", "0 (no)",
                           (not s["oom_killed"]) if target else None)
    b.print_summary(checks)
    return checks


# ----------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="4 s of load + 1 s warm-up per load (about 2 minutes in all)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds of measured load per load and run (default 8)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per load (default 2)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each figure is the median (default 2)")
    p.add_argument("--stress", action="store_true",
                   help="after the loads, probes that make memory grow: " + ", ".join(STRESS) + " (about 15 s a run)")
    p.add_argument("--stress-duration", type=float, default=5.0, help=argparse.SUPPRESS)
    p.add_argument("--caps", default="0,128,64", help="comma-separated caps in MB, 0 = uncapped (default 0,128,64)")
    p.add_argument("--json", metavar="FILE", default=None, help="write every number to FILE as JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.rounds = 4.0, 1.0, 1
    caps = [int(x) for x in args.caps.split(",") if x.strip()]

    cmdline = shlex.join([sys.executable, *sys.argv])
    print(f"command: {cmdline}")
    if shutil.which("wrk") is None:
        print("wrk is not installed", file=sys.stderr)
        return 1
    info = memory.detect()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpu(s), {memory.architecture()}; this process may use "
          f"{info.limit_bytes / MB:.0f} MB ({info.source})")
    print(f"loadavg at start: {Path('/proc/loadavg').read_text().strip()}")
    print(f"per load: {args.warmup:g}s warm-up + {args.duration:g}s; wrk -t{b.THREADS} -c{b.CONNECTIONS}; "
          f"pubsub: {ps.LOAD_CONNS} closed-loop connections; caps: "
          + ", ".join(f"{c} MB" if c else "none" for c in caps))

    tmp = Path(tempfile.mkdtemp(prefix="pillion-bench-lowmem-"))
    env = b.child_env(tmp)
    loaded = subprocess.run(
        [sys.executable, "-c", "import pillion, pillion._impl as i, pillion.server.protocol;"
         "print(pillion.__file__, sorted(i.loaded().items()))"], capture_output=True, text=True, env=env).stdout.strip()
    print(f"pillion under test: {loaded}", flush=True)
    # Warm the bytecode cache outside any cap, so every run starts the same way.
    subprocess.run([sys.executable, "-c", "import pillion.cli, pillion.runtime.sidecar"], env=env, check=False)

    t0 = time.perf_counter()
    tag = time.strftime("%H%M%S")
    targets: list[Target] = []
    try:
        for cap in caps:
            targets.append(Target(cap, tmp, env, tag, len(targets)))
        for t in targets:
            t.start()
        # Interleaved: each load runs on every target back to back, so that the machine's
        # other work (a shared 2-core box) weighs on all of them alike; who goes first rotates.
        for rnd in range(args.rounds):
            for i, load in enumerate(LOADS):
                print(f"\n{load}" + (f" (round {rnd + 1}/{args.rounds})" if args.rounds > 1 else ""), flush=True)
                k = (rnd * len(LOADS) + i) % len(targets)
                for t in targets[k:] + targets[:k]:
                    t.measure(load, args.duration, args.warmup)
        for t in targets:
            t.snapshot()
        if args.stress:
            print("\nstress (figures of each probe alone; its OOM is not the run's)", flush=True)
            for t in targets:
                t.stress(args.stress_duration)
    except Exception as exc:  # noqa: BLE001 - report what ran; the exit code says it failed
        print(f"bench failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        error = True
    else:
        error = False
    finally:
        print()
        runs = [t.finish() for t in targets]
    checks = report(runs)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": cmdline, "duration": args.duration, "warmup": args.warmup,
                                               "pillion": loaded, "runs": runs, "checks": checks}, indent=2))
        print(f"wrote {args.json}")
    if error:
        print(f"(child logs kept in {tmp})")
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
