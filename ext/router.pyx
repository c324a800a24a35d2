# cython: embedsignature=True, embedsignature.format=clinic
# Clinic signatures make match() introspectable for the parity test without binding=True.
"""HTTP route matching in Dapr's chi-style pattern syntax; compiled twin of ``pillion._pure.router``.

The pure module is the specification: same names, same results, same errors.
"""

cimport cython

# Declarations stay in this file: a sibling router.pxd is silently ignored for a
# module named pillion._ext.router (ext/README.md, "Sharing declarations").

from urllib.parse import unquote

__all__ = ["Router"]

cdef object _unquote = unquote

cdef enum:
    _STATIC = 0
    _PARAM = 1
    _CATCHALL = 2


@cython.internal
@cython.final
cdef class _Route:
    cdef readonly object value
    cdef readonly tuple names

    def __cinit__(self, object value, tuple names):
        self.value = value
        self.names = names


@cython.internal
@cython.final
cdef class _Endpoint:
    cdef dict by_method
    cdef _Route any

    def __cinit__(self):
        self.by_method = {}
        self.any = None

    cdef add(self, tuple methods, _Route route, str pattern):
        if methods is None:
            if self.any is not None:
                raise ValueError(f"duplicate route: any method {pattern!r}")
            self.any = route
            return
        for method in methods:
            if method in self.by_method:
                raise ValueError(f"duplicate route: {method} {pattern!r}")
            self.by_method[method] = route

    cdef _Route get(self, str method, set allow):
        cdef _Route route = self.by_method.get(method)
        if route is None:
            route = self.any
            if route is None and allow is not None:
                allow.update(self.by_method)
        return route


@cython.internal
@cython.final
cdef class _Node:
    cdef dict static
    cdef _Node param
    cdef _Endpoint leaf
    cdef _Endpoint tail

    def __cinit__(self):
        self.static = {}


cdef list _parse(str pattern):
    cdef list segments = [s for s in pattern.split("/") if s]
    cdef list parts = []
    cdef Py_ssize_t index
    cdef int kind
    cdef str segment, name
    for index, segment in enumerate(segments):
        if not (segment.startswith("{") and segment.endswith("}")):
            if "{" in segment or "}" in segment:
                raise ValueError(f"unsupported segment {segment!r} in {pattern!r}")
            parts.append((_STATIC, segment))
            continue
        name = segment[1:-1]
        kind = _PARAM
        if name.endswith(":*"):
            kind, name = _CATCHALL, name[:-2]
        elif name.endswith("..."):
            kind, name = _CATCHALL, name[:-3]
        if not name or "{" in name or "}" in name or ":" in name:
            raise ValueError(f"bad parameter {segment!r} in {pattern!r}")
        if kind == _CATCHALL and index != len(segments) - 1:
            raise ValueError(f"catch-all {segment!r} must be last in {pattern!r}")
        parts.append((kind, name))
    names = [name for kind, name in parts if kind != _STATIC]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate parameter name in {pattern!r}")
    return parts


cdef inline str _decode(str text):
    if "%" in text:
        return _unquote(text)
    return text


@cython.final
cdef class Router:
    """Maps (method, path) to the value registered with the best matching route.

    Args:
        routes: ``(methods, pattern, value)`` triples; ``methods`` is a tuple of
            method names or None for any method.

    Raises:
        ValueError: a malformed pattern, a catch-all that is not last, or the same
            method registered twice for one pattern shape.
    """

    cdef _Node _root
    cdef dict _static

    def __init__(self, routes):
        self._root = _Node()
        self._static = {}
        for methods, pattern, value in routes:
            self._add(methods, pattern, value)

    cdef _add(self, object methods, str pattern, object value):
        cdef tuple method_tuple = None
        cdef _Node node = self._root
        cdef list names = []
        cdef list parts
        cdef int kind
        cdef str text
        if methods is not None:
            method_tuple = tuple(methods)
            if not method_tuple:
                raise ValueError(f"empty method list for {pattern!r}")
        parts = _parse(pattern)
        for kind, text in parts:
            if kind == _STATIC:
                node = node.static.setdefault(text, _Node())
            elif kind == _PARAM:
                if node.param is None:
                    node.param = _Node()
                node = node.param
                names.append(text)
            else:
                names.append(text)
        route = _Route(value, tuple(names))
        if parts and parts[-1][0] == _CATCHALL:
            if node.tail is None:
                node.tail = _Endpoint()
            node.tail.add(method_tuple, route, pattern)
            return
        if node.leaf is None:
            node.leaf = _Endpoint()
            # Static beats param at every depth, so an all-static route is the first
            # leaf the search would reach: a dict hit that takes the method is final.
            if not names:
                self._static["/" + "/".join([part[1] for part in parts])] = node.leaf
        node.leaf.add(method_tuple, route, pattern)

    def match(self, str method not None, str path not None):
        """Resolve a request.

        Args:
            method: the request method, e.g. ``"GET"``.
            path: the raw request path, without the query string.

        Returns:
            ``(value, params, None)`` on a match; ``(None, None, None)`` when no
            pattern fits the path (404); ``(None, None, allow)`` with a sorted tuple
            of method names when patterns fit but none takes this method (405).
        """
        cdef _Endpoint endpoint = self._static.get(path)
        cdef _Route route
        cdef list segments = []
        cdef list ends = []
        cdef list values = []
        cdef set allow
        cdef Py_ssize_t position = 0
        cdef Py_ssize_t i
        cdef dict params
        cdef str part
        if endpoint is not None:
            route = endpoint.get(method, None)
            if route is not None:
                return route.value, {}, None
        for part in path.split("/"):
            position += len(part)
            if part:
                segments.append(part)
                ends.append(position)
            position += 1
        route = self._find(self._root, path, segments, ends, 0, method, values, None)
        if route is None:
            allow = set()
            route = self._find(self._root, path, segments, ends, 0,
                               "GET" if method == "HEAD" else method, values, allow)
            if route is None:
                if not allow:
                    return None, None, None
                if "GET" in allow:
                    allow.add("HEAD")
                return None, None, tuple(sorted(allow))
        params = {}
        for i in range(len(values)):
            params[route.names[i]] = _decode(values[i])
        return route.value, params, None

    cdef _Route _find(self, _Node node, str path, list segments, list ends,
                      Py_ssize_t index, str method, list values, set allow):
        cdef _Route route
        cdef _Node child
        cdef Py_ssize_t start
        if index == len(segments):
            if node.leaf is not None:
                route = node.leaf.get(method, allow)
                if route is not None:
                    return route
        else:
            child = node.static.get(segments[index])
            if child is not None:
                route = self._find(child, path, segments, ends, index + 1, method, values, allow)
                if route is not None:
                    return route
            if node.param is not None:
                values.append(segments[index])
                route = self._find(node.param, path, segments, ends, index + 1,
                                   method, values, allow)
                if route is not None:
                    return route
                values.pop()
        if node.tail is not None:
            start = ends[index - 1] if index else 0
            if path.startswith("/", start):
                route = node.tail.get(method, allow)
                if route is not None:
                    values.append(path[start + 1:])
                    return route
        return None
