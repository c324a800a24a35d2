"""Conformance of the built-in state stores: every behaviour test runs on both.

``state.in-memory`` and ``state.lmdb`` (real LMDB files under tmp_path) must agree
on values, ETags, first-write, atomicity and TTL; LMDB-only tests (group commit,
map growth, metadata) follow. Each test runs on a fresh uvloop loop.
"""

from __future__ import annotations

import asyncio
import time

import lmdb as lmdb_lib
import pytest
import uvloop

from pillion.components import registry
from pillion.components.registry import Context
from pillion.components.state import DeleteRequest, ETagError, Feature, SetRequest, StoreError
from pillion.components.state import records
from pillion.components.state.lmdb import LmdbStateStore
from pillion.components.state.memory import MemoryStateStore
from pillion.config.manifests import Component, MetadataItem, Source
from pillion.errors import ConfigError

TYPES = {"memory": "state.in-memory", "lmdb": "state.lmdb"}


def component(type_: str, **metadata: str) -> Component:
    return Component(
        name="statestore", namespace=None, type=type_, version="v1",
        metadata=tuple(MetadataItem(k, v) for k, v in metadata.items()), scopes=(),
        init_timeout="5s", ignore_errors=False, auth_secret_store=None, source=Source("/res/state.yaml", 1),
    )


def run(coro):
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


@pytest.fixture(params=list(TYPES))
def kind(request) -> str:
    return request.param


@pytest.fixture
def ctx(tmp_path) -> Context:
    return Context(app_id="app", data_dir=str(tmp_path))


def with_store(kind: str, ctx: Context, body, **metadata: str):
    """Create the store through the registry inside a loop, run ``body(store)``, close it."""

    async def main():
        comp = component(TYPES[kind], **metadata)
        registry.check(comp)
        store = registry.create(comp, ctx)
        try:
            return await body(store)
        finally:
            await store.close()

    return run(main())


# -- conformance: both stores ------------------------------------------------------


def test_get_set_delete(kind, ctx):
    async def body(store):
        assert await store.get("app||k") is None
        await store.set([SetRequest("app||k", b'{"a":1}')])
        item = await store.get("app||k")
        assert item.value == b'{"a":1}' and item.etag and item.expire_time is None
        await store.set([SetRequest("app||k", b'"two"', content_type="text/plain")])
        item2 = await store.get("app||k")
        assert item2.value == b'"two"' and item2.content_type == "text/plain" and item2.etag != item.etag
        await store.delete([DeleteRequest("app||k")])
        assert await store.get("app||k") is None
        await store.delete([DeleteRequest("app||missing")])  # missing key, no etag: fine
        await store.set([])
        await store.transact([])

    with_store(kind, ctx, body)


def test_bulk_get_keeps_order_and_missing(kind, ctx):
    async def body(store):
        await store.set([SetRequest(f"k{i}", str(i).encode()) for i in range(5)])
        items = await store.bulk_get(["k3", "nope", "k0", "k3"])
        assert [i.value if i else None for i in items] == [b"3", None, b"0", b"3"]
        assert await store.bulk_get([]) == []

    with_store(kind, ctx, body)


def test_etag_match_mismatch_invalid(kind, ctx):
    async def body(store):
        await store.set([SetRequest("k", b"1")])
        etag = (await store.get("k")).etag
        assert etag.isdigit()
        await store.set([SetRequest("k", b"2", etag=etag)])
        new = (await store.get("k")).etag
        assert int(new) > int(etag)
        with pytest.raises(ETagError) as err:
            await store.set([SetRequest("k", b"3", etag=etag)])  # stale
        assert err.value.kind == "mismatch" and err.value.key == "k"
        assert str(err.value) == records.MSG_MISMATCH
        with pytest.raises(ETagError) as err:
            await store.set([SetRequest("k", b"3", etag="not-a-version")])
        assert err.value.kind == "invalid" and str(err.value) == records.MSG_INVALID
        with pytest.raises(ETagError) as err:
            await store.set([SetRequest("absent", b"x", etag="1")])
        assert err.value.kind == "mismatch"
        assert (await store.get("k")).value == b"2"
        await store.set([SetRequest("k", b"4", etag="")])  # empty ETag = none
        assert (await store.get("k")).value == b"4"

    with_store(kind, ctx, body)


