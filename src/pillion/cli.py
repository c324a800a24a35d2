"""``pillion``: init, run, sidecar, list, stop.

``run`` and ``sidecar`` accept daprd's flag names (Go style ``-flag`` too), so a
``daprd`` command line works after renaming the program. Imports are kept inside
the commands: ``pillion list`` should not pay for uvloop.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path

from ._version import __version__

log = logging.getLogger("pillion.cli")

_BOOL_FLAGS = (
    "--enable-app-health-check", "--log-as-json", "--enable-mtls", "--enable-profiling",
    "--app-ssl", "--disable-builtin-k8s-secret-store", "--wait",
)
# daprd flags Pillion accepts and has no use for (control plane, profiling, gRPC front);
# they are parsed so that daprd command lines work, and logged at debug level.
_IGNORED_VALUE_FLAGS = (
    "--placement-host-address", "--scheduler-host-address", "--actors-service", "--reminders-service",
    "--sentry-address", "--control-plane-address", "--control-plane-trust-domain",
    "--control-plane-namespace", "--profile-port",
    "--allowed-origins", "--dapr-block-shutdown-duration", "--app-binding-options-timeout",
    "--scheduler-job-streams", "--log-file",
)


def pillion_home() -> Path:
    return Path(os.environ.get("PILLION_HOME") or Path.home() / ".pillion")


def default_data_dir() -> str:
    return os.environ.get("PILLION_DATA_DIR") or str(pillion_home() / "data")


def quantity(text: str) -> int:
    """Kubernetes-style byte quantity as daprd takes it: ``4Mi``, ``512Ki``, ``1000``."""
    from .config.durations import parse_quantity

    try:
        return parse_quantity(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _normalize_argv(argv: list[str]) -> list[str]:
    """Go's flag syntax: ``-app-id x`` and ``--enable-app-health-check=true``."""
    out: list[str] = []
    for index, arg in enumerate(argv):
        if arg == "--":
            return out + argv[index:]
        if re.match(r"^-[a-z][a-z0-9]*(-[a-z0-9]+)+(=.*)?$", arg) or re.match(r"^-(config|wait|mode)(=.*)?$", arg):
            arg = "-" + arg
        name, eq, value = arg.partition("=")
        if eq and name in _BOOL_FLAGS:
            if value.lower() in ("true", "1", "t"):
                out.append(name)
            elif value.lower() not in ("false", "0", "f"):
                out.append(arg)
            continue
        out.append(arg)
    return out


