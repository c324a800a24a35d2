"""Router behaviour, run against both twins through the ``impl`` fixture."""

from __future__ import annotations

import pytest

DAPR_ROUTES = [
    (("GET",), "/v1.0/healthz", "healthz"),
    (("GET",), "/v1.0/healthz/outbound", "healthz-outbound"),
    (("GET",), "/v1.0/state/{storeName}/{key}", "get-state"),
    (("POST",), "/v1.0/state/{storeName}/bulk", "bulk"),
    (("POST", "PUT"), "/v1.0/state/{storeName}", "save"),
    (("POST",), "/v1.0/publish/{pubsubname}/{topic:*}", "publish"),
    (None, "/v1.0/invoke/{id}/method/{method...}", "invoke"),
]


@pytest.fixture
def router(impl):
    return impl.Router(DAPR_ROUTES)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/v1.0/healthz", ("healthz", {}, None)),
        ("GET", "/v1.0/healthz/outbound", ("healthz-outbound", {}, None)),
        ("POST", "/v1.0/state/s/bulk", ("bulk", {"storeName": "s"}, None)),
        ("GET", "/v1.0/state/s/bulk", ("get-state", {"storeName": "s", "key": "bulk"}, None)),
        ("GET", "/v1.0/state/s/k", ("get-state", {"storeName": "s", "key": "k"}, None)),
        ("PUT", "/v1.0/state/s", ("save", {"storeName": "s"}, None)),
        (
            "POST",
            "/v1.0/invoke/app/method/api/v1/add",
            ("invoke", {"id": "app", "method": "api/v1/add"}, None),
        ),
        ("PATCH", "/v1.0/invoke/app/method/x", ("invoke", {"id": "app", "method": "x"}, None)),
        (
            "POST",
            "/v1.0/publish/ps/a/b/c",
            ("publish", {"pubsubname": "ps", "topic": "a/b/c"}, None),
        ),
    ],
)
def test_dapr_routes(router, method, path, expected):
    assert router.match(method, path) == expected


@pytest.mark.parametrize(
    "path", ["/", "", "/v1.0", "/v1.0/nope", "/v1.0/healthz/x", "/v1.0/state", "/v2/healthz"]
)
def test_unknown_path_is_404(router, path):
    assert router.match("GET", path) == (None, None, None)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/v1.0/healthz", ("GET", "HEAD")),
        ("POST", "/v1.0/state/s/k", ("GET", "HEAD")),
        ("DELETE", "/v1.0/state/s/bulk", ("GET", "HEAD", "POST")),
        ("GET", "/v1.0/state/s", ("POST", "PUT")),
        ("HEAD", "/v1.0/state/s", ("POST", "PUT")),
        ("GET", "/v1.0/publish/ps/t", ("POST",)),
    ],
)
def test_wrong_method_is_405_with_sorted_allow(router, method, path, allow):
    assert router.match(method, path) == (None, None, allow)


def test_head_falls_back_to_get(router):
    assert router.match("HEAD", "/v1.0/healthz") == ("healthz", {}, None)
    assert router.match("HEAD", "/v1.0/state/s/k")[0] == "get-state"


def test_explicit_head_beats_get(impl):
    router = impl.Router([(("GET",), "/x", "get"), (("HEAD",), "/x", "head")])
    assert router.match("HEAD", "/x") == ("head", {}, None)
    assert router.match("GET", "/x") == ("get", {}, None)


def test_any_method_route_takes_head_before_get_fallback(impl):
    router = impl.Router([(("GET",), "/a/b", "get"), (None, "/a/{x}", "any")])
    assert router.match("HEAD", "/a/b") == ("any", {"x": "b"}, None)
    assert router.match("GET", "/a/b") == ("get", {}, None)


def test_explicit_method_beats_any_at_same_pattern(impl):
    router = impl.Router([(None, "/x", "any"), (("POST",), "/x", "post")])
    assert router.match("POST", "/x")[0] == "post"
    assert router.match("GET", "/x")[0] == "any"


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("my%20store", "my store"),
        ("a%2Fb", "a/b"),
        ("a+b", "a+b"),
        ("%C3%A9t%C3%A9", "été"),
        ("%zz", "%zz"),
        ("100%", "100%"),
        ("%", "%"),
        ("%4", "%4"),
        ("%ff", "\ufffd"),
        ("été", "été"),
    ],
)
def test_params_are_percent_decoded_after_splitting(router, raw, decoded):
    assert router.match("GET", f"/v1.0/state/{raw}/k") == (
        "get-state",
        {"storeName": decoded, "key": "k"},
        None,
    )


def test_catch_all_is_decoded(router):
    assert router.match("GET", "/v1.0/invoke/app/method/a%2Fb/%20c")[1]["method"] == "a/b/ c"


@pytest.mark.parametrize(
    "path",
    ["/v1.0/healthz/", "//v1.0//healthz", "/v1.0///healthz//", "v1.0/healthz"],
)
def test_repeated_and_trailing_slashes_are_ignored(router, path):
    assert router.match("GET", path) == ("healthz", {}, None)


