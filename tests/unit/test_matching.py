"""Route matching: patterns, precedence, methods, duplicates and diagnostics."""

from __future__ import annotations

import pytest

from wardgate.gateway.matching import (
    DuplicateRouteError,
    Match,
    MethodError,
    MethodNotAllowed,
    NoRoute,
    PatternError,
    RouteEntry,
    Router,
    Verdict,
    validate_pattern,
)
from wardgate.gateway.paths import normalise_path


def build(*routes: tuple[str | None, str]) -> Router[str]:
    """Routes as (methods separated by spaces or None, pattern); the payload is the pattern."""
    return Router.build(
        RouteEntry(pattern, None if methods is None else frozenset(methods.split()), pattern)
        for methods, pattern in routes
    )


def matched(router: Router[str], method: str, path: str) -> Match[str]:
    result = router.match(method, path)
    assert isinstance(result, Match), result
    return result


# Patterns


@pytest.mark.parametrize(
    "pattern",
    [
        "/",
        "/health",
        "/a/",
        "/users/{id}",
        "/users/{id}/orders/{order_id}/",
        "/public/*",
        "/*",
        "/{a}/{b}/*",
        "/v1/items:batchGet",
        "/a!$&'()+,;=:@b/~x-y_z.json",
        "/.well-known/jwks.json",
        "/café",
        "/{_x9}",
    ],
)
def test_valid_patterns(pattern: str) -> None:
    validate_pattern(pattern)


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("", "must start with '/'"),
        ("health", "must start with '/'"),
        ("*", "must start with '/'"),
        ("/public/*/x", "must be the last segment"),
        ("/*/", "must be the last segment"),
        ("/public*", "'*' is only allowed as the whole last segment"),
        ("/a/b*c", "'*' is only allowed"),
        ("/users/{}", "empty parameter name"),
        ("/users/{1id}", "not an identifier"),
        ("/users/{id-x}", "not an identifier"),
        ("/users/{ id}", "not allowed in a pattern"),
        ("/users/{*}", "'*' is only allowed"),
        ("/users/{id}/{id}", "used twice"),
        ("/users/x{id}", "whole segment"),
        ("/users/{id}x", "whole segment"),
        ("/users/{id", "whole segment"),
        ("/users/id}", "whole segment"),
        ("/a%2Fb", "'%' is not allowed"),
        ("/a%20b", "'%' is not allowed"),
        ("/a?b=1", "'?' is not allowed"),
        ("/a#b", "'#' is not allowed"),
        ("/a/./b", "dot segment '.'"),
        ("/a/../b", "dot segment '..'"),
        ("/..", "dot segment"),
        ("/a/.", "dot segment"),
        ("//a", "empty segment"),
        ("/a//b", "empty segment"),
        ("/a b", "' '"),
        ("/a\\b", "not allowed in a pattern"),
        ("/a\x00", "not allowed in a pattern"),
        ("/a<b>", "not allowed in a pattern"),
    ],
)
def test_invalid_patterns(pattern: str, reason: str) -> None:
    with pytest.raises(PatternError) as caught:
        validate_pattern(pattern)
    assert reason in caught.value.reason
    assert caught.value.pattern == pattern


def test_build_reports_the_entry_index() -> None:
    with pytest.raises(PatternError) as caught:
        Router.build([RouteEntry("/ok", None, 0), RouteEntry("/a/*/b", None, 1)])
    assert caught.value.index == 1
    assert "route 1 '/a/*/b'" in str(caught.value)


# Literal, parameter and wildcard segments


def test_exact_match_is_exact() -> None:
    router = build(("GET", "/private/orders"), ("GET", "/"))
    assert matched(router, "GET", "/private/orders").params == {}
    assert matched(router, "GET", "/").pattern == "/"
    for path in [
        "/private/orders/",
        "/private/orders;x",
        "/private/orders/x",
        "/private",
        "/Private/Orders",
        "/PRIVATE/ORDERS",
        "/private/orders%3B",
    ]:
        assert isinstance(router.match("GET", path), NoRoute), path


def test_trailing_slash_is_significant() -> None:
    router = build(("GET", "/a"), ("POST", "/a/"))
    assert matched(router, "GET", "/a").pattern == "/a"
    assert matched(router, "POST", "/a/").pattern == "/a/"
    assert router.match("GET", "/a/") == MethodNotAllowed(("POST",))


