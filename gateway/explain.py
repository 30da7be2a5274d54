"""The decision the gateway would make for one request, step by step (`wardgate explain`).

`explain_request` builds the gateway from a loaded config and runs `Gateway.admit` with a
`Trace` recorder: the very function every request goes through, so what it reports is what
the gateway does. The token is decoded for display (marked unverified); JWKS are fetched for
real, with the caller's client session or one of its own. The upstream is never contacted:
for a proxied route, the report stops at "admitted". The `Report` is data: `to_json()` is the
`--output json` document; the command and its text output are `wardgate.commands.explain`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from difflib import SequenceMatcher
from typing import Any, Final

import aiohttp
from multidict import CIMultiDict

from wardgate.gateway.app import Admission, Gateway
from wardgate.gateway.authorizers import Authorizers
from wardgate.gateway.config import StaticIntegration
from wardgate.gateway.credentials import Credential, redact_target
from wardgate.gateway.errors import HEADER_TOO_LARGE, GatewayError
from wardgate.gateway.loading import LoadedConfig
from wardgate.gateway.matching import Consideration, Verdict
from wardgate.gateway.paths import PathEncodingError
from wardgate.gateway.proxy import create_client_session
from wardgate.gateway.recording import Check, Trace
from wardgate.gateway.routes import Route
from wardgate.gateway.tokens import bearer_token, parse_token
from wardgate.gateway.websockets import check_handshake, is_websocket_upgrade

ERRORS_DOC: Final = "docs/errors.md"
_CONSIDERED_SHOWN: Final = 5


@dataclass(slots=True)
class Report:
    """What `explain_request` found; `to_json()` is the `--output json` document."""

    method: str
    target: str
    now: float
    clock: str
    """`system` (the machine's clock) or `--at`."""
    path: str | None = None
    path_note: str | None = None
    route: str | None = None
    route_methods: list[str] | None = None
    considered: list[Consideration] = field(default_factory=list)
    auth_required: bool | None = None
    authorizer: str | None = None
    authorizer_type: str | None = None
    authorizer_why: str | None = None
    leeway: float | None = None
    token_sources: list[str] | None = None
    """Where the route reads its token, in order."""
    token_source: str | None = None
    """Where the token was found."""
    token: dict[str, Any] | None = None
    token_problem: str | None = None
    checks: list[Check] = field(default_factory=list)
    admitted: bool = False
    status: int | None = None
    code: str | None = None
    message: str | None = None
    hint: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    integration: str | None = None
    forwarded_headers: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    websocket: str | None = None
    """For a WebSocket upgrade request: what the route does with it."""
    host_tables: list[str] | None = None
    """The hostnames whose routes may serve the request's host, in the order tried (`*` for
    the routes that name no hostname); None when the gateway has no hostnames."""
    host_table: str | None = None
    """The one of them that decided the route (or the refusal)."""
    policy: list[str] = field(default_factory=list)
    """With `--gateway`: the Route paths matching the request and the rule that admitted or
    refused each (from the Routes' status)."""

    @property
    def failing_check(self) -> Check | None:
        """The check that decided a refusal (the last one traced, failed)."""
        if self.checks and not self.checks[-1].passed:
            return self.checks[-1]
        return None

    @property
    def docs(self) -> str | None:
        return f"{ERRORS_DOC}#{self.code}" if self.code is not None else None

    def _token_json(self) -> dict[str, Any] | None:
        if self.token is not None:
            return {"verified": False, **self.token}
        if self.token_problem is not None:
            return {"verified": False, "problem": self.token_problem}
        return None

    def to_json(self) -> dict[str, Any]:
        failing = self.failing_check
        return {
            "request": {"method": self.method, "target": self.target},
            "clock": {"now": self.now, "iso": iso_time(self.now), "source": self.clock},
            "path": {"normalised": self.path, "note": self.path_note},
            "host": {"tried": self.host_tables, "decided": self.host_table},
            "route": {
                "matched": self.route,
                "methods": self.route_methods,
                "considered": [
                    {
                        "pattern": c.pattern,
                        "methods": list(c.methods),
                        "verdict": str(c.verdict),
                        "detail": c.detail,
                    }
                    for c in self.considered
                ],
            },
            "auth": {
                "required": self.auth_required,
                "authorizer": self.authorizer,
                "type": self.authorizer_type,
                "why": self.authorizer_why,
                "leewaySeconds": self.leeway,
                "tokenSources": self.token_sources,
                "tokenSource": self.token_source,
            },
            "token": self._token_json(),
            "checks": [_check_json(c) for c in self.checks],
            "result": {
                "admitted": self.admitted,
                "status": self.status,
                "code": self.code,
                "message": self.message,
                "failingCheck": failing.name if failing is not None else None,
                "hint": self.hint,
                "docs": self.docs,
                "detail": self.detail,
                "integration": self.integration,
                "forwardedHeaders": self.forwarded_headers,
            },
            "websocket": self.websocket,
            "warnings": self.warnings,
            "policy": self.policy,
        }


def _check_json(check: Check) -> dict[str, Any]:
    return {
        "name": check.name,
        "passed": check.passed,
        "expected": check.expected,
        "actual": check.actual,
        "note": check.note,
    }


async def explain_request(
    loaded: LoadedConfig,
    method: str,
    target: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    *,
    at: float | None = None,
    session: aiohttp.ClientSession | None = None,
    tls: bool = False,
    server_name: str | None = None,
) -> Report:
    """Run the gateway's decision for one request with a trace; `at` fixes the clock. With
    `tls`, the request came through the TLS listener, its handshake naming `server_name`."""

    now = time.time() if at is None else at

    def clock() -> float:
        return time.time() if at is None else at

    request_headers: CIMultiDict[str] = CIMultiDict(headers)
    report = Report(method=method, target=target, now=now, clock="system" if at is None else "--at")
    client = session if session is not None else create_client_session()
    try:
        authorizers = Authorizers.build(loaded, client, clock=clock)
        report.warnings = authorizers.warnings()
        gateway = Gateway(loaded, authorizers)
        admission = Admission("explain", method, target, {})
        if tls or server_name is not None:
            if gateway.certificates is None:
                report.warnings.append("--tls/--sni: the config has no `tls`: no TLS listener")
            else:
                admission.tls = gateway.certificates.session(server_name)
        error: GatewayError | None = None
        preflight = None
        try:
            _check_head_limits(loaded, target, request_headers, report.checks)
            preflight = await gateway.admit(admission, request_headers, Trace(report.checks))
        except GatewayError as exc:
            error = exc
        finally:
            await authorizers.close()
            gateway.upstreams.close()
    finally:
        if session is None:
            await client.close()

    # A token sent in the query is never shown, as in the request log.
    report.target = redact_target(target, gateway.query_token_names)
    _describe_path(report, gateway, admission)
    credential = admission.credential
    route = admission.route
    if credential is not None:
        report.token_source = credential.where
        _describe_token(report, loaded, credential)
    elif route is None or route.credentials is None or route.credentials.default:
        authorization = request_headers.get("Authorization")
        if authorization is not None:
            report.token_source = "the Authorization header"
        _describe_token(report, loaded, authorization)
    if route is not None and route.credentials is not None and not route.credentials.default:
        report.token_sources = list(route.credentials.where)
    route_check = next((c for c in report.checks if c.name == "route"), None)
    if route is not None:
        report.route = route.pattern
        report.route_methods = list(route.methods) if route.methods is not None else ["*"]
    if route is not None and route_check is not None and route_check.passed:
        report.auth_required = route.auth is not None
        report.authorizer = route.authorizer
        auth_step = next((c for c in report.checks if c.name == "auth"), None)
        report.authorizer_why = auth_step.note if auth_step is not None else None
        if route.authorizer is not None:
            spec = loaded.config.named_authorizers().get(route.authorizer)
            if spec is not None:
                report.authorizer_type = spec.type
                report.leeway = spec.leeway
    upgrade = route is not None and is_websocket_upgrade(request_headers)
    if upgrade and route is not None and route.websocket is None:
        report.websocket = (
            "an upgrade to a route without `websocket`: the Upgrade is removed and the "
            "request served as plain HTTP"
        )
    if upgrade and error is None and preflight is None and route is not None and route.websocket:
        try:
            check_handshake(method, (1, 1), False, request_headers)
        except GatewayError as exc:
            error = exc
            report.checks.append(
                Check("websocket", False, "an opening handshake", None, str(exc.detail.get("note")))
            )
        else:
            report.websocket = _describe_websocket(route, admission, loaded)
    if error is not None:
        entry = error.error
        report.status = entry.status
        report.code = entry.code
        # What the body says (it may name more than the catalogue: the token sources).
        report.message = error.message or entry.message
        report.hint = entry.hint
        report.detail = dict(error.detail)
        return report
    report.admitted = True
    if preflight is not None:
        report.status = preflight.status
        report.integration = "CORS preflight, answered by the gateway"
        return report
    report.forwarded_headers = dict(admission.claim_headers)
    report.status, report.integration = _integration(loaded, route)
    return report


def _describe_websocket(route: Route, admission: Admission, loaded: LoadedConfig) -> str:
    """What happens to an admitted WebSocket upgrade on `route`."""
    options = route.websocket
    assert options is not None
    parts = [
        "upgrade allowed: sent to the upstream, relayed both ways once it answers 101",
        f"idle timeout {format_duration(options.idle_timeout_seconds)} (close 1001)",
    ]
    principal = admission.principal
    exp = principal.claims.get("exp") if principal is not None else None
    if not options.close_on_expiry:
        parts.append("stays open past the token's exp (closeOnExpiry: false)")
    elif isinstance(exp, int | float) and not isinstance(exp, bool):
        parts.append(f"closed with 4001 at {iso_time(float(exp) + route.leeway)} (exp + leeway)")
    elif principal is not None:
        parts.append("the token has no exp: not closed on expiry")
    prefixes = route.credentials.subprotocol_prefixes if route.credentials is not None else ()
    if prefixes:
        parts.append(
            "Sec-WebSocket-Protocol entries "
            + ", ".join(f"{p}<token>" for p in prefixes)
            + " removed before the upstream"
        )
    return "; ".join(parts)


def _check_head_limits(
    loaded: LoadedConfig,
    target: str,
    headers: Iterable[tuple[str, str]] | Mapping[str, str],
    trace: list[Check],
) -> None:
    """The server's limits on the request head, which it applies before the decision:
    `header_too_large` as the gateway would answer it."""

    limits = loaded.config.limits
    fields = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    problem = None
    if len(fields) > limits.max_headers:
        problem = f"{len(fields)} header fields, more than limits.maxHeaders"
    elif len(target) > limits.max_header_bytes:
        problem = "the request target is longer than limits.maxHeaderBytes"
    else:
        for name, value in fields:
            if len(name) + len(value.encode("utf-8", "surrogateescape")) > limits.max_header_bytes:
                problem = f"the {name} field is longer than limits.maxHeaderBytes"
                break
    if problem is None:
        return
    trace.append(Check("head", False, limits.max_header_bytes, None, problem))
    raise GatewayError(HEADER_TOO_LARGE, {"reason": problem})


def _describe_path(report: Report, gateway: Gateway, admission: Admission) -> None:

    path_check = next((c for c in report.checks if c.name == "path"), None)
    if not admission.trusted_path:
        report.path_note = path_check.note if path_check is not None else None
        return
    report.path = admission.path
    report.path_note = path_check.note if path_check is not None else None
    router = gateway.router
    if gateway.hosts is not None and admission.host is not None:
        # The table that decided, as the gateway's own match chose it.
        tables = dict(gateway.hosts.tables(admission.host))
        _, decided = gateway.hosts.match(admission.method, admission.host, admission.path)
        report.host_tables = [key or ANY_HOST_SHOWN for key in tables]
        report.host_table = None if decided is None else decided or ANY_HOST_SHOWN
        if decided is not None:
            router = tables[decided]
    try:
        explanation = router.explain_match(admission.method, admission.path, len(router))
    except PathEncodingError:  # pragma: no cover - a normalised path normalises again
        return
    report.considered = closest_first(explanation.considered, admission.path)[:_CONSIDERED_SHOWN]


ANY_HOST_SHOWN: Final = "*"
"""How the routes that name no hostname are shown among the host tables."""


def closest_first(considered: Iterable[Consideration], path: str) -> list[Consideration]:
    """Routes matching the path first (as the matcher ranks them), then the misses: those
    that went deepest into the path, then those whose pattern looks most like the path."""

    matching = {Verdict.SELECTED, Verdict.SHADOWED, Verdict.METHOD_MISMATCH}
    ranked = list(considered)
    hits = [c for c in ranked if c.verdict in matching]
    misses = [c for c in ranked if c.verdict not in matching]
    misses.sort(key=lambda c: (-(c.index or 0), -SequenceMatcher(None, c.pattern, path).ratio()))
    return hits + misses


def _describe_token(
    report: Report, loaded: LoadedConfig, authorization: str | Credential | None
) -> None:
    """The token's header and claims, decoded for display only (never trusted)."""
    if authorization is None:
        return
    try:
        if isinstance(authorization, Credential):
            token = authorization.token
        else:
            token = bearer_token(authorization, loaded.config.limits.max_token_bytes)
        parsed = parse_token(token)
    except GatewayError as exc:
        report.token_problem = f"{exc.error.code}: {exc.detail.get('note') or exc.error.message}"
        return
    report.token = {"header": dict(parsed.header), "claims": dict(parsed.claims)}


def _integration(loaded: LoadedConfig, route: Route | None) -> tuple[int | None, str]:
    """The status a static route answers with, or None for the upstream's; a description."""
    if route is None:  # pragma: no cover - admitted means routed
        return None, "?"
    for entry in loaded.config.paths:
        methods = entry.methods()
        key = None if "*" in methods else methods
        if entry.path != route.pattern or key != route.methods:
            continue
        integration = entry.effective_integration()
        if isinstance(integration, StaticIntegration):
            return integration.status, f"static response {integration.status}"
        server = loaded.config.servers.get(integration.server)
        url = server.url if server is not None else "?"
        return None, (
            f"http_proxy to server {integration.server!r} ({url}); explain does not send the "
            "request: upstream_unreachable, upstream_timeout and body_too_large are decided there"
        )
    return None, "?"  # pragma: no cover - every route comes from a path entry


def iso_time(seconds: float) -> str:
    """An epoch time as ISO 8601 UTC, whole seconds unless it has a fraction."""
    moment = datetime.fromtimestamp(seconds, UTC)
    text = moment.isoformat(timespec="milliseconds" if seconds % 1 else "seconds")
    return text.replace("+00:00", "Z")


def format_duration(seconds: float) -> str:
    """A length of time, short: `90s`, `12m05s`, `5h02m`, `3d04h`."""
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f}s" if seconds == int(seconds) else f"{seconds:.3f}s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 120:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"
