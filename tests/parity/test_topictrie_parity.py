"""The compiled topic trie and its pure twin: same names, same signatures, same answers.

Both twins replay one generated subscribe/unsubscribe sequence and must agree exactly
(results, their order, errors, sizes); a brute-force matcher written here checks both.
"""

from __future__ import annotations

import inspect

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pillion._testing import import_twin

LEVELS = ("a", "b", "", "$SYS", "$x", "+", "#")
TOPIC_LEVELS = ("a", "b", "", "$SYS", "$x", "é")


@pytest.fixture(scope="module")
def twins():
    return import_twin("topictrie", "pure"), import_twin("topictrie", "compiled")


def oracle(filter_: str, topic: str) -> bool:
    """MQTT §4.7 matching, level by level, with no trie: the reference for both twins."""
    f = filter_.split("/")
    t = topic.split("/")
    if topic.startswith("$") and f[0] in ("+", "#"):
        return False
    for index, level in enumerate(f):
        if level == "#":
            return True  # this level and below, including the parent (a/# matches a)
        if index >= len(t):
            return False
        if level != "+" and level != t[index]:
            return False
    return len(f) == len(t)


def walk_rank(filter_: str) -> tuple[int, ...]:
    """The documented result order as a sort key among filters matching one topic.

    Per level: a ``#`` here first, then a filter ending here, then the literal level,
    then ``+``. Ties only within one filter, where subscription order stays (stable sort).
    """
    rank = tuple(0 if level == "#" else 3 if level == "+" else 2 for level in filter_.split("/"))
    return rank if rank[-1] == 0 else (*rank, 1)


filters = st.lists(st.sampled_from(LEVELS), min_size=1, max_size=4).map("/".join)
topics = st.lists(st.sampled_from(TOPIC_LEVELS), min_size=1, max_size=5).map("/".join)
keys = st.integers(0, 3) | st.sampled_from(("c1", "c2"))


def operations_of(filters, keys):
    return st.lists(
        st.tuples(st.just("sub"), filters, keys, st.integers(0, 9))
        | st.tuples(st.just("unsub"), filters, keys, st.none()),
        max_size=40,
    )


operations = operations_of(filters, keys)
# A narrow alphabet makes deep overlaps ('+' at several depths, '#' at several) common.
narrow_filters = st.lists(st.sampled_from(("a", "+", "#")), min_size=1, max_size=4).map("/".join)
narrow_topics = st.lists(st.sampled_from(("a", "$SYS")), min_size=1, max_size=4).map("/".join)
narrow_operations = operations_of(narrow_filters, st.integers(0, 2))


def outcome(call):
    try:
        return call(), None
    except (ValueError, TypeError) as exc:
        return None, (type(exc), str(exc))


def test_same_public_names(twins):
    pure, compiled = twins
    assert pure.__all__ == compiled.__all__ == ["TopicTrie", "validate_filter", "validate_topic"]
    for name in pure.__all__:
        assert hasattr(compiled, name)


def _public(cls):
    return sorted(name for name in dir(cls) if not name.startswith("_"))


def _parameters(function, skip: int):
    return [(p.name, p.kind, p.default) for p in list(inspect.signature(function).parameters.values())[skip:]]


def test_same_signatures(twins):
    pure, compiled = twins
    assert _public(pure.TopicTrie) == _public(compiled.TopicTrie) == [
        "filters", "match", "node_count", "subscribe", "unsubscribe",
    ]  # fmt: skip
    for name in _public(pure.TopicTrie):
        assert _parameters(getattr(pure.TopicTrie, name), 1) == _parameters(
            getattr(compiled.TopicTrie, name), 1
        )
    for name in ("validate_filter", "validate_topic"):
        assert _parameters(getattr(pure, name), 0) == _parameters(getattr(compiled, name), 0)
    compiled.TopicTrie()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations, probes=st.lists(topics, min_size=1, max_size=8))
def test_same_answers_and_oracle(twins, ops, probes):
    check_sequence(twins, ops, probes)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=narrow_operations, probes=st.lists(narrow_topics, min_size=1, max_size=6))
