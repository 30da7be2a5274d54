"""The gateway's request pipeline, built once from a loaded config.

Every request goes through `Gateway.respond`, one coroutine, then `Gateway.finish`
(metrics and the log line) once the server has sent the reply:

0. framing (`wardgate.gateway.framing`): `CONNECT`, transfer codings other than `chunked`,
   `Transfer-Encoding` on HTTP/1.0 and heads over `limits.maxHeadBytes` are refused, and the
   connection closes;
1. request ID: a valid incoming `X-Request-Id`, else a new one; echoed in the response;
2. the request target: origin form (`/a?b`), or absolute form (`http://host/a?b`), whose
   path is used (RFC 9112 section 3.2.2 requires servers to accept it); anything else, such
   as `OPTIONS *`, is 400 `invalid_path`;
3. `normalise_path` (400 `invalid_path` for `%2F`, `%5C` and the other refusals);
4. a CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered
   from the CORS policy of the route the actual request would take, before any auth;
5. route matching (404 `no_route`, 405 `method_not_allowed` with `Allow`); `HEAD` takes the
   `GET` route and its auth; method-override headers play no part (and are stripped before
   proxying);
6. the route's authorizer, when the route has auth;
7. the integration: a precomputed static response, or the HTTP proxy.

Steps 2-6 are the decision, `Gateway.admit`: `wardgate explain` runs the same function with
a recorder that keeps its steps (`wardgate.gateway.recording`), so what it reports is what
the gateway does.

Errors are `GatewayError`s from the catalogue, turned into replies in one place
(`Gateway.error_reply`, the status line and fixed headers encoded once per code):
`{"error": {"code", "message", "requestId"}}`, plus `detail` and `hint` in debug mode, an
RFC 6750 `WWW-Authenticate: Bearer` challenge for 401s and scope/claim 403s, and `Allow`
for 405s. Every request then gets one log line and its metrics.

The pipeline takes an `Incoming` request and returns a `Reply` (`wardgate.gateway.exchange`),
so that it runs behind the traffic server (`wardgate.gateway.traffic`, llhttp on asyncio:
`GatewayRunner`) and behind the aiohttp reference server the differential tests compare it
with (`wardgate.gateway.reference`). The aiohttp `Application` still carries the lifecycle
(`cleanup_ctx` for the shared client session and the authorizers) and typed `AppKey`s.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Final

import aiohttp
from aiohttp import web
from multidict import MultiMapping

from wardgate.gateway.authorizers import Authorizers, Principal
from wardgate.gateway.config import ConfigError
from wardgate.gateway.cors import CORS_RESPONSE_HEADERS, CorsRules, is_preflight
from wardgate.gateway.credentials import Credential, CredentialSources, redact_target
from wardgate.gateway.errors import (
    DUPLICATE_AUTHORIZATION,
    HEADER_TOO_LARGE,
    INTERNAL_ERROR,
    INVALID_PATH,
    MALFORMED_REQUEST,
    METHOD_NOT_ALLOWED,
    MISDIRECTED_REQUEST,
    NO_ROUTE,
    UNKNOWN_HOST,
    UNSUPPORTED_METHOD,
    ErrorCode,
    GatewayError,
    bearer_challenge,
)
from wardgate.gateway.exchange import (
    CLIENT_ABORT_STATUS,
    NO_HEADERS,
    SERVER_HEADER,
    ClientAborted,
    Exchange,
    Incoming,
    Reply,
    encode_head,
)
from wardgate.gateway.factory import ProcessContext
from wardgate.gateway.framing import CLOSING_ERRORS, TUNNEL_METHODS, check_framing
from wardgate.gateway.hosts import HostTable, request_host
from wardgate.gateway.loading import LoadedConfig
from wardgate.gateway.matching import (
    Match,
    MatchResult,
    MethodNotAllowed,
    Router,
)
from wardgate.gateway.memory import collection_paused
from wardgate.gateway.metrics import GatewayMetrics
from wardgate.gateway.paths import PathEncodingError, lenient_readings, normalise_path
from wardgate.gateway.proxy import HttpProxy, create_upstream_pools
from wardgate.gateway.recording import NO_RECORDER, Check, Recorder
from wardgate.gateway.requestlog import RateLimit, RequestLog, format_entry
from wardgate.gateway.routes import Route, RouteTable, build_routes
from wardgate.gateway.static import StaticResponse
from wardgate.gateway.tls import (
    CertificateSet,
    CertificateSpec,
    TlsSession,
    upstream_tls_context,
    utc_now,
)
from wardgate.gateway.tokens import clip
from wardgate.gateway.traffic import TrafficServer
from wardgate.gateway.upstream import UpstreamPools
from wardgate.gateway.websockets import WebSocketSession, check_handshake, is_websocket_upgrade

logger = logging.getLogger("wardgate.gateway")

REQUEST_ID_HEADER: Final = "X-Request-Id"
# Accepted incoming IDs: what tracing systems send (UUIDs, W3C trace IDs, ULIDs), and never
# a character that would need escaping in JSON or a header.
_REQUEST_ID_RE: Final = re.compile(r"[A-Za-z0-9._~:@+=/-]{1,128}")
_JSON: Final = "application/json"
# Request-log lines for requests the parser refused: one per request up to this rate, then
# a count of those left out (a client can send malformed requests as fast as it likes).
MALFORMED_LOG_PER_SECOND: Final = 10


class Admission(Exchange):
    """One request as `Gateway.admit` decides it: the `Exchange` the integration receives,
    plus the raw request target and what the decision established."""

    __slots__ = (
        "aborted",
        "close",
        "credential",
        "detail",
        "host",
        "principal",
        "route",
        "session",
        "started",
        "target",
        "tls",
        "trusted_path",
    )

    def __init__(
        self, request_id: str, method: str, target: str, response_headers: dict[str, str]
    ) -> None:
        # `Exchange.__init__`'s fields, set here rather than through it (a frame less per
        # request). Until the target is parsed the path is unknown: it may hold a query.
        self.request_id = request_id
        self.method = method
        self.path = ""
        self.query = ""
        self.response_headers = response_headers
        self.claim_headers = NO_HEADERS
        self.code = None
        self.authority = None
        self.target = target
        """The request target as received (origin or absolute form)."""
        self.trusted_path = False
        """Whether `path` was returned by `normalise_path`."""
        self.route: Route | None = None
        self.principal: Principal | None = None
        self.credential: Credential | None = None
        """The token and where it came from, once found."""
        self.started = 0.0
        self.detail: dict[str, Any] | None = None
        """Expected-versus-actual facts of a refusal, for the log line."""
        self.tls: TlsSession | None = None
        """The TLS connection's SNI name and certificate; None over plain HTTP."""
        self.close = False
        """Whether the connection must close after the reply."""
        self.aborted = False
        """Whether the client went away while its body was read (nothing to answer)."""
        self.host: str | None = None
        """The request's host, when the gateway routes by hostname."""
        self.session: WebSocketSession | None = None
        """The WebSocket session the request opened."""