def test_first_write(kind, ctx):
    async def body(store):
        await store.set([SetRequest("k", b"1", first_write=True)])
        with pytest.raises(ETagError) as err:
            await store.set([SetRequest("k", b"2", first_write=True)])
        assert err.value.kind == "mismatch"
        etag = (await store.get("k")).etag
        await store.set([SetRequest("k", b"3", etag=etag, first_write=True)])
        assert (await store.get("k")).value == b"3"

    with_store(kind, ctx, body)


def test_delete_with_etag(kind, ctx):
    async def body(store):
        await store.set([SetRequest("k", b"1")])
        etag = (await store.get("k")).etag
        with pytest.raises(ETagError) as err:
            await store.delete([DeleteRequest("k", etag=str(int(etag) + 1))])
        assert err.value.kind == "mismatch"
        with pytest.raises(ETagError) as err:
            await store.delete([DeleteRequest("k", etag="x1")])
        assert err.value.kind == "invalid"
        await store.delete([DeleteRequest("k", etag=etag)])
        assert await store.get("k") is None
        with pytest.raises(ETagError) as err:
            await store.delete([DeleteRequest("k", etag=etag)])  # now missing
        assert err.value.kind == "mismatch"

    with_store(kind, ctx, body)


def test_versions_never_reused_after_delete(kind, ctx):
    async def body(store):
        await store.set([SetRequest("k", b"1")])
        old = (await store.get("k")).etag
        await store.delete([DeleteRequest("k")])
        await store.set([SetRequest("k", b"2")])
        assert int((await store.get("k")).etag) > int(old)

    with_store(kind, ctx, body)


def test_transact_is_atomic(kind, ctx):
    async def body(store):
        await store.set([SetRequest("a", b"1"), SetRequest("b", b"1")])
        etag_a = (await store.get("a")).etag
        ops = [SetRequest("a", b"2", etag=etag_a), DeleteRequest("b"), SetRequest("c", b"new"),
               SetRequest("a", b"3", etag=etag_a)]  # stale by now: the whole call fails
        with pytest.raises(ETagError):
            await store.transact(ops)
        items = await store.bulk_get(["a", "b", "c"])
        assert [i.value if i else None for i in items] == [b"1", b"1", None]
        assert items[0].etag == etag_a
        # ops see the ones before them
        await store.transact([SetRequest("c", b"x"), DeleteRequest("b"), SetRequest("b", b"again", first_write=True)])
        assert [i.value for i in await store.bulk_get(["b", "c"])] == [b"again", b"x"]
        # set() and delete() with several requests are atomic too
        with pytest.raises(ETagError):
            await store.set([SetRequest("d", b"1"), SetRequest("a", b"9", first_write=True)])
        assert await store.get("d") is None
        with pytest.raises(ETagError):
            await store.delete([DeleteRequest("c"), DeleteRequest("a", etag="999999")])
        assert (await store.get("c")).value == b"x"

    with_store(kind, ctx, body)


def test_ttl_expiry_is_invisible_at_once(kind, ctx):
    async def body(store):
        before = time.time()
        await store.set([SetRequest("t", b"v", ttl_seconds=1), SetRequest("forever", b"v", ttl_seconds=-1)])
        item = await store.get("t")
        assert item.value == b"v" and before + 1 <= item.expire_time <= time.time() + 1
        assert (await store.get("forever")).expire_time is None
        etag = item.etag
        await asyncio.sleep(1.1)
        assert await store.get("t") is None
        assert await store.bulk_get(["t", "forever"]) == [None, await store.get("forever")]
        with pytest.raises(ETagError):
            await store.set([SetRequest("t", b"w", etag=etag)])  # expired = absent
        await store.set([SetRequest("t", b"w", first_write=True)])  # expired = absent
        assert (await store.get("t")).value == b"w"

    with_store(kind, ctx, body)