def test_same_answers_and_oracle_on_deep_overlaps(twins, ops, probes):
    check_sequence(twins, ops, probes)


def check_sequence(twins, ops, probes):
    pure_mod, compiled_mod = twins
    pure, compiled = pure_mod.TopicTrie(), compiled_mod.TopicTrie()
    model: dict[tuple[str, object], object] = {}  # (filter, key) -> value
    for op, filter_, key, value in ops:
        if op == "sub":
            p = outcome(lambda: pure.subscribe(filter_, key, value))
            c = outcome(lambda: compiled.subscribe(filter_, key, value))
        else:
            p = outcome(lambda: pure.unsubscribe(filter_, key))
            c = outcome(lambda: compiled.unsubscribe(filter_, key))
        assert p == c
        if p[1] is None:
            if op == "sub":
                assert p[0] is ((filter_, key) not in model)
                model[(filter_, key)] = value
            else:
                assert p[0] is ((filter_, key) in model)
                model.pop((filter_, key), None)
        assert len(pure) == len(compiled) == len(model)
        assert pure.node_count() == compiled.node_count()
        for probe in probes:
            result = pure.match(probe)
            assert result == compiled.match(probe)
            expected = [(k, v, f) for (f, k), v in model.items() if oracle(f, probe)]
            assert sorted(result, key=repr) == sorted(expected, key=repr)
            assert result == sorted(expected, key=lambda item: walk_rank(item[2]))
            event("matched" if result else "no match")
    for key in (0, 1, 2, 3, "c1", "c2"):
        assert pure.filters(key) == compiled.filters(key) == [f for f, k in model if k == key]
    # Unsubscribing everything prunes every node, in both.
    for filter_, key in list(model):
        assert pure.unsubscribe(filter_, key) is compiled.unsubscribe(filter_, key) is True
    assert pure.node_count() == compiled.node_count() == 0
    assert len(pure) == len(compiled) == 0


@settings(max_examples=300, deadline=None)
@given(ops=operations, probe=st.lists(st.sampled_from(LEVELS), min_size=1, max_size=5).map("/".join))
def test_same_answers_on_invalid_topics(twins, ops, probe):
    # match() assumes a valid topic; whatever it does with '+'/'#' in one, both do it.
    pure_mod, compiled_mod = twins
    pure, compiled = pure_mod.TopicTrie(), compiled_mod.TopicTrie()
    for op, filter_, key, value in ops:
        if op == "sub":
            assert outcome(lambda: pure.subscribe(filter_, key, value)) == outcome(
                lambda: compiled.subscribe(filter_, key, value)
            )
    assert pure.match(probe) == compiled.match(probe)


hostile_text = st.text(
    alphabet=st.sampled_from(("a", "/", "+", "#", "\0", "\ud800", "é", "😀", "$")), max_size=12
) | st.text(max_size=20)


@settings(max_examples=1000, deadline=None)
@given(text=hostile_text)
def test_same_validation(twins, text):
    pure, compiled = twins
    for name in ("validate_filter", "validate_topic"):
        p = outcome(lambda: getattr(pure, name)(text))
        assert p == outcome(lambda: getattr(compiled, name)(text))
        event(f"{name}: {'ok' if p[1] is None else p[1][1].split(' (')[0]}")
    if outcome(lambda: pure.validate_topic(text))[1] is None:
        assert "+" not in text and "#" not in text and "\0" not in text and text


@pytest.mark.parametrize("size", [65535, 65536])
@pytest.mark.parametrize("char", ["x", "é", "€", "😀"])
def test_same_length_limit(twins, size, char):
    pure, compiled = twins
    text = char * (size // len(char.encode()))
    text += "x" * (size - len(text.encode()))
    for name in ("validate_filter", "validate_topic"):
        p = outcome(lambda: getattr(pure, name)(text))
        assert p == outcome(lambda: getattr(compiled, name)(text))
        assert (p[1] is None) is (size == 65535)
