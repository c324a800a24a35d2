"""``pillion doctor``: is this machine ready to run the sidecar, and if not, what to fix.

Each check returns one line, OK, WARN or FAIL, with the fix for anything not OK; the
exit code is 1 when any check fails. Checks only look: they create no files, except a
temporary one to prove the data directory is writable.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

OK, WARN, FAIL = "OK", "WARN", "FAIL"

# LMDB's locking and mmap are unsafe on these (the LMDB docs: no network filesystems).
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "ceph", "glusterfs", "lustre", "gpfs",
    "9p", "fuse.sshfs", "fuse.s3fs", "fuse.rclone", "fuse.glusterfs", "davfs", "fuse.davfs2",
})
VOLATILE_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
PSEUDO_FILESYSTEMS = frozenset({"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "securityfs",
                                "configfs", "binfmt_misc", "tracefs", "bpf", "mqueue", "hugetlbfs", "pstore"})
# The facades of every compiled twin (importing one loads its twin through _impl).
TWIN_FACADES = ("pillion.server.router", "pillion.server.protocol", "pillion.broker.codec", "pillion.broker.topics",
                "pillion.cloudevents", "pillion.runtime.actorlock")
GRPC_TWIN_FACADES = ("pillion.grpcapi.h2", "pillion.grpcapi.transport")  # with the grpc extra only
DEPENDENCIES = (("uvloop", "uvloop"), ("httptools", "httptools"), ("orjson", "orjson"), ("lmdb", "lmdb"),
                ("pyyaml", "yaml"), ("paho-mqtt", "paho.mqtt.client"))


# `pillion` builds this parser on every command: platform, socket, tempfile and json are
# imported inside the checks so that a sidecar's start does not pay for them.


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


# -- the checks ------------------------------------------------------------------------------


def check_arch(machine: str | None = None, maxsize: int | None = None) -> Check:
    import platform

    machine = machine or platform.machine()
    bits = 64 if (sys.maxsize if maxsize is None else maxsize) > 2**32 else 32
    if machine in ("x86_64", "aarch64", "arm64", "AMD64") and bits == 64:
        return Check("arch", OK, f"{machine}, 64-bit Python")
    if bits == 32:
        return Check("arch", WARN, f"{machine} with a 32-bit Python: no uvloop/httptools/pyyaml wheels, "
                     "and LMDB maps must fit a 32-bit address space",
                     "use a 64-bit OS (e.g. Raspberry Pi OS 64-bit / arm64)")
    return Check("arch", WARN, f"{machine} is not a tested architecture", "x86_64 and aarch64 are supported")


def check_python() -> Check:
    import platform

    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info >= (3, 11):
        return Check("python", OK, f"{platform.python_implementation()} {version}")
    return Check("python", FAIL, f"Python {version}", "Pillion needs Python 3.11 or newer")


def check_dependencies() -> Check:
    import importlib

    missing, found = [], []
    for dist, module in DEPENDENCIES:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            missing.append(f"{dist} ({exc})")
        else:
            found.append(dist)
    if missing:
        return Check("dependencies", FAIL, "missing: " + ", ".join(missing), "pip install --force-reinstall pillion")
    return Check("dependencies", OK, ", ".join(found))


def check_extensions() -> Check:
    import importlib

    from .. import _impl

    from ..grpcapi import installed

    for facade in TWIN_FACADES + (GRPC_TWIN_FACADES if installed() else ()):
        try:
            importlib.import_module(facade)
        except ImportError as exc:
            return Check("compiled modules", FAIL, f"{facade} does not import: {exc}", "reinstall Pillion")
    loaded = _impl.loaded()
    pure = sorted(name for name, kind in loaded.items() if kind == "pure")
    if not pure:
        return Check("compiled modules", OK, f"{len(loaded)} compiled: " + ", ".join(sorted(loaded)))
    if _impl.NO_EXTENSIONS:
        return Check("compiled modules", WARN, "PILLION_NO_EXTENSIONS is set: pure-Python twins, several times slower",
                     "unset PILLION_NO_EXTENSIONS")
    return Check("compiled modules", WARN, "pure-Python twins in use (no compiled module for this platform): "
                 + ", ".join(pure), "install the wheel built for this platform (pip install --force-reinstall pillion)")


def mount_of(path: str, mountinfo: str | None = None) -> tuple[str, str]:
    """``(mount point, filesystem type)`` of the mount holding ``path`` (from /proc/self/mountinfo)."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    best = ("/", "unknown")
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5:
            continue
        point = fields[4].encode().decode("unicode_escape")  # octal escapes such as \040 for a space
        fstype = right.split()[0]
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, fstype)
    return best


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_data_dir(data_dir: str, mountinfo: str | None = None) -> list[Check]:
    import tempfile

    path = Path(os.path.expanduser(data_dir)).absolute()
    checks = []
    if path.exists() and not path.is_dir():
        return [Check("data dir", FAIL, f"{path} exists and is not a directory", "pass another --data-dir")]
    probe_dir = path if path.is_dir() else _existing(path)
    try:
        fd, name = tempfile.mkstemp(prefix=".pillion-doctor-", dir=probe_dir)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        checks.append(Check("data dir", FAIL, f"{probe_dir} is not writable: {exc.strerror}",
                            f"make {path} writable by the user the sidecar runs as"))
    else:
        detail = f"{path} is writable" if path.is_dir() else f"{path} will be created (in {probe_dir})"
        checks.append(Check("data dir", OK, detail))
    try:
        point, fstype = mount_of(str(probe_dir.resolve()), mountinfo)
    except OSError as exc:
        checks.append(Check("filesystem", WARN, f"cannot read /proc/self/mountinfo: {exc}"))
        return checks
    if fstype in NETWORK_FILESYSTEMS:
        checks.append(Check("filesystem", FAIL, f"{fstype} at {point}: LMDB is unsafe on a network filesystem "
                            "(file locks and shared memory maps do not work across hosts)",
                            "put --data-dir on a local disk"))
    elif fstype in PSEUDO_FILESYSTEMS:
        checks.append(Check("filesystem", FAIL, f"{fstype} at {point} is a kernel pseudo filesystem",
                            "put --data-dir on a local disk"))
    elif fstype in VOLATILE_FILESYSTEMS:
        checks.append(Check("filesystem", WARN, f"{fstype} at {point}: state, queues and reminders are lost on "
                            "reboot and use RAM", "put --data-dir on a local disk to keep data"))
    elif fstype.startswith("fuse."):
        checks.append(Check("filesystem", WARN, f"{fstype} at {point}: a FUSE filesystem may not support "
                            "LMDB's locks and memory maps", "put --data-dir on a local disk"))
    else:
        checks.append(Check("filesystem", OK, f"{fstype} at {point}"))
    return checks


