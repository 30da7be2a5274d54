"""Render with hostnames: conflicts are per host + method + path, hostnames are narrowed to the
Gateway's, and the losing Route's status names the winner, the host and why."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wardgate.gateway.config import route_pattern_key
from wardgate.gateway.hosts import hostname_covers, served_hostnames
from wardgate.operator.render import Meta, RenderResult, Resource, render

GATEWAY_KEY = ("shop", "api")
SERVED = ["a.example.com", "*.example.com", "b.test"]
# Hostnames a Route may name: served ones, names within the wildcard, names outside.
ROUTE_HOSTNAMES = ["a.example.com", "c.example.com", "*.example.com", "b.test", "x.other.org"]
PATHS = ["/orders", "/orders/{id}", "/orders/{order}", "/status", "/files/*"]
METHODS = ["GET", "POST", "*"]
TIMES = ["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"]


def _gateway(hostnames: list[str]) -> Resource:
    spec: dict[str, Any] = {"hostnames": hostnames} if hostnames else {}
    return Resource(Meta("shop", "api", uid="u1"), spec)


def _route(
    name: str,
    created: str,
    paths: list[tuple[str, str]],
    hostnames: list[str] | None,
    namespace: str = "shop",
) -> Resource:
    spec: dict[str, Any] = {
        "gatewayRef": {"name": "api", "namespace": "shop"},
        "paths": [{"method": m, "path": p, "response": name} for m, p in paths],
    }
    if hostnames is not None:
        spec["hostnames"] = hostnames
    return Resource(Meta(namespace, name, creation_timestamp=created), spec)


def _render(gateway: Resource, routes: list[Resource]) -> RenderResult:
    return render(GATEWAY_KEY, gateway, routes, [], {}, {})


def _accepted(result: RenderResult) -> dict[str, str]:
    """Route name → its Accepted condition's reason."""
    return {s.meta.name: s.conditions[0].reason for s in result.routes}


def _message(result: RenderResult, name: str) -> str:
    return next(s.conditions[0].message for s in result.routes if s.meta.name == name)


# --- examples ---------------------------------------------------------------------------------


def test_the_same_method_and_path_on_two_hosts_is_not_a_conflict() -> None:
    result = _render(
        _gateway(["a.example.com", "b.example.com"]),
        [
            _route("a", TIMES[0], [("GET", "/orders")], ["a.example.com"]),
            _route("b", TIMES[1], [("GET", "/orders")], ["b.example.com"]),
        ],
    )
    assert _accepted(result) == {"a": "Accepted", "b": "Accepted"}
    assert result.config is not None
    assert [p.hostnames for p in result.config.paths] == [["a.example.com"], ["b.example.com"]]


def test_the_same_host_method_and_path_goes_to_the_older_route_and_the_status_says_why() -> None:
    result = _render(
        _gateway(["a.example.com", "b.example.com"]),
        [
            _route("newer", TIMES[1], [("GET", "/orders/{order}")], ["b.example.com"]),
            _route("older", TIMES[0], [("GET", "/orders/{id}")], ["b.example.com"]),
        ],
    )
    assert _accepted(result) == {"older": "Accepted", "newer": "Conflict"}
    assert _message(result, "newer") == (
        "GET /orders/{order} on b.example.com is already served by Route shop/older "
        f"(spec.paths.0), which is older (created {TIMES[0]}; this Route {TIMES[1]})"
    )


def test_between_routes_created_together_namespace_then_name_decides() -> None:
    result = _render(
        _gateway([]),
        [
            _route("b", TIMES[0], [("POST", "/orders")], ["eu.shop.test"]),
            _route("a", TIMES[0], [("POST", "/orders")], ["eu.shop.test"]),
        ],
    )
    assert _accepted(result) == {"a": "Accepted", "b": "Conflict"}
    assert "Route shop/a" in _message(result, "b")
    assert f"created at the same time ({TIMES[0]}) and first by namespace/name" in _message(
        result, "b"
    )


def test_a_wildcard_an_exact_host_and_every_host_are_three_hosts() -> None:
    result = _render(
        _gateway(["*.example.com"]),
        [
            _route("wildcard", TIMES[0], [("GET", "/x")], ["*.example.com"]),
            _route("exact", TIMES[1], [("GET", "/x")], ["a.example.com"]),
            _route("any", TIMES[2], [("GET", "/x")], None),
        ],
    )
    assert set(_accepted(result).values()) == {"Accepted"}


def test_a_conflict_on_every_host_names_no_hostname_when_the_gateway_has_none() -> None:
    result = _render(
        _gateway([]),
        [
            _route("a", TIMES[0], [("GET", "/x")], None),
            _route("b", TIMES[1], [("GET", "/x")], None),
        ],
    )
    assert _message(result, "b").startswith("GET /x is already served by Route shop/a")
    result = _render(
        _gateway(["a.example.com"]),
        [
            _route("a", TIMES[0], [("GET", "/x")], None),
            _route("b", TIMES[1], [("GET", "/x")], None),
        ],
    )
    assert _message(result, "b").startswith(
        "GET /x on every host of the Gateway (no hostnames) is already served by Route shop/a"
    )


