"""Route compilation: a config's paths as the router, the host tables and what each route
needs at request time (its auth, credentials, CORS rules and integration).

`build_routes` does no I/O and starts nothing: given the config and the shared services
built before it (the upstream connection pools, the metrics), it returns the table or
raises `ConfigError` naming the path.

Given the table of the config serving before (`previous`), it compiles only the entries
that changed: a path entry whose model is the same object as before (`ValidatedPaths`
hands unchanged entries over as they were) and whose surroundings are the same (the
authorizer it uses, its server and that server's CA bundle, the gateway's CORS policy,
limits and claim headers: `RouteContext`) keeps its compiled route, and the matcher keeps
the method tables of the patterns whose routes are all unchanged (`Router.build`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from wardgate.gateway.config import (
    Auth0Authorizer,
    ConfigError,
    GatewayConfig,
    HttpProxyIntegration,
    JwtAuthorizer,
    PathEntry,
    RouteAuth,
    StaticIntegration,
    SupabaseAuthorizer,
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

__all__ = ["CompiledEntry", "Route", "RouteTable", "build_routes", "claim_header_names"]


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
class CompiledEntry:
    """A path entry's compiled route, with what it was compiled from."""

    entry: PathEntry
    """The model (held, so that its `id` names it while this table lives)."""
    context: tuple[str, str]
    """The fingerprints of its authorizer and of its server (`RouteContext`)."""
    route: RouteEntry[Route]


ROUTE_AUTHORIZER_FIELDS: Final[set[str]] = {"token_sources", "forward_authorization", "leeway"}
"""What `_compile_entry` reads of a route's authorizer (its `forwardClaims` are in every
route's context, with the other authorizers')."""


