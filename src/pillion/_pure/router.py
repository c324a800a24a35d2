"""HTTP route matching in Dapr's chi-style pattern syntax; pure twin of ``pillion._ext.router``.

Owns pattern parsing, path normalisation, parameter decoding and method resolution
(match, 404, 405 with Allow, HEAD served by GET). Knows nothing about requests,
handlers or the event loop.

Matching order at every depth: static segment, then ``{param}``, then catch-all,
backtracking when a branch fails further down. A route is chosen for the method in
that order first; only when no route takes the method does the search collect the
methods of every route whose pattern fits the path, for the 405 Allow header.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote

__all__ = ["Router"]

_STATIC, _PARAM, _CATCHALL = 0, 1, 2


class _Route:
    __slots__ = ("value", "names")

    def __init__(self, value: object, names: tuple[str, ...]) -> None:
        self.value = value
        self.names = names


class _Endpoint:
    """The routes that end at one trie position, by method; ``any`` takes every method."""

    __slots__ = ("by_method", "any")

    def __init__(self) -> None:
        self.by_method: dict[str, _Route] = {}
        self.any: _Route | None = None

    def add(self, methods: tuple[str, ...] | None, route: _Route, pattern: str) -> None:
        if methods is None:
            if self.any is not None:
                raise ValueError(f"duplicate route: any method {pattern!r}")
            self.any = route
            return
        for method in methods:
            if method in self.by_method:
                raise ValueError(f"duplicate route: {method} {pattern!r}")
            self.by_method[method] = route

    def get(self, method: str, allow: set[str] | None) -> _Route | None:
        route = self.by_method.get(method)
        if route is None:
            route = self.any
            if route is None and allow is not None:
                allow.update(self.by_method)
        return route


class _Node:
    __slots__ = ("static", "param", "leaf", "tail")

    def __init__(self) -> None:
        self.static: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.leaf: _Endpoint | None = None
        self.tail: _Endpoint | None = None


def _parse(pattern: str) -> list[tuple[int, str]]:
    segments = [s for s in pattern.split("/") if s]
    parts = []
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


def _split(path: str) -> tuple[list[str], list[int]]:
    """Non-empty segments of ``path`` and the raw index just past each one."""
    segments = []
    ends = []
    position = 0
    for part in path.split("/"):
        position += len(part)
        if part:
            segments.append(part)
            ends.append(position)
        position += 1
    return segments, ends


def _decode(text: str) -> str:
    return unquote(text) if "%" in text else text


class Router:
    """Maps (method, path) to the value registered with the best matching route.

    Args:
        routes: ``(methods, pattern, value)`` triples; ``methods`` is a tuple of
            method names or None for any method.

    Raises:
        ValueError: a malformed pattern, a catch-all that is not last, or the same
            method registered twice for one pattern shape.
    """

    def __init__(self, routes: Iterable[tuple[tuple[str, ...] | None, str, object]]) -> None:
        self._root = _Node()
        self._static: dict[str, _Endpoint] = {}
        for methods, pattern, value in routes:
            self._add(methods, pattern, value)

    def _add(self, methods: tuple[str, ...] | None, pattern: str, value: object) -> None:
        if methods is not None:
            methods = tuple(methods)
            if not methods:
                raise ValueError(f"empty method list for {pattern!r}")
        parts = _parse(pattern)
        node = self._root
        names = []
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
            node.tail.add(methods, route, pattern)
            return
        if node.leaf is None:
            node.leaf = _Endpoint()
            # Static beats param at every depth, so an all-static route is the first
            # leaf the search would reach: a dict hit that takes the method is final.
            if not names:
                self._static["/" + "/".join(text for _, text in parts)] = node.leaf
        node.leaf.add(methods, route, pattern)

    def match(self, method: str, path: str) -> tuple:
        """Resolve a request.

        Args:
            method: the request method, e.g. ``"GET"``.
            path: the raw request path, without the query string.

        Returns:
            ``(value, params, None)`` on a match; ``(None, None, None)`` when no
            pattern fits the path (404); ``(None, None, allow)`` with a sorted tuple
            of method names when patterns fit but none takes this method (405).
        """
        endpoint = self._static.get(path)
        if endpoint is not None:
            route = endpoint.get(method, None)
            if route is not None:
                return route.value, {}, None
        segments, ends = _split(path)
        values: list[str] = []
        route = self._find(self._root, path, segments, ends, 0, method, values, None)
        if route is None:
            allow: set[str] = set()
            fallback = "GET" if method == "HEAD" else method
            route = self._find(self._root, path, segments, ends, 0, fallback, values, allow)
            if route is None:
                if not allow:
                    return None, None, None
                if "GET" in allow:
                    allow.add("HEAD")
                return None, None, tuple(sorted(allow))
        return route.value, dict(zip(route.names, map(_decode, values))), None

    def _find(
        self,
        node: _Node,
        path: str,
        segments: list[str],
        ends: list[int],
        index: int,
        method: str,
        values: list[str],
        allow: set[str] | None,
    ) -> _Route | None:
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
                route = self._find(
                    node.param, path, segments, ends, index + 1, method, values, allow
                )
                if route is not None:
                    return route
                values.pop()
        if node.tail is not None:
            start = ends[index - 1] if index else 0
            if path.startswith("/", start):
                route = node.tail.get(method, allow)
                if route is not None:
                    values.append(path[start + 1 :])
                    return route
        return None