def _add_sidecar_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--app-id", default="", help="this app's id (service invocation, state prefix)")
    p.add_argument("--app-port", type=int, default=None, help="port the app listens on; no app channel without it")
    p.add_argument("--app-protocol", default="http", choices=["http", "grpc"],
                   help="how the sidecar calls the app: http, or grpc (the AppCallback services; needs the grpc extra)")
    p.add_argument("--app-channel-address", default="127.0.0.1")
    p.add_argument("--app-max-concurrency", type=int, default=-1, help="calls into the app at once; -1: no limit")
    p.add_argument("--dapr-http-port", type=int, default=3500)
    p.add_argument("--dapr-grpc-port", type=int, default=None,
                   help="gRPC API port, given to the app as DAPR_GRPC_PORT (default 50001 with the grpc extra; 0: none)")
    p.add_argument("--dapr-internal-grpc-port", "--dapr-internal-port", dest="internal_port", type=int, default=0,
                   help="sidecar-to-sidecar listener (HTTP in Pillion); 0 picks a free port")
    p.add_argument("--dapr-internal-grpc-listen-address", "--dapr-internal-listen-address", dest="internal_address",
                   default="127.0.0.1", help="set to 0.0.0.0 to take calls from sidecars on other hosts")
    p.add_argument("--dapr-listen-addresses", default="127.0.0.1", help="comma-separated addresses of the HTTP API")
    p.add_argument("--dapr-public-port", type=int, default=None)
    p.add_argument("--resources-path", "--components-path", dest="resources_path", action="append", default=None)
    p.add_argument("--config", action="append", default=None, help="Configuration file")
    p.add_argument("--data-dir", default=None, help="where Pillion keeps its files (default $PILLION_DATA_DIR or ~/.pillion/data)")
    p.add_argument("--mqtt-port", type=int, default=None,
                   help="embedded MQTT broker listener on 127.0.0.1 (default 1883, or spec.mqtt.port); 0: none")
    p.add_argument("--max-body-size", type=quantity, default=None, help="largest request body, e.g. 4Mi (default)")
    p.add_argument("--dapr-http-max-request-size", type=int, default=None, help="same, in MB (deprecated daprd flag)")
    p.add_argument("--read-buffer-size", type=quantity, default=None, help="largest request head, e.g. 4Ki (default)")
    p.add_argument("--dapr-http-read-buffer-size", type=int, default=None, help="same, in KB (deprecated daprd flag)")
    p.add_argument("--http-idle-timeout", type=float, default=60.0, help="seconds an idle keep-alive connection stays open")
    p.add_argument("--http-read-timeout", type=float, default=10.0, help="seconds a client has to send a request head")
    p.add_argument("--enable-app-health-check", action="store_true")
    p.add_argument("--app-health-check-path", default="/healthz")
    p.add_argument("--app-health-probe-interval", type=float, default=5, help="seconds")
    p.add_argument("--app-health-probe-timeout", type=float, default=500, help="milliseconds")
    p.add_argument("--app-health-threshold", type=int, default=3)
    p.add_argument("--dapr-graceful-shutdown-seconds", type=float, default=5)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "warning", "error", "fatal"])
    p.add_argument("--log-as-json", action="store_true")
    p.add_argument("--enable-api-logging", nargs="?", const="true", default=None, choices=["true", "false"],
                   help="one log line per API call (default: spec.logging.apiLogging of the Configuration)")
    p.add_argument("--mode", default="standalone", choices=["standalone"])
    p.add_argument("--enable-metrics", nargs="?", const="true", default="true", type=str.lower,
                   choices=["true", "false"], help="Prometheus metrics on --metrics-port (default true, as daprd)")
    p.add_argument("--metrics-port", type=int, default=9090, help="metrics listener port; taken: run without it")
    p.add_argument("--metrics-listen-address", default="127.0.0.1",
                   help="metrics listener address (0.0.0.0 for a Prometheus on another host)")
    for flag in _BOOL_FLAGS:
        if flag not in ("--enable-app-health-check", "--log-as-json"):
            p.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    for flag in _IGNORED_VALUE_FLAGS:
        p.add_argument(flag, default=None, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pillion", description="A Dapr-compatible sidecar for edge devices.")
    parser.add_argument("--version", action="version", version=f"pillion {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an app beside a sidecar, as `dapr run` does")
    _add_sidecar_flags(run)
    run.add_argument("-f", "--run-file", default=None,
                     help="a Multi-App Run template (or a folder with dapr.yaml): every app with its sidecar")
    run.add_argument("app", nargs=argparse.REMAINDER, help="-- CMD ARGS...")

    side = sub.add_parser("sidecar", help="run the sidecar alone (systemd, containers)")
    _add_sidecar_flags(side)

    init = sub.add_parser("init", help="write the default resources folder and configuration")
    init.add_argument("--resources-path", default=None)
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    init.add_argument("--system", action="store_true",
                      help="system service layout: /etc/pillion, /var/lib/pillion and the systemd units")
    init.add_argument("--root", default="/", help="with --system: install under this root directory (default /)")

    lst = sub.add_parser("list", help="sidecars running on this host")
    lst.add_argument("--data-dir", default=None)
    lst.add_argument("-o", "--output", choices=["table", "json"], default="table")

    stop = sub.add_parser("stop", help="stop the sidecar (and app) of an app id")
    stop.add_argument("--app-id", required=True)
    stop.add_argument("--data-dir", default=None)
    stop.add_argument("--timeout", type=float, default=10.0)

    broker = sub.add_parser("broker", help="run the embedded MQTT broker alone")
    broker.add_argument("--host", default=None, help="listener address (default 127.0.0.1)")
    broker.add_argument("--port", type=int, default=None, help="plain MQTT port, 0 for none (default 1883)")
    broker.add_argument("--data-dir", default=None, help="where the broker keeps its LMDB state (default ~/.pillion/data)")
    broker.add_argument("--config", default=None, help="a Configuration file; its spec.mqtt section configures the broker")
    broker.add_argument("--tls-port", type=int, default=None, help="TLS port (needs --cert-file and --key-file)")
    broker.add_argument("--cert-file", default=None)
    broker.add_argument("--key-file", default=None)
    broker.add_argument("--ca-file", default=None, help="CA for client certificates")
    broker.add_argument("--password-file", default=None, help="users and salted hashes, made with `pillion passwd`")
    broker.add_argument("--acl-file", default=None, help="topic access rules per user and client id")
    broker.add_argument("--max-connections", type=int, default=None, help="0 for no limit (default 4096)")
    broker.add_argument("--max-packet-size", type=quantity, default=None, help="largest packet accepted, e.g. 1Mi (default)")
    broker.add_argument("--max-queued", type=int, default=None, help="queued messages per client (default 1000)")
    broker.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "warning", "error", "fatal"])
    broker.add_argument("--log-as-json", action="store_true")

    from .configuration_cli import add_parser as add_config_parser

    add_config_parser(sub)

    from .shell import add_parsers as add_shell_parsers

    add_shell_parsers(sub)  # publish, invoke, state, components, logs

    doctor = sub.add_parser("doctor", help="check this machine for running the sidecar (OK / WARN / FAIL)")
    doctor.add_argument("--data-dir", default=None, help="the sidecar's data directory (default: /var/lib/pillion "
                        "when pillion.service is installed, else as `pillion sidecar`)")
    doctor.add_argument("--dapr-http-port", type=int, default=3500)
    doctor.add_argument("--mqtt-port", type=int, default=1883)
    doctor.add_argument("--root", default="/", help="where to look for the installed systemd unit")
    doctor.add_argument("-o", "--output", choices=["table", "json"], default="table")

    from . import healthcheck  # standard library only; http.client is imported when used

    healthcheck.build_parser(sub.add_parser(
        "healthcheck", help="exit 0 when the sidecar's /v1.0/healthz answers 204 (container HEALTHCHECK)"))

    passwd = sub.add_parser("passwd", help="add, change or delete a user in a broker password file")
    passwd.add_argument("file")
    passwd.add_argument("username")
    passwd.add_argument("-b", "--password", default=None, help="the password (default: read from the terminal or stdin)")
    passwd.add_argument("-D", "--delete", action="store_true", help="remove the user")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_normalize_argv(sys.argv[1:] if argv is None else argv))
    return {"run": cmd_run, "sidecar": cmd_sidecar, "init": cmd_init, "list": cmd_list, "stop": cmd_stop,
            "broker": cmd_broker, "passwd": cmd_passwd, "config": cmd_config, "doctor": cmd_doctor,
            "healthcheck": cmd_healthcheck, "publish": cmd_shell, "invoke": cmd_shell, "state": cmd_shell,
            "components": cmd_shell, "logs": cmd_shell}[args.command](args)