SESSION_KEY: Final = web.AppKey("wardgate_client_session", aiohttp.ClientSession)
AUTHORIZERS_KEY: Final = web.AppKey("wardgate_authorizers", Authorizers)


class Gateway:
    """The compiled config and the request pipeline."""

    def __init__(
        self,
        loaded: LoadedConfig,
        authorizers: Authorizers,
        *,
        metrics: GatewayMetrics | None = None,
        request_log: RequestLog | None = None,
        upstreams: UpstreamPools | None = None,
        previous_certificates: CertificateSet | None = None,
        previous: Gateway | None = None,
    ) -> None:
        """`previous`: the `Gateway` serving before, whose unchanged routes are taken over
        (`build_routes`)."""
        config = loaded.config
        self.loaded = loaded
        self.authorizers = authorizers
        self.metrics = metrics
        self.request_log = request_log if request_log is not None else RequestLog(None)
        self.debug = config.debug
        self.ready = False
        self.draining = False
        self.in_flight = 0
        self._id_prefix = os.urandom(4).hex() + "-"
        self._ids = itertools.count(1)
        # The proxy's keep-alive pools: the process's (`ProcessContext`, shared by the
        # configs a `GatewayHolder` swaps), or its own when built alone (explain, a check).
        self.upstreams = upstreams if upstreams is not None else create_upstream_pools()
        ca_bundles: dict[str, str] = {}
        for server_name, server in config.servers.items():
            if server.ca_bundle is not None or server.ca_bundle_pem is not None:
                field = "caBundle" if server.ca_bundle is not None else "caBundlePem"
                bundle = (
                    loaded.secret(server.ca_bundle)
                    if server.ca_bundle is not None
                    else server.ca_bundle_pem or ""
                )
                try:
                    upstream_tls_context(bundle)
                except ValueError as exc:
                    raise ConfigError([f"servers.{server_name}.{field}: {exc}"]) from None
                ca_bundles[server_name] = bundle
        routes = build_routes(
            config,
            upstreams=self.upstreams,
            metrics=metrics,
            ca_bundles=ca_bundles,
            previous=previous.routes if previous is not None else None,
        )
        self.routes: RouteTable = routes
        """The compiled paths (the next config's `build_routes` reuses them)."""
        self.cors = routes.cors
        """The gateway-level CORS policy: for answers given before a route is known."""
        self.router: Router[Route] = routes.router
        self.hosts: HostTable[Route] | None = routes.hosts
        """Routing by hostname, when the gateway or a path lists hostnames."""
        self.query_token_names = routes.query_token_names
        """Query parameters that carry tokens on some route (redacted wherever shown)."""
        self._error_cache: dict[
            tuple[str, str | None], tuple[bytes, tuple[tuple[str, str], ...], bytes]
        ] = {}
        self._malformed_log = RateLimit(MALFORMED_LOG_PER_SECOND)
        limits = config.limits
        self.max_head_bytes = limits.head_bytes_limit()
        self.max_line_bytes = limits.max_header_bytes
        self.max_headers = limits.max_headers
        self.header_timeout = limits.header_timeout_seconds
        self.keep_alive_timeout = limits.keep_alive_timeout_seconds
        self.body_timeout = limits.body_timeout_seconds
        self.send_timeout = limits.send_timeout_seconds
        self.certificates: CertificateSet | None = None
        """The TLS listener's certificates; None when the config has no `tls`."""
        self.https_redirect_port: int | None = None
        """With `tls.redirectHttp`: plain-HTTP requests get a 308 to HTTPS on this port."""
        if config.tls is not None:
            self.certificates = build_certificates(loaded, previous_certificates)
            if config.tls.redirect_http:
                self.https_redirect_port = config.tls.https_port

    def new_request_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):x}"

    def refuse_malformed(self, reason: str, peer: str | None) -> web.Response:
        """The answer to a request the HTTP parser refused: `header_too_large` (431) for a
        field, the request line or the number of fields over the limits, else
        `malformed_request` (400); one request-log line with the reason and the peer, at
        most `MALFORMED_LOG_PER_SECOND` a second (a flood costs the log nothing)."""
        too_large = reason in ("header_too_large", "too_many_headers")
        error = GatewayError(HEADER_TOO_LARGE if too_large else MALFORMED_REQUEST)
        admission = self.begin("", "")
        reply = self.refusal(error, admission)
        self.finish_malformed(admission, reply.status, reason, peer)
        return web.Response(status=reply.status, headers=reply.all_headers(), body=reply.body)

    def finish_malformed(
        self, admission: Admission, status: int, reason: str, peer: str | None
    ) -> None:
        """`finish` for a request refused before its head was read: one request-log line
        with a fixed reason and the peer (never the bytes received), at most
        `MALFORMED_LOG_PER_SECOND` a second."""
        if self.metrics is not None:
            self.metrics.request(None, status, admission.code)
        if self.request_log.enabled:
            suppressed = self._malformed_log.admit(time.monotonic())
            if suppressed is not None:
                detail: dict[str, Any] = {"reason": reason_token(reason), "peer": peer}
                if suppressed:
                    detail["suppressedSinceLast"] = suppressed
                self.request_log.write(
                    format_entry(
                        request_id=admission.request_id,
                        method="",
                        path="",
                        route_json="null",
                        authorizer_json="null",
                        status=status,
                        code=admission.code,
                        started=admission.started,
                        detail=detail,
                    )
                )

    async def respond(self, request: Incoming) -> tuple[Reply, Admission]:
        """Decide and answer one request: the whole pipeline (see the module docstring).

        The caller sends the reply, then calls `finish` with the status sent; when the
        client went away while its body was read, `admission.aborted` is set and there is
        nothing to send."""
        started = time.perf_counter()
        headers = request.headers
        request_id = headers.get(REQUEST_ID_HEADER)
        if request_id is None or _REQUEST_ID_RE.fullmatch(request_id) is None:
            request_id = self.new_request_id()
        response_headers = {REQUEST_ID_HEADER: request_id}
        admission = Admission(request_id, request.method, request.target, response_headers)
        admission.started = started
        # Only the traffic server's TLS listener has one (the reference server has none).
        admission.tls = getattr(request, "tls", None)
        try:
            transfer_encoding = headers.get("Transfer-Encoding")
            if (
                transfer_encoding is not None
                or request.head_bytes > self.max_head_bytes
                or request.method in TUNNEL_METHODS
            ):
                # Only these can make `check_framing` refuse (the rest pass unchecked).
                admission.close = check_framing(
                    request.method,
                    request.version[1],
                    transfer_encoding,
                    request.head_bytes,
                    self.max_head_bytes,
                )
            reply = await self.admit(admission, headers)
            if reply is None:
                route = admission.route
                assert route is not None  # admit raises or sets it
                if route.websocket is not None and _switches(request):
                    # Whatever the answer, the connection closes after it unless it switches:
                    # the client may already have sent frames behind the request.
                    admission.close = True
                    reply = await self._upgrade(request, route, admission)
                else:
                    integration = route.integration
                    if type(integration) is StaticResponse:
                        reply = integration.reply(admission)
                    else:
                        reply = await integration.respond(request, admission)
        except GatewayError as exc:
            route = admission.route
            if route is not None and route.websocket is not None and _switches(request):
                admission.close = True
            reply = self.refusal(exc, admission)
        except ClientAborted:
            logger.info(
                "request %s: the client closed the connection while sending its body", request_id
            )
            admission.aborted = True
            admission.close = True
            reply = Reply(CLIENT_ABORT_STATUS, response_headers)
        except Exception:
            logger.exception("request %s failed", request_id)
            reply = self.refusal(GatewayError(INTERNAL_ERROR), admission)
        return reply, admission

    async def _upgrade(self, request: Incoming, route: Route, admission: Admission) -> Reply:
        """An authorised WebSocket upgrade: checked, then sent upstream."""
        key = check_handshake(request.method, request.version, request.has_body, request.headers)
        integration = route.integration
        assert isinstance(integration, HttpProxy)  # the config holds `websocket` to it
        options = route.websocket
        assert options is not None
        expires_at = None
        principal = admission.principal
        if options.close_on_expiry and principal is not None:
            exp = principal.claims.get("exp")
            if isinstance(exp, int | float) and not isinstance(exp, bool):
                expires_at = float(exp) + route.leeway
        session = admission.session = WebSocketSession(
            route=route.pattern,
            idle_seconds=options.idle_timeout_seconds,
            expires_at=expires_at,
            metrics=self.metrics,
        )
        return await integration.upgrade(request, admission, key, session)

    def refusal(self, error: GatewayError, admission: Admission) -> Reply:
        """The reply to a refused request, noted on its admission for `finish`."""
        admission.code = error.error.code
        admission.detail = error.detail or None
        if error.error in CLOSING_ERRORS:
            admission.close = True
        return self.error_reply(error, admission.request_id, admission.response_headers)

    def begin(self, method: str, target: str) -> Admission:
        """An admission for a request refused before its head was complete (bad framing,
        a slow head): a new request ID, no route."""
        request_id = self.new_request_id()
        admission = Admission(request_id, method, target, {REQUEST_ID_HEADER: request_id})
        admission.started = time.perf_counter()
        return admission

    def finish(self, admission: Admission, status: int, peer: str | None = None) -> None:
        """After a reply was sent (or abandoned): the request's metrics and log line (for
        a request refused as malformed, `finish_malformed`'s line)."""
        route = admission.route
        if admission.code in _PARSER_CODES and route is None:
            detail = admission.detail or {}
            reason = str(detail.get("reason") or admission.code)
            self.finish_malformed(admission, status, reason, peer)
            return
        if self.metrics is not None:
            self.metrics.request(route.pattern if route else None, status, admission.code)
        session = admission.session
        if session is not None and status == 101:
            admission.detail = {**(admission.detail or {}), "websocket": session.summary()}
        if self.request_log.enabled:
            self.request_log.write(
                format_entry(
                    request_id=admission.request_id,
                    method=admission.method,
                    path=admission.path,
                    route_json=route.route_json if route else "null",
                    authorizer_json=route.authorizer_json if route else "null",
                    status=status,
                    code=admission.code,
                    started=admission.started,
                    detail=admission.detail,
                    trusted_path=admission.trusted_path,
                )
            )

    async def admit(
        self,
        admission: Admission,
        headers: MultiMapping[str],
        recorder: Recorder = NO_RECORDER,
    ) -> Reply | None:
        """Decide one request: steps 2-6 of the module docstring, shared by `respond` and
        `wardgate explain`.

        Raises the request's `GatewayError`; returns the answer to a CORS preflight, or
        None when the request is admitted: then `admission.route` is set, with
        `admission.principal` and its claim headers when the route has auth. What was
        established before a refusal (the path, the route) stays on `admission`. Every
        step goes to `recorder` (the authorizers' steps too).
        """
        method = admission.method
        raw = admission.target
        if self.cors is not None:
            # The gateway's policy answers until a route's applies: a refusal before routing
            # (a bad path, no route) is readable by the page too.
            self.cors.apply(headers, admission.response_headers)
        if raw[:1] != "/":
            try:
                raw = _absolute_form_path(raw)
            except GatewayError as exc:
                recorder.step_from(self._target_refusal, raw, exc.detail["reason"])
                raise
        raw_path, _, admission.query = raw.partition("?")
        admission.path = raw_path
        if "#" in raw_path:
            raw_path = raw_path.partition("#")[0]
        try:
            path = normalise_path(raw_path)
        except PathEncodingError as exc:
            recorder.step("path", False, actual=raw_path, note=exc.reason)
            raise GatewayError(INVALID_PATH, {"reason": exc.reason}) from None
        admission.path = path
        admission.trusted_path = True
        recorder.step_from(_path_step, path, raw_path)
        authority = _absolute_form_host(admission.target) or headers.get("Host")
        if authority and not _AUTHORITY_RE.fullmatch(authority):
            # Upstreams parse a `Host` like `a.example:80@b.example` or `a.example/x` their
            # own way (URL parsers read `b.example`): what was routed on must be one host.
            recorder.step("host", False, "host[:port]", clip(authority), "not a host")
            raise GatewayError(
                MALFORMED_REQUEST,
                {"reason": "the Host is not host[:port]", "host": clip(authority)},
            )
        admission.authority = authority
        tls = admission.tls
        if tls is not None:
            self._check_tls(tls, admission, headers, recorder)
        if self.hosts is not None:
            host = admission.host = request_host(authority)
            if not self.hosts.serves(host):
                recorder.step("host", False, self.hosts.hostnames(), host, "not served")
                raise GatewayError(UNKNOWN_HOST, {"host": clip(host)})
            recorder.step("host", True, None, host)
        if method == "OPTIONS" and is_preflight(method, headers):
            preflight = self._preflight(path, headers, admission)
            if preflight is not None:
                recorder.step("preflight", True, note="a CORS preflight, answered before auth")
                return preflight
        result = self._match(method, path, admission.host)
        if not isinstance(result, Match):
            if isinstance(result, MethodNotAllowed):
                route = admission.route = self._any_route(path, admission.host)
                if route is not None and route.cors is not self.cors:
                    _apply_cors(route.cors, headers, admission.response_headers)
                recorder.step("route", False, list(result.allowed), method, "method not allowed")
                raise GatewayError(
                    METHOD_NOT_ALLOWED,
                    {"method": method, "allowed": list(result.allowed)},
                    {"Allow": ", ".join(result.allowed)},
                )
            recorder.step("route", False, list(result.closest), path, "no route")
            raise GatewayError(NO_ROUTE, {"path": path, "closest": list(result.closest)})
        route = admission.route = result.payload
        if method == "TRACE" and route.methods is None:
            # A route with `method: "*"` does not echo requests back: `TRACE` must be listed.
            recorder.step("route", False, "TRACE listed", "*", "TRACE not listed")
            raise GatewayError(UNSUPPORTED_METHOD, {"method": method})
        if len(path) > 1 and (";" in path or path[-1] == "/" or path != path.lower()):
            self._refuse_lenient_readings(method, path, admission.host, result, recorder)
        if route.cors is not self.cors:
            _apply_cors(route.cors, headers, admission.response_headers)
        route_auth = route.auth
        recorder.step("route", True, route.pattern, path)
        # One request, one credential: with two `Authorization` headers the gateway would
        # verify one while an upstream may read the other (or their join).
        authorizations = headers.getall("Authorization", ())
        if len(authorizations) > 1:
            recorder.step("authorization", False, 1, len(authorizations), "one header at most")
            raise GatewayError(DUPLICATE_AUTHORIZATION, {"headers": len(authorizations)})
        recorder.step_from(_auth_step, route)
        credentials = route.credentials
        if route_auth is None or credentials is None:
            return None
        # Whatever the decision, a query parameter that carries tokens never goes upstream.
        query = admission.query
        if credentials.query_names and query:
            admission.query = credentials.upstream_query(query)
        try:
            if credentials.default:
                credential: str | Credential | None = headers.get("Authorization")
                if credential is None:
                    raise self.authorizers.refuse_without_token(route_auth, recorder)
            else:
                credential = admission.credential = self._find_credential(
                    credentials, route, method, headers, query, recorder
                )
            # A token the caches know is decided without a coroutine; one to verify waits.
            principal = self.authorizers.authorize_now(route_auth, credential, recorder)
            if principal is None:
                principal = await self.authorizers.authorize(route_auth, credential, recorder)
        except GatewayError as exc:
            if self.metrics is not None:
                self.metrics.denial(exc.error.code, route.authorizer or "")
            raise
        admission.principal = principal
        admission.claim_headers = self.authorizers.forwarded_headers(principal)
        return None

    @staticmethod
    def _check_tls(
        tls: TlsSession,
        admission: Admission,
        headers: MultiMapping[str],
        recorder: Recorder,
    ) -> None:
        """421 `misdirected_request` when the host is not one the TLS connection is for
        (`wardgate.gateway.tls`: the SNI name, or a name of the certificate it selected)."""
        if tls.server_name is None:
            recorder.step_from(_tls_step, tls, None, True)
            return
        host = request_host(admission.authority)
        if tls.host_allowed(host):
            recorder.step_from(_tls_step, tls, host, True)
            return
        recorder.step_from(_tls_step, tls, host, False)
        names = list(tls.certificate.names) if tls.certificate and tls.matched else []
        raise GatewayError(
            MISDIRECTED_REQUEST,
            {"host": clip(host), "serverName": tls.server_name, "certificateNames": names},
        )

    def redirect_to_https(self, request: Incoming) -> tuple[Reply, Admission]:
        """The plain-HTTP port's answer with `tls.redirectHttp`: 308 to the same host, path
        and query over HTTPS (a host the gateway does not serve is 404 `unknown_host`)."""
        assert self.https_redirect_port is not None
        started = time.perf_counter()
        request_id = self.new_request_id()
        response_headers = {REQUEST_ID_HEADER: request_id}
        target = request.target
        admission = Admission(request_id, request.method, target, response_headers)
        admission.started = started
        host = request_host(_absolute_form_host(target) or request.headers.get("Host"))
        try:
            path = target if target[:1] == "/" else _absolute_form_path(target)
        except GatewayError as exc:
            return self.refusal(exc, admission), admission
        # The log shows the path alone: a query may carry a token.
        admission.path = path.partition("?")[0]
        if not _REDIRECT_HOST_RE.fullmatch(host) or (
            self.hosts is not None and not self.hosts.serves(host)
        ):
            error = GatewayError(UNKNOWN_HOST, {"host": clip(host)})
            return self.refusal(error, admission), admission
        port = "" if self.https_redirect_port == 443 else f":{self.https_redirect_port}"
        response_headers["Location"] = f"https://{host}{port}{path}"
        return Reply(308, response_headers), admission

    @staticmethod
    def _find_credential(
        credentials: CredentialSources,
        route: Route,
        method: str,
        headers: MultiMapping[str],
        query: str,
        recorder: Recorder,
    ) -> Credential:
        """The route's token from its `tokenSources` (a refusal recorded as the
        authorizers record theirs)."""
        try:
            return credentials.find(method, headers, query)
        except GatewayError as exc:
            detail = exc.detail
            detail.setdefault("authorizer", route.authorizer)
            recorder.refusal(detail, expected=credentials.where)
            raise

    def _target_refusal(self, raw: str, reason: str) -> Check:
        """A request target that is no path, as shown (a token in its query redacted)."""
        shown = clip(redact_target(raw, self.query_token_names))
        return Check("target", False, "a path", shown, reason)

    def _match(self, method: str, path: str, host: str | None) -> MatchResult[Route]:
        if self.hosts is None or host is None:
            return self.router.match(method, path)
        return self.hosts.match(method, host, path)[0]

    def _refuse_lenient_readings(
        self, method: str, path: str, host: str | None, chosen: Match[Route], recorder: Recorder
    ) -> None:
        """Refuse a path that upstream servers may read as another route's, protected
        otherwise (`/public/secret;x` beside a public `/public/*` and a protected
        `/public/secret`): the gateway would admit one path and the upstream serve another."""
        route = chosen.payload
        for reading in lenient_readings(path):
            other = self._match(method, reading, host)
            if (
                isinstance(other, Match)
                and other.payload is not route
                and other.payload.auth is not None
                and other.payload.auth != route.auth
            ):
                note = (
                    f"servers that ignore case, `;` parameters or a trailing slash read {reading}"
                )
                recorder.step("path", False, chosen.pattern, path, f"{note} ({other.pattern})")
                raise GatewayError(
                    INVALID_PATH,
                    {
                        "reason": f"ambiguous: {note}, which another route protects otherwise",
                        "readAs": reading,
                        "route": other.pattern,
                    },
                )

    def _any_route(self, path: str, host: str | None = None) -> Route | None:
        if self.hosts is None or host is None:
            routes = self.router.routes_for_path(path)
            return routes[0].payload if routes else None
        for _, router in self.hosts.tables(host):
            routes = router.routes_for_path(path)
            if routes:
                return routes[0].payload
        return None

    def _preflight(
        self, path: str, headers: Mapping[str, str], admission: Admission
    ) -> Reply | None:
        """The answer to a preflight, or None to handle the `OPTIONS` as any request.

        The policy is the route's that the actual request would take; for a path no route
        matches, the gateway's, so that the actual request is sent and its 404 `no_route`
        is readable by the page (a failed preflight is an opaque network error).
        """
        requested = headers.get("Access-Control-Request-Method", "")
        result = self._match(requested, path, admission.host)
        route = result.payload if isinstance(result, Match) else None
        if route is None and isinstance(result, MethodNotAllowed):
            route = self._any_route(path, admission.host)
        if route is not None:
            admission.route = route
            rules, methods = route.cors, route.methods
        else:
            rules, methods = self.cors, None
        if rules is None:
            return None
        response_headers = admission.response_headers
        for name in CORS_RESPONSE_HEADERS:
            response_headers.pop(name, None)
        response_headers.update(rules.preflight_headers(headers, methods))
        return Reply(204, response_headers)

    def error_reply(
        self, error: GatewayError, request_id: str, response_headers: Mapping[str, str]
    ) -> Reply:
        """The reply for a catalogued error (the one place errors become replies)."""
        entry = error.error
        # Keyed by the message too: a refusal's own message (which credential was missing)
        # is one of a few the config allows, so its body is rendered once, not per request.
        key = (entry.code, error.message)
        cached = self._error_cache.get(key)
        if cached is None:
            cached = _error_parts(entry, error.message)
            if len(self._error_cache) < ERROR_CACHE_ENTRIES:
                self._error_cache[key] = cached
        prefix, fixed, head = cached
        if self.debug:
            body = render_error_body(
                entry, request_id, error.detail, debug=self.debug, message=error.message
            )
        else:
            # The ID is checked (or generated) to need no JSON escaping.
            body = prefix + request_id.encode() + b'"}}'
        if error.headers:
            # Headers of this refusal (`Allow`, a challenge naming the scope) replace the
            # fixed ones of the same name: no prepared head then.
            replaced = {name.lower() for name in error.headers}
            fixed = tuple((n, v) for n, v in fixed if n.lower() not in replaced)
            return Reply(entry.status, {**error.headers, **response_headers}, body, fixed=fixed)
        return Reply(entry.status, response_headers, body, fixed=fixed, head=head)


