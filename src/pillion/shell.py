"""Commands for a person at a device's shell: publish, invoke, state, components, logs, run -f.

They talk to a running sidecar's HTTP API with ``http.client`` (no asyncio, no uvloop:
the CLI should start fast on a small board). The sidecar is the one on
``--dapr-http-port``, else the one of ``--app-id`` in the host registry, else
``$DAPR_HTTP_PORT``, else the only sidecar running on this host.

Exit codes, the same for every command here, so scripts can rely on them:

- 0: done;
- 1: not found (state key, app id, logs) or the call failed; the sidecar's Dapr error
  code and message are printed on stderr;
- 2: usage or configuration error (bad arguments, bad resources file, more than one
  sidecar and none chosen);
- 3: no sidecar reachable.

Data (state values, component lists) goes to stdout, as a table or ``-o json``;
messages and progress go to stderr.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .grpcapi import installed as grpc_installed

OK, FAILED, USAGE, UNREACHABLE = 0, 1, 2, 3


class ShellError(Exception):
    """Stops a command with a message on stderr and an exit code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


# -- progress ---------------------------------------------------------------------------------

class Progress:
    """A spinner with the step's name on a terminal; plain ``step...`` lines otherwise (logs, pipes)."""

    FRAMES = "|/-\\"

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.lock = threading.Lock()  # held by whoever writes a line, so a spinner frame never splits it
        self._spinning = False

    @contextmanager
    def step(self, name: str):
        started = time.monotonic()
        stop = threading.Event()
        spinner = None
        if self.tty:
            def spin():
                frame = 0
                while not stop.wait(0.1):
                    with self.lock:
                        self.stream.write(f"\r{self.FRAMES[frame % 4]} {name}\033[K")
                        self.stream.flush()
                    frame += 1

            self._spinning = True
            spinner = threading.Thread(target=spin, daemon=True)
            spinner.start()
        else:
            with self.lock:
                self._line(f"{name}...")
        ok = False
        try:
            yield
            ok = True
        finally:
            stop.set()
            if spinner is not None:
                spinner.join()
                self._spinning = False
            took = time.monotonic() - started
            mark = "done" if ok else "failed"
            with self.lock:
                if self.tty:
                    self.stream.write(f"\r{'✓' if ok else '✗'} {name} ({took:.1f}s)\033[K\n")
                    self.stream.flush()
                else:
                    self._line(f"{name}: {mark} ({took:.1f}s)")

    def clear(self) -> None:
        """Wipe the spinner's line before another line is written under it (hold ``lock``)."""
        if self._spinning:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


# -- parsers ----------------------------------------------------------------------------------

def _target(p) -> None:
    p.add_argument("--app-id", default=None, help="the sidecar of this app id (host registry)")
    p.add_argument("--dapr-http-port", type=int, default=None, help="the sidecar on this port (default $DAPR_HTTP_PORT)")
    p.add_argument("--data-dir", default=None, help="where the host registry is (default as `pillion sidecar`)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the sidecar's answer")


def _output(p) -> None:
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")


