"""`wardgate explain`: the decision the gateway would make for one request, step by step.

It builds the gateway from the config (a file, or the ConfigMap the operator renders for a
Gateway) and runs `Gateway.admit` with a `Trace` recorder: the very function every request
goes through, so what it reports is what the gateway does. The token is decoded for display
(marked unverified); JWKS are fetched for real, with this command's own client session.
The upstream is never contacted: for a proxied route, explain stops at "admitted".
With `--gateway`, it also lists the Route paths of that Gateway matching the request and
the rule of the Gateway's policy that admitted or refused each (docs/multi-team.md).

Exit status: 0 when the request would be admitted, 1 when refused, 2 when the config or
the arguments cannot be used.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import aiohttp

    from wardgate.gateway.app import Admission, Gateway, Route
    from wardgate.gateway.credentials import Credential
    from wardgate.gateway.loading import LoadedConfig
    from wardgate.gateway.matching import Consideration
    from wardgate.gateway.recording import Check

ERRORS_DOC: Final = "docs/errors.md"
UNVERIFIED: Final = "UNVERIFIED"
_TIME_CHECKS: Final = frozenset({"exp", "nbf", "iat"})
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
    from multidict import CIMultiDict

    from wardgate.gateway.app import Admission, Gateway
    from wardgate.gateway.authorizers import Authorizers
    from wardgate.gateway.credentials import redact_target
    from wardgate.gateway.errors import GatewayError
    from wardgate.gateway.proxy import create_client_session
    from wardgate.gateway.recording import Check, Trace
    from wardgate.gateway.websockets import check_handshake, is_websocket_upgrade

    now = time.time() if at is None else at

    def clock() -> float:
        return time.time() if at is None else at

    request_headers: CIMultiDict[str] = CIMultiDict(headers)
    report = Report(method=method, target=target, now=now, clock="system" if at is None else "--at")
    client = session if session is not None else create_client_session()
    try:
        authorizers = Authorizers.build(loaded, lambda: client, clock=clock)
        report.warnings = authorizers.warnings()
        gateway = Gateway(loaded, authorizers, lambda: client)
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
        f"idle timeout {_duration(options.idle_timeout_seconds)} (close 1001)",
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
    from wardgate.gateway.errors import HEADER_TOO_LARGE, GatewayError
    from wardgate.gateway.recording import Check

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
    from wardgate.gateway.paths import PathEncodingError

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


def _describe_host_tables(report: Report) -> str:
    """Which hostnames' routes were tried, in order, and which one decided."""
    tried = report.host_tables
    if tried is None:
        return ""
    if not tried:
        return ": served, but no route names it"
    shown = ["any host" if key == ANY_HOST_SHOWN else key for key in tried]
    decided = report.host_table
    text = f": routes of {', then '.join(shown)}"
    if decided is not None and len(tried) > 1:
        text += f"; decided by {'any host' if decided == ANY_HOST_SHOWN else decided}"
    return text


def closest_first(considered: Iterable[Consideration], path: str) -> list[Consideration]:
    """Routes matching the path first (as the matcher ranks them), then the misses: those
    that went deepest into the path, then those whose pattern looks most like the path."""
    from difflib import SequenceMatcher

    from wardgate.gateway.matching import Verdict

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
    from wardgate.gateway.credentials import Credential
    from wardgate.gateway.errors import GatewayError
    from wardgate.gateway.tokens import bearer_token, parse_token

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
    from wardgate.gateway.config import StaticIntegration

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


# --- text output ---------------------------------------------------------------------


def iso_time(seconds: float) -> str:
    """An epoch time as ISO 8601 UTC, whole seconds unless it has a fraction."""
    moment = datetime.fromtimestamp(seconds, UTC)
    text = moment.isoformat(timespec="milliseconds" if seconds % 1 else "seconds")
    return text.replace("+00:00", "Z")


def _duration(seconds: float) -> str:
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


def _value(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False, default=str)


def _time_value(value: Any) -> str:
    if _is_number(value):
        return f"{iso_time(float(value))} ({_number(value)})"
    return _value(value)


