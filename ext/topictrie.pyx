# cython: embedsignature=True, embedsignature.format=clinic
# Clinic signatures make the methods introspectable for the parity test without binding=True.
"""MQTT topic filter matching (3.1.1 / 5.0 §4.7); compiled twin of ``pillion._pure.topictrie``.

The pure module is the specification: same names, same results, same order, same errors.
"""

cimport cython
from cpython.dict cimport PyDict_GetItem, PyDict_Next
from cpython.ref cimport PyObject

# Declarations stay in this file: a sibling topictrie.pxd is silently ignored for a
# module named pillion._ext.topictrie (ext/README.md, "Sharing declarations").

__all__ = ["TopicTrie", "validate_filter", "validate_topic"]

cdef Py_ssize_t _MAX_BYTES = 65535


cdef int _check_string(object text, str what) except -1:
    """One pass over the code points: U+0000, surrogates, UTF-8 size; errors in the pure order."""
    cdef str s
    cdef Py_UCS4 c
    cdef Py_ssize_t size = 0
    cdef bint nul = False
    cdef bint surrogate = False
    if not isinstance(text, str):
        raise TypeError(f"{what} must be str, not {type(text).__name__}")
    s = <str>text
    if not s:
        raise ValueError(f"{what} is empty")
    for c in s:
        if c < 0x80:
            size += 1
            if c == 0:
                nul = True
        elif c < 0x800:
            size += 2
        elif c < 0x10000:
            size += 3
            if 0xD800 <= c <= 0xDFFF:
                surrogate = True
        else:
            size += 4
    if nul:
        raise ValueError(f"{what} contains U+0000")
    if surrogate:
        raise ValueError(f"{what} is not valid UTF-8 (it contains a surrogate)")
    if size > _MAX_BYTES:
        raise ValueError(f"{what} is longer than {_MAX_BYTES} UTF-8 bytes ({size})")
    return 0


cdef list _parse_filter(object filter, bint *hash_):
    """Validate ``filter``; return its levels without a trailing ``#`` (``hash_`` says if it had one)."""
    cdef list levels
    cdef Py_ssize_t index, last
    cdef str level
    _check_string(filter, "topic filter")
    levels = (<str>filter).split("/")
    if "+" in <str>filter or "#" in <str>filter:
        last = len(levels) - 1
        for index in range(last + 1):
            level = <str>levels[index]
            if "#" in level and (level != "#" or index != last):
                raise ValueError(f"topic filter: '#' must be the whole last level (level {index + 1})")
            if "+" in level and level != "+":
                raise ValueError(f"topic filter: '+' must be a whole level (level {index + 1})")
    if <str>levels[len(levels) - 1] == "#":
        levels.pop()
        hash_[0] = True
    else:
        hash_[0] = False
    return levels


def validate_filter(filter):
    """Raise ValueError unless ``filter`` is a valid MQTT topic filter (§4.7).

    Non-empty, ``#`` only as the whole last level, ``+`` only as a whole level, no
    U+0000, well-formed UTF-8 of at most 65535 bytes.
    """
    cdef bint hash_
    _parse_filter(filter, &hash_)


def validate_topic(topic):
    """Raise ValueError unless ``topic`` is a valid MQTT topic name (§4.7).

    Non-empty, no ``+`` or ``#``, no U+0000, well-formed UTF-8 of at most 65535 bytes.
    """
    _check_string(topic, "topic name")
    if "+" in <str>topic or "#" in <str>topic:
        raise ValueError("topic name contains a wildcard ('+' or '#')")


cdef inline int _extend(list out, dict subs) except -1:
    """``out.extend(subs.values())`` without the view object."""
    cdef Py_ssize_t pos = 0
    cdef PyObject *key
    cdef PyObject *entry
    while PyDict_Next(subs, &pos, &key, &entry):
        out.append(<object>entry)
    return 0


@cython.internal
@cython.final
@cython.freelist(16)
@cython.trashcan(True)  # freeing a deep '+' chain must not recurse in C
cdef class _Node:
    cdef Py_ssize_t depth  # the index of the topic level this node's children match
    cdef dict children     # literal level -> _Node, None when there are none
    cdef _Node plus
    cdef dict subs         # key -> (key, value, filter), filters ending here
    cdef dict hash_subs    # the same for ``<this>/#``

    def __cinit__(self, Py_ssize_t depth):
        self.depth = depth

    cdef inline bint empty(self):
        return (self.children is None and self.plus is None and self.subs is None
                and self.hash_subs is None)