def _tls_step(tls: TlsSession, host: str | None, passed: bool) -> Check:
    if passed:
        return Check("tls", True, tls.server_name, host, tls.describe())
    names = list(tls.certificate.names) if tls.certificate and tls.matched else []
    return Check(
        "tls",
        False,
        list(dict.fromkeys([tls.server_name, *names])),
        host,
        f"{tls.describe()}: the host is not the SNI name nor one of the certificate's names",
    )


def _path_step(path: str, raw_path: str) -> Check:
    note = "unchanged" if path == raw_path else f"normalised from {raw_path!r}"
    return Check("path", True, actual=path, note=note)


def _auth_step(route: Route) -> Check:
    """Whether a route needs auth and why this authorizer."""
    route_auth = route.auth
    if route_auth is None:
        return Check("auth", True, None, None, "not required: the route is public")
    if route_auth.authorizer is not None:
        why = f"the route names the authorizer {route_auth.authorizer!r}"
    else:
        why = f"the route says `auth`, so the Gateway's default {route.authorizer!r} applies"
    return Check("auth", True, route.authorizer, None, f"required: {why}")


def _apply_cors(
    rules: CorsRules | None, headers: Mapping[str, str], response_headers: dict[str, str]
) -> None:
    """Replace the CORS headers set so far with those of `rules` (none when None)."""
    for name in CORS_RESPONSE_HEADERS:
        response_headers.pop(name, None)
    if rules is not None:
        rules.apply(headers, response_headers)


