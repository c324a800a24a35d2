"""Topic matching (MQTT §4.7), run against both twins of ``topictrie``."""

from __future__ import annotations

from types import ModuleType

import pytest

from pillion._testing import import_twin


@pytest.fixture(params=("pure", "compiled"))
def tt(request: pytest.FixtureRequest) -> ModuleType:
    return import_twin("topictrie", request.param)


@pytest.fixture
def trie(tt):
    return tt.TopicTrie()


def matches(tt, filter_: str, topic: str) -> bool:
    trie = tt.TopicTrie()
    trie.subscribe(filter_, "k", 1)
    result = trie.match(topic)
    assert result in ([], [("k", 1, filter_)])
    return bool(result)


SPEC_TABLE = [
    # §4.7.1.2 multi-level wildcard
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/tennis/player1/#", "sport/tennis/player2", False),
    ("sport/tennis/player1/#", "sport/tennis", False),
    ("sport/#", "sport", True),
    ("sport/#", "sport/", True),
    ("sport/#", "sports", False),
    ("#", "sport", True),
    ("#", "/", True),
    ("#", "a/b/c/d", True),
    # §4.7.1.3 single-level wildcard
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player2", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+", "sport", True),
    ("+", "/finance", False),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+/tennis/#", "sport/tennis/player1", True),
    ("+/tennis/#", "sport/tennis", True),
    ("+/tennis/#", "sport/football", False),
    ("sport/+/player1", "sport/tennis/player1", True),
    ("sport/+/player1", "sport//player1", True),
    ("sport/+/player1", "sport/player1", False),
    ("+/+", "a/b", True),
    ("+/+", "a", False),
    ("+/+", "a/b/c", False),
    ("+/#", "a", True),
    # empty levels are levels
    ("a//b", "a//b", True),
    ("a//b", "a/b", False),
    ("a/+/b", "a//b", True),
    ("/a", "/a", True),
    ("/a", "a", False),
    ("a/", "a/", True),
    ("a/", "a", False),
    ("+", "", True),
    ("/", "/", True),
    ("+/+", "/", True),
    ("/#", "/", True),
    ("/#", "/a/b", True),
    ("/#", "a", False),
    # literal, case-sensitive
    ("ACCOUNTS", "Accounts", False),
    ("ACCOUNTS", "ACCOUNTS", True),
    ("sport/tennis", "sport/tennis/player1", False),
    ("a b/é", "a b/é", True),
    # §4.7.2 topics beginning with $
    ("#", "$SYS/monitor/Clients", False),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("+", "$SYS", False),
    ("$SYS/#", "$SYS/monitor/Clients", True),
    ("$SYS/#", "$SYS", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("$SYS/+/Clients", "$SYS/monitor/Clients", True),
    ("$SYS", "$SYS", True),
    ("a/#", "a/$SYS", True),
    ("a/+", "a/$x", True),
    ("#", "x$", True),
    ("+", "$", False),
]


@pytest.mark.parametrize(("filter_", "topic", "expected"), SPEC_TABLE)
def test_spec_table(tt, filter_, topic, expected):
    tt.validate_filter(filter_)
    tt.validate_topic(topic) if topic else None
    assert matches(tt, filter_, topic) is expected


def test_subscribe_replace_unsubscribe(trie):
    assert len(trie) == 0
    assert trie.subscribe("a/+", "c1", 0) is True
    assert trie.subscribe("a/+", "c1", 1) is False  # replaced
    assert len(trie) == 1
    assert trie.match("a/b") == [("c1", 1, "a/+")]
    assert trie.unsubscribe("a/+", "c2") is False
    assert trie.unsubscribe("a/b", "c1") is False
    assert trie.unsubscribe("a/+/c", "c1") is False
    assert trie.unsubscribe("a/#", "c1") is False
    assert trie.unsubscribe("a/+", "c1") is True
    assert trie.unsubscribe("a/+", "c1") is False
    assert len(trie) == 0
    assert trie.match("a/b") == []
    assert trie.filters("c1") == []
    assert trie.node_count() == 0