# -- logging -------------------------------------------------------------------------


def _setup_logging(args) -> None:
    from .logformat import formatter_for

    level = {"warn": "WARNING", "fatal": "CRITICAL"}.get(args.log_level, args.log_level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(args.app_id, args.log_as_json, sys.stderr))
    root = logging.getLogger("pillion")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


# -- run / sidecar ------------------------------------------------------------------------


def _options(args, command: list[str]):
    from .runtime.app_channel import HealthCheck
    from .runtime.sidecar import SidecarOptions

    max_body = args.max_body_size if args.max_body_size is not None else (args.dapr_http_max_request_size or 4) * 1024**2
    max_header = args.read_buffer_size if args.read_buffer_size is not None else (args.dapr_http_read_buffer_size or 4) * 1024
    resources = args.resources_path
    if resources is None and args.command == "run" and (pillion_home() / "components").is_dir():
        resources = [str(pillion_home() / "components")]
    config = args.config[-1] if args.config else None
    if config is None and args.command == "run" and (pillion_home() / "config.yaml").is_file():
        config = str(pillion_home() / "config.yaml")
    health = None
    if args.enable_app_health_check:
        health = HealthCheck(
            path=args.app_health_check_path, interval=args.app_health_probe_interval,
            timeout=args.app_health_probe_timeout / 1000.0, threshold=args.app_health_threshold,
        )
    for flag in _IGNORED_VALUE_FLAGS:
        if getattr(args, flag[2:].replace("-", "_")):
            log.debug("flag %s is accepted for daprd compatibility and not used by Pillion", flag)
    return SidecarOptions(
        app_id=args.app_id,
        app_port=args.app_port or None,
        app_protocol=args.app_protocol,
        app_channel_address=args.app_channel_address,
        app_max_concurrency=args.app_max_concurrency,
        http_port=args.dapr_http_port,
        grpc_port=args.dapr_grpc_port,
        grpc_port_free_if_taken=args.command == "run",
        internal_port=args.internal_port,
        listen_addresses=[a.strip() for a in args.dapr_listen_addresses.split(",") if a.strip()],
        internal_listen_address=args.internal_address,
        public_port=args.dapr_public_port,
        resources_paths=resources or [],
        config=config,
        max_body=max_body,
        max_header=max_header,
        header_timeout=args.http_read_timeout,
        idle_timeout=args.http_idle_timeout,
        health=health,
        graceful_shutdown=args.dapr_graceful_shutdown_seconds,
        data_dir=args.data_dir or default_data_dir(),
        mqtt_port=args.mqtt_port,
        api_logging=None if args.enable_api_logging is None else args.enable_api_logging == "true",
        api_token=os.environ.get("DAPR_API_TOKEN") or None,
        app_api_token=os.environ.get("APP_API_TOKEN") or None,
        namespace=os.environ.get("NAMESPACE") or None,
        command=command,
        metrics_port=args.metrics_port if args.enable_metrics == "true" else None,
        metrics_listen_address=args.metrics_listen_address or "127.0.0.1",
    )