def _number(value: Any) -> str:
    """A number without a useless `.0`."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _describe_check(check: Check, report: Report) -> str:
    name, expected, actual, note = check.name, check.expected, check.actual, check.note
    failing = not check.passed
    detail = report.detail if failing else {}
    if name == "format" and check.passed:
        return note or "a well-formed JWT"
    if name == "authorization" and check.passed:
        return f"{actual} ({note})"
    if name == "algorithm":
        accepted = _value(expected) if expected is not None else "?"
        text = f"{_value(actual)} {'is' if check.passed else 'is not'} among {accepted}"
        return f"{text}; {note}" if note else text
    if name == "kid":
        if check.passed and expected is None:
            return note or f"kid {_value(actual)}"
        parts = [f"kid {_value(actual)}" if actual is not None else "the token has no kid"]
        if expected is not None:
            parts.append(f"available {_value(expected)}")
        if "jwksUri" in detail:
            parts.append(f"JWKS {detail['jwksUri']}")
        if note:
            parts.append(note)
        return "; ".join(parts)
    if name in _TIME_CHECKS and (check.passed or "now" in detail):
        return _describe_time(check, report)
    parts = []
    if expected is not None:
        parts.append(f"expected {_value(expected)}")
    if actual is not None:
        parts.append(f"{'found' if failing else 'got'} {_value(actual)}")
    if note:
        parts.append(note)
    for key in ("missing", "claim", "keysTried"):
        if key in detail:
            parts.append(f"{key} {_value(detail[key])}")
    return "; ".join(parts) if parts else ("ok" if check.passed else "failed")


def _describe_time(check: Check, report: Report) -> str:
    """`exp`, `nbf`, `iat` against the clock, with the leeway and the difference."""
    name = check.name
    if check.passed and check.expected is None:
        return check.note or f"no {name} claim"
    if check.passed:
        claim_value, now = check.expected, check.actual
    else:
        detail = report.detail
        claim_value = check.expected if name == "exp" else check.actual
        now = detail["now"]
    leeway = _number(report.detail.get("leeway", report.leeway))
    text = f"{name} {_time_value(claim_value)}, clock {_time_value(now)}, leeway {leeway}s"
    if _is_number(claim_value) and _is_number(now):
        delta = float(claim_value) - float(now)
        if name == "exp":
            text += (
                f": expires in {_duration(delta)}"
                if delta > 0
                else f": expired {_duration(delta)} ago"
            )
        elif delta > 0:
            text += f": {_duration(delta)} in the future"
        else:
            text += f": {_duration(delta)} ago"
    if not check.passed and check.note:
        text += f"; {check.note}"
    return text


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def render_text(report: Report, source: str) -> str:
    """The human-readable report."""
    lines: list[str] = []

    def add(label: str, text: str) -> None:
        lines.append(f"{label:<10}{text}")

    add("request", f"{report.method} {report.target}")
    add("config", source)
    clock = "system clock" if report.clock == "system" else "--at"
    add("clock", f"{iso_time(report.now)} ({clock})")
    for warning in report.warnings:
        add("warning", warning)
    target_check = next((c for c in report.checks if c.name == "target"), None)
    if target_check is not None and not target_check.passed:
        add("target", f"FAIL {target_check.note}")
    if report.path is not None:
        add("path", f"{report.path} ({report.path_note})")
    elif report.path_note is not None:
        add("path", f"FAIL {report.path_note}")

    host_check = next((c for c in report.checks if c.name == "host"), None)
    if host_check is not None:
        if host_check.passed:
            add("host", f"{host_check.actual}{_describe_host_tables(report)}")
        else:
            add("host", f"FAIL {host_check.actual!r} is not among {_value(host_check.expected)}")
    tls_check = next((c for c in report.checks if c.name == "tls"), None)
    if tls_check is not None:
        if tls_check.passed:
            add("listener", str(tls_check.note))
        else:
            add(
                "listener",
                f"FAIL {tls_check.note}: host {tls_check.actual!r}, allowed "
                f"{_value(tls_check.expected)}",
            )
    route_check = next((c for c in report.checks if c.name == "route"), None)
    if report.path is not None and route_check is not None:
        if route_check.passed:
            add("route", f"{report.route} [{', '.join(report.route_methods or [])}] matched")
        elif report.code == "method_not_allowed":
            add("route", f"{report.route} matches the path, but {_describe_check_route(report)}")
        else:
            add("route", "no route matches; closest:" if report.considered else "no route")
        # Matched: only the routes that matched too and lost are worth a line.
        shown = [c for c in report.considered if not route_check.passed or c.verdict == "shadowed"]
        for considered in shown:
            methods = ", ".join(considered.methods)
            verdict = f"{considered.verdict}: {considered.detail}"
            lines.append(f"{'':<12}{considered.pattern} [{methods}]: {verdict}")
    elif any(c.name == "preflight" for c in report.checks):
        add("route", "CORS preflight: answered before routing and auth")

    for index, line in enumerate(report.policy):
        add("policy" if index == 0 else "", line)

    if report.auth_required is not None:
        if report.auth_required:
            kind = f" ({report.authorizer_type})" if report.authorizer_type else ""
            add("auth", f"{report.authorizer_why}{kind}")
            if report.token_sources is not None:
                read = ", then ".join(report.token_sources)
                found = report.token_source or "nowhere: no token"
                add("token in", f"{found} (read from {read})")
        else:
            add("auth", "not required: the route is public")

    if report.token is not None:
        add("token", f"{UNVERIFIED}: decoded for display only, trust nothing until the checks pass")
        lines.append(f"{'':<2}{'header':<8}{_value(report.token['header'])}")
        lines.append(f"{'':<2}{'claims':<8}{_value(report.token['claims'])}")
        claims = report.token["claims"]
        for name in ("exp", "nbf", "iat"):
            value = claims.get(name)
            if _is_number(value):
                lines.append(f"{'':<10}{name} = {iso_time(float(value))}")
    elif report.token_problem is not None:
        add("token", f"not decodable: {report.token_problem}")

    auth_checks = [
        c
        for c in report.checks
        if c.name not in {"target", "path", "host", "tls", "preflight", "route", "auth"}
    ]
    if auth_checks:
        lines.append("checks")
        for check in auth_checks:
            verdict = "PASS" if check.passed else "FAIL"
            lines.append(f"  {verdict}  {check.name:<16}{_describe_check(check, report)}")

    if report.admitted:
        status = report.status if report.status is not None else "the upstream's status"
        add("result", f"ADMITTED: {status}")
        add("then", report.integration or "")
        if report.forwarded_headers:
            add("headers", f"to the upstream: {_value(report.forwarded_headers)}")
        if report.websocket:
            add("websocket", report.websocket)
    else:
        if report.websocket:
            add("websocket", report.websocket)
        add("result", f"REFUSED: {report.status} {report.code}: {report.message}")
        failing = report.failing_check
        if failing is not None:
            add("failed", f"check {failing.name!r}")
        add("hint", report.hint or "")
        add("docs", report.docs or "")
    return "\n".join(lines) + "\n"


def _describe_check_route(report: Report) -> str:
    allowed = ", ".join(report.detail.get("allowed", []))
    return f"{report.method} is not among {allowed} (Allow: {allowed})"


# --- command line --------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `wardgate explain`."""
    parser = subparsers.add_parser(
        "explain",
        help="show, step by step, how the gateway would decide a request",
        description="Show the gateway's decision for one request: the normalised path, the "
        "route (or the closest ones), the authorizer and why, the token decoded (unverified), "
        "each check with expected and actual values, and the final status and error code. "
        "Exit status: 0 admitted, 1 refused, 2 unusable config or arguments.",
    )
    parser.add_argument("method", help="HTTP method, e.g. GET")
    parser.add_argument("path", help="request target, e.g. /private/orders?id=1")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="gateway config file (JSON, or YAML)")
    where.add_argument(
        "--gateway",
        metavar="NAME",
        help="a Gateway in the cluster: read the config the operator rendered (kubectl)",
    )
    parser.add_argument("-n", "--namespace", help="namespace of --gateway (kubectl's default)")
    parser.add_argument(
        "--secrets-dir",
        type=Path,
        help="directory with one file per secret; then the environment (with --gateway: "
        "then the referenced Secrets, when readable)",
    )
    parser.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="define or override the upstream server NAME (repeatable)",
    )
    parser.add_argument("--token", help="bearer token: sends `Authorization: Bearer T`")
    parser.add_argument(
        "--header",
        "-H",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header (repeatable), e.g. -H 'Authorization: Bearer eyJ...'",
    )
    parser.add_argument(
        "--at",
        metavar="TIME",
        help="evaluate at this time: ISO 8601 (2026-01-31T12:00:00Z) or seconds since the epoch",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="the request came through the TLS listener (without SNI unless --sni)",
    )
    parser.add_argument(
        "--sni",
        metavar="NAME",
        help="the request came through the TLS listener, the handshake naming NAME: shows "
        "the certificate selected and the 421 check of the Host against it",
    )
    parser.add_argument("--output", "-o", choices=("text", "json"), default="text")
    parser.set_defaults(func=cmd_explain)


