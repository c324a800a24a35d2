"""The state query engine (components/state/query.py), and both built-in stores' ``query``."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import uvloop

from pillion.components import registry
from pillion.components.registry import Context
from pillion.components.state import Feature, SetRequest
from pillion.components.state.query import QueryError, parse_query, run
from pillion.config.manifests import Component, Source
from pillion.errors import PillionError

PEOPLE = {
    "1": {"person": {"org": "Dev Ops", "id": 1036}, "city": "Seattle", "state": "WA"},
    "2": {"person": {"org": "Hardware", "id": 1028}, "city": "Portland", "state": "OR"},
    "3": {"person": {"org": "Finance", "id": 1071}, "city": "Sacramento", "state": "CA"},
    "4": {"person": {"org": "Dev Ops", "id": 1042}, "city": "Spokane", "state": "WA"},
    "5": {"person": {"org": "Hardware", "id": 1007}, "city": "Los Angeles", "state": "CA"},
    "6": {"person": {"org": "Dev Ops", "id": 1015}, "city": "San Francisco", "state": "CA"},
}


def items(data: dict) -> list[tuple[str, bytes, str]]:
    return [(k, v if isinstance(v, bytes) else orjson.dumps(v), f"e{k}") for k, v in data.items()]


def keys(body: dict, data: dict = PEOPLE) -> list[str]:
    page, token = run(parse_query(body), items(data))
    assert token is None
    return [k for k, _, _ in page]


def where(filt: dict, data: dict = PEOPLE) -> list[str]:
    return keys({"filter": filt}, data)


# -- filters ---------------------------------------------------------------------

def test_empty_or_missing_filter_matches_all():
    for body in ({}, {"filter": {}}, {"filter": None}):
        assert keys(body) == ["1", "2", "3", "4", "5", "6"]


def test_results_carry_value_bytes_and_etag():
    page, token = run(parse_query({"filter": {"EQ": {"person.id": 1036}}}), items(PEOPLE))
    assert page == [("1", orjson.dumps(PEOPLE["1"]), "e1")] and token is None


def test_eq_and_neq_on_dotted_paths():
    assert where({"EQ": {"person.org": "Dev Ops"}}) == ["1", "4", "6"]
    assert where({"NEQ": {"person.org": "Dev Ops"}}) == ["2", "3", "5"]
    assert where({"EQ": {"state": "WA"}}) == ["1", "4"]
    assert where({"EQ": {"person.id": 1036.0}}) == ["1"]  # numbers by value


@pytest.mark.parametrize("op,value,expected", [
    ("GT", 1036, ["3", "4"]),
    ("GTE", 1036, ["1", "3", "4"]),
    ("LT", 1028, ["5", "6"]),
    ("LTE", 1028, ["2", "5", "6"]),
    ("GT", 1036.5, ["3", "4"]),
])
def test_ordered_comparisons_on_numbers(op, value, expected):
    assert where({op: {"person.id": value}}) == expected


def test_ordered_comparisons_on_strings_are_lexicographic():
    assert where({"GT": {"city": "San"}}) == ["1", "4", "6"]  # "Sacramento" < "San"
    assert where({"LT": {"city": "Portland"}}) == ["5"]
    assert where({"LTE": {"city": "Portland"}}) == ["2", "5"]
    assert where({"GTE": {"state": "WA"}}) == ["1", "4"]


def test_in():
    assert where({"IN": {"state": ["CA", "OR"]}}) == ["2", "3", "5", "6"]
    assert where({"IN": {"person.id": [1007, 9999]}}) == ["5"]
    assert where({"IN": {"state": []}}) == []


def test_and_or_nest():
    assert where({"AND": [{"EQ": {"person.org": "Dev Ops"}}, {"EQ": {"state": "CA"}}]}) == ["6"]
    assert where({"OR": [{"EQ": {"state": "OR"}}, {"EQ": {"person.id": 1071}}]}) == ["2", "3"]
    nested = {"OR": [
        {"EQ": {"person.org": "Finance"}},
        {"AND": [{"EQ": {"person.org": "Dev Ops"}}, {"IN": {"state": ["CA", "WA"]}}, {"GT": {"person.id": 1036}}]},
    ]}
    assert where(nested) == ["3", "4"]


def test_type_mismatches_never_match():
    data = {"n": {"v": 5}, "s": {"v": "5"}, "b": {"v": True}, "z": {"v": None}, "o": {"v": {"x": 1}},
            "a": {"v": [1, 2]}, "one": {"v": 1}}
    assert where({"GT": {"v": 0}}, data) == ["n", "one"]
    assert where({"GT": {"v": ""}}, data) == ["s"]
    assert where({"LT": {"v": "zzz"}}, data) == ["s"]
    assert where({"EQ": {"v": 5}}, data) == ["n"]
    assert where({"EQ": {"v": "5"}}, data) == ["s"]
    assert where({"EQ": {"v": True}}, data) == ["b"]  # true is not 1
    assert where({"EQ": {"v": 1}}, data) == ["one"]
    assert where({"EQ": {"v": None}}, data) == ["z"]
    assert where({"IN": {"v": [1, "5"]}}, data) == ["one", "s"]


def test_eq_on_objects_and_arrays_is_deep():
    data = {"o": {"v": {"x": 1, "y": [1, {"z": 2}]}}, "p": {"v": {"x": 1}}, "a": {"v": [1, 2]}, "b": {"v": [2, 1]}}
    assert where({"EQ": {"v": {"y": [1, {"z": 2}], "x": 1.0}}}, data) == ["o"]
    assert where({"EQ": {"v": [1, 2]}}, data) == ["a"]
    assert where({"NEQ": {"v": [1, 2]}}, data) == ["b", "o", "p"]
    assert where({"IN": {"v": [{"x": 1}, [2, 1]]}}, data) == ["b", "p"]


def test_missing_paths_and_non_json_values():
    data = {"full": {"a": {"b": 1}}, "short": {"a": 1}, "none": {"x": 1}, "list": [1], "raw": b"not json",
            "str": "text"}
    assert where({"EQ": {"a.b": 1}}, data) == ["full"]
    assert where({"NEQ": {"a.b": 2}}, data) == ["full"]  # missing never matches, NEQ included
    assert where({"GT": {"a": 0}}, data) == ["short"]
    assert keys({}, data) == ["full", "list", "none", "raw", "short", "str"]  # empty filter returns all


# -- sorting ---------------------------------------------------------------------

def test_sort_by_number_desc_and_asc():
    assert keys({"sort": [{"key": "person.id", "order": "DESC"}]}) == ["3", "4", "1", "2", "6", "5"]
    assert keys({"sort": [{"key": "person.id"}]}) == ["5", "6", "2", "1", "4", "3"]
    assert keys({"sort": [{"key": "person.id", "order": "asc"}]}) == ["5", "6", "2", "1", "4", "3"]


def test_multi_key_sort_with_key_as_tiebreaker():
    body = {"sort": [{"key": "state", "order": "DESC"}, {"key": "person.id", "order": "ASC"}]}
    assert keys(body) == ["1", "4", "2", "5", "6", "3"]
    assert keys({"sort": [{"key": "state"}]}) == ["3", "5", "6", "2", "1", "4"]  # ties by key


def test_missing_values_sort_last_in_both_orders():
    data = {"a": {"n": 2}, "b": {"x": 1}, "c": {"n": 1}, "d": b"raw", "e": {"n": 3}}
    assert keys({"sort": [{"key": "n"}]}, data) == ["c", "a", "e", "b", "d"]
    assert keys({"sort": [{"key": "n", "order": "DESC"}]}, data) == ["e", "a", "c", "b", "d"]


def test_mixed_types_sort_by_kind():
    data = {"s": {"v": "a"}, "n": {"v": 10}, "f": {"v": 2.5}, "b": {"v": False}, "z": {"v": None}, "o": {"v": {}}}
    assert keys({"sort": [{"key": "v"}]}, data) == ["f", "n", "s", "b", "z", "o"]


def test_filter_and_sort_together():
    body = {"filter": {"IN": {"state": ["CA", "WA"]}}, "sort": [{"key": "person.id", "order": "DESC"}]}
    assert keys(body) == ["3", "4", "1", "6", "5"]


# -- paging ----------------------------------------------------------------------

def test_paging_through_25_items_with_limit_10():
    data = {f"k{i:02d}": {"i": i} for i in range(25)}
    seen, tokens, token = [], [], None
    for _ in range(5):
        page = {"limit": 10} if token is None else {"limit": 10, "token": token}
        results, token = run(parse_query({"sort": [{"key": "i", "order": "DESC"}], "page": page}), items(data))
        seen.append([orjson.loads(v)["i"] for _, v, _ in results])
        tokens.append(token)
        if token is None:
            break
    assert seen == [list(range(24, 14, -1)), list(range(14, 4, -1)), list(range(4, -1, -1))]
    assert tokens == ["10", "20", None]


def test_page_exactly_full_has_no_token_and_past_the_end_is_empty():
    data = {f"k{i}": {"i": i} for i in range(10)}
    results, token = run(parse_query({"page": {"limit": 10}}), items(data))
    assert len(results) == 10 and token is None
    assert run(parse_query({"page": {"limit": 10, "token": "30"}}), items(data)) == ([], None)
    results, token = run(parse_query({"page": {"limit": 0}}), items(data))
    assert len(results) == 10 and token is None


def test_paging_applies_after_filtering():
    body = {"filter": {"EQ": {"person.org": "Dev Ops"}}, "page": {"limit": 2}}
    page, token = run(parse_query(body), items(PEOPLE))
    assert [k for k, _, _ in page] == ["1", "4"] and token == "2"
    body["page"]["token"] = token
    page, token = run(parse_query(body), items(PEOPLE))
    assert [k for k, _, _ in page] == ["6"] and token is None


def test_field_names_are_case_insensitive():
    q = parse_query({"Filter": {"EQ": {"state": "WA"}}, "Sort": [{"Key": "city", "Order": "DESC"}],
                     "Page": {"Limit": 1}})
    page, token = run(q, items(PEOPLE))
    assert [k for k, _, _ in page] == ["4"] and token == "1"


# -- bad queries -----------------------------------------------------------------

@pytest.mark.parametrize("body", [
    [],
    "filter",
    {"filter": []},
    {"filter": {"EQ": {"a": 1}, "NEQ": {"a": 2}}},
    {"filter": {"LIKE": {"a": "x"}}},
    {"filter": {"eq": {"a": 1}}},
    {"filter": {"EQ": {"a": 1, "b": 2}}},
    {"filter": {"EQ": {}}},
    {"filter": {"EQ": [1]}},
    {"filter": {"EQ": {"": 1}}},
    {"filter": {"EQ": {"a..b": 1}}},
    {"filter": {"IN": {"a": "x"}}},
    {"filter": {"IN": {"a": 1}}},
    {"filter": {"GT": {"a": True}}},
    {"filter": {"LT": {"a": None}}},
    {"filter": {"GTE": {"a": [1]}}},
    {"filter": {"AND": {"EQ": {"a": 1}}}},
    {"filter": {"AND": [{"EQ": {"a": 1}}]}},
    {"filter": {"OR": [{"EQ": {"a": 1}}, {"BAD": {"a": 1}}]}},
    {"filter": {"OR": [{"EQ": {"a": 1}}, "x"]}},
    {"sort": {"key": "a"}},
    {"sort": [{"order": "ASC"}]},
    {"sort": [{"key": "a", "order": "UP"}]},
    {"sort": ["a"]},
    {"page": 10},
    {"page": {"limit": -1}},
    {"page": {"limit": "10"}},
    {"page": {"limit": 2.5}},
    {"page": {"limit": True}},
    {"page": {"token": "abc"}},
    {"page": {"token": 10}},
    {"page": {"token": "-1"}},
])
def test_bad_queries_raise_query_error(body):
    with pytest.raises(QueryError) as info:
        parse_query(body)
    assert isinstance(info.value, PillionError) and str(info.value)


# -- the built-in stores ---------------------------------------------------------

def _component(type_: str) -> Component:
    return Component(name="statestore", namespace=None, type=type_, version="v1", metadata=(),
                     scopes=(), init_timeout="5s", ignore_errors=False, auth_secret_store=None,
                     source=Source("/res/state.yaml", 1))


@pytest.mark.parametrize("type_", ["state.in-memory", "state.lmdb"])
def test_stores_query_live_keys_under_their_prefix(tmp_path, type_):
    async def main():
        store = registry.create(_component(type_), Context(app_id="app", data_dir=str(tmp_path)))
        try:
            assert Feature.QUERY_API in store.features()
            await store.set([
                SetRequest("a||1", b'{"n":1}'), SetRequest("a||2", b'{"n":2}'), SetRequest("a||3", b"raw"),
                SetRequest("a||gone", b'{"n":9}', ttl_seconds=1),
                SetRequest("a||actor||id||k", b'{"n":5}'), SetRequest("ab||x", b'{"n":7}'),
                SetRequest("b||1", b'{"n":1}'), SetRequest("plain", b'{"n":3}'),
            ])
            everything = await store.query("a||", parse_query({}))
            assert [(k, v) for k, v, _ in everything[0]] == [("1", b'{"n":1}'), ("2", b'{"n":2}'), ("3", b"raw"),
                                                            ("gone", b'{"n":9}')]
            assert all(etag and etag.isdigit() for _, _, etag in everything[0])
            await asyncio.sleep(1.1)
            page, token = await store.query("a||", parse_query({"sort": [{"key": "n", "order": "DESC"}],
                                                                "page": {"limit": 1}}))
            assert [k for k, _, _ in page] == ["2"] and token == "1"
            page, token = await store.query("a||", parse_query({"filter": {"GTE": {"n": 1}}}))
            assert [k for k, _, _ in page] == ["1", "2"] and token is None
            page, _ = await store.query("", parse_query({}))
            assert [k for k, _, _ in page] == ["plain"]
            assert await store.query("zz||", parse_query({})) == ([], None)
        finally:
            await store.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def test_handler_refuses_a_store_without_query_api():
    from pillion._pure.httpproto import Request
    from pillion.api.state import StateStoreBinding, query_state
    from pillion.errors import DaprError

    class NoQuery:
        def features(self):
            return frozenset({Feature.ETAG})

    class Sidecar:
        state_stores = {"s": StateStoreBinding("s", NoQuery(), "app||")}

    req = Request("POST", "/v1.0-alpha1/state/s/query", "", [], b"{}", True)
    req.params = {"storeName": "s"}
    with pytest.raises(DaprError) as info:
        asyncio.run(query_state(Sidecar(), req))
    assert (info.value.code, info.value.status) == ("ERR_STATE_STORE_NOT_SUPPORTED", 500)
