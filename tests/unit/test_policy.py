"""The multi-team policy as a pure decision (operator/policy.py), and the matcher's pattern
containment and overlap it decides delegation with (`pattern_covers`, `patterns_overlap`).

Written as a tenant would try it: every escalation a Route of another namespace can write is
refused with its reason, and the path tricks (dot segments, encodings, case, trailing slash,
`{param}` and `*` reaching past a prefix) are decided with the matcher's own semantics,
checked against the real normaliser and router by hypothesis.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from wardgate.gateway.config import PathEntry
from wardgate.gateway.matching import (
    Match,
    PatternError,
    RouteEntry,
    Router,
    pattern_covers,
    patterns_overlap,
)
from wardgate.gateway.paths import PathEncodingError, normalise_path
from wardgate.operator.models import GATEWAY_SPEC_ADAPTER, GatewaySpec
from wardgate.operator.policy import (
    MAX_STATUS_PATHS,
    RouteVerdict,
    decide_route,
    explain_route_paths,
)

GATEWAY = ("platform", "shared")
LABELS = {"team-a": {"team": "a"}, "team-b": {"team": "b"}}


def _spec(**extra: Any) -> GatewaySpec:
    document: dict[str, Any] = {
        "defaultAuthorizer": "corp",
        "allowedRoutes": {"namespaces": {"from": "All"}},
        "servers": {
            "a-api": {
                "url": "http://a.example",
                "allowedRoutes": {
                    "namespaces": {"from": "Selector", "selector": {"matchLabels": {"team": "a"}}}
                },
            },
            "shared": {"url": "http://s.example", "allowedRoutes": {"namespaces": {"from": "All"}}},
            "platform": {"url": "http://p.example"},
        },
        "delegations": [
            {"namespace": "team-a", "paths": ["/teams/a/*"]},
            {"namespace": "team-b", "paths": ["/teams/b/*"]},
        ],
        **extra,
    }
    return GATEWAY_SPEC_ADAPTER.validate_python(document)


def _decide(namespace: str, spec: GatewaySpec, *paths: dict[str, Any]) -> RouteVerdict:
    entries = [PathEntry.model_validate(p) for p in paths]
    return decide_route(namespace, entries, GATEWAY, spec, LABELS)


def _path(path: str, **extra: Any) -> dict[str, Any]:
    action = {} if "integration" in extra else {"response": "x"}
    return {"method": "GET", "path": path, **action, **extra}


def _refusal(verdict: RouteVerdict) -> tuple[str, str]:
    assert verdict.refusal is not None, verdict
    return verdict.refusal


# --- each escalation of a tenant ---------------------------------------------------------


def test_a_tenant_route_within_its_prefix_with_a_consenting_server_is_admitted() -> None:
    verdict = _decide(
        "team-a",
        _spec(),
        _path("/teams/a/orders", auth=True, integration={"type": "http_proxy", "server": "a-api"}),
    )
    assert verdict.refusal is None
    assert verdict.shown
    rules = verdict.verdicts[0].rules
    assert rules[0] == "path: spec.delegations.0.paths.0 delegates /teams/a/* to namespace team-a"
    assert rules[1].startswith("server a-api: spec.servers.a-api.allowedRoutes.namespaces")
    assert rules[2] == "authorizer corp: spec.defaultAuthorizer"


def test_another_teams_server_is_refused_naming_the_server_and_the_rule() -> None:
    verdict = _decide(
        "team-b",
        _spec(),
        _path("/teams/b/x", auth=True, integration={"type": "http_proxy", "server": "a-api"}),
    )
    reason, message = _refusal(verdict)
    assert reason == "NotAllowed"
    assert "server 'a-api'" in message
    assert "does not accept Routes from namespace team-b" in message
    assert "spec.servers.a-api.allowedRoutes.namespaces: from: Selector" in message


def test_a_server_without_allowed_routes_serves_the_gateways_namespace_only() -> None:
    spec = _spec()
    tenant = _decide(
        "team-a",
        spec,
        _path("/teams/a/x", auth=True, integration={"type": "http_proxy", "server": "platform"}),
    )
    assert _refusal(tenant)[0] == "NotAllowed"
    assert "from: Same" in _refusal(tenant)[1]
    own = _decide(
        "platform",
        spec,
        _path("/anything", integration={"type": "http_proxy", "server": "platform"}),
    )
    assert own.refusal is None
    assert not own.shown  # nothing to say about the platform's own paths


@pytest.mark.parametrize("auth", [None, False, {"allowedApiKeyRoles": ["anon"]}])
def test_a_public_path_from_a_tenant_is_refused(auth: Any) -> None:
    path = _path("/teams/b/open") if auth is None else _path("/teams/b/open", auth=auth)
    reason, message = _refusal(_decide("team-b", _spec(), path))
    assert reason == "AuthRequired"
    assert "no rule of spec.authPolicy.unauthenticated admits namespace team-b" in message


def test_public_paths_are_admitted_only_where_a_rule_says_so() -> None:
    spec = _spec(
        authPolicy={"unauthenticated": [{"namespaces": ["team-a"], "paths": ["/teams/a/public/*"]}]}
    )
    admitted = _decide("team-a", spec, _path("/teams/a/public/status"))
    assert admitted.refusal is None
    assert (
        "auth: public, admitted by spec.authPolicy.unauthenticated.0" in admitted.verdicts[0].rules
    )
    # The right namespace outside the rule's paths, a pattern reaching past them, and
    # another namespace (within its own prefix) are refused.
    assert _refusal(_decide("team-a", spec, _path("/teams/a/private")))[0] == "AuthRequired"
    assert (
        _refusal(_decide("team-a", spec, _path("/teams/a/{section}/status")))[0] == "AuthRequired"
    )
    assert _refusal(_decide("team-b", spec, _path("/teams/b/public/x")))[0] == "AuthRequired"
    by_prefix = _spec(authPolicy={"unauthenticated": [{"paths": ["/teams/b/docs/*"]}]})
    assert _decide("team-b", by_prefix, _path("/teams/b/docs/x")).refusal is None


def test_a_weaker_authorizer_is_refused() -> None:
    spec = _spec(authPolicy={"authorizers": ["corp"]})
    reason, message = _refusal(
        _decide("team-b", spec, _path("/teams/b/x", auth={"authorizer": "partner"}))
    )
    assert reason == "AuthorizerNotAllowed"
    assert "Authorizer 'partner'" in message
    assert "spec.authPolicy.authorizers" in message
    # Without the list, only the default authorizer.
    reason, message = _refusal(
        _decide("team-b", _spec(), _path("/teams/b/x", auth={"authorizer": "partner"}))
    )
    assert reason == "AuthorizerNotAllowed"
    assert "spec.defaultAuthorizer" in message
    # The platform's own Routes pick any Authorizer.
    assert (
        _decide("platform", spec, _path("/admin", auth={"authorizer": "partner"})).refusal is None
    )


@pytest.mark.parametrize(
    "pattern",
    [
        "/*",  # the catch-all
        "/teams/*",  # a parent of the prefix
        "/teams/{team}/orders",  # a parameter standing for another team's segment
        "/teams/{team}/*",
        "/teams/a/x",  # another team's prefix
        "/teams/bb/x",  # a string prefix, not a segment prefix
        "/Teams/b/x",  # case: a different path
        "/teams",
        "/admin/*",  # a prefix no one owns yet (squatting)
    ],
)
def test_a_path_outside_the_tenants_prefixes_is_refused(pattern: str) -> None:
    reason, message = _refusal(_decide("team-b", _spec(), _path(pattern, auth=True)))
    assert reason == "PathNotDelegated"
    assert (
        f"spec.paths.0.path: {pattern} is not within the paths Gateway platform/shared" in message
    )
    assert "/teams/b/*" in message


@pytest.mark.parametrize("pattern", ["/teams/b", "/teams/b/", "/teams/b/*", "/teams/b/{id}/x"])
def test_patterns_the_prefix_matches_whole_are_admitted(pattern: str) -> None:
    assert _decide("team-b", _spec(), _path(pattern, auth=True)).refusal is None


def test_a_namespace_without_delegation_may_claim_nothing() -> None:
    reason, message = _refusal(_decide("team-c", _spec(), _path("/teams/c/x", auth=True)))
    assert reason == "PathNotDelegated"
    assert "delegates no path to namespace team-c" in message


def test_without_delegations_any_path_is_todays_behaviour() -> None:
    spec = _spec(delegations=[])
    verdict = _decide("team-b", spec, _path("/*", auth=True))
    assert verdict.refusal is None
    assert verdict.verdicts[0].rules[0].startswith("path: spec.delegations is empty")


def test_dot_segments_and_escapes_cannot_be_written_in_a_pattern() -> None:
    for pattern in ("/teams/b/../a/x", "/teams/b/%2e%2e/a", "/teams/b/%2Fa", "/teams/b/./x"):
        with pytest.raises(ValidationError):
            PathEntry.model_validate(_path(pattern))


def test_required_scopes_and_claims_are_added_and_cannot_be_changed() -> None:
    spec = _spec(
        authPolicy={
            "requiredScopes": ["api"],
            "requiredClaims": {"tier": "prod", "groups": ["staff"]},
        }
    )
    verdict = _decide(
        "team-b",
        spec,
        _path("/teams/b/x", auth={"scopes": ["orders"], "claims": {"groups": ["b"]}}),
        _path("/teams/b/y", auth=True),
    )
    assert verdict.refusal is None
    first, second = (p.auth for p in verdict.paths)
    assert first is not None
    assert second is not None
    assert first.scopes == ["orders", "api"]
    assert first.claims == {"groups": ["staff", "b"], "tier": "prod"}
    assert second.scopes == ["api"]
    assert second.claims == {"tier": "prod", "groups": ["staff"]}
    # Dropping is not expressible: an empty list still gets them; a different value is refused.
    reason, message = _refusal(
        _decide("team-b", spec, _path("/teams/b/x", auth={"scopes": [], "claims": {"tier": "dev"}}))
    )
    assert reason == "RequiredClaimConflict"
    assert "spec.paths.0.auth.claims.tier" in message
    assert (
        _refusal(
            _decide("team-b", spec, _path("/teams/b/x", auth={"claims": {"groups": "staff"}}))
        )[0]
        == "RequiredClaimConflict"
    )
    # The platform's own authenticated paths get them too; its public paths stay public.
    own = _decide("platform", spec, _path("/a", auth=True), _path("/health"))
    assert own.shown
    assert own.paths[0].auth is not None
    assert own.paths[0].auth.scopes == ["api"]
    assert own.paths[1].auth is None


def test_every_path_is_decided_and_the_first_refusal_counts_the_others() -> None:
    verdict = _decide(
        "team-b",
        _spec(),
        _path("/teams/b/ok", auth=True),
        _path("/x", auth=True),
        _path("/teams/b/y"),
    )
    assert [v.admitted for v in verdict.verdicts] == [True, False, False]
    reason, message = _refusal(verdict)
    assert reason == "PathNotDelegated"
    assert message.endswith("(and 1 more refused paths, see status.policy)")
    assert [entry["result"] for entry in verdict.status()] == ["Admitted", "Refused", "Refused"]


def test_overlapping_delegations_of_two_namespaces_are_invalid() -> None:
    with pytest.raises(ValidationError, match=r"delegations.1.paths.0: /teams/\{t\}/x"):
        _spec(
            delegations=[
                {"namespace": "team-a", "paths": ["/teams/a/*"]},
                {"namespace": "team-b", "paths": ["/teams/{t}/x"]},
            ]
        )
    # One namespace may list overlapping patterns; disjoint prefixes of two are fine.
    _spec(delegations=[{"namespace": "team-a", "paths": ["/a/*", "/a/b/*"]}])
    _spec(
        delegations=[
            {"namespace": "team-a", "paths": ["/teams/a/*"]},
            {"namespace": "team-b", "paths": ["/teams/ab/*", "/teams/b/*"]},
        ]
    )
    with pytest.raises(ValidationError, match="overlaps"):
        _spec(
            delegations=[
                {"namespace": "team-a", "paths": ["/teams/a/*"]},
                {"namespace": "team-b", "paths": ["/teams/a"]},  # `/teams/a/*` matches it
            ]
        )


# --- containment and overlap, against the real normaliser and router ---------------------

_LITERALS = ("a", "b")
_PATTERN_SEGMENT = st.sampled_from(["a", "b", "{p}", "{q}"])


@st.composite
def patterns(draw: st.DrawFn) -> str:
    segments = draw(st.lists(_PATTERN_SEGMENT, min_size=0, max_size=3))
    names: list[str] = []
    for segment in segments:  # parameter names must differ
        names.append(f"{{p{len(names)}}}" if segment.startswith("{") else segment)
    ending = draw(st.sampled_from(["", "/", "/*"]))
    pattern = "/" + "/".join(names)
    if ending == "/*":
        return pattern.rstrip("/") + "/*"
    if ending == "/" and names:
        return pattern + "/"
    return pattern


def _paths(depth: int) -> list[str]:
    """Every normalised path of up to `depth` segments over `a`, `b`, `z`, with and
    without a trailing slash: enough to witness any difference of two small patterns."""
    found = ["/"]
    for length in range(1, depth + 1):
        for segments in itertools.product(("a", "b", "z"), repeat=length):
            found.append("/" + "/".join(segments))
            found.append("/" + "/".join(segments) + "/")
    return found


_ALL_PATHS = _paths(5)


@functools.cache
def _router(pattern: str) -> Router[int]:
    return Router.build([RouteEntry(pattern, None, 0)])


def _matches(pattern: str, path: str) -> bool:
    return isinstance(_router(pattern).match("GET", path), Match)


@settings(max_examples=300, deadline=None)
@given(outer=patterns(), inner=patterns())
def test_covers_and_overlap_agree_with_the_router_on_every_path(outer: str, inner: str) -> None:
    inner_paths = {p for p in _ALL_PATHS if _matches(inner, p)}
    outer_paths = {p for p in _ALL_PATHS if _matches(outer, p)}
    assert pattern_covers(outer, inner) == (inner_paths <= outer_paths)
    assert patterns_overlap(outer, inner) == bool(inner_paths & outer_paths)
    assert patterns_overlap(inner, outer) == patterns_overlap(outer, inner)


_RAW_SEGMENT = st.sampled_from(
    ["teams", "b", "a", "x", "..", ".", "%2e%2e", "%2E", "%2e", "B", "Teams", "", "%62", "%61"]
)


@settings(max_examples=500, deadline=None)
@given(
    raw=st.lists(_RAW_SEGMENT, min_size=1, max_size=6).map(lambda s: "/" + "/".join(s)),
    pattern=st.sampled_from(
        ["/teams/b/*", "/teams/b", "/teams/b/{id}", "/teams/b/x/*", "/teams/b/"]
    ),
)
def test_no_request_reaches_a_tenant_pattern_outside_the_delegated_prefix(
    raw: str, pattern: str
) -> None:
    """A pattern admitted within `/teams/b/*` matches no request, however written (dot
    segments, encoded dots and letters, case, slashes), that the prefix does not match."""
    assert _decide("team-b", _spec(), _path(pattern, auth=True)).refusal is None
    try:
        path = normalise_path(raw)
    except PathEncodingError:
        return
    if _matches(pattern, path):
        assert _matches("/teams/b/*", path), (raw, path)
        assert not _matches("/teams/a/*", path)


def test_invalid_patterns_raise() -> None:
    with pytest.raises(PatternError):
        pattern_covers("/a/*", "/a/../b")
    with pytest.raises(PatternError):
        patterns_overlap("/a/*/b", "/a")


# --- what `wardgate explain --gateway` says ----------------------------------------------


def _route_body(
    namespace: str, name: str, paths: list[dict[str, Any]], status: dict[str, Any]
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"gatewayRef": {"name": "shared", "namespace": "platform"}, "paths": paths},
        "status": status,
    }


def test_explain_names_the_rules_of_the_routes_matching_a_path() -> None:
    accepted = {"type": "Accepted", "status": "True", "reason": "Accepted"}
    refused = {
        "type": "Accepted",
        "status": "False",
        "reason": "PathNotDelegated",
        "message": "spec.paths.0.path: /* is not within ...",
    }
    routes = [
        _route_body(
            "team-a",
            "orders",
            [_path("/teams/a/*", auth=True), _path("/teams/a/other")],
            {
                "conditions": [accepted],
                "policy": [
                    {
                        "path": "/teams/a/*",
                        "methods": ["GET"],
                        "result": "Admitted",
                        "rules": ["path: rule-1"],
                    },
                    {
                        "path": "/teams/a/other",
                        "methods": ["GET"],
                        "result": "Admitted",
                        "rules": ["path: rule-2"],
                    },
                ],
            },
        ),
        _route_body(
            "team-b",
            "catch-all",
            [_path("/*", auth=True)],
            {
                "conditions": [refused],
                "policy": [
                    {
                        "path": "/*",
                        "methods": ["GET"],
                        "result": "Refused",
                        "rules": ["path: spec.delegations"],
                    }
                ],
            },
        ),
        {
            "metadata": {"namespace": "platform", "name": "own"},
            "spec": {"gatewayRef": {"name": "shared"}, "paths": [_path("/teams/{t}/x")]},
            "status": {"conditions": [accepted]},
        },
        {
            "metadata": {"namespace": "platform", "name": "elsewhere"},
            "spec": {"gatewayRef": {"name": "other"}, "paths": [_path("/*")]},
        },
        {
            "metadata": {"namespace": "team-c", "name": "new"},
            "spec": {
                "gatewayRef": {"name": "shared", "namespace": "platform"},
                "paths": [_path("/teams/a/x")],
            },
        },
    ]
    lines = explain_route_paths(routes, GATEWAY, "/teams/a/x")
    assert lines == [
        "Route platform/own spec.paths.0 /teams/{t}/x [GET]: admitted: namespace: the "
        "Gateway's own (trusted: paths, servers, authorizers)",
        "Route team-a/orders spec.paths.0 /teams/a/* [GET]: admitted: path: rule-1",
        "Route team-b/catch-all spec.paths.0 /* [GET]: refused, the whole Route "
        "(PathNotDelegated): spec.paths.0.path: /* is not within ...; this path: path: "
        "spec.delegations",
        "Route team-c/new spec.paths.0 /teams/a/x [GET]: not decided yet (the Route has no "
        "Accepted condition)",
    ]
    assert explain_route_paths(routes, GATEWAY, "/nothing/here") == [
        "Route team-b/catch-all spec.paths.0 /* [GET]: refused, the whole Route "
        "(PathNotDelegated): spec.paths.0.path: /* is not within ...; this path: path: "
        "spec.delegations"
    ]


def test_the_status_lists_refused_paths_first_and_stays_bounded() -> None:
    paths = [_path(f"/teams/b/p{i}", auth=True) for i in range(150)]
    paths[120] = _path("/teams/a/p", auth=True)
    verdict = _decide("team-b", _spec(), *paths)
    status = verdict.status()
    assert len(status) == MAX_STATUS_PATHS
    assert status[0] == {
        "path": "/teams/a/p",
        "methods": ["GET"],
        "result": "Refused",
        "rules": ["path: spec.delegations"],
    }
    assert [s["path"] for s in status[1:3]] == ["/teams/b/p0", "/teams/b/p1"]