def parse_time(text: str) -> float:
    """`--at`: seconds since the epoch, or ISO 8601 (UTC unless an offset is given)."""
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ValueError(f"--at {text!r}: not a finite time")
        return value
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--at {text!r}: expected ISO 8601 (2026-01-31T12:00:00Z) or epoch seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_headers(items: list[str], token: str | None) -> list[tuple[str, str]]:
    """`--header 'Name: value'` items (and `--token`) as header pairs."""
    headers: list[tuple[str, str]] = []
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip() or name != name.strip():
            raise ValueError(f"--header {item!r}: expected 'Name: value'")
        headers.append((name, value.strip()))
    if token is not None:
        if any(name.lower() == "authorization" for name, _ in headers):
            raise ValueError("--token and an Authorization --header: give one of them")
        headers.append(("Authorization", f"Bearer {token}"))
    return headers


def cmd_explain(args: argparse.Namespace) -> int:
    """`wardgate explain`: 0 admitted, 1 refused, 2 unusable config or arguments."""
    import asyncio

    try:
        headers = parse_headers(args.header, args.token)
        at = parse_time(args.at) if args.at is not None else None
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if args.gateway is not None:
        loaded, source, code = _load_from_cluster(
            args.gateway, args.namespace, args.secrets_dir, args.server
        )
    else:
        if args.namespace is not None:
            print("-n/--namespace goes with --gateway", file=sys.stderr)
            return 2
        loaded, source, code = _load_from_file(args.config, args.secrets_dir, args.server)
    if loaded is None:
        return code
    report = asyncio.run(
        explain_request(
            loaded, args.method, args.path, headers, at=at, tls=args.tls, server_name=args.sni
        )
    )
    if args.gateway is not None and report.path is not None:
        try:
            report.policy = _cluster_policy(args.gateway, args.namespace, report.path)
        except ClusterError as exc:
            report.warnings.append(f"policy: {exc}")
    if args.output == "json":
        document = {"config": source, **report.to_json()}
        print(json.dumps(document, indent=2, ensure_ascii=False, default=str))
    else:
        sys.stdout.write(render_text(report, source))
    return 0 if report.admitted else 1