def test_features(kind, ctx):
    async def plain(store):
        assert store.features() == {Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL, Feature.QUERY_API}

    async def actor(store):
        assert Feature.ACTOR in store.features()

    with_store(kind, ctx, plain, keyPrefix="name", somethingElse="x")
    with_store(kind, ctx, actor, actorStateStore="true")


def test_closed_store_refuses_calls(kind, ctx):
    async def main():
        store = registry.create(component(TYPES[kind]), ctx)
        await store.close()
        for call in (store.get("k"), store.set([SetRequest("k", b"v")])):
            with pytest.raises(StoreError):
                await call

    run(main())


# -- in-memory only ----------------------------------------------------------------


def test_memory_sweep_removes_expired_entries(ctx):
    now = [1000.0]
    store = MemoryStateStore(component("state.in-memory"), ctx, clock=lambda: now[0])

    async def main():
        await store.set([SetRequest("t", b"v", ttl_seconds=5), SetRequest("keep", b"v")])
        now[0] += 6
        assert await store.get("t") is None
        assert "t" in store._data  # invisible, not yet swept
        now[0] += 10
        await store.set([SetRequest("other", b"v")])
        assert "t" not in store._data and "keep" in store._data

    run(main())


# -- LMDB only ---------------------------------------------------------------------


def lmdb_store(ctx: Context, **metadata: str) -> LmdbStateStore:
    return LmdbStateStore(component("state.lmdb", **metadata), ctx)


def test_lmdb_group_commit(ctx):
    async def main():
        store = lmdb_store(ctx)
        try:
            before = store.commits
            await asyncio.gather(*(store.set([SetRequest(f"k{i}", b"x" * 100)]) for i in range(500)))
            commits = store.commits - before
            assert commits < 50, commits
            items = await store.bulk_get([f"k{i}" for i in range(500)])
            assert all(i is not None for i in items)
            assert len({i.etag for i in items}) == 500
        finally:
            await store.close()

    run(main())


def test_lmdb_bad_etag_in_batch_fails_alone(ctx):
    async def main():
        store = lmdb_store(ctx)
        try:
            await store.set([SetRequest(f"k{i}", b"0") for i in range(200)])
            before = store.commits
            calls = []
            for i in range(200):
                etag = "1" if i % 10 == 0 else None  # versions are well past 1 by now... except k0
                calls.append(store.set([SetRequest(f"k{i}", b"1", etag=etag)]))
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert store.commits - before < 20
            for i, result in enumerate(results):
                if i % 10 == 0 and i != 0:
                    assert isinstance(result, ETagError) and result.key == f"k{i}"
                else:
                    assert result is None, (i, result)
            values = [it.value for it in await store.bulk_get([f"k{i}" for i in range(200)])]
            assert values == [b"0" if i % 10 == 0 and i else b"1" for i in range(200)]
        finally:
            await store.close()

    run(main())


def test_lmdb_map_grows(ctx, tmp_path):
    async def main():
        store = lmdb_store(ctx, path=str(tmp_path / "tiny"), mapSize="65536")
        try:
            chunk = b"z" * 16384
            await asyncio.gather(*(store.set([SetRequest(f"c{i}", chunk)]) for i in range(32)))
            for i in range(32, 64):
                await store.set([SetRequest(f"c{i}", chunk)])
            items = await store.bulk_get([f"c{i}" for i in range(64)])
            assert all(i is not None and i.value == chunk for i in items)
            assert store._env.env.info()["map_size"] >= 1 << 20
        finally:
            await store.close()

    run(main())


def test_lmdb_map_limit_fails_only_what_does_not_fit(ctx, tmp_path):
    async def main():
        store = lmdb_store(ctx, path=str(tmp_path / "capped"), mapSize="131072", maxMapSize="131072")
        try:
            big, small = store.set([SetRequest("big", b"b" * 400_000)]), store.set([SetRequest("s", b"s")])
            results = await asyncio.gather(big, small, return_exceptions=True)
            assert isinstance(results[0], StoreError) and "full" in str(results[0])
            assert results[1] is None
            assert (await store.get("s")).value == b"s"
        finally:
            await store.close()

    run(main())