def _prepare(args, command: list[str]):
    """Options and a loaded sidecar, or an exit code 2 with the configuration error printed."""
    from .errors import ConfigError
    from .runtime.sidecar import Sidecar

    _setup_logging(args)
    if not args.app_id:
        print("pillion: --app-id is required", file=sys.stderr)
        return None, 2
    sidecar = Sidecar(_options(args, command))
    try:
        sidecar.load()
    except ConfigError as exc:
        print(f"pillion: configuration error: {exc}", file=sys.stderr)
        return None, 2
    return sidecar, 0


def _event_loop():
    import uvloop

    return uvloop.new_event_loop()


def cmd_sidecar(args) -> int:
    return _serve(args, [])


def cmd_run(args) -> int:
    if args.run_file:
        from .shell import run_file

        return run_file(args)
    return _serve(args, args.app[1:] if args.app[:1] == ["--"] else args.app)


def _serve(args, command: list[str]) -> int:
    import asyncio

    sidecar, code = _prepare(args, command)
    if sidecar is None:
        return code
    if os.environ.get("NOTIFY_SOCKET"):
        from .systemd.notify import attach

        attach(sidecar)  # also removes NOTIFY_SOCKET/WATCHDOG_* so the app of `run` never inherits them
    with asyncio.Runner(loop_factory=_event_loop) as runner:
        return runner.run(_run_with_app(sidecar, command))


