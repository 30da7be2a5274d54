"""Fuzzing the config models: random documents never crash validation (only `ConfigError`,
with dotted-path problems), and every document that validates round-trips through
`model_dump(by_alias=True)` back to an equal config. The matcher is fuzzed against a
reference in `tests/unit/test_matching_properties.py`, the token parser and the authorizers
in `tests/unit/test_tokens.py` and `tests/unit/test_authorizers.py`.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import results
from wardgate.gateway.config import ConfigError, GatewayConfig, parse_config
from wardgate.gateway.embedded import demo_document

SUITE = "config fuzzing"
KEYS = [
    "authorizer",
    "authorizers",
    "defaultAuthorizer",
    "servers",
    "paths",
    "cors",
    "limits",
    "debug",
    "drainSeconds",
    "type",
    "secret",
    "jwks",
    "jwksUri",
    "algorithm",
    "algorithms",
    "issuer",
    "audience",
    "leeway",
    "requiredClaims",
    "forwardClaims",
    "claim",
    "header",
    "domain",
    "projectUrl",
    "jwtSecret",
    "method",
    "path",
    "auth",
    "response",
    "integration",
    "server",
    "stripPrefix",
    "status",
    "headers",
    "body",
    "url",
    "connectTimeout",
    "readTimeout",
    "scopes",
    "claims",
    "allowOrigins",
    "maxTokenBytes",
    "maxBodyBytes",
]
STRINGS = st.sampled_from(
    [
        "jwt",
        "auth0",
        "supabase",
        "static",
        "http_proxy",
        "GET",
        "*",
        "POST",
        "HS256",
        "RS256",
        "none",
        "/health",
        "/a/{id}",
        "/a/*",
        "/{x}/{x}",
        "//",
        "orders",
        "$secret.JWT_SECRET",
        "$secret.",
        "plain-secret",
        "http://127.0.0.1:1",
        "https://issuer.example.com",
        "tenant.auth0.com",
        "https://ref.supabase.co",
        "",
    ]
) | st.text(max_size=12)
SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | STRINGS
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=30,
)

SEED: dict[str, Any] = demo_document("http://127.0.0.1:9000")


def check(document: object) -> None:
    problems: list[str] | None = None
    try:
        config = parse_config(document)
    except ConfigError as exc:
        problems = exc.problems
    if problems is not None:
        assert problems
        assert all(isinstance(p, str) and p for p in problems)
        results.record(SUITE, "invalid documents refused with ConfigError")
        return
    dumped = config.model_dump(mode="json", by_alias=True)
    assert parse_config(dumped) == config
    assert parse_config(copy.deepcopy(dumped)).model_dump(mode="json", by_alias=True) == dumped
    results.record(SUITE, "valid documents round-tripped")


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_random_documents_never_crash_validation(document: object) -> None:
    check(document)


@st.composite
def mutated_seed(draw: st.DrawFn) -> object:
    """The seed example with a few values somewhere in it replaced by random JSON."""
    document: Any = copy.deepcopy(SEED)
    for _ in range(draw(st.integers(0, 3))):
        node = document
        path: list[Any] = []
        while isinstance(node, dict | list) and node and draw(st.booleans()):
            key = draw(
                st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node)))
            )
            path.append(key)
            node = node[key]
        if not path:
            continue
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()):
            parent[path[-1]] = draw(JSON)
        elif isinstance(parent, dict):
            del parent[path[-1]]
    return document


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_seed())
def test_mutated_seed_never_crashes_and_round_trips(document: object) -> None:
    check(document)


def test_the_seed_round_trips() -> None:
    check(SEED)
    assert isinstance(parse_config(SEED), GatewayConfig)