def test_a_route_whose_hostnames_the_gateway_does_not_serve_is_not_accepted() -> None:
    result = _render(
        _gateway(["*.example.com"]),
        [_route("r", TIMES[0], [("GET", "/x")], ["example.com", "api.other.org"])],
    )
    assert _accepted(result) == {"r": "NoMatchingHostname"}
    assert _message(result, "r") == (
        "spec.hostnames: Gateway shop/api serves none of example.com, api.other.org "
        "(its hostnames: *.example.com)"
    )
    assert result.config is not None
    assert result.config.paths == []


def test_a_route_naming_a_wildcard_gets_the_gateways_names_within_it() -> None:
    result = _render(
        _gateway(["a.example.com", "*.b.example.com", "other.org"]),
        [_route("r", TIMES[0], [("GET", "/x")], ["*.example.com"])],
    )
    assert result.config is not None
    assert result.config.paths[0].hostnames == ["a.example.com", "*.b.example.com"]
    assert _message(result, "r") == "1 paths attached on a.example.com, *.b.example.com"


def test_hostnames_outside_the_gateways_are_left_out_and_named() -> None:
    result = _render(
        _gateway(["a.example.com"]),
        [_route("r", TIMES[0], [("GET", "/x")], ["a.example.com", "evil.test"])],
    )
    assert result.config is not None
    assert result.config.paths[0].hostnames == ["a.example.com"]
    assert "spec.hostnames.1: evil.test is not served by Gateway shop/api" in _message(result, "r")


def test_a_paths_hostnames_must_lie_within_the_routes() -> None:
    result = _render(
        _gateway([]),
        [
            Resource(
                Meta("shop", "r", creation_timestamp=TIMES[0]),
                {
                    "gatewayRef": {"name": "api"},
                    "hostnames": ["*.example.com"],
                    "paths": [
                        {"method": "GET", "path": "/x", "hostnames": ["a.b.example.com"]}
                        | {"response": 1},
                        {"method": "GET", "path": "/y", "hostnames": ["example.com"]}
                        | {"response": 1},
                    ],
                },
            )
        ],
    )
    assert _accepted(result) == {"r": "Invalid"}
    assert _message(result, "r") == (
        "spec.paths.1.hostnames.0: example.com is not among the Route's hostnames (*.example.com)"
    )


def test_the_gateways_hostnames_reach_the_config() -> None:
    result = _render(_gateway(["a.example.com", "*.example.com"]), [])
    assert result.config is not None
    assert result.config.hostnames == ["a.example.com", "*.example.com"]
    assert result.document is not None
    assert result.document["hostnames"] == SERVED[:2]


def test_an_invalid_gateway_hostname_is_named_and_nothing_rolls_out() -> None:
    for hostnames, expected in [
        (["API.example.com"], "spec.hostnames.0: 'API.example.com' is not a hostname"),
        (["a.example.com:8080"], "spec.hostnames.0: 'a.example.com:8080' is not a hostname"),
        (["*.com"], "spec.hostnames.0: '*.com': a wildcard needs at least two labels after `*.`"),
        (["a.example.com", "a.example.com"], "spec.hostnames: a.example.com is listed twice"),
    ]:
        result = _render(_gateway(hostnames), [_route("r", TIMES[0], [("GET", "/x")], None)])
        assert result.config is None
        assert result.gateway is not None
        assert result.gateway.conditions[0].reason == "Invalid"
        assert result.gateway.conditions[0].message.startswith(expected)


# --- properties -------------------------------------------------------------------------------

route_strategy = st.tuples(
    st.sampled_from(TIMES),
    st.lists(st.tuples(st.sampled_from(METHODS), st.sampled_from(PATHS)), min_size=1, max_size=3),
    st.none() | st.lists(st.sampled_from(ROUTE_HOSTNAMES), min_size=1, max_size=3, unique=True),
)
gateway_strategy = st.sampled_from([[], SERVED, ["a.example.com"], ["*.example.com", "b.test"]])


def _routes(drawn: list[tuple[str, list[tuple[str, str]], list[str] | None]]) -> list[Resource]:
    return [_route(f"r{i}", t, paths, hosts) for i, (t, paths, hosts) in enumerate(drawn)]


def _claims(result: RenderResult) -> list[tuple[str, str, str]]:
    assert result.config is not None
    return [
        (host, method, route_pattern_key(p.path))
        for p in result.config.paths
        for host in p.hostnames or [""]
        for method in p.methods()
    ]


