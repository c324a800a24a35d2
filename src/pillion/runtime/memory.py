"""What this process may use: its memory limit and its address space, and defaults from them.

The memory limit is the smallest of the cgroup v2 ``memory.max`` and the cgroup v1
``memory.limit_in_bytes`` values on the way from this process's cgroup up to the
hierarchy's mount point, and ``MemTotal`` from ``/proc/meminfo``. The address space is
32-bit or 64-bit (``sys.maxsize``; ``platform.architecture()`` names it in reports).

Defaults derived here, and why:

* LMDB map sizes. An LMDB map is reserved address space, not memory: pages count
  against a memory cap only when touched, and as page cache, which the kernel reclaims
  first. On 64-bit the reservations cost nothing, so the maps keep their large
  defaults. On 32-bit every environment of the process must fit in the ~3 GB user
  address space next to Python's heap and the libraries, so the maxima of all stores
  together are held to ``LMDB_BUDGET_32BIT`` (512 MiB).
* The app's pub/sub queue (``maxQueuedMessages`` of ``pubsub.mqtt`` on the embedded
  broker). Queued messages stay in memory until delivered: measured (bench_lowmem.py's
  probes), 10,000 queued 8 KB messages for an app that is down took ~90 MB of anonymous
  memory and the sidecar was OOM-killed under a 64 MB cap; 1 KB messages cost ~2 KB
  each. The default is therefore a quarter of the limit at ``QUEUED_MESSAGE_COST`` per
  message, between ``APP_QUEUE_MIN`` and ``APP_QUEUE_MAX`` (10,000 from 320 MiB up,
  2,048 at 64 MiB).

Every function takes ``root`` (default ``/``), under which ``proc/`` and the cgroup
mount points are read, so tests can point it at a fake tree. Nothing here writes.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from dataclasses import dataclass

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30

LMDB_BUDGET_32BIT = 512 * MIB

# kind -> (initial map size, maximum map size); each map doubles on MDB_MAP_FULL up to its maximum.
LMDB_MAPS_64BIT: dict[str, tuple[int, int]] = {
    "state": (1 * GIB, 64 * GIB),
    "broker": (64 * MIB, 4 * GIB),
    "reminders": (64 * MIB, 4 * GIB),
    "lock": (16 * MIB, 64 * GIB),
    "configuration": (16 * MIB, 64 * GIB),
}
# Sum of the maxima: 256 + 128 + 64 + 16 + 16 = 480 MiB <= LMDB_BUDGET_32BIT (checked by a test).
LMDB_MAPS_32BIT: dict[str, tuple[int, int]] = {
    "state": (64 * MIB, 256 * MIB),
    "broker": (16 * MIB, 128 * MIB),
    "reminders": (16 * MIB, 64 * MIB),
    "lock": (4 * MIB, 16 * MIB),
    "configuration": (4 * MIB, 16 * MIB),
}


APP_QUEUE_MAX = 10_000
APP_QUEUE_MIN = 100
QUEUED_MESSAGE_COST = 8 * KIB  # per queued message, for payloads of a few KB (measured ~11 KB for 8 KB)
QUEUE_SHARE = 4  # queued messages may take 1/QUEUE_SHARE of the limit


@dataclass(frozen=True, slots=True)
class MemoryInfo:
    """What the process may use.

    Attributes:
        limit_bytes: the smallest of the cgroup limits and MemTotal.
        source: where ``limit_bytes`` came from: ``"cgroup2:<dir>"``, ``"cgroup1:<dir>"``
            or ``"meminfo"``.
        total_bytes: MemTotal (0 when /proc/meminfo cannot be read).
        address_bits: 32 or 64.
    """

    limit_bytes: int
    source: str
    total_bytes: int
    address_bits: int

    @property
    def limited(self) -> bool:
        """True when a cgroup holds the process below the machine's memory."""
        return self.source != "meminfo"


def _path(root: str, absolute: str) -> str:
    return os.path.join(root, absolute.lstrip("/"))


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def mem_total(root: str = "/") -> int:
    """MemTotal in bytes, 0 if unknown."""
    text = _read(_path(root, "/proc/meminfo")) or ""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            return int(parts[1]) * (KIB if parts[2:3] == ["kB"] else 1)
    return 0


def _own_cgroups(root: str) -> tuple[str | None, str | None]:
    """This process's (cgroup v2 path, cgroup v1 memory path) from /proc/self/cgroup."""
    v2 = v1 = None
    for line in (_read(_path(root, "/proc/self/cgroup")) or "").splitlines():
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hid == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def _mounts(root: str) -> list[tuple[str, str, str, str]]:
    """(fstype, mount root, mount point, super options) of each cgroup mount, from mountinfo."""
    out = []
    for line in (_read(_path(root, "/proc/self/mountinfo")) or "").splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        head, _, tail = line.partition(" - ")
        tail_fields = tail.split()
        if tail_fields and tail_fields[0] in ("cgroup", "cgroup2"):
            out.append((tail_fields[0], fields[3], fields[4], tail_fields[2] if len(tail_fields) > 2 else ""))
    return out


