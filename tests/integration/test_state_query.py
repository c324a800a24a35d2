"""The state query API (``/v1.0-alpha1/state/{store}/query``) through a real sidecar, on both stores."""

from __future__ import annotations

import json
import time

import pytest

from _http import json_request, request
from _state import save, write_resources

# The Dapr docs' example data set (state-management/howto-state-query-api.md).
PEOPLE = {
    "1": {"person": {"org": "Dev Ops", "id": 1036}, "city": "Seattle", "state": "WA"},
    "2": {"person": {"org": "Hardware", "id": 1028}, "city": "Portland", "state": "OR"},
    "3": {"person": {"org": "Finance", "id": 1071}, "city": "Sacramento", "state": "CA"},
    "4": {"person": {"org": "Dev Ops", "id": 1042}, "city": "Spokane", "state": "WA"},
    "5": {"person": {"org": "Hardware", "id": 1007}, "city": "Los Angeles", "state": "CA"},
    "6": {"person": {"org": "Dev Ops", "id": 1015}, "city": "San Francisco", "state": "CA"},
    "7": {"person": {"org": "Dev Ops", "id": 1054}, "city": "Phoenix", "state": "AZ"},
}


@pytest.fixture
def state(tmp_path, sidecar, store_type):
    resources = write_resources(tmp_path, ("store", store_type, {}))
    sc = sidecar("querier", "--resources-path", resources, wait="/v1.0/healthz")
    assert save(sc, [{"key": k, "value": v} for k, v in PEOPLE.items()])[0] == 204
    return sc


def query(sc, body, method="POST", store="store"):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return json_request(sc.http_port, method, f"/v1.0-alpha1/state/{store}/query", raw,
                        {"Content-Type": "application/json"})


def keys(result) -> list[str]:
    status, _, body = result
    assert status == 200, body
    return [r["key"] for r in body["results"]]


def test_eq_on_a_nested_field_returns_key_data_and_etag(state):
    status, headers, body = query(state, {"filter": {"EQ": {"person.org": "Dev Ops"}}})
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert [r["key"] for r in body["results"]] == ["1", "4", "6", "7"]
    assert body["results"][0]["data"] == PEOPLE["1"]
    etag = body["results"][0]["etag"]
    assert etag == request(state.http_port, "GET", "/v1.0/state/store/1")[1]["ETag"]
    assert "token" not in body


def test_in_and_or_and_put(state):
    assert keys(query(state, {"filter": {"IN": {"state": ["CA", "AZ"]}}})) == ["3", "5", "6", "7"]
    both = {"AND": [{"EQ": {"person.org": "Dev Ops"}}, {"OR": [{"EQ": {"state": "CA"}}, {"EQ": {"state": "WA"}}]}]}
    assert keys(query(state, {"filter": both}, method="PUT")) == ["1", "4", "6"]


def test_dapr_docs_example_sorted_desc_and_paged(state):
    body = {"filter": {"OR": [{"EQ": {"person.org": "Dev Ops"}},
                              {"AND": [{"EQ": {"person.org": "Finance"}}, {"IN": {"state": ["CA", "WA"]}}]}]},
            "sort": [{"key": "state", "order": "DESC"}, {"key": "person.id"}],
            "page": {"limit": 3}}
    status, _, first = query(state, body)
    assert status == 200 and [r["key"] for r in first["results"]] == ["1", "4", "6"]
    assert first["token"] == "3"
    body["page"]["token"] = first["token"]
    status, _, second = query(state, body)
    assert [r["key"] for r in second["results"]] == ["3", "7"] and "token" not in second


def test_sort_by_person_id_desc(state):
    body = {"sort": [{"key": "person.id", "order": "DESC"}]}
    assert keys(query(state, body)) == ["3", "7", "4", "1", "2", "6", "5"]


