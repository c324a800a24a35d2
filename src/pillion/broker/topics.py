"""Facade over the topic matcher twins, plus the ``$share/{group}/{filter}`` rules.

``TopicTrie``, ``validate_filter`` and ``validate_topic`` come from
``pillion._ext.topictrie`` unless it is missing or ``PILLION_NO_EXTENSIONS`` is set.
The trie already applies the ``+``/``#`` rules and keeps ``$``-topics away from a
leading wildcard (§4.7.2); shared subscriptions are parsed here and balanced by the
broker.
"""

from __future__ import annotations

from pillion._impl import load

_impl = load("topictrie")

TopicTrie = _impl.TopicTrie
validate_filter = _impl.validate_filter
validate_topic = _impl.validate_topic

SHARE_PREFIX = "$share/"

__all__ = ["TopicTrie", "validate_filter", "validate_topic", "parse_filter", "filter_matches"]


def parse_filter(text: str) -> tuple[str | None, str]:
    """Split a subscription filter into ``(share group or None, topic filter)``.

    Raises:
        ValueError: not a valid filter, or a malformed ``$share/{group}/{filter}``
            (empty group, wildcard in the group, no filter) [MQTT-4.8.2-1, 4.8.2-2].
    """
    if text.startswith(SHARE_PREFIX):
        group, sep, inner = text[len(SHARE_PREFIX):].partition("/")
        if not group or not sep or not inner or "+" in group or "#" in group:
            raise ValueError(f"malformed shared subscription {text!r} [MQTT-4.8.2-1]")
        validate_filter(inner)
        return group, inner
    validate_filter(text)
    return None, text


def filter_matches(topic_filter: str, topics):
    """The topics among ``topics`` that ``topic_filter`` matches (retained delivery)."""
    trie = TopicTrie()
    trie.subscribe(topic_filter, 0, None)
    return [topic for topic in topics if trie.match(topic)]
