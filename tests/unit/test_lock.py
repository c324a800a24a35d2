"""``lock.lmdb`` on real LMDB files under tmp_path, and the lock API's pure parts.

Store semantics: acquire, contention, expiry (wall clock), owner checks, unlock
statuses, restarts, one SharedEnv per path per process, and exclusion between
processes (spawned, each with its own environment on the same file). Each test runs
on a fresh uvloop loop.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time

import orjson
import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pillion.api.lock import LockStoreBinding, lock_key_prefix, try_lock, unlock
from pillion.components.lock import UnlockStatus
from pillion.components.lock.lmdb import LmdbLockStore
from pillion.components.registry import Context
from pillion.components.state import StoreError
from pillion.config.manifests import Component, MetadataItem, Source
from pillion.errors import ConfigError, DaprError
from pillion.server.http import Request


def component(name: str = "lockstore", **metadata: str) -> Component:
    return Component(
        name=name, namespace=None, type="lock.lmdb", version="v1",
        metadata=tuple(MetadataItem(k, v) for k, v in metadata.items()), scopes=(),
        init_timeout="5s", ignore_errors=False, auth_secret_store=None, source=Source("/res/lock.yaml", 1),
    )


def run(coro):
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


@pytest.fixture
def ctx(tmp_path) -> Context:
    return Context("orders", str(tmp_path))


async def _using(ctx: Context, body, **metadata: str):
    store = LmdbLockStore(component(**metadata), ctx)
    try:
        return await body(store)
    finally:
        await store.close()


def test_default_path_is_under_data_dir(ctx, tmp_path):
    async def body(store):
        return store.options.path

    assert run(_using(ctx, body)) == str(tmp_path / "locks")


def test_acquire_contend_release(ctx):
    async def body(store):
        assert await store.try_lock("lock||orders||r", "alice", 30) is True
        assert await store.try_lock("lock||orders||r", "bob", 30) is False
        assert await store.try_lock("lock||orders||r", "alice", 30) is False  # not re-entrant, as redis SETNX
        assert await store.try_lock("lock||orders||other", "bob", 30) is True
        assert await store.unlock("lock||orders||r", "bob") == UnlockStatus.LOCK_BELONGS_TO_OTHERS
        assert await store.unlock("lock||orders||r", "alice") == UnlockStatus.SUCCESS
        assert await store.unlock("lock||orders||r", "alice") == UnlockStatus.LOCK_DOES_NOT_EXIST
        assert await store.unlock("lock||orders||never", "alice") == UnlockStatus.LOCK_DOES_NOT_EXIST
        assert await store.try_lock("lock||orders||r", "bob", 30) is True

    run(_using(ctx, body))


def test_expired_lock_is_free(ctx, monkeypatch):
    async def body(store):
        assert await store.try_lock("k", "alice", 5) is True
        later = time.time() + 6
        monkeypatch.setattr(time, "time", lambda: later)  # the writer's batch clock is wall time
        assert await store.unlock("k", "alice") == UnlockStatus.LOCK_DOES_NOT_EXIST
        assert await store.try_lock("k", "bob", 5) is True
        assert await store.unlock("k", "bob") == UnlockStatus.SUCCESS

    run(_using(ctx, body))


def test_expiry_really_elapses(ctx):
    async def body(store):
        assert await store.try_lock("k", "alice", 1) is True
        await asyncio.sleep(1.1)
        assert await store.try_lock("k", "bob", 1) is True

    run(_using(ctx, body))


def test_concurrent_callers_get_one_winner(ctx):
    async def body(store):
        results = await asyncio.gather(*(store.try_lock("k", f"owner{i}", 30) for i in range(50)))
        return results

    assert sum(run(_using(ctx, body))) == 1


def test_survives_restart(ctx):
    async def take(store):
        return await store.try_lock("k", "alice", 60)

    async def check(store):
        return await store.try_lock("k", "bob", 60), await store.unlock("k", "alice")

    assert run(_using(ctx, take)) is True
    assert run(_using(ctx, check)) == (False, UnlockStatus.SUCCESS)


def test_two_stores_on_one_path_share_env_and_locks(ctx):
    async def body():
        a = LmdbLockStore(component("a"), ctx)
        b = LmdbLockStore(component("b"), ctx)
        try:
            assert a._env is b._env
            assert await a.try_lock("k", "alice", 30) is True
            assert await b.try_lock("k", "bob", 30) is False
            assert await b.unlock("k", "bob") == UnlockStatus.LOCK_BELONGS_TO_OTHERS
        finally:
            await a.close()
        assert await b.unlock("k", "alice") == UnlockStatus.SUCCESS  # the env outlives its first user
        await b.close()

    run(body())


def _contend(path: str, owner: str, start: float, results) -> None:
    """Child process: wait for the common start, try once, report."""
    async def body():
        store = LmdbLockStore(component(path=path), Context("orders", path))
        try:
            time.sleep(max(0.0, start - time.time()))
            results.put((owner, await store.try_lock("lock||orders||shared", owner, 30)))
        finally:
            await store.close()

    run(body())


def test_processes_exclude_each_other(tmp_path):
    path = str(tmp_path / "locks")
    mp = multiprocessing.get_context("spawn")
    results = mp.Queue()
    start = time.time() + 2.0  # spawned interpreters need time to import
    procs = [mp.Process(target=_contend, args=(path, f"p{i}", start, results)) for i in range(4)]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=30) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    winners = [owner for owner, won in outcomes.items() if won]
    assert len(winners) == 1

    async def check(store):
        loser = next(o for o in outcomes if o not in winners)
        return (await store.unlock("lock||orders||shared", loser),
                await store.unlock("lock||orders||shared", winners[0]))

    ctx = Context("orders", str(tmp_path))
    assert run(_using(ctx, check, path=path)) == (UnlockStatus.LOCK_BELONGS_TO_OTHERS, UnlockStatus.SUCCESS)


def test_bad_keys_and_expiry_raise_store_error(ctx):
    async def body(store):
        for call in (store.try_lock("", "o", 5), store.try_lock("x" * 600, "o", 5), store.try_lock("k", "o", 0),
                     store.unlock("", "o")):
            with pytest.raises(StoreError):
                await call

    run(_using(ctx, body))


def test_closed_store_refuses_calls(ctx):
    async def body():
        store = LmdbLockStore(component(), ctx)
        await store.close()
        with pytest.raises(StoreError):
            await store.try_lock("k", "o", 5)

    run(body())


@pytest.mark.parametrize("name, value", [("keyPrefix", "a||b"), ("durability", "sometimes"), ("mapSize", "12")])
def test_bad_metadata(ctx, name, value):
    with pytest.raises(ConfigError) as err:
        LmdbLockStore(component(**{name: value}), ctx)
    assert err.value.field == f"spec.metadata[0].{name}"


# -- the API layer ------------------------------------------------------------------


@pytest.mark.parametrize("strategy, app_id, expected", [
    (None, "orders", "lock||orders||"),
    ("", "orders", "lock||orders||"),
    ("AppID", "orders", "lock||orders||"),
    ("appid", "", "lock||"),
    ("name", "orders", "lock||lockstore||"),
    ("none", "orders", "lock||"),
    ("Shared", "orders", "lock||shared||"),  # Dapr lower-cases the strategy, literals included
])
def test_lock_key_prefix(strategy, app_id, expected):
    assert lock_key_prefix(strategy, app_id=app_id, store="lockstore") == expected


def _request(store: str, body: bytes) -> Request:
    request = Request("POST", f"/v1.0-alpha1/lock/{store}", "", [], body, True)
    request.params = {"storeName": store}
    return request


class _Sidecar:
    def __init__(self, stores):
        self.lock_stores = stores


def _call(handler, sidecar, store: str, body) -> tuple[int, dict]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    try:
        response = run(handler(sidecar, _request(store, raw)))
    except DaprError as exc:
        return exc.status, {"errorCode": exc.code}
    return response.status, orjson.loads(response.body)


def test_api_round_trip(ctx):
    async def open_store():
        return LmdbLockStore(component(), ctx)

    store = run(open_store())
    sidecar = _Sidecar({"lockstore": LockStoreBinding("lockstore", store, "lock||orders||")})
    try:
        req = {"resourceId": "r", "lockOwner": "alice", "expiryInSeconds": 30}
        assert _call(try_lock, sidecar, "lockstore", req) == (200, {"success": True})
        assert _call(try_lock, sidecar, "lockstore", {**req, "lockOwner": "bob"}) == (200, {"success": False})
        snake = {"resource_id": "r", "lock_owner": "bob"}
        assert _call(unlock, sidecar, "lockstore", snake) == (200, {"status": 2})
        assert _call(unlock, sidecar, "lockstore", {"resourceId": "r", "lockOwner": "alice"}) == (200, {"status": 0})
        assert _call(unlock, sidecar, "lockstore", {"resourceId": "r", "lockOwner": "alice"}) == (200, {"status": 1})
        assert _call(try_lock, sidecar, "lockstore", {**req, "expiryInSeconds": "5"}) == (200, {"success": True})
    finally:
        run(store.close())

    async def raw_key():
        again = LmdbLockStore(component(), ctx)
        try:
            return await again.unlock("lock||orders||r", "alice")
        finally:
            await again.close()

    assert run(raw_key()) == UnlockStatus.SUCCESS  # stored under Dapr's lock||<appid>||<resourceId>


class _NeverStore:
    async def try_lock(self, resource_id, owner, expiry_seconds):
        raise AssertionError("not reached")

    async def unlock(self, resource_id, owner):
        raise AssertionError("not reached")


@pytest.mark.parametrize("handler, stores, store, body, expected", [
    # expiry is checked first, even before "not configured"
    (try_lock, {}, "x", {"resourceId": "r", "lockOwner": "o"}, (400, "ERR_MALFORMED_REQUEST")),
    (try_lock, {}, "x", {"resourceId": "r", "lockOwner": "o", "expiryInSeconds": 5},
     (500, "ERR_LOCK_STORE_NOT_CONFIGURED")),
    (try_lock, None, "s", {"lockOwner": "o", "expiryInSeconds": 5}, (400, "ERR_MALFORMED_REQUEST")),
    (try_lock, None, "s", {"resourceId": "r", "expiryInSeconds": 5}, (400, "ERR_MALFORMED_REQUEST")),
    (try_lock, None, "nope", {"resourceId": "r", "lockOwner": "o", "expiryInSeconds": 5},
     (400, "ERR_LOCK_STORE_NOT_FOUND")),
    (try_lock, None, "s", {"resourceId": "a||b", "lockOwner": "o", "expiryInSeconds": 5}, (500, "ERR_TRY_LOCK")),
    (try_lock, None, "s", {"resourceId": "r", "lockOwner": "o", "expiryInSeconds": "x"},
     (400, "ERR_MALFORMED_REQUEST")),
    (try_lock, None, "s", b"[1]", (400, "ERR_MALFORMED_REQUEST")),
    (try_lock, None, "s", b"{", (400, "ERR_MALFORMED_REQUEST")),
    (try_lock, None, "s", b"", (400, "ERR_MALFORMED_REQUEST")),
    (unlock, {}, "x", {"resourceId": "r", "lockOwner": "o"}, (500, "ERR_LOCK_STORE_NOT_CONFIGURED")),
    (unlock, None, "s", {"lockOwner": "o"}, (400, "ERR_MALFORMED_REQUEST")),
    (unlock, None, "s", {"resourceId": "r"}, (400, "ERR_MALFORMED_REQUEST")),
    (unlock, None, "nope", {"resourceId": "r", "lockOwner": "o"}, (400, "ERR_LOCK_STORE_NOT_FOUND")),
    (unlock, None, "s", {"resourceId": "a||b", "lockOwner": "o"}, (500, "ERR_UNLOCK")),
])
def test_api_errors(handler, stores, store, body, expected):
    if stores is None:
        stores = {"s": LockStoreBinding("s", _NeverStore(), "lock||app||")}
    status, answer = _call(handler, _Sidecar(stores), store, body)
    assert (status, answer["errorCode"]) == expected


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)
# json.dumps, not orjson: big integers, NaN and Infinity make bodies a strict parser must refuse.
_bodies = st.one_of(
    st.binary(max_size=64),
    _json.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries({}, optional={"resourceId": _json, "lockOwner": _json, "expiryInSeconds": _json,
                                        "resource_id": _json}).map(lambda value: json.dumps(value).encode()),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_bodies, handler=st.sampled_from([try_lock, unlock]))
def test_any_body_gets_an_answer_or_a_dapr_error(tmp_path, body, handler):
    """Whatever arrives, the API answers its field or one of Dapr's lock error codes; nothing else escapes."""

    async def go():
        store = LmdbLockStore(component(), Context("orders", str(tmp_path)))
        sidecar = _Sidecar({"lockstore": LockStoreBinding("lockstore", store, "lock||orders||")})
        try:
            try:
                response = await handler(sidecar, _request("lockstore", body))
            except DaprError as exc:
                assert exc.code in {"ERR_MALFORMED_REQUEST", "ERR_TRY_LOCK", "ERR_UNLOCK"}, exc.code
                return
            answer = orjson.loads(response.body)
            assert response.status == 200
            if handler is try_lock:
                assert isinstance(answer["success"], bool)
            else:
                assert answer["status"] in (0, 1, 2)
        finally:
            await store.close()

    run(go())