def test_paging_through_25_items(state):
    assert save(state, [{"key": f"n{i:02d}", "value": {"n": i}} for i in range(25)])[0] == 204
    body = {"filter": {"GTE": {"n": 0}}, "sort": [{"key": "n"}], "page": {"limit": 10}}
    pages, token = [], None
    while True:
        if token is not None:
            body["page"]["token"] = token
        status, _, result = query(state, body)
        assert status == 200
        pages.append([r["data"]["n"] for r in result["results"]])
        token = result.get("token")
        if token is None:
            break
    assert pages == [list(range(0, 10)), list(range(10, 20)), list(range(20, 25))]


def test_nothing_matches_is_204(state):
    status, _, body = query(state, {"filter": {"EQ": {"person.org": "Nobody"}}})
    assert (status, body) == (204, None)
    status, _, body = query(state, {"page": {"limit": 5, "token": "100"}})
    assert (status, body) == (204, None)


def test_empty_filter_returns_everything(state):
    assert keys(query(state, {})) == list(PEOPLE)
    assert keys(query(state, {"filter": {}})) == list(PEOPLE)


@pytest.mark.parametrize("body", [
    {"filter": {"LIKE": {"state": "W%"}}},
    {"filter": {"IN": {"state": "WA"}}},
    {"filter": {"EQ": {"state": "WA", "city": "Seattle"}}},
    {"filter": {"AND": {"EQ": {"state": "WA"}}}},
    {"sort": [{"key": "state", "order": "SIDEWAYS"}]},
    {"page": {"limit": -1}},
    {"page": {"limit": "ten"}},
    {"page": {"token": "not-a-token"}},
])
def test_bad_query_is_500_err_state_query(state, body):
    status, _, err = query(state, body)
    assert (status, err["errorCode"]) == (500, "ERR_STATE_QUERY")
    assert err["message"].startswith("failed query in state store store: ")


@pytest.mark.parametrize("body", [b"not json", b"", b"[1, 2]", b'"filter"'])
def test_body_not_a_json_object_is_400(state, body):
    status, _, err = query(state, body)
    assert (status, err["errorCode"]) == (400, "ERR_MALFORMED_REQUEST")


def test_unknown_store_is_400(state):
    status, _, err = query(state, {}, store="nope")
    assert (status, err["errorCode"]) == (400, "ERR_STATE_STORE_NOT_FOUND")


def test_metadata_lists_query_api(state):
    components = json_request(state.http_port, "GET", "/v1.0/metadata")[2]["components"]
    assert "QUERY_API" in components[0]["capabilities"]


def test_expired_items_are_left_out(state):
    assert save(state, [{"key": "brief", "value": {"state": "WA"}, "metadata": {"ttlInSeconds": "1"}}])[0] == 204
    assert "brief" in keys(query(state, {"filter": {"EQ": {"state": "WA"}}}))
    time.sleep(1.2)
    assert keys(query(state, {"filter": {"EQ": {"state": "WA"}}})) == ["1", "4"]


def test_apps_sharing_one_lmdb_data_dir_query_only_their_own_keys(tmp_path, sidecar):
    resources = write_resources(tmp_path, ("store", "state.lmdb", {}))
    one = sidecar("one", "--resources-path", resources, wait="/v1.0/healthz")
    two = sidecar("two", "--resources-path", resources, wait="/v1.0/healthz")
    onex = sidecar("onex", "--resources-path", resources, wait="/v1.0/healthz")
    assert save(one, [{"key": "a", "value": {"owner": "one"}}, {"key": "b", "value": {"owner": "one"}}])[0] == 204
    assert save(two, [{"key": "a", "value": {"owner": "two"}}])[0] == 204
    assert save(onex, [{"key": "z", "value": {"owner": "onex"}}])[0] == 204
    status, _, body = query(one, {})
    assert status == 200
    assert [(r["key"], r["data"]) for r in body["results"]] == [("a", {"owner": "one"}), ("b", {"owner": "one"})]
    assert [(r["key"], r["data"]) for r in query(two, {})[2]["results"]] == [("a", {"owner": "two"})]
    assert keys(query(onex, {"filter": {"NEQ": {"owner": "x"}}})) == ["z"]
    assert query(two, {"filter": {"EQ": {"owner": "one"}}})[0] == 204
