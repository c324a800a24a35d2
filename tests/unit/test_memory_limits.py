"""runtime/memory.py against fake /proc and cgroup trees (real files under a temp root)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pillion.runtime import memory

MIB = 1 << 20
V1_UNLIMITED = "9223372036854771712"
MOUNTINFO_HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
MOUNTINFO_V2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fake(root: Path, *, cgroup: str, mountinfo: str | None, total_kb: int = 1_000_000) -> Path:
    write(root, "proc/self/cgroup", cgroup)
    if mountinfo is not None:
        write(root, "proc/self/mountinfo", mountinfo)
    write(root, "proc/meminfo", f"MemTotal:       {total_kb} kB\nMemFree:         1000 kB\n")
    return root


def v1_dir(root: Path, rel: str, limit: str) -> Path:
    d = root / "sys/fs/cgroup/memory" / rel.strip("/")
    write(d, "memory.limit_in_bytes", limit + "\n")
    return d


def v2_dir(root: Path, rel: str, limit: str | None, controllers: str = "cpu memory pids") -> Path:
    d = root / "sys/fs/cgroup" / rel.strip("/")
    write(d, "cgroup.controllers", controllers + "\n")
    if limit is not None:
        write(d, "memory.max", limit + "\n")
    return d


def test_v1_limit_of_own_cgroup(tmp_path):
    root = fake(tmp_path, cgroup="4:memory:/svc/pillion\n0::/\n", mountinfo=MOUNTINFO_HYBRID)
    v1_dir(root, "/", V1_UNLIMITED)
    v1_dir(root, "/svc", V1_UNLIMITED)
    own = v1_dir(root, "/svc/pillion", str(64 * MIB))
    info = memory.detect(str(root))
    assert info.limit_bytes == 64 * MIB
    assert info.source == f"cgroup1:{own}"
    assert info.limited and info.total_bytes == 1_000_000 * 1024


def test_v1_limit_of_a_parent_applies(tmp_path):
    """A child with no limit of its own is held by its parent's."""
    root = fake(tmp_path, cgroup="4:memory:/svc/pillion\n", mountinfo=MOUNTINFO_HYBRID)
    v1_dir(root, "/", V1_UNLIMITED)
    parent = v1_dir(root, "/svc", str(128 * MIB))
    v1_dir(root, "/svc/pillion", V1_UNLIMITED)
    assert memory.memory_limit(str(root)) == (128 * MIB, f"cgroup1:{parent}")


def test_v1_unlimited_falls_back_to_memtotal(tmp_path):
    root = fake(tmp_path, cgroup="4:memory:/a\n", mountinfo=MOUNTINFO_HYBRID, total_kb=512 * 1024)
    v1_dir(root, "/", V1_UNLIMITED)
    v1_dir(root, "/a", V1_UNLIMITED)
    info = memory.detect(str(root))
    assert (info.limit_bytes, info.source, info.limited) == (512 * MIB, "meminfo", False)


def test_limit_above_memtotal_is_memtotal(tmp_path):
    root = fake(tmp_path, cgroup="4:memory:/a\n", mountinfo=MOUNTINFO_HYBRID, total_kb=256 * 1024)
    v1_dir(root, "/a", str(1024 * MIB))
    assert memory.memory_limit(str(root)) == (256 * MIB, "meminfo")


def test_v2_memory_max_and_max_keyword(tmp_path):
    root = fake(tmp_path, cgroup="0::/system.slice/pillion.service\n", mountinfo=MOUNTINFO_V2)
    v2_dir(root, "/", None)  # the root cgroup has no memory.max
    slice_dir = v2_dir(root, "/system.slice", str(96 * MIB))
    v2_dir(root, "/system.slice/pillion.service", "max")
    assert memory.cgroup_dirs(str(root)) == (str(root / "sys/fs/cgroup/system.slice/pillion.service"), None)
    assert memory.memory_limit(str(root)) == (96 * MIB, f"cgroup2:{slice_dir}")


def test_v2_smaller_of_v1_and_v2(tmp_path):
    """Hybrid layout: both hierarchies are read and the smaller limit wins."""
    root = fake(tmp_path, cgroup="4:memory:/m\n0::/u\n", mountinfo=MOUNTINFO_HYBRID)
    v1 = v1_dir(root, "/m", str(200 * MIB))
    d = root / "sys/fs/cgroup/unified/u"
    write(d, "cgroup.controllers", "\n")  # hybrid: the memory controller lives in v1
    assert memory.memory_limit(str(root)) == (200 * MIB, f"cgroup1:{v1}")
    write(d, "memory.max", str(100 * MIB))
    assert memory.memory_limit(str(root)) == (100 * MIB, f"cgroup2:{d}")


def test_container_namespace_root(tmp_path):
    """In a cgroup namespace the process sees itself at ``/`` of a mount whose root is its cgroup."""
    mountinfo = "35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n"
    root = fake(tmp_path, cgroup="4:memory:/\n", mountinfo=mountinfo)
    own = v1_dir(root, "/", str(48 * MIB))
    assert memory.memory_limit(str(root)) == (48 * MIB, f"cgroup1:{own}")
    # and an outside view of the same mount: the path under the mount root is stripped
    write(root, "proc/self/cgroup", "4:memory:/docker/abc/inner\n")
    inner = v1_dir(root, "/inner", str(32 * MIB))
    assert memory.memory_limit(str(root)) == (32 * MIB, f"cgroup1:{inner}")


def test_no_mountinfo_uses_usual_mount_points(tmp_path):
    root = fake(tmp_path, cgroup="0::/app\n", mountinfo=None)
    d = v2_dir(root, "/app", str(80 * MIB))
    assert memory.memory_limit(str(root)) == (80 * MIB, f"cgroup2:{d}")