_PARSER_CODES: Final = frozenset({MALFORMED_REQUEST.code, HEADER_TOO_LARGE.code})


def _switches(request: Incoming) -> bool:
    """Whether a request asks for a WebSocket upgrade that its server can perform (the
    traffic server marks the requests its parser read as upgrades)."""
    return bool(getattr(request, "upgrade", False)) and is_websocket_upgrade(request.headers)


# A host a redirect may name: DNS labels, an IPv4 address, or a bracketed IPv6 literal.
_REDIRECT_HOST_RE: Final = re.compile(
    r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*|\[[0-9a-f:.]+\]"
)


def build_certificates(loaded: LoadedConfig, previous: CertificateSet | None) -> CertificateSet:
    """The TLS listener's certificates of a config (raises `ConfigError` for a certificate
    that fails its check and has no earlier version serving; one that has keeps that
    version, and the error is logged)."""
    tls = loaded.config.tls
    assert tls is not None
    specs = [
        CertificateSpec(
            certificate.label(),
            loaded.secret(certificate.certificate),
            loaded.secret(certificate.key),
            tuple(certificate.hostnames or ()),
            where=f"tls.certificates.{index}",
        )
        for index, certificate in enumerate(tls.certificates)
    ]
    certificates, fatal, kept = CertificateSet.build(specs, tls.min_version, utc_now(), previous)
    if fatal:
        raise ConfigError(fatal)
    for problem in kept:
        logger.error("certificate refused: %s", problem)
    return certificates