def check_lmdb_map() -> Check:
    """LMDB maps its whole map size into the address space: it must fit the limits."""
    import resource

    from ..broker.store import DEFAULT_MAP_SIZE as BROKER_MAP
    from ..components.state.lmdb import DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE
    from ..runtime.registry import _MAP_SIZE as REGISTRY_MAP

    needed = DEFAULT_MAP_SIZE + BROKER_MAP + REGISTRY_MAP
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    mib = 1024 * 1024
    if soft != resource.RLIM_INFINITY and soft < needed + 256 * mib:
        return Check("lmdb map", FAIL, f"address-space limit (ulimit -v / RLIMIT_AS) is {soft // mib} MiB; the "
                     f"default LMDB maps alone take {needed // mib} MiB",
                     "remove the address-space limit; to cap memory use cgroups (MemoryMax=) or prlimit --data")
    if sys.maxsize <= 2**32:
        return Check("lmdb map", WARN, f"32-bit address space: state stores map {DEFAULT_MAP_SIZE // mib} MiB "
                     f"and grow to at most {DEFAULT_MAX_MAP_SIZE // mib} MiB",
                     "keep mapSize/maxMapSize small in the components, or use a 64-bit OS")
    return Check("lmdb map", OK, f"{needed // mib} MiB mapped at start, growing to {DEFAULT_MAX_MAP_SIZE // 1024**3} GiB "
                 "per state store; address space unlimited")