def test_nothing_readable(tmp_path):
    assert memory.mem_total(str(tmp_path)) == 0
    limit, source = memory.memory_limit(str(tmp_path))
    assert source == "meminfo" and limit > 2**31


def test_address_bits():
    assert memory.address_bits(2**31 - 1) == 32
    assert memory.address_bits(2**63 - 1) == 64
    assert memory.detect(maxsize=2**31 - 1).address_bits == 32


def test_lmdb_maps_32bit_fit_the_budget():
    total = sum(memory.lmdb_map_sizes(kind, 32)[1] for kind in memory.LMDB_MAPS_32BIT)
    assert total <= memory.LMDB_BUDGET_32BIT
    for kind in memory.LMDB_MAPS_32BIT:
        initial, maximum = memory.lmdb_map_sizes(kind, 32)
        assert 0 < initial <= maximum
    assert memory.lmdb_map_sizes("state", 64) == (1 << 30, 64 << 30)
    with pytest.raises(KeyError):
        memory.lmdb_map_sizes("nope", 64)


def test_stores_take_their_defaults_from_here():
    from pillion.broker import store
    from pillion.components.lock import lmdb as lock_lmdb
    from pillion.components.state import lmdb as state_lmdb
    from pillion.runtime import reminders

    bits = memory.address_bits()
    assert (state_lmdb.DEFAULT_MAP_SIZE, state_lmdb.DEFAULT_MAX_MAP_SIZE) == memory.lmdb_map_sizes("state", bits)
    assert (lock_lmdb.DEFAULT_MAP_SIZE, lock_lmdb.DEFAULT_MAX_MAP_SIZE) == memory.lmdb_map_sizes("lock", bits)
    assert (store.DEFAULT_MAP_SIZE, store.DEFAULT_MAX_MAP_SIZE) == memory.lmdb_map_sizes("broker", bits)
    assert (reminders.DEFAULT_MAP_SIZE, reminders.DEFAULT_MAX_MAP_SIZE) == memory.lmdb_map_sizes("reminders", bits)


def test_lock_store_opens_with_its_own_map_sizes(tmp_path):
    """The lock store's maximum is its own row's, not the state store's; metadata still wins."""
    from pillion.components.lock.lmdb import LmdbLockStore
    from pillion.components.registry import Context
    from pillion.components.state.lmdb import parse_metadata
    from pillion.config.manifests import Component, MetadataItem, Source

    def comp(**metadata: str) -> Component:
        return Component(name="lockstore", namespace=None, type="lock.lmdb", version="v1",
                         metadata=tuple(MetadataItem(k, v) for k, v in metadata.items()), scopes=(),
                         init_timeout="5s", ignore_errors=False, auth_secret_store=None, source=Source("/l.yaml", 1))

    ctx = Context(app_id="app", data_dir=str(tmp_path))
    store = LmdbLockStore(comp(), ctx)
    try:
        assert (store.options.map_size, store.options.max_map_size) == memory.lmdb_map_sizes("lock")
    finally:
        asyncio.run(store.close())
    opts = parse_metadata(comp(maxMapSize=str(8 * MIB)), ctx, default_map_size=MIB, default_max_map_size=2 * MIB)
    assert (opts.map_size, opts.max_map_size) == (MIB, 8 * MIB)
    opts = parse_metadata(comp(), ctx, default_map_size=MIB, default_max_map_size=2 * MIB)
    assert (opts.map_size, opts.max_map_size) == (MIB, 2 * MIB)


def test_app_queue_default_follows_the_limit():
    assert memory.app_queue_default(64 * MIB) == 2048
    assert memory.app_queue_default(128 * MIB) == 4096
    assert memory.app_queue_default(320 * MIB) == memory.APP_QUEUE_MAX == 10_000
    assert memory.app_queue_default(24 << 30) == 10_000
    assert memory.app_queue_default(1 * MIB) == memory.APP_QUEUE_MIN


def test_embedded_pubsub_takes_its_queue_from_the_limit(monkeypatch, tmp_path):
    """``maxQueuedMessages`` defaults from the memory limit; the metadata still wins."""
    from types import SimpleNamespace

    from pillion.components.pubsub.mqtt import EmbeddedMqtt
    from pillion.components.registry import Context
    from pillion.config.manifests import Component, MetadataItem, Source

    def comp(**metadata: str) -> Component:
        return Component(name="pubsub", namespace=None, type="pubsub.mqtt", version="v1",
                         metadata=tuple(MetadataItem(k, v) for k, v in metadata.items()), scopes=(),
                         init_timeout="5s", ignore_errors=False, auth_secret_store=None, source=Source("/p.yaml", 1))

    server = SimpleNamespace(broker=SimpleNamespace(clients={}))
    ctx = Context(app_id="app", data_dir=str(tmp_path))
    monkeypatch.setattr(memory, "current", lambda: memory.MemoryInfo(64 * MIB, "cgroup1:/x", 1 << 34, 64))
    assert EmbeddedMqtt(comp(), ctx, server, {}).max_queued == 2048
    explicit = EmbeddedMqtt(comp(maxQueuedMessages="50000"), ctx, server, {"maxqueuedmessages": "50000"})
    assert explicit.max_queued == 50000
    monkeypatch.setattr(memory, "current", lambda: memory.MemoryInfo(1 << 34, "meminfo", 1 << 34, 64))
    assert EmbeddedMqtt(comp(), ctx, server, {}).max_queued == 10_000


def test_body_budget_is_a_sixth_of_a_quarter_of_the_limit_with_a_floor():
    assert memory.body_budget(64 * MIB) == 64 * MIB // 4 // 6
    assert memory.body_budget(2 * MIB) == memory.BODY_BUDGET_MIN