def reason_token(text: str) -> str:
    """A parser's reason as a fixed token for the log (`Invalid header value char` →
    `invalid_header_value_char`): words of the message, never bytes of the request."""
    return re.sub(r"\W+", "_", text.lower()).strip("_")[:64] or "unknown"


# RFC 3986 section 3.2.2 and 3.2.3: an IP literal or a reg-name, then an optional port. No
# userinfo (RFC 9110 section 4.2.4), path, space or quote.
_AUTHORITY_RE: Final = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]{0,5})?"
)


def _absolute_form_host(target: str) -> str | None:
    """The authority of an absolute-form target, which replaces `Host` (RFC 9112 section
    3.2.2); None for an origin-form target."""
    if target[:1] == "/":
        return None
    lowered = target[:8].lower()
    if not lowered.startswith(("http://", "https://")):
        return None
    start = target.find("//") + 2
    end = len(target)
    for mark in "/?#":
        found = target.find(mark, start, end)
        if found >= 0:
            end = found
    return target[start:end]


def _absolute_form_path(target: str) -> str:
    """The path and query of an absolute-form request target (`http://host/a?b`)."""
    lowered = target[:8].lower()
    if lowered.startswith(("http://", "https://")):
        # The authority ends at the first `/`, `?` or `#`: a `/` inside the query
        # (`http://host?/a`) is not the start of the path.
        authority = target.find("//") + 2
        end = len(target)
        for mark in "/?#":
            found = target.find(mark, authority, end)
            if found >= 0:
                end = found
        rest = target[end:]
        return rest if rest[:1] == "/" else "/" + rest
    raise GatewayError(INVALID_PATH, {"reason": "the request target is not a path"})