def test_normalisation_applies_to_param_routes(router):
    assert router.match("GET", "//v1.0/state//s/k/") == (
        "get-state",
        {"storeName": "s", "key": "k"},
        None,
    )
    assert router.match("GET", "/v1.0/state//k") == (None, None, ("POST", "PUT"))


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/v1.0/invoke/app/method/", ""),
        ("/v1.0/invoke/app/method//", "/"),
        ("/v1.0/invoke/app/method/a//b/", "a//b/"),
        ("//v1.0//invoke/app//method/a/b", "a/b"),
        ("/v1.0/invoke/app/method/../x", "../x"),
        ("/v1.0/invoke/app/method/a?b", "a?b"),
    ],
)
def test_catch_all_keeps_the_raw_remainder(router, path, method):
    assert router.match("GET", path) == ("invoke", {"id": "app", "method": method}, None)


def test_catch_all_needs_a_slash_after_its_prefix(router):
    assert router.match("GET", "/v1.0/invoke/app/method") == (None, None, None)


def test_catch_all_at_root(impl):
    router = impl.Router([(("GET",), "/", "root"), (("GET",), "/{rest:*}", "rest")])
    assert router.match("GET", "/") == ("root", {}, None)
    assert router.match("GET", "/a/b/") == ("rest", {"rest": "a/b/"}, None)
    assert router.match("GET", "a") == (None, None, None)


def test_exact_route_beats_catch_all_on_trailing_slash(impl):
    router = impl.Router([(("GET",), "/a/{x...}", "tail"), (("GET",), "/a", "exact")])
    assert router.match("GET", "/a/") == ("exact", {}, None)
    assert router.match("GET", "/a") == ("exact", {}, None)
    assert router.match("GET", "/a/b") == ("tail", {"x": "b"}, None)


def test_backtracks_from_static_dead_end_to_param(impl):
    router = impl.Router([(("GET",), "/a/b/d", "static"), (("GET",), "/a/{x}/c", "param")])
    assert router.match("GET", "/a/b/c") == ("param", {"x": "b"}, None)
    assert router.match("GET", "/a/b/d") == ("static", {}, None)


def test_backtracks_to_catch_all_last(impl):
    router = impl.Router(
        [
            (("GET",), "/a/b/c", "static"),
            (("GET",), "/a/{x}/d", "param"),
            (("GET",), "/a/{rest:*}", "tail"),
        ]
    )
    assert router.match("GET", "/a/b/e") == ("tail", {"rest": "b/e"}, None)
    assert router.match("GET", "/a/z/d") == ("param", {"x": "z"}, None)
    assert router.match("GET", "/a/b/c") == ("static", {}, None)


def test_backtracks_across_methods_before_405(impl):
    router = impl.Router([(("GET",), "/a/b", "static"), (("POST",), "/a/{x}", "param")])
    assert router.match("POST", "/a/b") == ("param", {"x": "b"}, None)
    assert router.match("PUT", "/a/b") == (None, None, ("GET", "HEAD", "POST"))


def test_different_param_names_at_same_position(impl):
    router = impl.Router([(("GET",), "/a/{x}", "get"), (("POST",), "/a/{y}", "post")])
    assert router.match("GET", "/a/1") == ("get", {"x": "1"}, None)
    assert router.match("POST", "/a/1") == ("post", {"y": "1"}, None)


def test_params_dict_is_fresh_and_value_is_identical(impl):
    value = object()
    router = impl.Router([(("GET",), "/a/{x}", value), (("GET",), "/s", value)])
    for path in ("/a/1", "/s"):
        found, params, _ = router.match("GET", path)
        assert found is value
        params["mutated"] = True
        assert "mutated" not in router.match("GET", path)[1]


def test_routes_may_be_any_iterable(impl):
    router = impl.Router(r for r in [(["GET"], "/a", 1)])
    assert router.match("GET", "/a") == (1, {}, None)


@pytest.mark.parametrize(
    "routes",
    [
        [(None, "/a/{x:*}/b", 1)],
        [(None, "/a/{rest...}/{x}", 1)],
        [(None, "/a/{}", 1)],
        [(None, "/a/{:*}", 1)],
        [(None, "/a/{...}", 1)],
        [(None, "/a/{id:[0-9]+}", 1)],
        [(None, "/a/x{y}", 1)],
        [(None, "/a/{x}/{x}", 1)],
        [((), "/a", 1)],
        [(("GET",), "/a", 1), (("GET",), "/a", 2)],
        [(("GET",), "/a", 1), (("POST", "GET"), "//a/", 2)],
        [(None, "/a/{x}", 1), (None, "/a/{y}", 2)],
        [(("GET",), "/a/{x:*}", 1), (("GET",), "/a/{y...}", 2)],
    ],
)
def test_invalid_route_tables_raise_value_error(impl, routes):
    with pytest.raises(ValueError):
        impl.Router(routes)


def test_very_long_path(router):
    tail = "/x" * 10_000
    assert router.match("GET", "/v1.0/invoke/app/method" + tail)[1]["method"] == tail[1:]
    assert router.match("GET", "/v1.0/state" + tail) == (None, None, None)