def add_parsers(sub) -> None:
    pub = sub.add_parser("publish", help="publish an event through a running sidecar")
    _target(pub)
    pub.add_argument("--pubsub", required=True, help="pub/sub component name")
    pub.add_argument("--topic", required=True)
    pub.add_argument("--data", default=None, help="JSON (or text), or @FILE")
    pub.add_argument("--content-type", default=None, help="default: application/json when --data is JSON, else text/plain")

    inv = sub.add_parser("invoke", help="call a method of an app through a running sidecar")
    _target(inv)
    inv.add_argument("--method", required=True)
    inv.add_argument("--verb", default="POST", type=str.upper)
    inv.add_argument("--data", default=None, help="JSON (or text), or @FILE")
    inv.add_argument("--content-type", default=None)
    inv.add_argument("--target-app-id", default=None, help="the app to call (default: --app-id)")

    state = sub.add_parser("state", help="get, set, delete and list state through a running sidecar")
    state_sub = state.add_subparsers(dest="state_command", required=True)
    for name, helptext in (("get", "print a key's value (exit 1 when not found)"), ("set", "save a value"),
                           ("delete", "delete a key"), ("list", "keys, values and etags (query API)")):
        p = state_sub.add_parser(name, help=helptext)
        _target(p)
        p.add_argument("--store", default="statestore", help="state store component name (default statestore)")
        if name in ("get", "set", "delete"):
            p.add_argument("key")
        if name == "set":
            p.add_argument("value", help="JSON, or any other text (saved as a string)")
        if name in ("set", "delete"):
            p.add_argument("--etag", default=None, help="first-write-wins: only when the stored etag is this")
        if name in ("get", "list"):
            _output(p)

    comp = sub.add_parser("components", help="list and validate a resources folder")
    comp.add_argument("--resources-path", action="append", default=None,
                      help="folder of resources (repeatable; default ~/.pillion/components)")
    _output(comp)

    logs = sub.add_parser("logs", help="an app's sidecar logs from journald (systemd installs)")
    logs.add_argument("--app-id", required=True)
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("-n", "--lines", type=int, default=None, help="only the last N lines")
    logs.add_argument("--root", default="/", help="where /etc/pillion/pillion.env is (default /)")
    logs.add_argument("--print-command", action="store_true", help="print the journalctl command instead of running it")


def run(args) -> int:
    try:
        if args.command == "state":
            return {"get": state_get, "set": state_set, "delete": state_delete,
                    "list": state_list}[args.state_command](args)
        return {"publish": publish, "invoke": invoke, "components": components, "logs": logs}[args.command](args)
    except ShellError as exc:
        print(f"pillion {args.command}: {exc}", file=sys.stderr)
        return exc.code


# -- talking to a sidecar -------------------------------------------------------------------------

def _registry(args):
    from .cli import default_data_dir
    from .runtime.registry import HostRegistry

    return HostRegistry(args.data_dir or default_data_dir())


def sidecar_port(args) -> int:
    """Which sidecar: --app-id, --dapr-http-port, $DAPR_HTTP_PORT, the only one on the host.

    Both flags given: the port wins, so ``invoke --app-id B --dapr-http-port P`` calls B
    through the sidecar on P (B may run on another host).
    """
    if args.app_id and not args.dapr_http_port:
        entries = _registry(args).lookup(args.app_id)
        if not entries:
            raise ShellError(UNREACHABLE, f"no sidecar with app id {args.app_id!r} is running on this host "
                                          "(see `pillion list`)")
        return entries[0].http_port
    if args.dapr_http_port:
        return args.dapr_http_port
    env = os.environ.get("DAPR_HTTP_PORT")
    if env:
        try:
            return int(env)
        except ValueError:
            raise ShellError(USAGE, f"DAPR_HTTP_PORT={env!r} is not a port number") from None
    entries = _registry(args).entries()
    if not entries:
        raise ShellError(UNREACHABLE, "no sidecar is running on this host; start one or give --dapr-http-port")
    ids = sorted({e.app_id for e in entries})
    if len(entries) > 1:
        raise ShellError(USAGE, f"{len(entries)} sidecars run on this host ({', '.join(ids)}): choose one "
                                "with --app-id or --dapr-http-port")
    return entries[0].http_port