@dataclass(frozen=True, slots=True)
class RouteContext:
    """What a config's routes are compiled from besides their own entries, as text to
    compare with the previous config's. Secret values (a server's `caBundle`) are in it as
    hashes only."""

    shared: str
    """The gateway's CORS policy, limits, forwarded-claim headers and default authorizer:
    every route depends on them."""
    authorizers: Mapping[str, str]
    """Of each authorizer, the fields its routes are compiled from (`ROUTE_AUTHORIZER_FIELDS`):
    a change of its issuer, audience or keys leaves its routes as they are."""
    servers: Mapping[str, str]

    @classmethod
    def of(cls, config: GatewayConfig, ca_bundles: Mapping[str, str]) -> RouteContext:
        shared = "\n".join(
            (
                config.cors.model_dump_json() if config.cors is not None else "",
                config.limits.model_dump_json(),
                ",".join(sorted(claim_header_names(config))),
                config.default_authorizer_name() or "",
            )
        )
        authorizers = {
            name: spec.model_dump_json(include=ROUTE_AUTHORIZER_FIELDS)
            for name, spec in config.named_authorizers().items()
        }
        servers: dict[str, str] = {}
        for name, server in config.servers.items():
            bundle = ca_bundles.get(name)
            digest = hashlib.sha256(bundle.encode()).hexdigest() if bundle is not None else ""
            servers[name] = f"{server.model_dump_json()} {digest}"
        return cls(shared, authorizers, servers)

    def of_entry(self, authorizer: str | None, entry: PathEntry) -> tuple[str, str]:
        integration = entry.integration
        server = integration.server if isinstance(integration, HttpProxyIntegration) else None
        return (
            self.authorizers.get(authorizer, "") if authorizer is not None else "",
            self.servers.get(server, "") if server is not None else "",
        )


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
    compiled: Mapping[int, CompiledEntry] = field(default_factory=dict)
    """Each entry's compiled route by the `id` of its model: what the next config's
    `build_routes` may reuse (this config's entries only)."""
    context: RouteContext | None = None
    upstreams: UpstreamPools | None = None
    metrics: GatewayMetrics | None = None


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
    previous: RouteTable | None = None,
) -> RouteTable:
    """The compiled paths of `config`; raises `ConfigError` for a pattern or a host table
    that cannot be built. `ca_bundles`: the PEM CA bundle of each server that names one
    (its `caBundle`, resolved). `previous`: the table of the config serving before, whose
    unchanged routes are taken as they are."""
    ca_bundles = ca_bundles or {}
    context = RouteContext.of(config, ca_bundles)
    reusable: Mapping[int, CompiledEntry] = {}
    if (
        previous is not None
        and previous.context is not None
        and previous.context.shared == context.shared
        and previous.upstreams is upstreams
        and previous.metrics is metrics
    ):
        reusable = previous.compiled
    gateway_cors = CorsRules.build(config.cors) if config.cors is not None else None
    claim_headers = claim_header_names(config)
    default_authorizer = config.default_authorizer_name()
    named_authorizers = config.named_authorizers()
    max_token_bytes = config.limits.max_token_bytes
    entries: list[RouteEntry[Route]] = []
    host_entries: list[tuple[list[str] | None, RouteEntry[Route]]] = []
    query_token_names: set[str] = set()
    compiled: dict[int, CompiledEntry] = {}
    for entry in config.paths:
        route_auth = entry.route_auth()
        authorizer = None
        if route_auth is not None:
            authorizer = route_auth.authorizer or default_authorizer
        entry_context = context.of_entry(authorizer, entry)
        earlier = reusable.get(id(entry))
        if earlier is not None and earlier.entry is entry and earlier.context == entry_context:
            compiled[id(entry)] = earlier
            route_entry = earlier.route
        else:
            route_entry = _compile_entry(
                entry,
                config,
                authorizer,
                gateway_cors=gateway_cors,
                claim_headers=claim_headers,
                named_authorizers=named_authorizers,
                max_token_bytes=max_token_bytes,
                upstreams=upstreams,
                metrics=metrics,
                ca_bundles=ca_bundles,
            )
            compiled[id(entry)] = CompiledEntry(entry, entry_context, route_entry)
        credentials = route_entry.payload.credentials
        if credentials is not None:
            query_token_names |= credentials.query_names
        entries.append(route_entry)
        host_entries.append((entry.hostnames, route_entry))
    hosts: HostTable[Route] | None = None
    try:
        if config.hostnames or any(entry.hostnames for entry in config.paths):
            hosts = HostTable.build(host_entries, config.hostnames)
            # The paths of any host (explain's near misses when no host is known).
            entries = [entry for hostnames, entry in host_entries if not hostnames]
        # The previous matcher lends the method tables of the patterns whose routes are
        # all unchanged (a host table is built anew).
        earlier_router = previous.router if previous is not None and reusable else None
        router: Router[Route] = Router.build(entries, earlier_router)
    except RouteError as exc:
        where = f"paths.{exc.index}.path" if exc.index is not None and hosts is None else "paths"
        raise ConfigError([f"{where}: {exc.reason}"]) from None
    return RouteTable(
        router,
        hosts,
        frozenset(query_token_names),
        gateway_cors,
        compiled,
        context,
        upstreams,
        metrics,
    )


def _compile_entry(
    entry: PathEntry,
    config: GatewayConfig,
    authorizer: str | None,
    *,
    gateway_cors: CorsRules | None,
    claim_headers: frozenset[str],
    named_authorizers: Mapping[str, JwtAuthorizer | Auth0Authorizer | SupabaseAuthorizer],
    max_token_bytes: int,
    upstreams: UpstreamPools,
    metrics: GatewayMetrics | None,
    ca_bundles: Mapping[str, str],
) -> RouteEntry[Route]:
    """One path entry compiled (`authorizer`: the name its auth uses, None when public)."""
    methods = entry.methods()
    any_method = "*" in methods
    route_auth = entry.route_auth()
    cors = CorsRules.build(entry.cors) if entry.cors is not None else gateway_cors
    credentials = None
    if route_auth is not None:
        spec = named_authorizers.get(authorizer) if authorizer is not None else None
        sources = route_auth.token_sources or (spec.token_sources if spec is not None else None)
        credentials = CredentialSources(sources, cors, max_token_bytes)
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
            ca_bundle=ca_bundles.get(integration_config.server),
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
    return RouteEntry(entry.path, None if any_method else frozenset(methods), route)