def _port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    import errno
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is not "in use"
        sock.bind((host, port))
    except OSError as exc:
        return exc.errno == errno.EADDRINUSE
    finally:
        sock.close()
    return False


def _registered_sidecars(data_dir: str) -> list:
    """Live sidecars in the host registry of ``data_dir``, without creating one."""
    if not (Path(os.path.expanduser(data_dir)) / "registry" / "data.mdb").exists():
        return []
    try:
        from ..runtime.registry import HostRegistry

        registry = HostRegistry(os.path.expanduser(data_dir))
        try:
            return registry.entries()
        finally:
            registry.close()
    except Exception:  # an unreadable registry only means we cannot name the holder
        return []


def check_http_port(port: int, data_dir: str) -> Check:
    name = f"port {port} (HTTP API)"
    if not _port_in_use(port):
        return Check(name, OK, "free")
    for entry in _registered_sidecars(data_dir):
        if port in (entry.http_port, entry.internal_port):
            return Check(name, OK, f"held by the running Pillion sidecar {entry.app_id!r} (pid {entry.pid})")
    return Check(name, FAIL, "in use by another program (not a Pillion sidecar registered in this data dir)",
                 f"stop that program (ss -ltnp 'sport = :{port}') or pick another --dapr-http-port")


def check_mqtt_port(port: int, is_pillion_broker: Callable[[str, int], bool] | None = None) -> Check:
    name = f"port {port} (MQTT broker)"
    if port == 0:
        return Check(name, OK, "no MQTT listener configured")
    if not _port_in_use(port):
        return Check(name, OK, "free: the sidecar's embedded broker will listen on it")
    if is_pillion_broker is None:
        import asyncio

        from ..broker.server import is_pillion_broker as probe

        def is_pillion_broker(host, p):
            return asyncio.run(probe(host, p, timeout=2.0))

    if is_pillion_broker("127.0.0.1", port):
        return Check(name, OK, "a Pillion broker answers on it: sidecars started now share it")
    return Check(name, WARN, "another program (not a Pillion broker) holds it: a sidecar's broker would run "
                 "in process only", "stop that program or give the sidecar another --mqtt-port")


def check_systemd_unit(root: str = "/") -> Check:
    base = Path(root)
    for directory in ("etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system"):
        unit = base / directory / "pillion.service"
        if unit.is_file():
            break
    else:
        return Check("systemd unit", WARN, "pillion.service is not installed",
                     "pillion init --system, then systemctl daemon-reload && systemctl enable --now pillion")
    exec_line = next((line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")), "")
    program = exec_line.partition("=")[2].split(" ", 1)[0].lstrip("-@:+!")
    target = base / program.lstrip("/")
    if not program or not os.access(target, os.X_OK):
        return Check("systemd unit", FAIL, f"{unit}: ExecStart program {program or '(none)'} is missing",
                     "run pillion init --system again from the installed Pillion")
    running = " (systemd is running)" if Path("/run/systemd/system").is_dir() else " (systemd is not PID 1 here)"
    return Check("systemd unit", OK, f"{unit} -> {program}{running}")


def run_checks(data_dir: str, http_port: int, mqtt_port: int, root: str = "/") -> list[Check]:
    checks = [check_arch(), check_python(), check_dependencies(), check_extensions()]
    checks += check_data_dir(data_dir)
    checks += [check_lmdb_map(), check_http_port(http_port, data_dir), check_mqtt_port(mqtt_port),
               check_systemd_unit(root)]
    return checks


def run(args) -> int:
    import json

    from ..cli import default_data_dir

    data_dir = args.data_dir
    if data_dir is None:
        # With the system service installed, its data dir is the one that matters.
        installed = (Path(args.root) / "etc/systemd/system/pillion.service").is_file()
        data_dir = str(Path(args.root) / "var/lib/pillion") if installed else default_data_dir()
    checks = run_checks(data_dir, args.dapr_http_port, args.mqtt_port, args.root)
    failed = any(c.status == FAIL for c in checks)
    if args.output == "json":
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            print(f"{c.status:<4}  {c.name:<{width}}  {c.detail}")
            if c.fix:
                print(f"{'':<4}  {'':<{width}}  fix: {c.fix}")
    return 1 if failed else 0