def test_pruning_back_to_zero(trie):
    filters = ["a/b/c", "a/b/#", "a/+/c", "+/+/+", "#", "/", "//", "a//", "$SYS/x/#", "a/b", "a"]
    for index, filter_ in enumerate(filters):
        for key in ("c1", "c2", 7):
            assert trie.subscribe(filter_, key, index)
    assert len(trie) == 3 * len(filters)
    assert trie.node_count() > 0
    assert trie.unsubscribe("a/b/c", "c1")
    assert trie.match("a/b/c")  # other keys keep the nodes
    for filter_ in reversed(filters):
        for key in ("c1", "c2", 7):
            trie.unsubscribe(filter_, key)
    assert len(trie) == 0
    assert trie.node_count() == 0
    assert trie.match("a/b/c") == []
    for key in ("c1", "c2", 7):
        assert trie.filters(key) == []


def test_churn_does_not_grow(trie):
    trie.subscribe("keep/+", "k", 0)
    base = trie.node_count()
    for index in range(200):
        filter_ = f"dev/{index}/+/temp/#"
        trie.subscribe(filter_, index, index)
        trie.unsubscribe(filter_, index)
    assert trie.node_count() == base
    assert len(trie) == 1


def test_node_count(trie):
    trie.subscribe("a/b/c", "k", 0)
    assert trie.node_count() == 3
    trie.subscribe("a/b/#", "k", 0)  # '#' needs no node
    assert trie.node_count() == 3
    trie.subscribe("a/+", "k", 0)
    assert trie.node_count() == 4
    trie.subscribe("#", "k", 0)
    assert trie.node_count() == 4
    trie.unsubscribe("a/b/c", "k")  # a/b still holds '#'
    assert trie.node_count() == 3
    trie.unsubscribe("a/b/#", "k")
    assert trie.node_count() == 2


def test_many_keys_on_one_filter(trie):
    for index in range(100):
        trie.subscribe("sensors/+/temp", f"client-{index}", index)
    result = trie.match("sensors/kitchen/temp")
    assert result == [(f"client-{i}", i, "sensors/+/temp") for i in range(100)]
    trie.unsubscribe("sensors/+/temp", "client-50")
    trie.subscribe("sensors/+/temp", "client-50", "again")
    trie.subscribe("sensors/+/temp", "client-0", "replaced")
    result = trie.match("sensors/kitchen/temp")
    assert result[0] == ("client-0", "replaced", "sensors/+/temp")  # replacing keeps the place
    assert result[-1] == ("client-50", "again", "sensors/+/temp")  # resubscribing moves it
    assert len(result) == 100


def test_overlapping_filters_for_one_key(trie):
    for filter_ in ("a/b", "a/+", "#", "a/#", "+/b", "+/+"):
        trie.subscribe(filter_, "c", filter_.upper())
    result = trie.match("a/b")
    assert sorted(result) == sorted(
        ("c", f.upper(), f) for f in ("a/b", "a/+", "#", "a/#", "+/b", "+/+")
    )
    assert trie.filters("c") == ["a/b", "a/+", "#", "a/#", "+/b", "+/+"]
    assert len(trie) == 6
    trie.unsubscribe("a/+", "c")
    assert trie.filters("c") == ["a/b", "#", "a/#", "+/b", "+/+"]
    assert sorted(f for _, _, f in trie.match("a/b")) == sorted(["a/b", "#", "a/#", "+/b", "+/+"])


def test_documented_order(trie):
    # '#' below a node, then subscriptions ending at it, then the literal child, then '+'.
    for filter_ in ("+/+", "a/+", "a/b", "+/#", "#", "a/#", "a/b/#"):
        trie.subscribe(filter_, "k", None)
    assert [f for _, _, f in trie.match("a/b")] == ["#", "a/#", "a/b/#", "a/b", "a/+", "+/#", "+/+"]