def test_parameters_capture_one_non_empty_segment() -> None:
    router = build(("GET", "/users/{id}/orders/{order}"))
    result = matched(router, "GET", "/users/42/orders/a;b")
    assert result.params == {"id": "42", "order": "a;b"}
    assert result.pattern == "/users/{id}/orders/{order}"
    assert isinstance(router.match("GET", "/users/42/orders/"), NoRoute)
    assert isinstance(router.match("GET", "/users/42/orders"), NoRoute)
    assert isinstance(router.match("GET", "/users/42/orders/1/x"), NoRoute)


def test_parameters_hold_the_normalised_text() -> None:
    router = build(("GET", "/files/{name}"))
    path = normalise_path("/files/caf%c3%a9%3b")
    assert matched(router, "GET", path).params == {"name": "caf%C3%A9%3B"}


def test_non_ascii_pattern_matches_the_encoded_path() -> None:
    router = build(("GET", "/café"))
    assert matched(router, "GET", normalise_path("/café")).pattern == "/café"
    assert matched(router, "GET", normalise_path("/caf%C3%A9")).pattern == "/café"


@pytest.mark.parametrize(
    ("path", "rest"),
    [
        ("/public", ""),
        ("/public/", ""),
        ("/public/x", "x"),
        ("/public/x/y", "x/y"),
        ("/public/x/", "x/"),
    ],
)
def test_wildcard_matches_the_prefix_and_below(path: str, rest: str) -> None:
    router = build(("GET", "/public/*"))
    assert matched(router, "GET", path).params == {"*": rest}


def test_wildcard_is_segment_wise() -> None:
    router = build(("GET", "/public/*"))
    assert isinstance(router.match("GET", "/publicx"), NoRoute)
    assert isinstance(router.match("GET", "/"), NoRoute)


def test_root_wildcard_matches_everything() -> None:
    router = build((None, "/*"))
    assert matched(router, "GET", "/").params == {"*": ""}
    assert matched(router, "DELETE", "/a/b").params == {"*": "a/b"}


def test_wildcard_after_parameters_captures_both() -> None:
    router = build(("GET", "/{tenant}/files/*"))
    assert matched(router, "GET", "/t1/files/a/b").params == {"tenant": "t1", "*": "a/b"}


# Precedence


def test_literal_before_parameter_with_backtracking() -> None:
    router = build(("GET", "/a/{x}/c"), ("GET", "/a/b/{y}"))
    assert matched(router, "GET", "/a/b/c").pattern == "/a/b/{y}"
    assert matched(router, "GET", "/a/z/c").params == {"x": "z"}
    # The literal branch dead-ends at segment 2; the parameter branch takes it.
    router = build(("GET", "/a/{x}/c"), ("GET", "/a/b/d"))
    assert matched(router, "GET", "/a/b/c").params == {"x": "b"}


def test_parameter_before_wildcard() -> None:
    router = build(("GET", "/a/*"), ("GET", "/a/{x}"), ("GET", "/a/{x}/c"))
    assert matched(router, "GET", "/a/b").pattern == "/a/{x}"
    assert matched(router, "GET", "/a/b/c").pattern == "/a/{x}/c"
    assert matched(router, "GET", "/a/b/d").pattern == "/a/*"
    assert matched(router, "GET", "/a/").pattern == "/a/*"


def test_exact_end_before_wildcard() -> None:
    router = build(("GET", "/public/*"), ("GET", "/public"), ("GET", "/public/"))
    assert matched(router, "GET", "/public").pattern == "/public"
    assert matched(router, "GET", "/public/").pattern == "/public/"
    assert matched(router, "GET", "/public/x").pattern == "/public/*"


def test_deeper_wildcard_before_shallower() -> None:
    router = build(("GET", "/*"), ("GET", "/a/*"), ("GET", "/a/b/*"))
    assert matched(router, "GET", "/a/b/c").pattern == "/a/b/*"
    assert matched(router, "GET", "/a/x").pattern == "/a/*"
    assert matched(router, "GET", "/x").pattern == "/*"


def test_earlier_segment_decides() -> None:
    # Literal at segment 0 wins even though the other pattern has more literals later.
    router = build(("GET", "/a/{x}/{y}"), ("GET", "/{p}/b/c"))
    assert matched(router, "GET", "/a/b/c").pattern == "/a/{x}/{y}"


