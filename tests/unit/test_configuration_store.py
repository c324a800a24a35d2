"""configuration.lmdb alone: items, the change feed, subscriptions and its metadata."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pillion.components.configuration import StoreError
from pillion.components.configuration.lmdb import FEED, LmdbConfigurationStore
from pillion.components.registry import Context
from pillion.config.manifests import Component, MetadataItem, Source
from pillion.errors import ConfigError


def component(path, **metadata) -> Component:
    items = [MetadataItem("path", str(path))] + [MetadataItem(k, v) for k, v in metadata.items()]
    return Component(name="configstore", namespace=None, type="configuration.lmdb", version="v1",
                     metadata=tuple(items), scopes=(), init_timeout="", ignore_errors=False, auth_secret_store=None,
                     source=Source("configstore.yaml", 0))


def store(path, **metadata) -> LmdbConfigurationStore:
    return LmdbConfigurationStore(component(path, pollInterval="10ms", **metadata), Context("app", str(path)))


class Recorder:
    def __init__(self):
        self.updates: list[tuple[str, dict]] = []
        self.event = asyncio.Event()

    async def __call__(self, subscription_id, items):
        self.updates.append((subscription_id, {k: (v.value, v.version) for k, v in items.items()}))
        self.event.set()

    async def next(self, timeout=2.0):
        await asyncio.wait_for(self.event.wait(), timeout)
        self.event.clear()
        return self.updates[-1]


def run(coro):
    return asyncio.run(coro)


def test_set_get_delete(tmp_path):
    async def go():
        s = store(tmp_path)
        written = await s.set({"a": ("1", {"unit": "rpm"}), "b": ("2", {})})
        assert int(written["b"].version) > int(written["a"].version)
        got = await s.get(["a", "missing"])
        assert list(got) == ["a"] and got["a"].value == "1" and got["a"].metadata == {"unit": "rpm"}
        assert got["a"].version == written["a"].version
        assert set(await s.get([])) == {"a", "b"}
        assert s.reads_without_waiting  # the API's synchronous path: get_json_now (tested below)
        assert await s.delete(["a", "missing"]) == ["a"]
        assert set(await s.get([])) == {"b"}
        await s.close()
        with pytest.raises(StoreError):
            await s.get(["b"])

    run(go())


def test_two_stores_on_one_path_see_each_others_writes(tmp_path):
    """What `pillion config set` does beside a running sidecar, in one process here."""

    async def go():
        writer, reader = store(tmp_path), store(tmp_path)
        await writer.set({"k": ("v", {})})
        assert (await reader.get(["k"]))["k"].value == "v"
        await writer.close()
        await reader.close()

    run(go())


def test_subscriptions_get_changes_after_they_started(tmp_path):
    async def go():
        s = store(tmp_path)
        await s.set({"before": ("0", {})})
        some, every = Recorder(), Recorder()
        some_id = await s.subscribe(["x", "y"], some)
        every_id = await s.subscribe([], every)
        await s.set({"x": ("1", {}), "z": ("2", {})})
        sid, items = await some.next()
        assert sid == some_id and set(items) == {"x"}
        sid, items = await every.next()
        assert sid == every_id and set(items) == {"x", "z"}  # not `before`: it changed earlier
        # Changes between two polls arrive once, with the latest item.
        await asyncio.gather(s.set({"y": ("a", {})}), s.set({"y": ("b", {})}))
        _, items = await some.next()
        assert items["y"][0] == "b"
        await s.delete(["y"])
        _, items = await some.next()
        assert items["y"][0] == ""
        assert await s.unsubscribe(some_id) is True
        assert await s.unsubscribe(some_id) is False
        await s.set({"x": ("3", {})})
        await every.next()
        assert len(some.updates) == 3
        await s.close()

    run(go())


def test_a_failing_handler_does_not_stop_the_others(tmp_path):
    async def go():
        s = store(tmp_path)

        async def broken(subscription_id, items):
            raise RuntimeError("app gone")

        good = Recorder()
        await s.subscribe([], broken)
        await s.subscribe([], good)
        await s.set({"a": ("1", {})})
        await good.next()
        await s.set({"a": ("2", {})})
        _, items = await good.next()
        assert items["a"][0] == "2"
        await s.close()

    run(go())


def test_the_watcher_stops_with_the_last_subscription(tmp_path):
    async def go():
        s = store(tmp_path)
        sid = await s.subscribe([], Recorder())
        watcher = s._watcher
        assert watcher is not None and not watcher.done()
        await s.unsubscribe(sid)
        await asyncio.sleep(0)
        assert watcher.cancelled() or watcher.done()
        await s.close()

    run(go())


def test_feed_entries_expire(tmp_path):
    async def go():
        s = store(tmp_path)
        await s.set({"a": ("1", {})})
        env = s._env
        with env.env.begin(db=env.db) as txn:
            feed = [key for key, _ in txn.cursor() if key.startswith(FEED)]
        assert len(feed) == 1
        from pillion.components.state import records

        with env.env.begin(db=env.db) as txn:
            _, expire, _, key = records.unpack(txn.get(feed[0]))
        assert key == b"a" and expire > 0  # the writer's sweep removes it after the retention time
        await s.close()

    run(go())


def test_bad_keys_and_metadata(tmp_path):
    async def go():
        s = store(tmp_path)
        with pytest.raises(StoreError, match="configuration key"):
            await s.set({"": ("1", {})})
        with pytest.raises(StoreError, match="configuration key"):
            await s.get(["k" * 1000])
        await s.close()

    run(go())
    with pytest.raises(ConfigError, match=r"spec.metadata\[1\].pollInterval"):
        LmdbConfigurationStore(component(tmp_path, pollInterval="forever"), Context("app", str(tmp_path)))
    with pytest.raises(ConfigError, match="durability"):
        LmdbConfigurationStore(component(tmp_path, durability="maybe"), Context("app", str(tmp_path)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.dictionaries(st.text(max_size=600), st.text(max_size=50), max_size=5),
       asked=st.lists(st.text(max_size=600), max_size=5))
def test_any_keys_are_stored_or_refused_with_a_store_error(tmp_path, items, asked):
    async def go():
        s = store(tmp_path / uuid.uuid4().hex)  # examples share tmp_path
        try:
            try:
                await s.set({k: (v, {}) for k, v in items.items()})
            except StoreError:
                assert any(not 0 < len(k.encode()) <= 509 for k in items)
            else:
                got = await s.get(list(items))
                assert {k: v.value for k, v in got.items()} == items
            try:
                got = await s.get(asked)
            except StoreError:
                assert any(not 0 < len(k.encode()) <= 509 for k in asked)
            else:
                assert not asked or set(got) <= set(asked)  # no key asked: every item
        finally:
            await s.close()

    run(go())


def test_the_apis_json_answer_is_the_items(tmp_path):
    import orjson

    async def go():
        s = store(tmp_path)
        await s.set({"a": ("1", {"unit": "rpm"}), 'q"é': ("2", {})})
        assert s.get_json_now(["missing"]) == b""
        for keys in ([], ["a"], ['q"é', "missing"]):
            assert orjson.loads(s.get_json_now(keys)) == {k: v.to_json() for k, v in (await s.get(keys)).items()}
        await s.close()

    run(go())
