"""The compiled router and its pure twin: same names, same signatures, same answers."""

from __future__ import annotations

import inspect

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH")
STATIC_WORDS = ("a", "b", "v1.0", "bulk", "method", "é", "..")
HOSTILE_SEGMENTS = (
    "%", "%zz", "%2F", "%2f", "%C3%A9", "%ff", "%4", "+", "é", "ü%FF", "..", ".", "?", "{x}", " ",
)  # fmt: skip


@st.composite
def patterns(draw) -> str:
    size = draw(st.integers(0, 4))
    segments = []
    for index in range(size):
        kind = draw(st.sampled_from(("static", "static", "param")))
        segments.append(draw(st.sampled_from(STATIC_WORDS)) if kind == "static" else f"{{p{index}}}")
    if draw(st.booleans()):
        segments.append(draw(st.sampled_from(("{rest:*}", "{rest...}"))))
    return "/" + "/".join(segments) + draw(st.sampled_from(("", "", "/")))


route_tables = st.lists(
    st.tuples(
        st.none() | st.lists(st.sampled_from(METHODS[:5]), min_size=1, max_size=3).map(tuple),
        patterns(),
        st.integers(0, 1000),
    ),
    max_size=8,
)

segment_text = (
    st.sampled_from(STATIC_WORDS)
    | st.sampled_from(HOSTILE_SEGMENTS)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6)
)


@st.composite
def paths(draw) -> str:
    segments = draw(st.lists(segment_text, max_size=7))
    separators = draw(st.lists(st.sampled_from(("/", "/", "//")), min_size=len(segments) + 1,
                               max_size=len(segments) + 1))  # fmt: skip
    path = draw(st.sampled_from(("", "/")))
    for separator, segment in zip(separators, segments):
        path += separator + segment
    return path + draw(st.sampled_from(("", "", "/", "//")))


any_paths = paths() | st.text(max_size=40) | st.sampled_from(("/" + "x/" * 5000, "/a" * 3000, ""))


def build(module, routes):
    try:
        return module.Router(routes), None
    except ValueError as exc:
        return None, type(exc)


def test_same_public_names(router_twins):
    pure, compiled = router_twins
    assert pure.__all__ == compiled.__all__ == ["Router"]
    for name in pure.__all__:
        assert hasattr(compiled, name)


def _public_methods(cls):
    return sorted(name for name in dir(cls) if not name.startswith("_"))


def _parameters(function):
    parameters = list(inspect.signature(function).parameters.values())[1:]
    return [(p.name, p.kind, p.default) for p in parameters]


def test_same_method_signatures(router_twins):
    pure, compiled = router_twins
    assert _public_methods(pure.Router) == _public_methods(compiled.Router) == ["match"]
    for name in _public_methods(pure.Router):
        assert _parameters(getattr(pure.Router, name)) == _parameters(
            getattr(compiled.Router, name)
        )
    # An extension type's __init__ has no introspectable signature; call it by keyword.
    assert list(inspect.signature(pure.Router).parameters) == ["routes"]
    compiled.Router(routes=[])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(routes=route_tables, requests=st.lists(st.tuples(st.sampled_from(METHODS), any_paths)))
def test_same_answers(router_twins, routes, requests):
    pure, compiled = router_twins
    pure_router, pure_error = build(pure, routes)
    compiled_router, compiled_error = build(compiled, routes)
    assert pure_error == compiled_error
    if pure_router is None:
        return
    for method, path in requests:
        result = pure_router.match(method, path)
        assert result == compiled_router.match(method, path)
        event("match" if result[1] is not None else "405" if result[2] else "404")


DAPR_TABLE = [
    (("GET",), "/v1.0/healthz", "healthz"),
    (("GET",), "/v1.0/state/{storeName}/{key}", "get-state"),
    (("POST",), "/v1.0/state/{storeName}/bulk", "bulk"),
    (("POST", "PUT"), "/v1.0/state/{storeName}", "save"),
    (("POST",), "/v1.0/publish/{pubsubname}/{topic:*}", "publish"),
    (None, "/v1.0/invoke/{id}/method/{method...}", "invoke"),
]


@settings(max_examples=500, deadline=None)
@given(method=st.sampled_from(METHODS), path=any_paths)
def test_same_answers_on_dapr_table(router_twins, method, path):
    pure, compiled = router_twins
    assert pure.Router(DAPR_TABLE).match(method, path) == compiled.Router(DAPR_TABLE).match(
        method, path
    )


@pytest.mark.parametrize(
    "path",
    [
        "/v1.0/state/s/bulk",
        "/v1.0/publish/ps/a/b/c",
        "/v1.0/publish/ps/a//b/c/",
        "/v1.0/invoke/app/method/",
        "/v1.0/invoke/app/method",
        "/v1.0/invoke/%zz/method/%/%2F/é",
        "//v1.0//state/../%2e%2e/",
    ],
)
@pytest.mark.parametrize("method", METHODS)
def test_same_answers_on_trap_paths(router_twins, method, path):
    pure, compiled = router_twins
    assert pure.Router(DAPR_TABLE).match(method, path) == compiled.Router(DAPR_TABLE).match(
        method, path
    )