def _order(route: Resource) -> tuple[str, str, str]:
    return (route.meta.creation_timestamp, route.meta.namespace, route.meta.name)


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(gateway_strategy, st.lists(route_strategy, max_size=8))
def test_no_two_served_entries_share_host_method_and_path(
    served: list[str], drawn: list[tuple[str, list[tuple[str, str]], list[str] | None]]
) -> None:
    routes = _routes(drawn)
    result = _render(_gateway(served), routes)
    claims = _claims(result)
    assert len(claims) == len(set(claims))
    # Every hostname served lies within the Gateway's.
    for host, _, _ in claims:
        assert not served or not host or any(hostname_covers(s, host) for s in served)
    # A Route is left out for a conflict only by an accepted, earlier Route named in its status.
    reasons = _accepted(result)
    by_name = {r.meta.name: r for r in routes}
    for name, reason in reasons.items():
        if reason == "Conflict":
            winner = _message(result, name).split(" is already served by Route shop/")[1]
            winner = winner.split(" ")[0]
            assert reasons[winner] == "Accepted"
            assert _order(by_name[winner]) < _order(by_name[name])


@SETTINGS
@given(gateway_strategy, st.lists(route_strategy, max_size=8), st.randoms())
def test_the_order_routes_arrive_in_changes_nothing(
    served: list[str],
    drawn: list[tuple[str, list[tuple[str, str]], list[str] | None]],
    shuffler: random.Random,
) -> None:
    routes = _routes(drawn)
    shuffled = list(routes)
    shuffler.shuffle(shuffled)
    first, second = _render(_gateway(served), routes), _render(_gateway(served), shuffled)
    assert first.config_json == second.config_json
    assert first.routes == second.routes


other_host_route = st.tuples(
    st.sampled_from(TIMES),
    st.lists(st.tuples(st.sampled_from(METHODS), st.sampled_from(PATHS)), min_size=1, max_size=3),
    st.none()
    | st.lists(
        st.sampled_from([h for h in ROUTE_HOSTNAMES if h != "b.test"]),
        min_size=1,
        max_size=3,
        unique=True,
    ),
)


@SETTINGS
@given(
    st.lists(other_host_route, max_size=8),
    st.sampled_from(TIMES),
    st.lists(
        st.tuples(st.sampled_from(METHODS), st.sampled_from(PATHS)),
        min_size=1,
        max_size=3,
        unique_by=lambda entry: (entry[0], route_pattern_key(entry[1])),
    ),
    st.sampled_from([["b.test"], ["b.test", "x.other.org"]]),
)
def test_a_route_on_another_host_never_changes_the_winners_on_this_one(
    drawn: list[tuple[str, list[tuple[str, str]], list[str] | None]],
    created: str,
    paths: list[tuple[str, str]],
    hostnames: list[str],
) -> None:
    # The existing Routes name hosts of example.com, or none (every host); the new one, of any
    # age, names b.test, which none of them names.
    served = ["*.example.com", "b.test"]
    routes = _routes(drawn)
    before = _render(_gateway(served), routes)
    after = _render(_gateway(served), [*routes, _route("new", created, paths, hostnames)])
    assert [s for s in after.routes if s.meta.name != "new"] == list(before.routes)
    assert _accepted(after)["new"] == "Accepted"
    assert before.config is not None
    assert after.config is not None
    assert [p for p in after.config.paths if p.hostnames != ["b.test"]] == before.config.paths


@SETTINGS
@given(st.lists(st.sampled_from(ROUTE_HOSTNAMES), min_size=1, max_size=4, unique=True))
def test_narrowed_hostnames_match_exactly_the_hosts_both_match(requested: list[str]) -> None:
    probes = ["a.example.com", "c.example.com", "x.a.example.com", "example.com", "b.test"]
    probes += ["x.other.org", "other.org"]
    narrowed = served_hostnames(requested, SERVED)
    for host in probes:
        both = any(_match(r, host) for r in requested) and any(_match(s, host) for s in SERVED)
        assert both == any(_match(n, host) for n in narrowed), host


def _match(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return pattern == host


def test_a_gateway_hostname_no_route_serves_is_a_warning_not_a_failure() -> None:
    routes = [_route("a", TIMES[0], [("GET", "/x")], ["a.example.com"])]
    result = _render(_gateway(["*.example.com", "idle.test"]), routes)
    assert result.gateway is not None
    assert result.gateway.ready
    assert [(c.type, c.status) for c in result.gateway.conditions] == [
        ("Accepted", "True"),
        ("ResolvedRefs", "True"),
        ("ConfigWarnings", "True"),
    ]
    assert result.gateway.conditions[2].message == (
        "spec.hostnames.1: no accepted Route serves idle.test, every request for it is 404 "
        "`no_route`"
    )
    # A Route without hostnames serves every host: nothing to warn of.
    routes.append(_route("b", TIMES[1], [("GET", "/y")], None))
    result = _render(_gateway(["*.example.com", "idle.test"]), routes)
    assert result.gateway is not None
    assert "ConfigWarnings" not in [c.type for c in result.gateway.conditions]
