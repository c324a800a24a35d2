"""The state API's pure parts: Dapr's keyPrefix rules and key validation."""

from __future__ import annotations

import asyncio

import pytest

from pillion.api.state import StateStoreBinding, get_state, key_prefix
from pillion.components.state import Item, WouldBlock
from pillion.errors import DaprError


@pytest.mark.parametrize("strategy, namespace, expected", [
    (None, None, "orders||"),
    ("appid", None, "orders||"),
    ("AppID", None, "orders||"),
    ("name", None, "statestore||"),
    ("namespace", "prod", "prod.orders||"),
    ("namespace", None, "orders||"),
    ("none", None, ""),
    ("shared", None, "shared||"),
])
def test_key_prefix(strategy, namespace, expected):
    assert key_prefix(strategy, app_id="orders", store="statestore", namespace=namespace) == expected


def test_no_app_id_means_no_prefix():
    assert key_prefix("appid", app_id="", store="s", namespace=None) == ""


@pytest.mark.parametrize("key", ["", None, 5, "a||b", "||"])
def test_bad_keys(key):
    with pytest.raises(DaprError) as err:
        StateStoreBinding("s", None, "app||").key(key)
    assert (err.value.code, err.value.status) == ("ERR_MALFORMED_REQUEST", 400)


def test_prefix_applied():
    assert StateStoreBinding("s", None, "app||").key("k|x") == "app||k|x"


class _Request:
    def __init__(self, store, key):
        self.params = {"storeName": store, "key": key}


class _Sidecar:
    def __init__(self, store):
        self.state_stores = {"s": StateStoreBinding("s", store, "app||")}


class _AwaitingStore:
    """A store whose reads must be awaited, or that cannot answer this one now."""

    def __init__(self, reads_without_waiting):
        self.reads_without_waiting = reads_without_waiting
        self.calls = []

    def get_now(self, key):
        self.calls.append(("now", key))
        raise WouldBlock("not now")

    async def get(self, key):
        self.calls.append(("await", key))
        return Item(b'"v"', "7")


@pytest.mark.parametrize("reads_without_waiting, calls", [
    (False, [("await", "app||k")]),
    (True, [("now", "app||k"), ("await", "app||k")]),
])
def test_get_falls_back_to_awaiting_the_store(reads_without_waiting, calls):
    store = _AwaitingStore(reads_without_waiting)
    pending = get_state(_Sidecar(store), _Request("s", "k"))
    response = asyncio.run(pending)
    assert (response.status, response.body) == (200, b'"v"')
    assert (b"ETag", b"7") in response.headers
    assert store.calls == calls
