"""Route compilation: a config's paths as the router, the host tables and what each route
needs at request time (its auth, credentials, CORS rules and integration).

`build_routes` does no I/O and starts nothing: given the config and the shared services
built before it (the upstream connection pools, the metrics), it returns the table or
raises `ConfigError` naming the path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from wardgate.gateway.config import (
    ConfigError,
    GatewayConfig,
    RouteAuth,
    StaticIntegration,
    WebSocketOptions,
)
from wardgate.gateway.cors import CorsRules
from wardgate.gateway.credentials import CredentialSources
from wardgate.gateway.exchange import Integration
from wardgate.gateway.hosts import HostTable
from wardgate.gateway.matching import RouteEntry, RouteError, Router
from wardgate.gateway.metrics import GatewayMetrics
from wardgate.gateway.proxy import HttpProxy
from wardgate.gateway.requestlog import json_value
from wardgate.gateway.static import StaticResponse
from wardgate.gateway.upstream import UpstreamPools

__all__ = ["Route", "RouteTable", "build_routes", "claim_header_names"]


@dataclass(frozen=True, slots=True)
class Route:
    """One configured path entry, compiled."""

    pattern: str
    methods: tuple[str, ...] | None
    auth: RouteAuth | None
    authorizer: str | None
    integration: Integration
    cors: CorsRules | None
    credentials: CredentialSources | None
    """Where the route's token comes from (None: a public route)."""
    route_json: str
    authorizer_json: str
    websocket: WebSocketOptions | None = None
    """WebSocket upgrades allowed (an `http_proxy` route)."""
    leeway: float = 0.0
    """The authorizer's leeway: a session closes on expiry when its token would be refused."""


@dataclass(frozen=True, slots=True)
class RouteTable:
    """A config's compiled paths."""

    router: Router[Route]
    """The paths of any host (all of them when the gateway does not route by hostname)."""
    hosts: HostTable[Route] | None
    """Routing by hostname, when the gateway or a path lists hostnames."""
    query_token_names: frozenset[str]
    """Query parameters that carry tokens on some route (redacted wherever shown)."""
    cors: CorsRules | None
    """The gateway-level CORS policy: for answers given before a route is known."""


def claim_header_names(config: GatewayConfig) -> frozenset[str]:
    """Lower-case names of every authorizer's `forwardClaims` headers (removed from every
    request before it goes upstream)."""
    return frozenset(
        claim.header.lower()
        for spec in config.named_authorizers().values()
        for claim in spec.forward_claims
    )


def forwards_authorization(config: GatewayConfig, authorizer: str) -> bool:
    spec = config.named_authorizers().get(authorizer)
    return spec.forward_authorization if spec is not None else False


def build_routes(
    config: GatewayConfig,
    *,
    upstreams: UpstreamPools,
    metrics: GatewayMetrics | None = None,
    ca_bundles: Mapping[str, str] | None = None,
) -> RouteTable:
    """The compiled paths of `config`; raises `ConfigError` for a pattern or a host table
    that cannot be built. `ca_bundles`: the PEM CA bundle of each server that names one
    (its `caBundle`, resolved)."""
    gateway_cors = CorsRules.build(config.cors) if config.cors is not None else None
    claim_headers = claim_header_names(config)
    default_authorizer = config.default_authorizer_name()
    named_authorizers = config.named_authorizers()
    max_token_bytes = config.limits.max_token_bytes
    entries: list[RouteEntry[Route]] = []
    host_entries: list[tuple[list[str] | None, RouteEntry[Route]]] = []
    query_token_names: set[str] = set()
    for entry in config.paths:
        methods = entry.methods()
        any_method = "*" in methods
        route_auth = entry.route_auth()
        cors = CorsRules.build(entry.cors) if entry.cors is not None else gateway_cors
        authorizer = None
        credentials = None
        if route_auth is not None:
            authorizer = route_auth.authorizer or default_authorizer
            spec = named_authorizers.get(authorizer) if authorizer is not None else None
            sources = route_auth.token_sources or (spec.token_sources if spec is not None else None)
            credentials = CredentialSources(sources, cors, max_token_bytes)
            query_token_names |= credentials.query_names
        integration_config = entry.effective_integration()
        integration: Integration
        if isinstance(integration_config, StaticIntegration):
            integration = StaticResponse(integration_config)
        else:
            integration = HttpProxy(
                integration_config,
                config.servers[integration_config.server],
                limits=config.limits,
                upstreams=upstreams,
                metrics=metrics,
                claim_headers=claim_headers,
                # An `Authorization` header the route does not read is no credential
                # the gateway verified: it does not go upstream.
                forward_authorization=(
                    forwards_authorization(config, authorizer)
                    and credentials is not None
                    and credentials.reads_authorization
                    if authorizer is not None
                    else True
                ),
                subprotocol_prefixes=(
                    credentials.subprotocol_prefixes if credentials is not None else ()
                ),
                ca_bundle=(ca_bundles or {}).get(integration_config.server),
            )
        route = Route(
            pattern=entry.path,
            methods=None if any_method else methods,
            auth=route_auth,
            authorizer=authorizer,
            integration=integration,
            cors=cors,
            credentials=credentials,
            route_json=json_value(entry.path),
            authorizer_json=json_value(authorizer),
            websocket=entry.websocket,
            leeway=(
                named_authorizers[authorizer].leeway
                if authorizer is not None and authorizer in named_authorizers
                else 0.0
            ),
        )
        route_entry = RouteEntry(entry.path, None if any_method else frozenset(methods), route)
        entries.append(route_entry)
        host_entries.append((entry.hostnames, route_entry))
    hosts: HostTable[Route] | None = None
    try:
        if config.hostnames or any(entry.hostnames for entry in config.paths):
            hosts = HostTable.build(host_entries, config.hostnames)
            # The paths of any host (explain's near misses when no host is known).
            entries = [entry for hostnames, entry in host_entries if not hostnames]
        router: Router[Route] = Router.build(entries)
    except RouteError as exc:
        where = f"paths.{exc.index}.path" if exc.index is not None and hosts is None else "paths"
        raise ConfigError([f"{where}: {exc.reason}"]) from None
    return RouteTable(router, hosts, frozenset(query_token_names), gateway_cors)