def test_match_returns_a_fresh_list(trie):
    trie.subscribe("a", "k", 1)
    first = trie.match("a")
    first.append("junk")
    assert trie.match("a") == [("k", 1, "a")]


def test_filters_unknown_key(trie):
    assert trie.filters("nobody") == []


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "a/#/b",
        "#/a",
        "a#",
        "a/b#",
        "#a",
        "##",
        "a+",
        "a/+b",
        "+a/b",
        "++",
        "a/\0",
        "\0",
        "a/\ud800",
        "x" * 65536,
        "é" * 32768,
    ],
)
def test_invalid_filters(tt, trie, bad):
    with pytest.raises(ValueError):
        tt.validate_filter(bad)
    with pytest.raises(ValueError):
        trie.subscribe(bad, "k", 0)
    with pytest.raises(ValueError):
        trie.unsubscribe(bad, "k")
    assert len(trie) == 0
    assert trie.node_count() == 0


@pytest.mark.parametrize(
    "good", ["#", "+", "/", "//", "+/+", "/+", "a/#", "+/#", "a/+/b", "$SYS/#", "x" * 65535, "é" * 32767]
)
def test_valid_filters(tt, good):
    tt.validate_filter(good)


@pytest.mark.parametrize(
    "bad", ["", "a/+", "#", "a/#", "+", "a+b", "a\0", "\udfff", "x" * 65536, "€" * 21846]
)
def test_invalid_topics(tt, bad):
    with pytest.raises(ValueError):
        tt.validate_topic(bad)


@pytest.mark.parametrize("good", ["a", "/", "//", "$SYS/x", "a b", "é/€/😀", "x" * 65535, "€" * 21845])
def test_valid_topics(tt, good):
    tt.validate_topic(good)


def test_error_priority_and_messages(tt):
    with pytest.raises(ValueError, match="empty"):
        tt.validate_filter("")
    with pytest.raises(ValueError, match="U\\+0000"):
        tt.validate_filter("\ud800/\0/a#")
    with pytest.raises(ValueError, match="surrogate"):
        tt.validate_topic("\ud800+")
    with pytest.raises(ValueError, match="longer than 65535 UTF-8 bytes \\(65536\\)"):
        tt.validate_topic("😀" * 16384)
    with pytest.raises(ValueError, match="'#' must be the whole last level \\(level 2\\)"):
        tt.validate_filter("a/#/+x")
    with pytest.raises(ValueError, match="'\\+' must be a whole level \\(level 1\\)"):
        tt.validate_filter("a+/#/b")


def test_non_str_is_a_type_error(tt, trie):
    for call in (tt.validate_filter, tt.validate_topic, lambda f: trie.subscribe(f, "k", 0)):
        with pytest.raises(TypeError):
            call(b"a/b")
        with pytest.raises(TypeError):
            call(None)


def test_deep_filters_do_not_recurse(trie):
    deep = "/".join(["a"] * 30000)
    trie.subscribe(deep, "k", 0)
    trie.subscribe(deep + "/#", "k", 1)
    trie.subscribe("/".join(["+"] * 30000), "k", 2)
    assert [v for _, v, _ in trie.match(deep)] == [1, 0, 2]
    assert trie.node_count() == 60000
    trie.unsubscribe(deep, "k")
    trie.unsubscribe(deep + "/#", "k")
    trie.unsubscribe("/".join(["+"] * 30000), "k")
    assert trie.node_count() == 0


def test_dropping_a_deep_trie(tt):
    trie = tt.TopicTrie()
    trie.subscribe("/".join(["+"] * 30000), "k", 0)
    trie.subscribe("/".join(["a"] * 30000), "k", 0)
    del trie  # freeing the chains must not overflow the C stack
