"""Dapr's state query language (``/v1.0-alpha1/state/{store}/query``): pure, no I/O.

``parse_query(obj)`` turns the decoded request body into a ``Query`` (or raises
``QueryError``); ``run(query, items)`` filters, sorts and pages ``(key, value, etag)``
triples and returns ``(page, next_token)``. Stores only feed it their live items.

Semantics (Dapr documents the language, not these corner cases; chosen here):

* Body ``{"filter": {...}, "sort": [{"key", "order"}], "page": {"limit", "token"}}``;
  field names are matched case-insensitively (as Go's encoding/json does), unknown
  fields ignored. A missing, null or empty ``filter`` matches everything.
* A filter is an object with exactly one operator: ``EQ``/``NEQ``/``GT``/``GTE``/``LT``/
  ``LTE`` take ``{"<path>": value}`` (one pair); ``IN`` takes ``{"<path>": [values]}``;
  ``AND``/``OR`` take an array of at least two filters (as Dapr's parser requires).
  Operator names are case-sensitive, as in Dapr.
* A path is dotted object keys into the stored JSON value (``"person.org"``).
* A value without the path (or a value that is not JSON, or not an object on the
  way) matches no comparison, NEQ included (SQL-like ``NULL`` semantics).
* EQ/NEQ/IN compare by JSON equality: ``1 == 1.0``, ``true != 1``, objects and arrays
  deeply. GT/GTE/LT/LTE need a number or a string in the query and match only values
  of the same kind (numbers numerically, strings by code point); others never match.
* Sort: ``order`` ASC (default) or DESC, case-insensitive; items without the path
  sort last in either order; values of different kinds order as numbers < strings <
  booleans < null < objects/arrays. Ties (and no sort) fall back to the key, ascending.
* Paging: ``limit`` 0 or absent returns everything. The token is the decimal offset of
  the next item in the filtered, sorted sequence; it is returned only when more items
  remain. Offsets are not snapshots: writes between pages may shift items.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from ...errors import PillionError

COMPARISONS = ("EQ", "NEQ", "GT", "GTE", "LT", "LTE")
ORDERED = frozenset({"GT", "GTE", "LT", "LTE"})
_MISSING = object()


class QueryError(PillionError):
    """The query is not valid (bad shape, unknown operator, bad page or token)."""


Path = tuple[str, ...]
Result = tuple[str, bytes, "str | None"]


@dataclass(frozen=True, slots=True)
class Filter:
    """One node: ``op`` is a comparison with ``path``/``value``, IN with a value list, or AND/OR with ``children``."""

    op: str
    path: Path = ()
    value: Any = None
    children: tuple["Filter", ...] = ()


@dataclass(frozen=True, slots=True)
class Sort:
    path: Path
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Query:
    filter: Filter | None = None
    sort: tuple[Sort, ...] = ()
    limit: int = 0  # 0: no limit
    offset: int = 0  # from the page token

    @property
    def needs_values(self) -> bool:
        return self.filter is not None or bool(self.sort)


# -- parsing ---------------------------------------------------------------------

def _fields(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise QueryError(f"{what} must be a JSON object")
    return {str(k).lower(): v for k, v in value.items()}


def _path(text: Any, what: str) -> Path:
    if not isinstance(text, str) or not text:
        raise QueryError(f"{what} must be a non-empty string")
    parts = tuple(text.split("."))
    if any(not p for p in parts):
        raise QueryError(f"{what} {text!r} has an empty path segment")
    return parts


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_filter(obj: Any) -> Filter:
    """One filter node; raises QueryError naming what is wrong."""
    if not isinstance(obj, dict):
        raise QueryError("filter unit must be a JSON object")
    if len(obj) != 1:
        raise QueryError(f"filter unit must have a single operator, got {len(obj)}")
    ((op, arg),) = obj.items()
    if op in ("AND", "OR"):
        if not isinstance(arg, list):
            raise QueryError(f"{op} filter must be an array")
        if len(arg) < 2:
            raise QueryError(f"{op} filter must contain at least two filters")
        return Filter(op, children=tuple(parse_filter(f) for f in arg))
    if op in COMPARISONS or op == "IN":
        if not isinstance(arg, dict) or len(arg) != 1:
            raise QueryError(f"{op} filter must be an object with a single key/value pair")
        ((key, value),) = arg.items()
        path = _path(key, f"{op} filter key")
        if op == "IN":
            if not isinstance(value, list):
                raise QueryError(f"IN filter value for {key!r} must be an array")
            return Filter(op, path, tuple(value))
        if op in ORDERED and not (_is_number(value) or isinstance(value, str)):
            raise QueryError(f"{op} filter value for {key!r} must be a number or a string")
        return Filter(op, path, value)
    raise QueryError(f"unsupported filter operator {op!r}")


def parse_query(obj: Any) -> Query:
    """A ``Query`` from the decoded request body; raises QueryError on bad input."""
    body = _fields(obj, "query")
    raw_filter = body.get("filter")
    filt = None
    if raw_filter is not None and raw_filter != {}:
        filt = parse_filter(raw_filter)

    sorts: list[Sort] = []
    raw_sort = body.get("sort")
    if raw_sort is not None:
        if not isinstance(raw_sort, list):
            raise QueryError("sort must be an array")
        for item in raw_sort:
            fields = _fields(item, "each sort entry")
            order = fields.get("order")
            if order is None or order == "":
                order = "ASC"
            if not isinstance(order, str) or order.upper() not in ("ASC", "DESC"):
                raise QueryError(f"sort order must be ASC or DESC, got {order!r}")
            sorts.append(Sort(_path(fields.get("key"), "sort key"), order.upper() == "DESC"))

    limit, offset = 0, 0
    raw_page = body.get("page")
    if raw_page is not None:
        page = _fields(raw_page, "page")
        raw_limit = page.get("limit")
        if raw_limit is not None:
            if not isinstance(raw_limit, int) or isinstance(raw_limit, bool) or raw_limit < 0:
                raise QueryError(f"page limit must be a non-negative integer, got {raw_limit!r}")
            limit = raw_limit
        token = page.get("token")
        if token is not None and token != "":
            if not isinstance(token, str) or not (token.isascii() and token.isdigit()) or len(token) > 18:
                raise QueryError(f"invalid page token {token!r}")
            offset = int(token)
    return Query(filt, tuple(sorts), limit, offset)


# -- evaluation ------------------------------------------------------------------

def lookup(doc: Any, path: Path) -> Any:
    """The value at ``path`` or ``_MISSING``."""
    for part in path:
        if not isinstance(doc, dict):
            return _MISSING
        doc = doc.get(part, _MISSING)
        if doc is _MISSING:
            return _MISSING
    return doc


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value, booleans distinct from numbers, containers deeply."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) or _is_number(b):
        return _is_number(a) and _is_number(b) and a == b
    if isinstance(a, dict):
        return (isinstance(b, dict) and a.keys() == b.keys()
                and all(json_equal(v, b[k]) for k, v in a.items()))
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _ordered(op: str, value: Any, target: Any) -> bool:
    if _is_number(target):
        if not _is_number(value):
            return False
    elif not isinstance(value, str):  # target is a string (parse_query checked)
        return False
    if op == "GT":
        return value > target
    if op == "GTE":
        return value >= target
    if op == "LT":
        return value < target
    return value <= target


def matches(filt: Filter, doc: Any) -> bool:
    """Whether the decoded value ``doc`` (``_MISSING`` when not JSON) passes ``filt``."""
    op = filt.op
    if op == "AND":
        return all(matches(c, doc) for c in filt.children)
    if op == "OR":
        return any(matches(c, doc) for c in filt.children)
    value = lookup(doc, filt.path) if doc is not _MISSING else _MISSING
    if value is _MISSING:
        return False
    if op == "EQ":
        return json_equal(value, filt.value)
    if op == "NEQ":
        return not json_equal(value, filt.value)
    if op == "IN":
        return any(json_equal(value, v) for v in filt.value)
    return _ordered(op, value, filt.value)


def _sort_key(value: Any) -> tuple:
    if _is_number(value):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    if isinstance(value, bool):
        return (2, value)
    if value is None:
        return (3, 0)
    return (4, orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


def decode(value: bytes) -> Any:
    """The stored JSON value, or ``_MISSING`` when the bytes are not JSON."""
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return _MISSING


def run(query: Query, items: Iterable[Result],
        decoder: Callable[[bytes], Any] = decode) -> tuple[list[Result], str | None]:
    """Filter, sort and page ``(key, value_bytes, etag)`` items: ``(page, next_token)``.

    Keys must be unique; they are the final tiebreaker. ``next_token`` is None when
    the page holds the last matching item.
    """
    needs = query.needs_values
    kept: list[tuple[Result, Any]] = []
    for item in items:
        doc = decoder(item[1]) if needs else _MISSING
        if query.filter is None or matches(query.filter, doc):
            kept.append((item, doc))
    kept.sort(key=lambda entry: entry[0][0])
    for sort in reversed(query.sort):  # stable sorts, least significant first
        present, missing = [], []
        for entry in kept:
            value = lookup(entry[1], sort.path) if entry[1] is not _MISSING else _MISSING
            (missing if value is _MISSING else present).append((_sort_key(value) if value is not _MISSING else None,
                                                                 entry))
        present.sort(key=lambda pair: pair[0], reverse=sort.descending)
        kept = [entry for _, entry in present] + [entry for _, entry in missing]
    start = query.offset
    end = len(kept) if query.limit == 0 else start + query.limit
    page = [entry[0] for entry in kept[start:end]]
    token = str(end) if end < len(kept) else None
    return page, token