def _load_from_file(
    path: Path, secrets_dir: Path | None, overrides: list[str]
) -> tuple[LoadedConfig | None, str, int]:
    from wardgate.gateway.cli import _load

    loaded, code = _load(path, secrets_dir, overrides)
    return loaded, str(path), code


class ClusterError(Exception):
    """The Gateway's rendered config or its secrets cannot be read from the cluster."""


def _kubectl_json(args: list[str]) -> dict[str, Any]:
    import subprocess

    try:
        completed = subprocess.run(
            ["kubectl", *args, "-o", "json"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClusterError(f"kubectl {' '.join(args)}: {exc}") from None
    if completed.returncode != 0:
        raise ClusterError(completed.stderr.strip() or f"kubectl {' '.join(args)} failed")
    document: dict[str, Any] = json.loads(completed.stdout)
    return document


def _cluster_policy(gateway: str, namespace: str | None, path: str) -> list[str]:
    """The Route paths of a Gateway that match `path`, with the operator's decision on each."""
    from wardgate.operator.policy import explain_route_paths

    namespace_args = ["-n", namespace] if namespace else []
    body = _kubectl_json(["get", "gateways.wardgate.io", gateway, *namespace_args])
    gateway_namespace = str((body.get("metadata") or {}).get("namespace", ""))
    routes = _kubectl_json(["get", "routes.wardgate.io", "--all-namespaces"])
    lines = explain_route_paths(routes.get("items") or [], (gateway_namespace, gateway), path)
    return lines or ["no Route of this Gateway has a path matching the request"]


def read_cluster_secret(
    name: str, namespace_args: list[str], cache: dict[str, dict[str, Any] | None]
) -> str | None:
    """The value of a rendered secret reference `SECRET.KEY` (Secret SECRET, key KEY; both
    may hold dots, so every split is tried), or None when no readable Secret has it."""
    import base64

    position = name.find(".")
    while position > 0:
        secret, key = name[:position], name[position + 1 :]
        if secret not in cache:
            try:
                cache[secret] = _kubectl_json(["get", "secret", secret, *namespace_args])
            except ClusterError:
                cache[secret] = None
        document = cache[secret]
        if document is not None:
            value = (document.get("data") or {}).get(key)
            if isinstance(value, str):
                return base64.b64decode(value).decode("utf-8").rstrip("\r\n")
        position = name.find(".", position + 1)
    return None


def _load_from_cluster(
    gateway: str, namespace: str | None, secrets_dir: Path | None, overrides: list[str]
) -> tuple[LoadedConfig | None, str, int]:
    """The config the operator rendered for a Gateway (its ConfigMap), with the secrets of
    the referenced Secrets when this user may read them."""
    import os

    from wardgate.gateway.cli import _print_problems, apply_server_overrides, check_runtime
    from wardgate.gateway.config import ConfigError, parse_config, secret_name
    from wardgate.gateway.loading import SecretSource, load_config
    from wardgate.operator.manifests import CONFIG_FILE, child_name, config_map_text

    namespace_args = ["-n", namespace] if namespace else []
    config_map = child_name(gateway, "-config")
    source = f"configmap/{config_map}" + (f" -n {namespace}" if namespace else "")
    try:
        document = _kubectl_json(["get", "configmap", config_map, *namespace_args])
        text = config_map_text(document)
        if text is None:
            raise ClusterError(f"{source} has no {CONFIG_FILE}: has the operator rendered it?")
        config_document = apply_server_overrides(json.loads(text), overrides)
        config = parse_config(config_document)
        environ = dict(os.environ)
        unreadable: list[str] = []
        cache: dict[str, dict[str, Any] | None] = {}
        for where, reference in config.secret_references():
            name = secret_name(reference)
            if secrets_dir is not None and (secrets_dir / name).is_file():
                continue
            value = read_cluster_secret(name, namespace_args, cache)
            if value is not None:
                environ[name] = value
            elif name not in environ:
                unreadable.append(f"{where}: {reference}")
        if unreadable and all(u.startswith("tls.") for u in unreadable):
            # The TLS listener's certificates are not needed to explain a decision: without
            # access to their Secrets, the request is explained as plain HTTP.
            print(
                f"{source}: the TLS certificates' Secrets are not readable: --tls/--sni "
                "are not explained",
                file=sys.stderr,
            )
            if isinstance(config_document, dict):
                config_document = {k: v for k, v in config_document.items() if k != "tls"}
        elif unreadable:
            raise ClusterError(
                "cannot read the secrets these references name (no access to the Secret?): "
                + ", ".join(unreadable)
                + "; pass --secrets-dir with one file per name"
            )
        loaded = load_config(
            config_document, SecretSource(directory=secrets_dir, environ=environ), origin=source
        )
        check_runtime(loaded)
    except ClusterError as exc:
        print(f"{source}: {exc}", file=sys.stderr)
        return None, source, 2
    except ConfigError as exc:
        _print_problems(source, exc.problems)
        return None, source, 2
    except ValueError as exc:
        print(f"{source}: {exc}", file=sys.stderr)
        return None, source, 2
    return loaded, source, 0