async def _run_with_app(sidecar, command: list[str]) -> int:
    """Sidecar in this process and, when there is a command, the app as a child:
    prefixed output, forwarded signals, its exit code."""
    import asyncio

    from .errors import ConfigError

    try:
        await sidecar.start()
    except ConfigError as exc:
        # Component metadata is checked when the component is created.
        print(f"pillion: configuration error: {exc}", file=sys.stderr)
        await sidecar.stop()
        return 2
    except OSError as exc:
        log.error("cannot start: %s", exc)
        await sidecar.stop()
        return 1
    if not command:
        sidecar.install_signal_handlers()
        await sidecar.wait_stopped()
        await sidecar.stop()
        return 0
    opts = sidecar.options
    env = dict(os.environ)
    env.update(
        APP_ID=opts.app_id, DAPR_HTTP_PORT=str(sidecar.http_port),
        APP_CHANNEL_ADDRESS=opts.app_channel_address, APP_PROTOCOL=opts.app_protocol,
    )
    if sidecar.grpc_port:
        env["DAPR_GRPC_PORT"] = str(sidecar.grpc_port)
    else:  # no gRPC API: an SDK must not find another sidecar's port
        env.pop("DAPR_GRPC_PORT", None)
    if opts.app_port:
        env["APP_PORT"] = str(opts.app_port)
    try:
        child = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
        )
    except OSError as exc:
        log.error("cannot start the app %r: %s", command[0], exc)
        await sidecar.stop()
        return 127 if isinstance(exc, FileNotFoundError) else 126
    sidecar.extended.update(appCommand=" ".join(command), appPID=str(child.pid), cliPID=str(os.getpid()))
    log.info("started the app (pid %d): %s", child.pid, " ".join(command))

    # A signal stops the sidecar's work first (deliveries, input events, actors, which call
    # into the app), then reaches the app, which still answers until then; see below.
    received = [signal.SIGTERM]

    def on_signal(sig: int) -> None:
        received[0] = sig
        sidecar.request_shutdown(f"received {signal.Signals(sig).name}")

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)

    async def pump():
        out = sys.stdout.buffer
        while True:
            line = await child.stdout.readline()
            if not line:
                return
            out.write(b"== APP == " + line if line.endswith(b"\n") else b"== APP == " + line + b"\n")
            out.flush()

    waiting = None
    if sidecar.app is not None and sys.stderr.isatty():  # on a terminal: a spinner until the app answers
        waiting = asyncio.ensure_future(_show_wait_for_app(sidecar))
    pumping = asyncio.ensure_future(pump())
    exited = asyncio.ensure_future(child.wait())
    stopping = asyncio.ensure_future(sidecar.wait_stopped())
    await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not exited.done():
        await sidecar.drain()
        _forward(child, received[0])
        try:
            await asyncio.wait_for(asyncio.shield(exited), opts.graceful_shutdown)
        except asyncio.TimeoutError:
            child.kill()
    returncode = await exited
    if waiting is not None:
        waiting.cancel()
    await pumping
    stopping.cancel()
    log.info("the app exited with code %d", returncode)
    await sidecar.stop()
    return returncode if returncode >= 0 else 128 - returncode


async def _show_wait_for_app(sidecar) -> None:
    from .shell import Progress

    with Progress().step(f"waiting for the app on port {sidecar.options.app_port}"):
        await sidecar.app.ready.wait()


def _forward(child, sig: int) -> None:
    if child.returncode is None:
        try:
            child.send_signal(sig)
        except ProcessLookupError:
            pass


# -- init / list / stop ---------------------------------------------------------------------------

_CONFIG_YAML = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: pillionconfig
spec:
  features: []