def test_lmdb_two_stores_one_path_share_an_env(ctx):
    async def main():
        a, b = lmdb_store(ctx), lmdb_store(ctx)
        assert a._env is b._env
        await asyncio.gather(*(s.set([SetRequest(f"{n}{i}", b"v")]) for i in range(50) for n, s in (("a", a), ("b", b))))
        await a.close()
        assert len([i for i in await b.bulk_get([f"a{i}" for i in range(50)]) if i]) == 50
        await b.close()

    run(main())


def test_lmdb_long_and_empty_keys(ctx):
    async def main():
        store = lmdb_store(ctx)
        try:
            with pytest.raises(StoreError):
                await store.set([SetRequest("k" * 512, b"v")])
            with pytest.raises(StoreError):
                await store.set([SetRequest("", b"v")])
            await store.set([SetRequest("k" * 511, b"v")])
            assert await store.get("k" * 600) is None
        finally:
            await store.close()

    run(main())


def test_lmdb_sweep_deletes_expired_records(ctx):
    async def main():
        store = lmdb_store(ctx)
        try:
            await store.set([SetRequest(f"t{i}", b"v", ttl_seconds=1) for i in range(30)] + [SetRequest("keep", b"v")])
            await asyncio.sleep(1.1)
            env = store._env
            env.sweep_limit = 10
            for _ in range(5):  # bounded runs resume where the last stopped
                await asyncio.to_thread(env._sweep)
            with env.env.begin(db=env.db) as txn:
                assert txn.stat(env.db)["entries"] == 1
            assert (await store.get("keep")).value == b"v"
        finally:
            await store.close()

    run(main())


def test_records_round_trip():
    raw = records.pack(7, 12.5, "application/json", b"\x00\xffdata")
    assert records.unpack(raw) == (7, 12.5, "application/json", b"\x00\xffdata")
    assert records.unpack(records.pack(1, 0.0, None, b"")) == (1, 0.0, None, b"")
    assert records.unpack_header(raw) == (7, 12.5)
    with pytest.raises(ValueError):
        records.unpack_header(b"\x02" + raw[1:])


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({"durability": "sometimes"}, "spec.metadata[0].durability"),
        ({"path": "/x", "mapSize": "big"}, "spec.metadata[1].mapSize"),
        ({"MapSize": "100"}, "spec.metadata[0].MapSize"),
        ({"maxMapSize": "-5"}, "spec.metadata[0].maxMapSize"),
    ],
)
def test_lmdb_bad_metadata_names_the_field(ctx, metadata, field):
    with pytest.raises(ConfigError) as err:
        lmdb_store(ctx, **metadata)
    assert err.value.field == field and err.value.file == "/res/state.yaml" and err.value.document == 1


def test_lmdb_metadata_defaults_and_durability_modes(ctx, tmp_path):
    from pillion.components.state.lmdb import DEFAULT_MAP_SIZE, parse_metadata

    opts = parse_metadata(component("state.lmdb", keyPrefix="none"), ctx)
    assert opts.path == str(tmp_path / "state") and opts.map_size == DEFAULT_MAP_SIZE and opts.durability == "fsync"
    for mode, flags in (("nometasync", (True, False)), ("nosync", (False, False)), ("FSYNC", (True, True))):
        async def main(mode=mode, flags=flags):
            store = lmdb_store(ctx, path=str(tmp_path / mode), durability=mode)
            try:
                assert (store._env.sync, store._env.metasync) == flags
                await store.set([SetRequest("k", b"v")])
                assert (await store.get("k")).value == b"v"
            finally:
                await store.close()

        run(main())


def test_lmdb_conflicting_durability_on_one_path(ctx, tmp_path):
    async def main():
        a = lmdb_store(ctx, durability="fsync")
        try:
            with pytest.raises(ConfigError) as err:
                lmdb_store(ctx, durability="nosync")
            assert err.value.field == "spec.metadata[0].durability"
            await a.set([SetRequest("k", b"v")])
        finally:
            await a.close()

    run(main())
    assert lmdb_lib.open(str(tmp_path / "state"), max_dbs=2, readonly=True).stat()  # closed cleanly
