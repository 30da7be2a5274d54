"""The CRD schemas and the models agree: a corpus of valid and invalid objects goes to the
real API server (server-side dry run, strict field validation) and to the models.

Some checks a structural schema cannot express (fields that take several JSON types, the
path matcher's rules, URL details). Those entries are marked `operator`: admission accepts
them, the operator reports them in status (`Accepted=False`, reason `Invalid`). Any other
disagreement fails the test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from tests.support.operator_fixtures import Objects
from wardgate.operator.kube import KubeError, object_path
from wardgate.operator.models import (
    AUTHORIZER_SPEC_ADAPTER,
    GATEWAY_SPEC_ADAPTER,
    ROUTE_SPEC_ADAPTER,
)

pytestmark = pytest.mark.cluster


@dataclass(frozen=True)
class Case:
    name: str
    spec: dict[str, Any]
    valid: bool
    operator: bool = False  # admission cannot tell; the operator reports it
    admission: bool | None = None  # when admission knowingly differs the other way


def _path(**entry: Any) -> dict[str, Any]:
    return {"gatewayRef": {"name": "api"}, "paths": [{"method": "GET", "path": "/p", **entry}]}


ROUTES = [
    Case("seed-health", _path(response={"status": "ok"}), True),
    Case(
        "seed-orders",
        _path(auth=True, integration={"type": "http_proxy", "server": "orders"}),
        True,
    ),
    Case("method-list", _path(method=["GET", "POST"], response=1), True),
    Case("auth-object", _path(auth={"authorizer": "a", "scopes": ["read"]}, response=0), True),
    Case(
        "auth-token-sources",
        _path(auth={"tokenSources": [{"type": "query", "name": "access_token"}]}, response=0),
        True,
    ),
    Case(
        "auth-token-sources-twice",
        _path(
            auth={"tokenSources": [{"type": "authorization"}, {"type": "authorization"}]},
            response=0,
        ),
        False,
        operator=True,
    ),
    # The API server drops null values before validating: a `null` response body cannot be
    # written in a Route (a static integration with no body can).
    Case("null-response", _path(response=None), True, admission=False),
    Case(
        "static",
        _path(integration={"type": "static", "status": 201, "headers": {"a": "b"}, "body": [1]}),
        True,
    ),
    Case("wildcard", _path(path="/files/*", response="x"), True),
    Case("no-paths", {"gatewayRef": {"name": "api"}}, False),
    Case("empty-paths", {"gatewayRef": {"name": "api"}, "paths": []}, False),
    Case("both-actions", _path(response=1, integration={"type": "static"}), False),
    Case("no-action", _path(), False),
    Case("unknown-integration", _path(integration={"type": "grpc"}), False),
    Case("proxy-without-server", _path(integration={"type": "http_proxy"}), False),
    Case(
        "static-with-server",
        _path(integration={"type": "static", "server": "orders"}),
        False,
    ),
    Case("unknown-field", _path(response=1, retries=3), False),
    Case(
        "no-gateway-name",
        {"gatewayRef": {}, "paths": [{"method": "GET", "path": "/", "response": 1}]},
        False,
    ),
    Case("relative-path", _path(path="p", response=1), False),
    Case("status-out-of-range", _path(integration={"type": "static", "status": 700}), False),
    Case("lowercase-method", _path(method="get", response=1), False, operator=True),
    Case("scopes-not-a-list", _path(auth={"scopes": "read"}, response=1), False, operator=True),
    Case("auth-field-typo", _path(auth={"scope": ["read"]}, response=1), False),
    Case("any-scopes", _path(auth={"anyScopes": ["read", "admin"]}, response=1), True),
    Case("empty-parameter", _path(path="/a/{}", response=1), False, operator=True),
    Case("hostnames", {**_path(response=1), "hostnames": ["api.example.com", "*.shop.test"]}, True),
    Case("hostnames-empty", {**_path(response=1), "hostnames": []}, False),
    Case("hostname-upper-case", {**_path(response=1), "hostnames": ["API.example.com"]}, False),
    Case("hostname-port", {**_path(response=1), "hostnames": ["api.example.com:443"]}, False),
    Case("hostname-scheme", {**_path(response=1), "hostnames": ["https://api.example.com"]}, False),
    Case("hostname-trailing-dot", {**_path(response=1), "hostnames": ["api.example.com."]}, False),
    Case("hostname-bare-wildcard", {**_path(response=1), "hostnames": ["*"]}, False),
    Case("hostname-wildcard-one-label", {**_path(response=1), "hostnames": ["*.com"]}, False),
    Case("hostname-inner-wildcard", {**_path(response=1), "hostnames": ["a.*.example.com"]}, False),
    Case("hostname-twice", {**_path(response=1), "hostnames": ["a.test", "a.test"]}, False),
    Case("path-hostnames", _path(response=1, hostnames=["a.example.com"]), True),
    Case("path-hostname-port", _path(response=1, hostnames=["a.example.com:80"]), False),
    Case("path-hostname-twice", _path(response=1, hostnames=["a.test", "a.test"]), False),
    Case(
        "path-hostname-within-route",
        {**_path(response=1, hostnames=["a.example.com"]), "hostnames": ["*.example.com"]},
        True,
    ),
    Case(
        "path-hostname-outside-route",
        {**_path(response=1, hostnames=["a.other.test"]), "hostnames": ["*.example.com"]},
        False,
        operator=True,
    ),
]

JWT = {"type": "jwt", "secret": "$secret.KEY", "secretRef": {"name": "keys"}}
AUTH0: dict[str, Any] = {"type": "auth0", "domain": "t.eu.auth0.com", "audience": "https://api"}
AUTHORIZERS = [
    Case("seed", {**JWT, "algorithm": "HS256", "issuer": "https://i", "audience": "aud"}, True),
    Case(
        "token-sources",
        {
            **AUTH0,
            "tokenSources": [
                {"type": "authorization"},
                {"type": "cookie", "name": "sb-access-token"},
                {"type": "query", "name": "access_token"},
                {"type": "subprotocol", "prefix": "bearer."},
            ],
        },
        True,
    ),
    Case("token-sources-empty", {**AUTH0, "tokenSources": []}, False),
    Case(
        "token-sources-twice",
        {
            **AUTH0,
            "tokenSources": [{"type": "cookie", "name": "s"}, {"type": "cookie", "name": "s"}],
        },
        False,
    ),
    Case(
        "token-sources-two-subprotocols",
        {
            **AUTH0,
            "tokenSources": [
                {"type": "subprotocol", "prefix": "a."},
                {"type": "subprotocol", "prefix": "b."},
            ],
        },
        False,
    ),
    Case(
        "token-sources-bad-name",
        {**AUTH0, "tokenSources": [{"type": "query", "name": "a&b"}]},
        False,
    ),
    Case("token-sources-unknown", {**AUTH0, "tokenSources": [{"type": "header"}]}, False),
    Case("auth0", {"type": "auth0", "domain": "t.eu.auth0.com", "audience": "https://api"}, True),
    Case(
        "supabase",
        {
            "type": "supabase",
            "projectUrl": "https://x.supabase.co",
            "jwtSecret": "$secret.S",
            "secretRef": {"name": "s"},
        },
        True,
    ),
    Case(
        "jwks",
        {"type": "jwt", "jwksUri": "https://i/jwks.json", "algorithms": ["RS256", "ES256"]},
        True,
    ),
    Case("unknown-type", {"type": "oidc"}, False),
    Case("two-key-sources", {**JWT, "jwksUri": "https://i/jwks.json"}, False),
    Case("no-key-source", {"type": "jwt"}, False),
    Case("algorithm-and-algorithms", {**JWT, "algorithm": "HS256", "algorithms": ["HS256"]}, False),
    Case("secret-with-rs256", {**JWT, "algorithm": "RS256"}, False),
    Case("jwks-with-hs256", {"type": "jwt", "jwksUri": "https://i/j", "algorithm": "HS256"}, False),
    Case("auth0-without-domain", {"type": "auth0", "audience": "a"}, False),
    Case(
        "auth0-hs256",
        {"type": "auth0", "domain": "t", "audience": "a", "algorithms": ["HS256"]},
        False,
    ),
    Case("secret-value-inline", {**JWT, "secret": "hunter2"}, False),
    Case("secret-without-ref", {"type": "jwt", "secret": "$secret.KEY"}, False),
    Case("field-of-another-type", {**JWT, "domain": "t"}, False),
    Case("negative-leeway", {**JWT, "leeway": -1}, False),
    Case("digit-secret-name", {**JWT, "secretRef": {"name": "1keys"}}, False),
    Case("issuer-number", {**JWT, "issuer": 5}, False, operator=True),
    Case(
        "auth0-url-domain",
        {"type": "auth0", "domain": "https://t.eu.auth0.com/", "audience": "a"},
        False,
    ),
    Case(
        "supabase-url-with-path",
        {"type": "supabase", "projectUrl": "https://x.supabase.co/auth/v1"},
        False,
    ),
]

GATEWAYS = [
    Case("empty", {}, True),
    Case("service-server", {"servers": {"o": {"service": {"name": "orders", "port": 80}}}}, True),
    Case(
        "url-server",
        {"servers": {"o": {"url": "https://o.example.com/v1", "readTimeout": 5}}},
        True,
    ),
    Case("autoscaling", {"autoscaling": {"minReplicas": 2, "maxReplicas": 4}}, True),
    Case(
        "selector",
        {
            "allowedRoutes": {
                "namespaces": {"from": "Selector", "selector": {"matchLabels": {"a": "b"}}}
            }
        },
        True,
    ),
    Case("resources", {"resources": {"requests": {"cpu": 1, "memory": "64Mi"}}}, True),
    Case(
        "server-both",
        {"servers": {"o": {"service": {"name": "o", "port": 80}, "url": "http://o"}}},
        False,
    ),
    Case("server-neither", {"servers": {"o": {"readTimeout": 5}}}, False),
    Case("zero-replicas", {"replicas": 0}, False),
    Case("min-above-max", {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, False),
    Case("selector-missing", {"allowedRoutes": {"namespaces": {"from": "Selector"}}}, False),
    Case("unknown-field", {"replica": 2}, False),
    Case("limits-consistent", {"limits": {"maxTokenBytes": 4096, "maxHeaderBytes": 4117}}, True),
    Case(
        "limits-token-too-large-unreachable",
        {"limits": {"maxTokenBytes": 8192, "maxHeaderBytes": 8190}},
        False,
    ),
    Case("limits-default-header-small", {"limits": {"maxHeaderBytes": 4096}}, False),
    Case("service-type", {"service": {"type": "Ingress"}}, False),
    Case("port", {"service": {"port": 70000}}, False),
    Case("hostless-url", {"servers": {"o": {"url": "http://:80"}}}, False, operator=True),
    Case(
        "server-consent",
        {"servers": {"o": {"url": "http://o", "allowedRoutes": {"namespaces": {"from": "All"}}}}},
        True,
    ),
    Case(
        "server-selector-missing",
        {
            "servers": {
                "o": {"url": "http://o", "allowedRoutes": {"namespaces": {"from": "Selector"}}}
            }
        },
        False,
    ),
    Case(
        "delegations",
        {"delegations": [{"namespace": "team-a", "paths": ["/teams/a/*"]}]},
        True,
    ),
    Case("delegation-no-paths", {"delegations": [{"namespace": "team-a", "paths": []}]}, False),
    Case(
        "delegations-overlap",
        {
            "delegations": [
                {"namespace": "team-a", "paths": ["/teams/a/*"]},
                {"namespace": "team-b", "paths": ["/teams/{team}/x"]},
            ]
        },
        False,
        operator=True,
    ),
    Case(
        "auth-policy",
        {
            "authPolicy": {
                "unauthenticated": [{"namespaces": ["docs"]}, {"paths": ["/public/*"]}],
                "authorizers": ["corp"],
                "requiredScopes": ["api"],
                "requiredClaims": {"tier": "prod", "groups": ["staff"]},
            }
        },
        True,
    ),
    Case("hostnames", {"hostnames": ["api.example.com", "*.example.com"]}, True),
    Case("hostnames-none", {"hostnames": []}, True),
    Case("hostname-upper-case", {"hostnames": ["Api.example.com"]}, False),
    Case("hostname-port", {"hostnames": ["api.example.com:8443"]}, False),
    Case("hostname-ip-literal", {"hostnames": ["[::1]"]}, False),
    Case("hostname-wildcard-one-label", {"hostnames": ["*.com"]}, False),
    Case("hostname-twice", {"hostnames": ["a.test", "*.test.org", "a.test"]}, False),
    Case("hostname-too-long", {"hostnames": [("a" * 63 + ".") * 4 + "test"]}, False),
    Case("unauthenticated-anyone", {"authPolicy": {"unauthenticated": [{}]}}, False),
    Case(
        "unauthenticated-empty",
        {"authPolicy": {"unauthenticated": [{"namespaces": []}]}},
        False,
        operator=True,
    ),
    Case(
        "unauthenticated-bad-ns",
        {"authPolicy": {"unauthenticated": [{"namespaces": ["A_"]}]}},
        False,
    ),
]


def _admitted(objects: Objects, namespace: str, kind: str, case: Case) -> tuple[bool, str]:
    body = {
        "apiVersion": "wardgate.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": case.name, "namespace": namespace},
        "spec": case.spec,
    }
    try:
        objects.api.request_blocking(
            "POST",
            object_path(kind, namespace),
            body=body,
            query=[("dryRun", "All"), ("fieldValidation", "Strict")],
        )
    except KubeError as exc:
        return False, exc.reason
    return True, ""


def _modelled(adapter: TypeAdapter[Any], case: Case) -> bool:
    try:
        adapter.validate_python(case.spec)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize(
    ("kind", "adapter", "corpus"),
    [
        ("Route", ROUTE_SPEC_ADAPTER, ROUTES),
        ("Authorizer", AUTHORIZER_SPEC_ADAPTER, AUTHORIZERS),
        ("Gateway", GATEWAY_SPEC_ADAPTER, GATEWAYS),
    ],
)
def test_admission_and_models_agree(
    objects: Objects,
    namespace: str,
    kind: str,
    adapter: TypeAdapter[Any],
    corpus: list[Case],
) -> None:
    disagreements = []
    for case in corpus:
        admitted, reason = _admitted(objects, namespace, kind, case)
        modelled = _modelled(adapter, case)
        expected_admission = (
            case.admission if case.admission is not None else case.valid or case.operator
        )
        if modelled != case.valid or admitted != expected_admission:
            disagreements.append(
                f"{case.name}: API {'accepts' if admitted else 'rejects'} ({reason[:200]}), "
                f"model {'accepts' if modelled else 'rejects'}; expected valid={case.valid}, "
                f"operator-checked={case.operator}"
            )
    assert not disagreements, "\n".join(disagreements)


def test_a_typo_in_a_route_auth_is_refused_at_apply(objects: Objects, namespace: str) -> None:
    """The admission policy of deploy/crds: `auth` has no CRD type (it may be `true`)."""
    typo = Case("typo", _path(auth={"authorizer": "a", "scope": ["read"]}, response=1), False)
    reasons: list[str] = []

    def refused() -> bool:
        admitted, reason = _admitted(objects, namespace, "Route", typo)
        reasons.append(reason)
        return not admitted

    objects.wait("the admission policy to refuse the typo", refused, timeout=30)
    assert "unknown field scope" in reasons[-1]
    assert "`scopes`" in reasons[-1]
    for auth in (True, False, {"scopes": ["read"], "anyScopes": ["a"], "claims": {"x": 1}}):
        admitted, reason = _admitted(
            objects, namespace, "Route", Case("ok", _path(auth=auth, response=1), True)
        )
        assert admitted, (auth, reason)


@pytest.mark.parametrize(
    ("kind", "spec", "message"),
    [
        (
            "Authorizer",
            {"type": "auth0", "domain": "https://t.eu.auth0.com/", "audience": "a"},
            "must be a bare domain such as `tenant.eu.auth0.com`",
        ),
        (
            "Authorizer",
            {"type": "supabase", "projectUrl": "https://x.supabase.co/auth/v1"},
            "must be the project's base URL",
        ),
        (
            "Gateway",
            {"limits": {"maxTokenBytes": 8192, "maxHeaderBytes": 8190}},
            "`maxHeaderBytes` must be at least `maxTokenBytes` + 21",
        ),
        (
            "Gateway",
            {"hostnames": ["https://api.example.com"]},
            "spec.hostnames[0]: Invalid value",
        ),
        (
            "Route",
            {**_path(response=1), "hostnames": ["API.example.com:443"]},
            "spec.hostnames[0]: Invalid value",
        ),
        (
            "Gateway",
            {"hostnames": ["a.test", "a.test"]},
            'spec.hostnames[1]: Duplicate value: "a.test"',
        ),
    ],
)
def test_admission_messages_say_what_to_write(
    objects: Objects, namespace: str, kind: str, spec: dict[str, Any], message: str
) -> None:
    admitted, reason = _admitted(objects, namespace, kind, Case("readable", spec, False))
    assert not admitted
    assert message in reason, reason