@cython.final
cdef class TopicTrie:
    """Subscriptions by topic filter; ``match`` finds every one a topic name matches.

    A subscription is a ``(filter, key)`` pair with a value. ``match`` returns
    ``(key, value, filter)`` tuples; one key may appear several times, once per
    overlapping filter. Topics passed to ``match`` are assumed valid (``validate_topic``).
    """

    cdef _Node _root
    cdef dict _by_key
    cdef Py_ssize_t _count
    cdef Py_ssize_t _nodes

    def __init__(self):
        self._root = _Node(0)
        self._by_key = {}
        self._count = 0
        self._nodes = 0

    def __len__(self):
        return self._count

    def node_count(self):
        """Trie nodes below the root: zero once every subscription is gone."""
        return self._nodes

    def subscribe(self, filter, key, value):
        """Add or replace the value of ``(filter, key)``; True when it was new.

        Raises:
            ValueError: ``filter`` is not a valid topic filter.
        """
        cdef bint hash_
        cdef list levels = _parse_filter(filter, &hash_)
        cdef _Node node = self._root
        cdef _Node child
        cdef Py_ssize_t depth = 0
        cdef str level
        cdef dict subs, held
        cdef bint new
        for level in levels:
            depth += 1
            if level == "+":
                child = node.plus
                if child is None:
                    child = _Node(depth)
                    node.plus = child
                    self._nodes += 1
            else:
                if node.children is None:
                    node.children = {}
                child = node.children.get(level)
                if child is None:
                    child = _Node(depth)
                    node.children[level] = child
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
                held = {}
                self._by_key[key] = held
            held[filter] = None
        return new

    def unsubscribe(self, filter, key):
        """Remove ``(filter, key)``; True when it existed. Nodes left empty are pruned.

        Raises:
            ValueError: ``filter`` is not a valid topic filter.
        """
        cdef bint hash_
        cdef list levels = _parse_filter(filter, &hash_)
        cdef _Node node = self._root
        cdef _Node parent
        cdef list path = [node]
        cdef str level
        cdef dict subs, held
        cdef Py_ssize_t depth
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
        while depth and (<_Node>path[depth]).empty():
            parent = <_Node>path[depth - 1]
            level = <str>levels[depth - 1]
            if level == "+":
                parent.plus = None
            else:
                del parent.children[level]
                if not parent.children:
                    parent.children = None
            self._nodes -= 1
            depth -= 1
        return True

    def match(self, str topic not None):
        """Every subscription whose filter matches ``topic``, as ``(key, value, filter)``.

        ``+`` matches one level, ``#`` its level and every level below, including the
        parent (``a/#`` matches ``a``); a topic starting with ``$`` is not matched by a
        filter starting with ``+`` or ``#``. Empty levels are levels.
        """
        cdef list levels = topic.split("/")
        cdef Py_ssize_t size = len(levels)
        cdef list out = []
        cdef list stack = None
        cdef _Node node = self._root
        cdef PyObject *found
        cdef Py_ssize_t depth
        if len(topic) and topic[0] == u"$":
            # §4.7.2: skip the root's '#' and '+'; only a literal first level matches.
            if node.children is None:
                return out
            found = PyDict_GetItem(node.children, levels[0])
            if found is NULL:
                return out
            node = <_Node>found
        while True:
            if node.hash_subs is not None:
                _extend(out, node.hash_subs)
            depth = node.depth
            found = NULL
            if depth == size:
                if node.subs is not None:
                    _extend(out, node.subs)
            else:
                if node.children is not None:
                    # Borrowed reference: no new object per level.
                    found = PyDict_GetItem(node.children, levels[depth])
                if node.plus is not None:
                    if found is NULL:
                        found = <PyObject *>node.plus
                    else:
                        if stack is None:
                            stack = []
                        stack.append(node.plus)
            if found is not NULL:
                node = <_Node>found
            elif stack:
                node = <_Node>stack.pop()
            else:
                return out

    def filters(self, key):
        """The filters ``key`` is subscribed with, in subscription order."""
        cdef dict held = self._by_key.get(key)
        return [] if held is None else list(held)
