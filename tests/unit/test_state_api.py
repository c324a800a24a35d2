"""The state API's pure parts: Dapr's keyPrefix rules and key validation."""

from __future__ import annotations

import pytest

from pillion.api.state import StateStoreBinding, key_prefix
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
