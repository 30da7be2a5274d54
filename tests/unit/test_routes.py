"""`build_routes`: a config's paths compiled without I/O, from the config and the shared
upstream pools alone."""

from __future__ import annotations

from wardgate.gateway.config import parse_config
from wardgate.gateway.matching import Match
from wardgate.gateway.proxy import HttpProxy, create_upstream_pools
from wardgate.gateway.routes import build_routes, claim_header_names
from wardgate.gateway.static import StaticResponse

CONFIG = {
    "authorizer": {
        "type": "jwt",
        "secret": "$secret.JWT_SECRET",
        "audience": "api",
        "forwardClaims": [{"claim": "sub", "header": "X-User"}],
    },
    "servers": {"orders": {"url": "http://127.0.0.1:9"}},
    "paths": [
        {"method": "GET", "path": "/health", "response": {"status": "ok"}},
        {
            "method": "*",
            "path": "/orders/{id}",
            "auth": {"scopes": ["read"], "tokenSources": [{"type": "query", "name": "t"}]},
            "integration": {"type": "http_proxy", "server": "orders"},
        },
    ],
}


def test_routes_are_compiled_from_the_config() -> None:
    config = parse_config(CONFIG)
    upstreams = create_upstream_pools()
    table = build_routes(config, upstreams=upstreams)
    health = table.router.match("GET", "/health")
    assert isinstance(health, Match)
    assert health.payload.auth is None
    assert isinstance(health.payload.integration, StaticResponse)
    orders = table.router.match("DELETE", "/orders/7")
    assert isinstance(orders, Match)
    route = orders.payload
    assert route.methods is None
    assert route.authorizer == "default"
    assert route.auth is not None
    assert route.auth.scopes == ["read"]
    assert isinstance(route.integration, HttpProxy)
    assert route.route_json == '"/orders/{id}"'
    assert table.query_token_names == frozenset({"t"})
    assert table.hosts is None
    assert claim_header_names(config) == frozenset({"x-user"})
    upstreams.close()