def render_error_body(
    entry: ErrorCode,
    request_id: str,
    detail: Mapping[str, Any] | None,
    *,
    debug: bool,
    message: str | None = None,
) -> bytes:
    """The JSON error body; `detail` and `hint` only in debug mode."""
    error: dict[str, Any] = {
        "code": entry.code,
        "message": message or entry.message,
        "requestId": request_id,
    }
    if debug:
        error["detail"] = dict(detail or {})
        error["hint"] = entry.hint
    return json.dumps({"error": error}, separators=(",", ":"), default=str).encode()


ERROR_CACHE_ENTRIES: Final = 256


def _error_parts(
    entry: ErrorCode, message: str | None = None
) -> tuple[bytes, tuple[tuple[str, str], ...], bytes]:
    """An error's body up to the request ID, its fixed headers, and those encoded."""
    body = render_error_body(entry, "\x00", None, debug=False, message=message)
    prefix = body[: body.index(b"\\u0000")]
    fixed = [("Content-Type", _JSON), ("Server", SERVER_HEADER)]
    challenge = bearer_challenge(entry)
    if challenge is not None:
        fixed.append(("WWW-Authenticate", challenge))
    return prefix, tuple(fixed), encode_head(entry.status, fixed)


RETIRE_POLL_SECONDS: Final = 0.05