def cgroup_dirs(root: str = "/") -> tuple[str | None, str | None]:
    """This process's own (cgroup v2 directory, cgroup v1 memory directory), as paths under ``root``.

    A directory is None when that hierarchy is not mounted or holds no such cgroup. The
    cgroup path is taken relative to the mount's root (as in a container whose cgroup
    namespace shows ``/``), and the directory must exist.
    """
    v2_path, v1_path = _own_cgroups(root)
    mounts = _mounts(root)
    if not mounts:  # no mountinfo: the usual places
        mounts = [("cgroup2", "/", "/sys/fs/cgroup", ""), ("cgroup2", "/", "/sys/fs/cgroup/unified", ""),
                  ("cgroup", "/", "/sys/fs/cgroup/memory", "memory")]

    def locate(fstype: str, path: str | None) -> str | None:
        if path is None:
            return None
        for kind, mroot, point, opts in mounts:
            if kind != fstype or (fstype == "cgroup" and "memory" not in opts.split(",")):
                continue
            rel = path
            if mroot != "/" and (path == mroot or path.startswith(mroot.rstrip("/") + "/")):
                rel = path[len(mroot):]
            d = _path(root, os.path.join(point, rel.lstrip("/")))
            marker = "cgroup.controllers" if fstype == "cgroup2" else "memory.limit_in_bytes"
            if os.path.exists(os.path.join(d, marker)):
                return os.path.normpath(d)
        return None

    return locate("cgroup2", v2_path), locate("cgroup", v1_path)


def _walk_limit(start: str, stop_at_root: str, name: str) -> tuple[int | None, str | None]:
    """Smallest numeric ``name`` from ``start`` up through its parents that have the file."""
    best: tuple[int | None, str | None] = (None, None)
    d = os.path.normpath(start)
    stop = os.path.normpath(stop_at_root)
    while True:
        text = _read(os.path.join(d, name))
        if text is not None:
            text = text.strip()
            if text and text != "max" and text.isdigit():
                value = int(text)
                if best[0] is None or value < best[0]:
                    best = (value, d)
        parent = os.path.dirname(d)
        if d == stop or parent == d or not parent.startswith(stop):
            return best
        d = parent


def memory_limit(root: str = "/") -> tuple[int, str]:
    """(bytes the process may use, source); see ``MemoryInfo``."""
    total = mem_total(root)
    best, source = (total if total else sys.maxsize), "meminfo"
    v2, v1 = cgroup_dirs(root)
    candidates = []
    if v2 is not None:
        candidates.append(("cgroup2", _walk_limit(v2, _path(root, "/sys/fs/cgroup"), "memory.max")))
    if v1 is not None:
        candidates.append(("cgroup1", _walk_limit(v1, _path(root, "/sys/fs/cgroup"), "memory.limit_in_bytes")))
    for kind, (value, where) in candidates:
        if value is not None and value < best:
            best, source = value, f"{kind}:{where}"
    return best, source


def address_bits(maxsize: int = sys.maxsize) -> int:
    """32 or 64: the width of this interpreter's pointers (what bounds an LMDB map)."""
    return 64 if maxsize > 2**32 else 32


def architecture() -> str:
    """For reports: e.g. ``"64bit ELF x86_64"``."""
    bits, linkage = platform.architecture()
    return f"{bits} {linkage} {platform.machine()}".strip()


def detect(root: str = "/", maxsize: int = sys.maxsize) -> MemoryInfo:
    """Read the limit and address space now (see ``current()`` for the cached one)."""
    limit, source = memory_limit(root)
    return MemoryInfo(limit_bytes=limit, source=source, total_bytes=mem_total(root), address_bits=address_bits(maxsize))


@functools.lru_cache(maxsize=1)
def current() -> MemoryInfo:
    """This process's ``MemoryInfo``, read once (cgroup limits do not change under a running sidecar)."""
    return detect()


def lmdb_map_sizes(kind: str, bits: int | None = None) -> tuple[int, int]:
    """(initial, maximum) map size of one kind of LMDB environment: state, broker, reminders, lock, configuration.

    Only the address space matters: a map is reserved, not resident (see the module docstring).
    """
    if bits is None:
        bits = address_bits()
    table = LMDB_MAPS_64BIT if bits == 64 else LMDB_MAPS_32BIT
    return table[kind]


# A request body costs about six times its size while it is parsed and stored (measured with
# bench_lowmem.py --stress: 50 bodies of 256 KB in flight were ~75 MB), so the bodies held at
# once get a quarter of the memory divided by six, and never less than 1 MiB.
BODY_COPIES = 6
BODY_BUDGET_MIN = 1 * MIB


def body_budget(limit_bytes: int | None = None) -> int:
    """Request body bytes the HTTP servers hold at once (``server.protocol.BodyBudget``)."""
    if limit_bytes is None:
        limit_bytes = current().limit_bytes
    return max(BODY_BUDGET_MIN, limit_bytes // QUEUE_SHARE // BODY_COPIES)


def app_queue_default(limit_bytes: int | None = None) -> int:
    """Messages the embedded broker keeps queued for the app, from the memory limit (module docstring)."""
    if limit_bytes is None:
        limit_bytes = current().limit_bytes
    return max(APP_QUEUE_MIN, min(APP_QUEUE_MAX, limit_bytes // QUEUE_SHARE // QUEUED_MESSAGE_COST))