def _call(args, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    import http.client

    port = sidecar_port(args)
    headers = dict(headers or {})
    token = os.environ.get("DAPR_API_TOKEN")
    if token:
        headers["dapr-api-token"] = token
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=args.timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    except (ConnectionError, OSError) as exc:
        raise ShellError(UNREACHABLE, f"no sidecar reachable on 127.0.0.1:{port}: {exc}") from None
    finally:
        conn.close()


def _failed(status: int, data: bytes) -> ShellError:
    """Dapr's ``{"errorCode", "message"}`` as one line, or the status and body as they are."""
    try:
        body = json.loads(data)
        return ShellError(FAILED, f"{body['errorCode']}: {body.get('message', '')} (HTTP {status})")
    except (ValueError, KeyError, TypeError):
        text = data.decode("utf-8", "replace").strip()
        return ShellError(FAILED, f"HTTP {status}" + (f": {text}" if text else ""))


def _payload(args) -> tuple[bytes | None, str | None]:
    """``--data``: JSON or text, or ``@file``; and the content type that goes with it."""
    if args.data is None:
        return None, args.content_type
    if args.data.startswith("@"):
        try:
            raw = Path(args.data[1:]).read_bytes()
        except OSError as exc:
            raise ShellError(USAGE, f"--data: {exc}") from None
    else:
        raw = args.data.encode()
    try:
        json.loads(raw)
        guessed = "application/json"
    except ValueError:
        guessed = "text/plain"
    return raw, args.content_type or guessed


def _quote(part: str) -> str:
    from urllib.parse import quote

    return quote(part, safe="")


# -- publish / invoke -----------------------------------------------------------------------------

def publish(args) -> int:
    body, ctype = _payload(args)
    headers = {"Content-Type": ctype} if ctype else {}
    status, _, data = _call(args, "POST", f"/v1.0/publish/{_quote(args.pubsub)}/{_quote(args.topic)}",
                            body or b"", headers)
    if status >= 300:
        raise _failed(status, data)
    print(f"published to {args.pubsub}/{args.topic}", file=sys.stderr)
    return OK


def invoke(args) -> int:
    target = args.target_app_id or args.app_id
    if not target:
        raise ShellError(USAGE, "--app-id (or --target-app-id) names the app to call")
    body, ctype = _payload(args)
    headers = {"Content-Type": ctype} if ctype else {}
    method = args.method.lstrip("/")
    status, _, data = _call(args, args.verb, f"/v1.0/invoke/{_quote(target)}/method/{method}", body, headers)
    if status >= 400:
        if data:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        raise _failed(status, data)
    sys.stdout.buffer.write(data)
    if data and not data.endswith(b"\n"):
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()
    return OK


# -- state ----------------------------------------------------------------------------------------

def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _show(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _print_entries(args, entries: list[dict]) -> None:
    if args.output == "json":
        print(json.dumps(entries, indent=2))
        return
    _table([("KEY", "VALUE", "ETAG")] + [(e["key"], _show(e["value"]), e.get("etag") or "") for e in entries])


def _decode(data: bytes):
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")


def state_get(args) -> int:
    status, headers, data = _call(args, "GET", f"/v1.0/state/{_quote(args.store)}/{_quote(args.key)}")
    if status >= 300:
        raise _failed(status, data)
    if status == 204 or not data:
        raise ShellError(FAILED, f"key {args.key!r} not found in {args.store}")
    entry = {"key": args.key, "value": _decode(data), "etag": headers.get("ETag")}
    if args.output == "json":
        print(json.dumps(entry, indent=2))
    else:
        print(_show(entry["value"]))
    return OK


def state_set(args) -> int:
    try:
        value = json.loads(args.value)
    except ValueError:
        value = args.value
    item = {"key": args.key, "value": value}
    if args.etag:
        item["etag"] = args.etag
        item["options"] = {"concurrency": "first-write"}
    status, _, data = _call(args, "POST", f"/v1.0/state/{_quote(args.store)}", json.dumps([item]).encode(),
                            {"Content-Type": "application/json"})
    if status >= 300:
        raise _failed(status, data)
    print(f"saved {args.key} in {args.store}", file=sys.stderr)
    return OK


def state_delete(args) -> int:
    headers = {"If-Match": args.etag} if args.etag else {}
    path = f"/v1.0/state/{_quote(args.store)}/{_quote(args.key)}"
    if args.etag:
        path += "?concurrency=first-write"
    status, _, data = _call(args, "DELETE", path, None, headers)
    if status >= 300:
        raise _failed(status, data)
    print(f"deleted {args.key} from {args.store}", file=sys.stderr)
    return OK


def state_list(args) -> int:
    entries: list[dict] = []
    token = None
    while True:
        query: dict = {"filter": {}}
        if token:
            query["page"] = {"token": token}
        status, _, data = _call(args, "POST", f"/v1.0-alpha1/state/{_quote(args.store)}/query",
                                json.dumps(query).encode(), {"Content-Type": "application/json"})
        if status >= 300:
            raise _failed(status, data)
        if status == 204 or not data:
            break
        body = json.loads(data)
        results = body.get("results") or []
        entries += [{"key": r["key"], "value": r.get("data"), "etag": r.get("etag")} for r in results]
        token = body.get("token")
        if not token or not results:
            break
    _print_entries(args, entries)
    return OK


# -- components -----------------------------------------------------------------------------------

def components(args) -> int:
    from .cli import pillion_home
    from .components.registry import check
    from .config.loader import load_resources
    from .errors import ConfigError

    paths = args.resources_path or [str(pillion_home() / "components")]
    try:
        resources = load_resources(paths, app_id=None)
        stores = [c.name for c in resources.components if c.type.startswith("secretstores.")]
        for component in resources.components:
            check(component, stores)
    except ConfigError as exc:
        if args.output == "json":
            print(json.dumps({"error": {"file": exc.file, "document": exc.document, "field": exc.field,
                                        "expected": exc.expected}}, indent=2))
        print(f"pillion components: invalid resources\n  file:     {exc.file}\n  document: {exc.document}\n"
              f"  field:    {exc.field}\n  expected: {exc.expected}", file=sys.stderr)
        return USAGE
    rows = [{"name": c.name, "type": c.type, "version": c.version or "v1", "scopes": list(c.scopes),
             "file": c.source.file, "document": c.source.document} for c in resources.components]
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return OK
    if not rows:
        print(f"No components in {', '.join(paths)}.")
        return OK
    _table([("NAME", "TYPE", "VERSION", "SCOPES", "FILE")] +
           [(r["name"], r["type"], r["version"], ",".join(r["scopes"]), r["file"]) for r in rows])
    return OK


# -- logs -----------------------------------------------------------------------------------------

def _service_app_id(root: str) -> str | None:
    """APP_ID of the single-app ``pillion.service`` (from its environment file), if installed."""
    try:
        text = (Path(root) / "etc/pillion/pillion.env").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, eq, value = line.strip().partition("=")
        if eq and name == "APP_ID":
            return value.strip().strip("'\"")
    return None


def journal_command(args) -> list[str]:
    """``pillion.service`` when it is the unit of this app id, else the template unit ``pillion@ID``."""
    unit = "pillion.service" if _service_app_id(args.root) == args.app_id else f"pillion@{args.app_id}.service"
    command = ["journalctl", "--no-pager", "-u", unit]
    if args.lines is not None:
        command += ["-n", str(args.lines)]
    if args.follow:
        command.append("-f")
    return command


def logs(args) -> int:
    import shutil

    command = journal_command(args)
    if args.print_command:
        print(" ".join(command))
        return OK
    # sd_booted(): systemd is PID 1 when this directory exists.
    if not shutil.which("journalctl") or not os.path.isdir("/run/systemd/system"):
        raise ShellError(FAILED, "journald is not available here (systemd is not running), so there is no log "
                                 "to read: `pillion run` prints the sidecar's and the app's logs to its terminal, "
                                 f"`pillion sidecar` to its stderr. Under systemd this runs: {' '.join(command)}")
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return OK


# -- run -f: the multi-app run template -------------------------------------------------------------

def _template_path(arg: str) -> Path:
    path = Path(arg)
    return path / "dapr.yaml" if path.is_dir() else path


def _paths(value, base: Path, field: str) -> list[str]:
    if value in (None, ""):
        return []
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ShellError(USAGE, f"{field}: expected a path or a list of paths")
    return [str((base / str(item).strip()).resolve()) for item in items if str(item).strip()]


def app_commands(template: Path) -> list[tuple[str, list[str], str, dict[str, str]]]:
    """(app id, ``pillion run`` command line, working directory, environment) for every app."""
    import yaml

    try:
        doc = yaml.safe_load(template.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ShellError(USAGE, f"cannot read the run template {template}: {exc}") from None
    if not isinstance(doc, dict) or str(doc.get("version")) != "1":
        raise ShellError(USAGE, f"{template}: field 'version': 1")
    apps = doc.get("apps")
    if not isinstance(apps, list) or not apps:
        raise ShellError(USAGE, f"{template}: field 'apps': a list of at least one app")
    common = doc.get("common") or {}
    if not isinstance(common, dict):
        raise ShellError(USAGE, f"{template}: field 'common': a mapping")
    base = template.resolve().parent
    out, seen = [], set()
    for index, app in enumerate(apps):
        where = f"{template}: apps[{index}]"
        if not isinstance(app, dict):
            raise ShellError(USAGE, f"{where}: a mapping")
        merged = {**{k: v for k, v in common.items() if k != "env"}, **app}
        if not merged.get("appDirPath"):
            raise ShellError(USAGE, f"{where}: field 'appDirPath' is required")
        app_dir = (base / str(merged["appDirPath"])).resolve()
        app_id = str(merged.get("appID") or app_dir.name)
        if app_id in seen:
            raise ShellError(USAGE, f"{where}: appID {app_id!r} appears twice")
        seen.add(app_id)
        command = merged.get("command") or []
        if isinstance(command, str) or not all(isinstance(c, (str, int, float)) for c in command):
            raise ShellError(USAGE, f"{where}: field 'command': a list such as [\"python3\", \"app.py\"]")
        http_port = merged.get("daprHTTPPort") or free_port()
        args = [sys.executable, "-m", "pillion", "run", "--app-id", app_id, "--dapr-http-port", str(http_port)]
        if merged.get("daprGRPCPort") in (None, "") and grpc_installed():  # several apps: not all on 50001
            args += ["--dapr-grpc-port", str(free_port())]
        for key, flag in (("appPort", "--app-port"), ("daprGRPCPort", "--dapr-grpc-port"),
                          ("daprInternalGRPCPort", "--dapr-internal-grpc-port"), ("metricsPort", "--metrics-port"),
                          ("mqttPort", "--mqtt-port"), ("appChannelAddress", "--app-channel-address"),
                          ("appProtocol", "--app-protocol"), ("appHealthCheckPath", "--app-health-check-path"),
                          ("logLevel", "--log-level"), ("appMaxConcurrency", "--app-max-concurrency")):
            if merged.get(key) not in (None, ""):
                args += [flag, str(merged[key])]
        if merged.get("enableAppHealthCheck"):
            args.append("--enable-app-health-check")
        for path in _paths(merged.get("resourcesPaths") or merged.get("resourcesPath"), base, "resourcesPaths"):
            args += ["--resources-path", path]
        if merged.get("configFilePath"):
            args += ["--config", str((base / str(merged["configFilePath"])).resolve())]
        if command:
            args += ["--", *map(str, command)]
        env = dict(os.environ)
        for source in (common.get("env") or {}, app.get("env") or {}):
            env.update({str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in source.items()})
        out.append((app_id, args, str(app_dir), env))
    return out


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthz(port: int, path: str) -> int | None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


class _NotReady(Exception):
    """Why a wait ended early: "exited", "stopping" or "timeout"."""


def _wait_ready(proc, port: int, path: str, timeout: float, stopping: threading.Event) -> None:
    deadline = time.monotonic() + timeout
    while _healthz(port, path) != 204:
        if stopping.is_set():
            raise _NotReady("stopping")
        if proc.poll() is not None:
            raise _NotReady("exited")
        if time.monotonic() > deadline:
            raise _NotReady("timeout")
        time.sleep(0.1)


def _pump(stream, prefix: bytes, progress: Progress) -> None:
    for line in iter(stream.readline, b""):
        with progress.lock:
            progress.clear()
            sys.stdout.buffer.write(prefix + (line if line.endswith(b"\n") else line + b"\n"))
            sys.stdout.flush()
    stream.close()


def run_file(args) -> int:
    """Every app of the template with its sidecar (one ``pillion run`` child each), lines
    prefixed with the app id; SIGINT/SIGTERM stops them all (SIGTERM, wait, then SIGKILL).

    Exit code: the first non-zero exit code of an app that stopped on its own (the others
    are then stopped too), 0 when all stopped on a signal within the grace period, 1
    when one had to be killed, 2 for a bad template.
    """
    try:
        apps = app_commands(_template_path(args.run_file))
    except ShellError as exc:
        print(f"pillion run: {exc}", file=sys.stderr)
        return exc.code
    width = max(len(app_id) for app_id, *_ in apps)
    children: list[tuple[str, subprocess.Popen]] = []
    pumps = []
    stopping = threading.Event()
    signalled = []

    def on_signal(sig, _frame):
        signalled.append(sig)
        stopping.set()

    progress = Progress()
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    first_failure = 0
    try:
        for app_id, command, cwd, env in apps:
            if stopping.is_set():
                break
            try:
                proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                print(f"pillion run: cannot start {app_id} in {cwd}: {exc}", file=sys.stderr)
                first_failure = 2
                break
            children.append((app_id, proc))
            thread = threading.Thread(target=_pump, args=(proc.stdout, f"{app_id:<{width}} | ".encode(), progress),
                                      daemon=True)
            thread.start()
            pumps.append(thread)
            port = int(command[command.index("--dapr-http-port") + 1])
            try:
                with progress.step(f"starting {app_id} (sidecar on port {port})"):
                    _wait_ready(proc, port, "/v1.0/healthz/outbound", 30, stopping)
                if "--app-port" in command:
                    # /v1.0/healthz answers 204 once the sidecar has reached the app's port.
                    app_port = command[command.index("--app-port") + 1]
                    try:
                        with progress.step(f"waiting for {app_id} on port {app_port}"):
                            _wait_ready(proc, port, "/v1.0/healthz", 60, stopping)
                    except _NotReady as exc:
                        if str(exc) != "timeout":
                            raise
                        print(f"pillion run: {app_id} does not listen on port {app_port} after 60s; "
                              "starting the others", file=sys.stderr)
            except _NotReady as exc:
                if str(exc) == "stopping":
                    break
                if str(exc) == "exited" and proc.returncode == 0:
                    continue  # an app that is done already; start the others
                if str(exc) == "timeout":
                    print(f"pillion run: the sidecar of {app_id} is not ready after 30s", file=sys.stderr)
                    first_failure = 1
                break
        while not stopping.is_set() and not first_failure:
            for app_id, proc in children:
                code = proc.poll()
                if code not in (None, 0):
                    print(f"pillion run: {app_id} exited with code {code}; stopping the others", file=sys.stderr)
                    first_failure = code if code > 0 else 128 - code
                    break
            if all(proc.poll() is not None for _, proc in children):
                break
            stopping.wait(0.2)
        # A child that failed while we were starting the next one counts too.
        if not first_failure and not signalled:
            for app_id, proc in children:
                if proc.poll() not in (None, 0):
                    code = proc.returncode
                    first_failure = code if code > 0 else 128 - code
                    break
        killed = _stop_all(children, grace=float(getattr(args, "dapr_graceful_shutdown_seconds", 5) or 5) + 5)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for thread in pumps:
        thread.join(5)
    if first_failure:
        return first_failure
    return 1 if killed else 0


def _stop_all(children, grace: float) -> bool:
    """SIGTERM to every running child, wait up to ``grace`` seconds, then SIGKILL; True if any was killed."""
    for _, proc in children:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    killed = False
    for app_id, proc in children:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"pillion run: {app_id} did not stop within {grace:g}s; killing it", file=sys.stderr)
            os.killpg(proc.pid, signal.SIGKILL) if _is_group_leader(proc.pid) else proc.kill()
            proc.wait()
            killed = True
    return killed


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False