def test_order_of_configuration_does_not_matter() -> None:
    routes = [("GET", "/a/*"), ("GET", "/a/{x}/c"), ("GET", "/a/b/{y}"), ("GET", "/a/b/c")]
    for rotation in range(len(routes)):
        router = build(*routes[rotation:], *routes[:rotation])
        assert matched(router, "GET", "/a/b/c").pattern == "/a/b/c"
        assert matched(router, "GET", "/a/b/d").pattern == "/a/b/{y}"
        assert matched(router, "GET", "/a/q/c").pattern == "/a/{x}/c"
        assert matched(router, "GET", "/a/q/d").pattern == "/a/*"


# Methods


def test_method_not_allowed_lists_allow_with_head() -> None:
    router = build(("GET", "/orders"), ("POST", "/orders"), ("DELETE PUT", "/orders/{id}"))
    assert router.match("PATCH", "/orders") == MethodNotAllowed(("GET", "HEAD", "POST"))
    assert router.match("GET", "/orders/1") == MethodNotAllowed(("DELETE", "PUT"))


def test_method_is_case_sensitive() -> None:
    router = build(("GET", "/orders"))
    assert router.match("get", "/orders") == MethodNotAllowed(("GET", "HEAD"))


def test_head_is_routed_like_get() -> None:
    router = build(("GET", "/orders/{id}"), ("GET", "/static"))
    assert matched(router, "HEAD", "/orders/1").pattern == "/orders/{id}"
    assert matched(router, "HEAD", "/static").methods == frozenset({"GET"})


def test_head_listed_explicitly_gets_its_own_route() -> None:
    router = Router.build(
        [
            RouteEntry("/x", frozenset({"GET"}), "get"),
            RouteEntry("/x", frozenset({"HEAD"}), "head"),
        ]
    )
    assert matched(router, "HEAD", "/x").payload == "head"
    assert matched(router, "GET", "/x").payload == "get"


def test_head_follows_get_before_any_method() -> None:
    # A public any-method route must not answer HEAD for a protected GET of the same path.
    router = Router.build(
        [RouteEntry("/x", None, "public"), RouteEntry("/x", frozenset({"GET"}), "protected")]
    )
    assert matched(router, "HEAD", "/x").payload == "protected"
    assert matched(router, "GET", "/x").payload == "protected"
    assert matched(router, "POST", "/x").payload == "public"


def test_head_without_get_is_not_allowed() -> None:
    router = build(("POST", "/x"))
    assert router.match("HEAD", "/x") == MethodNotAllowed(("POST",))


def test_options_is_an_ordinary_method() -> None:
    router = build(("GET", "/x"), ("OPTIONS", "/y"))
    assert router.match("OPTIONS", "/x") == MethodNotAllowed(("GET", "HEAD"))
    assert matched(router, "OPTIONS", "/y").pattern == "/y"


def test_any_method() -> None:
    router = build((None, "/x/{id}"))
    for method in ["GET", "HEAD", "POST", "PROPFIND", "OPTIONS"]:
        assert matched(router, method, "/x/1").methods is None
    star = Router.build([RouteEntry("/x", frozenset({"*"}), "star")])
    assert matched(star, "PATCH", "/x").methods is None


def test_method_falls_through_to_a_less_specific_route() -> None:
    router = build(("GET", "/users/me"), ("POST", "/users/{id}"), ("DELETE", "/users/*"))
    assert matched(router, "GET", "/users/me").pattern == "/users/me"
    assert matched(router, "POST", "/users/me").pattern == "/users/{id}"
    assert matched(router, "DELETE", "/users/me").pattern == "/users/*"
    assert router.match("PUT", "/users/me") == MethodNotAllowed(("DELETE", "GET", "HEAD", "POST"))


def test_more_specific_any_method_route_wins_over_listed_method() -> None:
    router = build((None, "/a/b"), ("GET", "/a/{x}"))
    assert matched(router, "GET", "/a/b").pattern == "/a/b"


@pytest.mark.parametrize(
    ("methods", "reason"),
    [
        (frozenset(), "empty"),
        (frozenset({"get"}), "upper-case"),
        (frozenset({"GET POST"}), "upper-case"),
        (frozenset({""}), "upper-case"),
        (frozenset({"*", "GET"}), "cannot be listed with others"),
    ],
)
def test_invalid_methods(methods: frozenset[str], reason: str) -> None:
    with pytest.raises(MethodError) as caught:
        Router.build([RouteEntry("/x", methods, 0)])
    assert reason in caught.value.reason
    assert caught.value.index == 0