class GatewayHolder:
    """The serving `Gateway` and the hash of its config, replaced whole between requests.

    A server reads `current` for each request (the traffic server, once per request and
    per head's limits). A new config is compiled into a new `Gateway` (`build`: a
    config that fails raises `ConfigError` and changes nothing, the last good one keeps
    serving), its authorizers' keys are fetched, and only then does `current` change: one
    assignment on the event loop, so a request runs entirely on the old config or entirely
    on the new one, and none is refused meanwhile. The upstream connection pools are the
    process's, shared by every config; a replaced config's authorizers are closed once its
    last request is done, except those the new config took over unchanged (a one-Route
    change keeps every authorizer, its fetched keys and its verified-token caches)."""

    def __init__(
        self,
        gateway: Gateway,
        config_hash: str,
        context: ProcessContext,
        *,
        metrics: GatewayMetrics | None = None,
        request_log: RequestLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.current = gateway
        self.config_hash = config_hash
        self._context = context
        self._clock = clock
        self._metrics = metrics
        self._request_log = request_log
        self._retired: set[Gateway] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_swap: list[Callable[[Gateway], None]] = []
        """Called with each new serving `Gateway` (the TLS listener's versions)."""
        if metrics is not None:
            metrics.serving(config_hash)

    @property
    def in_flight(self) -> int:
        """Requests in flight on every config, the replaced ones included."""
        return self.current.in_flight + sum(g.in_flight for g in self._retired)

    def build(self, loaded: LoadedConfig) -> Gateway:
        """A `Gateway` for `loaded`, sharing this process's upstream pools (raises
        `ConfigError` as `Gateway` does; starts nothing)."""
        with collection_paused():
            # What did not change is taken over from the serving config: its authorizers
            # (with their keys and caches) and its compiled routes.
            authorizers = self._context.authorizers(
                loaded, self._metrics, self._clock, previous=self.current.authorizers
            )
            return Gateway(
                loaded,
                authorizers,
                metrics=self._metrics,
                request_log=self._request_log,
                upstreams=self._context.upstreams,
                previous_certificates=self.current.certificates,
                previous=self.current,
            )

    async def swap(self, gateway: Gateway, config_hash: str) -> None:
        """Serve `gateway` from the next request on (its keys fetched first)."""
        await gateway.authorizers.prefetch()
        gateway.ready = self.current.ready
        gateway.draining = self.current.draining
        old, self.current = self.current, gateway
        self.config_hash = config_hash
        for callback in self.on_swap:
            callback(gateway)
        if self._metrics is not None:
            self._metrics.serving(config_hash)
            self._metrics.reload(ok=True)
        logger.info(
            "serving config %s (%d paths) in place", config_hash, len(gateway.loaded.config.paths)
        )
        self._retired.add(old)
        task = asyncio.create_task(self._retire(old), name="wardgate-retire-config")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def refused(self, config_hash: str, problems: list[str]) -> None:
        """A new config failed validation: say so; the current one keeps serving."""
        if self._metrics is not None:
            self._metrics.reload(ok=False)
        logger.error(
            "config %s refused, config %s keeps serving (%d problem(s)):\n  %s",
            config_hash,
            self.config_hash,
            len(problems),
            "\n  ".join(problems),
        )

    async def _retire(self, old: Gateway) -> None:
        # The request counter has no event of its own; this runs once per config change.
        while old.in_flight:  # noqa: ASYNC110
            await asyncio.sleep(RETIRE_POLL_SECONDS)
        self._retired.discard(old)
        # An authorizer a later config took over unchanged keeps running.
        await old.authorizers.close(keep=self._serving_authorizers())

    def _serving_authorizers(self) -> list[Authorizers]:
        return [self.current.authorizers, *(g.authorizers for g in self._retired)]

    async def close(self) -> None:
        """Close every config's authorizers (the process's clients are its context's)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        closed: list[Authorizers] = []
        for gateway in (*self._retired, self.current):
            await gateway.authorizers.close(keep=closed)  # each authorizer once
            closed.append(gateway.authorizers)
        self._retired.clear()


HOLDER_KEY: Final = web.AppKey("wardgate_gateway_holder", GatewayHolder)
GATEWAY_KEY: Final = web.AppKey("wardgate_gateway", Gateway)
"""The app's first `Gateway` (`HOLDER_KEY` has the serving one)."""


def build_app(
    loaded: LoadedConfig,
    *,
    metrics: GatewayMetrics | None = None,
    request_log: RequestLog | None = None,
    clock: Callable[[], float] = time.time,
    config_hash: str | None = None,
) -> web.Application:
    """The gateway application. Its `cleanup_ctx` creates the process's clients first
    (`ProcessContext`, inside the running loop), then builds the authorizers and the
    `Gateway` with them: the `GatewayHolder` under `HOLDER_KEY`, the first `Gateway` under
    `GATEWAY_KEY`. A config that fails raises `ConfigError` from the start-up. Serve it
    with `GatewayRunner`."""
    app = web.Application()

    async def process_context(app: web.Application) -> AsyncIterator[None]:
        context = ProcessContext.create()
        try:
            authorizers = context.authorizers(loaded, metrics, clock)
            gateway = Gateway(
                loaded,
                authorizers,
                metrics=metrics,
                request_log=request_log,
                upstreams=context.upstreams,
            )
        except BaseException:
            await context.close()
            raise
        app[SESSION_KEY] = context.session
        app[AUTHORIZERS_KEY] = authorizers
        app[GATEWAY_KEY] = gateway
        app[HOLDER_KEY] = GatewayHolder(
            gateway,
            config_hash or loaded.config_hash,
            context,
            metrics=metrics,
            request_log=request_log,
            clock=clock,
        )
        try:
            yield
        finally:
            await app[HOLDER_KEY].close()
            await context.close()

    async def authorizer_lifecycle(app: web.Application) -> AsyncIterator[None]:
        gateway = app[GATEWAY_KEY]
        await app[AUTHORIZERS_KEY].prefetch()
        for warning in app[AUTHORIZERS_KEY].warnings():
            logger.warning("%s", warning)
        gateway.ready = True
        try:
            yield
        finally:
            app[HOLDER_KEY].current.ready = False

    app.cleanup_ctx.append(process_context)
    app.cleanup_ctx.append(authorizer_lifecycle)
    return app


def server_options(loaded: LoadedConfig) -> dict[str, Any]:
    """Keyword arguments of the server's request handler: the header limits of the config."""
    limits = loaded.config.limits
    return {
        "max_line_size": limits.max_header_bytes,
        "max_field_size": limits.max_header_bytes,
        "max_headers": limits.max_headers,
        "access_log": None,
        # Request bodies pass upstream as sent; decompressing them would change the bytes
        # and let a small compressed body grow past the size limit unseen.
        "auto_decompress": False,
        "keepalive_timeout": limits.keep_alive_timeout_seconds,
        "header_timeout": limits.header_timeout_seconds,
    }


class GatewayRunner(web.BaseRunner):
    """Runs a gateway application on the traffic server (`wardgate.gateway.traffic`).

    Keyword arguments of aiohttp's request handler (`server_options`) are accepted and
    unused: the traffic server reads its limits from the config."""

    __slots__ = ("_app",)

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._app = app

    @property
    def app(self) -> web.Application:
        return self._app

    @property
    def holder(self) -> GatewayHolder:
        return self._app[HOLDER_KEY]

    @property
    def gateway(self) -> Gateway:
        """The serving `Gateway` (the latest config)."""
        return self._app[HOLDER_KEY].current

    async def shutdown(self) -> None:
        await self._app.shutdown()

    def going_away(self) -> None:
        """Close the open WebSocket sessions with 1001 (the gateway drains)."""
        server = self.server
        if isinstance(server, TrafficServer):
            server.going_away()

    async def _make_server(self) -> web.Server:
        self._app.on_startup.freeze()
        await self._app.startup()
        self._app.freeze()
        return TrafficServer(self.holder, unused_handler=_not_served)

    async def _cleanup_server(self) -> None:
        await self._app.cleanup()


async def _not_served(request: web.BaseRequest) -> web.StreamResponse:
    raise web.HTTPInternalServerError  # pragma: no cover - the traffic server parses itself