"""


def cmd_broker(args) -> int:
    """The MQTT broker alone, until SIGTERM/SIGINT."""
    import asyncio

    from .broker.options import BrokerOptions
    from .broker.server import run
    from .errors import ConfigError

    args.app_id = ""
    _setup_logging(args)
    try:
        options = BrokerOptions(data_dir=default_data_dir())
        if args.config:
            from .config.loader import load_configuration

            options = options.merged(**load_configuration(args.config).mqtt)
        options = options.merged(
            host=args.host, port=args.port, data_dir=args.data_dir, tls_port=args.tls_port, cert_file=args.cert_file,
            key_file=args.key_file, ca_file=args.ca_file, password_file=args.password_file, acl_file=args.acl_file,
            max_connections=args.max_connections, max_packet_size=args.max_packet_size, max_queued=args.max_queued)
        options.check()
    except (ConfigError, ValueError) as exc:
        print(f"pillion broker: {exc}", file=sys.stderr)
        return 2
    try:
        with asyncio.Runner(loop_factory=_event_loop) as runner:
            runner.run(run(options))
    except ConfigError as exc:
        print(f"pillion broker: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"pillion broker: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_init(args) -> int:
    if args.system:
        from .systemd.install import cmd_init_system

        return cmd_init_system(args)
    home = pillion_home()
    resources = Path(args.resources_path) if args.resources_path else home / "components"
    resources.mkdir(parents=True, exist_ok=True)
    Path(default_data_dir()).mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "config.yaml"
    written = []
    if args.force or not config.exists():
        config.write_text(_CONFIG_YAML)
        written.append(str(config))
    from .components.registry import DEFAULT_RESOURCES

    for filename, text in DEFAULT_RESOURCES.items():
        target = resources / filename
        if args.force or not target.exists():
            target.write_text(text)
            written.append(str(target))
    print(f"Pillion initialised in {home}")
    print(f"  resources: {resources}")
    print(f"  data:      {default_data_dir()}")
    for path in written:
        print(f"  wrote {path}")
    return 0


def cmd_doctor(args) -> int:
    from .systemd.doctor import run

    return run(args)


def cmd_config(args) -> int:
    from .configuration_cli import run

    return run(args, args.resources_path or [str(pillion_home() / "components")], args.data_dir or default_data_dir())


def _registry(args):
    from .runtime.registry import HostRegistry

    return HostRegistry(args.data_dir or default_data_dir())


def cmd_list(args) -> int:
    entries = sorted(_registry(args).entries(), key=lambda e: (e.app_id, e.pid))
    if args.output == "json":
        print(json.dumps([
            {"appId": e.app_id, "httpPort": e.http_port, "grpcPort": e.grpc_port, "appPort": e.app_port,
             "internalPort": e.internal_port, "pid": e.pid, "created": e.started, "command": " ".join(e.command)}
            for e in entries
        ], indent=2))
        return 0
    if not entries:
        print("No Pillion sidecars are running on this host.")
        return 0
    rows = [("APP ID", "HTTP PORT", "APP PORT", "PID", "AGE", "COMMAND")]
    now = time.time()
    for e in entries:
        rows.append((e.app_id, str(e.http_port), str(e.app_port or ""), str(e.pid), _age(now - e.started), " ".join(e.command)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def cmd_stop(args) -> int:
    registry = _registry(args)
    entries = registry.lookup(args.app_id)
    if not entries:
        print(f"pillion: no sidecar with app id {args.app_id!r} is running on this host", file=sys.stderr)
        return 1
    for entry in entries:
        os.kill(entry.pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if not any(_running(e.pid) for e in entries):
            print(f"stopped {args.app_id}")
            return 0
        time.sleep(0.05)
    print(f"pillion: {args.app_id} did not stop within {args.timeout:g}s", file=sys.stderr)
    return 1


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True


def cmd_shell(args) -> int:
    from .shell import run

    return run(args)


def cmd_healthcheck(args) -> int:
    from .healthcheck import run

    return run(args)


def cmd_passwd(args) -> int:
    """Maintain a broker password file (salted scrypt hashes), like mosquitto_passwd."""
    import getpass

    from .broker import auth

    try:
        if args.delete:
            if not auth.delete_user(args.file, args.username):
                print(f"pillion passwd: no user {args.username!r} in {args.file}", file=sys.stderr)
                return 1
            return 0
        password = args.password
        if password is None:
            password = getpass.getpass("Password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        if not password:
            print("pillion passwd: empty password", file=sys.stderr)
            return 2
        auth.set_password(args.file, args.username, password)
    except (OSError, ValueError) as exc:
        print(f"pillion passwd: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, OSError) else 2
    return 0
