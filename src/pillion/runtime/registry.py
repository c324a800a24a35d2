"""The host registry: which sidecars run on this machine, in one LMDB file.

Every sidecar writes an entry under its data directory's ``registry`` env when it
starts and removes it when it stops. Entries of processes that died without
removing theirs are ignored by readers (pid gone, or pid reused by a process that
started at another time). ``pillion list``, ``pillion stop`` and local name
resolution read it.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lmdb
import orjson

_MAP_SIZE = 4 * 1024 * 1024


@dataclass(frozen=True)
class SidecarEntry:
    app_id: str
    pid: int
    http_port: int
    internal_host: str
    internal_port: int
    app_port: int | None = None
    grpc_port: int | None = None
    started: float = field(default_factory=time.time)
    proc_start: str = ""
    command: list[str] = field(default_factory=list)

    @property
    def key(self) -> bytes:
        return f"{self.app_id}\0{self.pid}".encode()


def _proc_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (field 22 of /proc/<pid>/stat), or "" off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]


def _alive(entry: SidecarEntry) -> bool:
    try:
        os.kill(entry.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not entry.proc_start or _proc_start(entry.pid) in ("", entry.proc_start)


class HostRegistry:
    def __init__(self, data_dir: str | os.PathLike):
        path = Path(data_dir) / "registry"
        path.mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(str(path), map_size=_MAP_SIZE, max_dbs=0, subdir=True, metasync=False)

    def register(self, entry: SidecarEntry) -> SidecarEntry:
        if not entry.proc_start:
            entry = SidecarEntry(**{**asdict(entry), "proc_start": _proc_start(entry.pid)})
        with self._env.begin(write=True) as txn:
            txn.put(entry.key, orjson.dumps(asdict(entry)))
        return entry

    def unregister(self, entry: SidecarEntry) -> None:
        with self._env.begin(write=True) as txn:
            txn.delete(entry.key)

    def entries(self) -> list[SidecarEntry]:
        """Live sidecars; stale entries are dropped on the way."""
        live, stale = [], []
        with self._env.begin() as txn:
            for key, value in txn.cursor():
                entry = SidecarEntry(**orjson.loads(value))
                (live if _alive(entry) else stale).append(entry)
        if stale:
            with self._env.begin(write=True) as txn:
                for entry in stale:
                    txn.delete(entry.key)
        return live

    def lookup(self, app_id: str) -> list[SidecarEntry]:
        return [e for e in self.entries() if e.app_id == app_id]

    def close(self) -> None:
        self._env.close()