# Duplicates


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("GET", "/x"), ("GET", "/x")),
        (("GET POST", "/x"), ("POST", "/x")),
        ((None, "/x"), (None, "/x")),
        ((None, "/x"), ("*", "/x")),
        (("GET", "/users/{id}"), ("GET", "/users/{name}")),
        (("GET", "/{a}/x/{b}"), ("GET PUT", "/{c}/x/{d}")),
        (("GET", "/{a}/*"), ("GET", "/{b}/*")),
        (("GET", "/café"), ("GET", "/café")),
    ],
)
def test_duplicates(first: tuple[str | None, str], second: tuple[str | None, str]) -> None:
    with pytest.raises(DuplicateRouteError) as caught:
        build(("GET", "/other"), first, second)
    assert caught.value.index == 2
    assert caught.value.other_index == 1
    assert caught.value.pattern == second[1]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("GET", "/x"), ("POST", "/x")),
        (("GET", "/x"), (None, "/x")),
        (("GET", "/x"), ("HEAD", "/x")),
        (("GET", "/x"), ("GET", "/x/")),
        (("GET", "/x/{id}"), ("GET", "/x/*")),
        (("GET", "/x/{id}"), ("GET", "/x/id")),
    ],
)
def test_not_duplicates(first: tuple[str | None, str], second: tuple[str | None, str]) -> None:
    assert len(build(first, second)) == 2


# Misses, routes for a path, explanations


def test_no_route_names_the_closest_patterns() -> None:
    router = build(
        ("GET", "/health"),
        ("GET", "/private/orders"),
        ("GET", "/private/orders/{id}"),
        ("GET", "/private/invoices"),
        ("GET", "/private/users"),
    )
    result = router.match("GET", "/private/order")
    assert isinstance(result, NoRoute)
    assert result.closest == ("/private/orders", "/private/invoices", "/private/users")
    result = router.match("GET", "/private/orders/1/x")
    assert result == NoRoute(("/private/orders/{id}",))
    result = build(*(("GET", f"/r{i}") for i in range(100))).match("GET", "/z")
    assert isinstance(result, NoRoute)
    assert len(result.closest) == 3
    assert build().match("GET", "/") == NoRoute(())


def test_routes_for_path_lists_every_method_in_precedence_order() -> None:
    router = build(
        ("GET", "/a/b"),
        ("POST", "/a/b"),
        ("PUT", "/a/{x}"),
        (None, "/*"),
        ("GET", "/a/*"),
        ("GET", "/c"),
    )
    found = router.routes_for_path("/a/b")
    assert [(m.pattern, m.methods) for m in found] == [
        ("/a/b", frozenset({"GET"})),
        ("/a/b", frozenset({"POST"})),
        ("/a/{x}", frozenset({"PUT"})),
        ("/a/*", frozenset({"GET"})),
        ("/*", None),
    ]
    assert found[2].params == {"x": "b"}
    assert found[3].params == {"*": "b"}
    assert [m.pattern for m in router.routes_for_path("/nothing")] == ["/*"]
    assert build(("GET", "/a")).routes_for_path("/b") == []


def test_explain_match() -> None:
    router = build(
        ("GET", "/a/b/{y}"),
        ("POST", "/a/{x}/c"),
        (None, "/a/*"),
        ("GET", "/a/b"),
        ("GET", "/z/b/c"),
        ("GET", "/a/b/c/d"),
    )
    explanation = router.explain_match("POST", "/a//b/./c")
    assert explanation.path == "/a/b/c"
    assert explanation.result == router.match("POST", "/a/b/c")
    verdicts = [(c.pattern, c.verdict, c.index) for c in explanation.considered]
    assert verdicts == [
        ("/a/b/{y}", Verdict.METHOD_MISMATCH, None),
        ("/a/{x}/c", Verdict.SELECTED, None),
        ("/a/*", Verdict.SHADOWED, None),
        ("/a/b/c/d", Verdict.PATH_TOO_SHORT, 3),
        ("/a/b", Verdict.PATH_TOO_LONG, 2),
        ("/z/b/c", Verdict.SEGMENT_MISMATCH, 0),
    ]
    details = {c.pattern: c.detail for c in explanation.considered}
    assert details["/a/b/{y}"] == "POST is not among GET, HEAD"
    assert details["/a/*"] == "a more specific route won: '/a/{x}/c'"
    assert details["/z/b/c"] == "segment 0 is 'a', the pattern wants 'z'"
    assert len(router.explain_match("GET", "/q", near_misses=2).considered) == 2
