"""MQTT topic filter matching (3.1.1 / 5.0 §4.7); pure twin of ``pillion._ext.topictrie``.

A trie of topic levels. A node holds its literal children by level, a separate ``+``
child, the subscriptions whose filter ends at the node, and those whose filter ends with
``/#`` right below it (``#`` is always last, so it needs no node of its own). ``match``
splits the topic once and walks the levels; it never scans or splits filters.

Result order, identical in both twins: a depth-first walk that, at each node, yields the
``#`` subscriptions below it, then (at the topic's last level) the subscriptions ending
at it, then descends into the literal child, then into the ``+`` child. At one place,
subscriptions keep the order they were made in; replacing a value keeps the place,
unsubscribing and subscribing again moves it to the end.

Knows nothing about sessions, QoS or retained messages: a key is whatever the broker
uses for a subscriber (e.g. a client id), a value whatever it needs per subscription.
"""

from __future__ import annotations

__all__ = ["TopicTrie", "validate_filter", "validate_topic"]

_MAX_BYTES = 65535


def _check_string(text: str, what: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be str, not {type(text).__name__}")
    if not text:
        raise ValueError(f"{what} is empty")
    if "\0" in text:
        raise ValueError(f"{what} contains U+0000")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid UTF-8 (it contains a surrogate)") from None
    if size > _MAX_BYTES:
        raise ValueError(f"{what} is longer than {_MAX_BYTES} UTF-8 bytes ({size})")


def _parse_filter(filter: str) -> tuple[list[str], bool]:  # noqa: A002 - the MQTT name
    """Validate ``filter``; return its levels without a trailing ``#``, and whether it had one."""
    _check_string(filter, "topic filter")
    levels = filter.split("/")
    if "+" in filter or "#" in filter:
        last = len(levels) - 1
        for index, level in enumerate(levels):
            if "#" in level and (level != "#" or index != last):
                raise ValueError(f"topic filter: '#' must be the whole last level (level {index + 1})")
            if "+" in level and level != "+":
                raise ValueError(f"topic filter: '+' must be a whole level (level {index + 1})")
    if levels[-1] == "#":
        levels.pop()
        return levels, True
    return levels, False


def validate_filter(filter: str) -> None:  # noqa: A002 - the MQTT name
    """Raise ValueError unless ``filter`` is a valid MQTT topic filter (§4.7).

    Non-empty, ``#`` only as the whole last level, ``+`` only as a whole level, no
    U+0000, well-formed UTF-8 of at most 65535 bytes.
    """
    _parse_filter(filter)


def validate_topic(topic: str) -> None:
    """Raise ValueError unless ``topic`` is a valid MQTT topic name (§4.7).

    Non-empty, no ``+`` or ``#``, no U+0000, well-formed UTF-8 of at most 65535 bytes.
    """
    _check_string(topic, "topic name")
    if "+" in topic or "#" in topic:
        raise ValueError("topic name contains a wildcard ('+' or '#')")


class _Node:
    __slots__ = ("depth", "children", "plus", "subs", "hash_subs")

    def __init__(self, depth: int) -> None:
        self.depth = depth  # the index of the topic level this node's children match
        self.children: dict[str, _Node] | None = None
        self.plus: _Node | None = None
        self.subs: dict[object, tuple] | None = None  # key -> (key, value, filter)
        self.hash_subs: dict[object, tuple] | None = None  # same, for ``<this>/#``

    def empty(self) -> bool:
        return self.children is None and self.plus is None and self.subs is None and self.hash_subs is None


class TopicTrie:
    """Subscriptions by topic filter; ``match`` finds every one a topic name matches.

    A subscription is a ``(filter, key)`` pair with a value. ``match`` returns
    ``(key, value, filter)`` tuples; one key may appear several times, once per
    overlapping filter. Topics passed to ``match`` are assumed valid (``validate_topic``).
    """

    __slots__ = ("_root", "_by_key", "_count", "_nodes")

    def __init__(self) -> None:
        self._root = _Node(0)
        self._by_key: dict[object, dict[str, None]] = {}
        self._count = 0
        self._nodes = 0

    def __len__(self) -> int:
        return self._count

    def node_count(self) -> int:
        """Trie nodes below the root: zero once every subscription is gone."""
        return self._nodes

    def subscribe(self, filter: str, key: object, value: object) -> bool:  # noqa: A002
        """Add or replace the value of ``(filter, key)``; True when it was new.

        Raises:
            ValueError: ``filter`` is not a valid topic filter.
        """
        levels, hash_ = _parse_filter(filter)
        node = self._root
        depth = 0
        for level in levels:
            depth += 1
            if level == "+":
                child = node.plus
                if child is None:
                    child = node.plus = _Node(depth)
                    self._nodes += 1
            else:
                if node.children is None:
                    node.children = {}
                child = node.children.get(level)
                if child is None:
                    child = node.children[level] = _Node(depth)
                    self._nodes += 1
            node = child
        if hash_:
            if node.hash_subs is None:
                node.hash_subs = {}
            subs = node.hash_subs
        else:
            if node.subs is None:
                node.subs = {}
            subs = node.subs
        new = key not in subs
        subs[key] = (key, value, filter)
        if new:
            self._count += 1
            held = self._by_key.get(key)
            if held is None:
                held = self._by_key[key] = {}
            held[filter] = None
        return new

    def unsubscribe(self, filter: str, key: object) -> bool:  # noqa: A002
        """Remove ``(filter, key)``; True when it existed. Nodes left empty are pruned.

        Raises:
            ValueError: ``filter`` is not a valid topic filter.
        """
        levels, hash_ = _parse_filter(filter)
        node = self._root
        path = [node]
        for level in levels:
            if level == "+":
                node = node.plus
            else:
                node = None if node.children is None else node.children.get(level)
            if node is None:
                return False
            path.append(node)
        if hash_:
            subs = node.hash_subs
            if subs is None or key not in subs:
                return False
            del subs[key]
            if not subs:
                node.hash_subs = None
        else:
            subs = node.subs
            if subs is None or key not in subs:
                return False
            del subs[key]
            if not subs:
                node.subs = None
        self._count -= 1
        held = self._by_key[key]
        del held[filter]
        if not held:
            del self._by_key[key]
        depth = len(levels)
        while depth and path[depth].empty():
            parent = path[depth - 1]
            level = levels[depth - 1]
            if level == "+":
                parent.plus = None
            else:
                del parent.children[level]
                if not parent.children:
                    parent.children = None
            self._nodes -= 1
            depth -= 1
        return True

    def match(self, topic: str) -> list[tuple]:
        """Every subscription whose filter matches ``topic``, as ``(key, value, filter)``.

        ``+`` matches one level, ``#`` its level and every level below, including the
        parent (``a/#`` matches ``a``); a topic starting with ``$`` is not matched by a
        filter starting with ``+`` or ``#``. Empty levels are levels.
        """
        levels = topic.split("/")
        size = len(levels)
        out: list[tuple] = []
        node = self._root
        if topic.startswith("$"):
            # §4.7.2: skip the root's '#' and '+'; only a literal first level matches.
            children = node.children
            node = None if children is None else children.get(levels[0])
            if node is None:
                return out
        stack: list[_Node] = []
        while True:
            if node.hash_subs is not None:
                out.extend(node.hash_subs.values())
            depth = node.depth
            if depth == size:
                if node.subs is not None:
                    out.extend(node.subs.values())
                child = None
            else:
                children = node.children
                child = None if children is None else children.get(levels[depth])
                plus = node.plus
                if plus is not None:
                    if child is None:
                        child = plus
                    else:
                        stack.append(plus)
            if child is not None:
                node = child
            elif stack:
                node = stack.pop()
            else:
                return out

    def filters(self, key: object) -> list[str]:
        """The filters ``key`` is subscribed with, in subscription order."""
        held = self._by_key.get(key)
        return [] if held is None else list(held)
