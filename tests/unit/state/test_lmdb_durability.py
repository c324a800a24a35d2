"""state.lmdb across processes: SIGKILL mid-write loses no acknowledged key, and two
processes (two sidecars) writing one environment at once lose nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import lmdb
import uvloop

from pillion.components.registry import Context
from pillion.components.state import ETagError, SetRequest
from pillion.components.state.lmdb import LmdbStateStore
from pillion.config.manifests import Component, MetadataItem, Source

# argv: path durability mode(ack|count) n prefix
WRITER = textwrap.dedent("""
    import asyncio, sys, uvloop
    from pillion.components.registry import Context
    from pillion.components.state import ETagError, SetRequest
    from pillion.components.state.lmdb import LmdbStateStore
    from pillion.config.manifests import Component, MetadataItem, Source

    path, durability, mode, n, prefix = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    comp = Component(name="s", namespace=None, type="state.lmdb", version="v1",
                     metadata=(MetadataItem("path", path), MetadataItem("durability", durability),
                               MetadataItem("mapSize", "65536")),
                     scopes=(), init_timeout="5s", ignore_errors=False, auth_secret_store=None,
                     source=Source("x.yaml", 0))

    async def bump(store):
        while True:
            item = await store.get("counter")
            value = int(item.value) + 1 if item else 1
            try:
                await store.set([SetRequest("counter", str(value).encode(), etag=item.etag if item else None,
                                            first_write=item is None)])
                return
            except ETagError:
                pass

    async def main():
        store = LmdbStateStore(comp, Context("app", "/nonexistent"))
        print("ready", flush=True)
        if mode == "ack":
            i = 0
            while True:
                keys = [f"{prefix}{i + j}" for j in range(8)]
                await asyncio.gather(*(store.set([SetRequest(k, b"v" * 200)]) for k in keys))
                sys.stdout.write("".join(k + "\\n" for k in keys))
                sys.stdout.flush()
                i += 8
        for i in range(n):
            await store.set([SetRequest(f"{prefix}{i}", b"v" * 100)])
            await bump(store)
        await store.close()
        print("done", flush=True)

    uvloop.run(main())
""")


def component(path: str) -> Component:
    return Component(
        name="s", namespace=None, type="state.lmdb", version="v1",
        metadata=(MetadataItem("path", path), MetadataItem("mapSize", "65536")), scopes=(), init_timeout="5s",
        ignore_errors=False, auth_secret_store=None, source=Source("x.yaml", 0),
    )


def run(coro):
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def spawn(*args: str, stdout=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, *args], stdout=stdout, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_sigkill_mid_run_loses_no_acknowledged_key(tmp_path):
    path = str(tmp_path / "env")
    proc = spawn(path, "fsync", "ack", "0", "key-")
    acked: list[str] = []
    try:
        assert proc.stdout.readline().strip() == "ready"
        while len(acked) < 400:
            line = proc.stdout.readline()
            assert line, "writer died early"
            acked.append(line.strip())
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    acked += [k for k in rest.splitlines() if k.startswith("key-")]  # printed before the kill

    with lmdb.open(path, max_dbs=2, readonly=True) as env:  # opens cleanly, data intact
        env.stat()

    async def check():
        store = LmdbStateStore(component(path), Context("app", str(tmp_path)))
        try:
            items = await store.bulk_get(acked)
            missing = [k for k, item in zip(acked, items) if item is None]
            assert not missing, missing[:10]
            assert all(item.value == b"v" * 200 for item in items)
            await store.set([SetRequest("after", b"ok")])  # still writable after the crash
            assert (await store.get("after")).value == b"ok"
        finally:
            await store.close()

    run(check())


def test_two_processes_on_one_env_lose_nothing(tmp_path):
    path = str(tmp_path / "shared")
    n = 150

    async def main():
        store = LmdbStateStore(component(path), Context("app", str(tmp_path)))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, path, "fsync", "count", str(n), "child-",
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert (await proc.stdout.readline()).strip() == b"ready"

            async def bump():
                while True:
                    item = await store.get("counter")
                    value = int(item.value) + 1 if item else 1
                    try:
                        await store.set([SetRequest("counter", str(value).encode(),
                                                    etag=item.etag if item else None, first_write=item is None)])
                        return
                    except ETagError:
                        pass

            for i in range(n):
                await store.set([SetRequest(f"parent-{i}", b"p" * 100)])
                await bump()
            assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"done"
            assert await asyncio.wait_for(proc.wait(), 30) == 0
            keys = [f"{who}-{i}" for who in ("parent", "child") for i in range(n)]
            items = await store.bulk_get(keys)
            assert [k for k, item in zip(keys, items) if item is None] == []
            assert (await store.get("counter")).value == str(2 * n).encode()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await store.close()

    run(main())


def test_map_grown_by_another_process_is_adopted(tmp_path):
    path = str(tmp_path / "grown")
    grow = textwrap.dedent("""
        import asyncio, sys, uvloop
        from pillion.components.registry import Context
        from pillion.components.state import SetRequest
        from pillion.components.state.lmdb import LmdbStateStore
        from pillion.config.manifests import Component, MetadataItem, Source
        comp = Component(name="s", namespace=None, type="state.lmdb", version="v1",
                         metadata=(MetadataItem("path", sys.argv[1]), MetadataItem("mapSize", "65536")),
                         scopes=(), init_timeout="5s", ignore_errors=False, auth_secret_store=None,
                         source=Source("x.yaml", 0))
        async def main():
            store = LmdbStateStore(comp, Context("app", "/nonexistent"))
            for i in range(100):
                await store.set([SetRequest(f"big{i}", b"y" * 20000)])
            await store.close()
        uvloop.run(main())
    """)

    async def main():
        store = LmdbStateStore(component(path), Context("app", str(tmp_path)))
        try:
            await store.set([SetRequest("x", b"1")])
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", grow, path)
            assert await asyncio.wait_for(proc.wait(), 60) == 0
            assert (await store.get("big99")).value == b"y" * 20000  # past our old map: adopt, then read
            await store.set([SetRequest("y", b"2")])
            assert [i.value for i in await store.bulk_get(["x", "y"])] == [b"1", b"2"]
        finally:
            await store.close()

    run(main())
