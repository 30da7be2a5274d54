"""`wardgate explain`: the command, and the report as text.

The decision and the report are `wardgate.gateway.explain`'s; the config comes from the one
loader (`wardgate.gateway.sources`): a file with `--config`, or with `--gateway` what the
operator rendered for a Gateway, read from the cluster by `wardgate.operator.rendered`. With
`--gateway`, the report also lists the Route paths of that Gateway matching the request and
the rule of the Gateway's policy that admitted or refused each (docs/multi-team.md).

Exit status: 0 when the request would be admitted, 1 when refused, 2 when the config or
the arguments cannot be used (whatever the reason: 1 answers the request's question).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from wardgate.gateway.config import ConfigError, parse_config, secret_name
from wardgate.gateway.explain import (
    ANY_HOST_SHOWN,
    Report,
    explain_request,
    format_duration,
    iso_time,
)
from wardgate.gateway.kubesource import SourceError
from wardgate.gateway.loading import LoadedConfig, SecretSource
from wardgate.gateway.recording import Check
from wardgate.gateway.sources import (
    EXIT_INVALID,
    EXIT_UNUSABLE,
    LoadError,
    apply_server_overrides,
    load_document,
    load_file,
)
from wardgate.operator.rendered import RenderedGateway

UNVERIFIED: Final = "UNVERIFIED"
_TIME_CHECKS: Final = frozenset({"exp", "nbf", "iat"})


def run(args: argparse.Namespace) -> int:
    """0 admitted, 1 refused, 2 unusable config or arguments."""
    try:
        headers = parse_headers(args.header, args.token, args.host)
        at = parse_time(args.at) if args.at is not None else None
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_UNUSABLE
    if args.gateway is None and args.namespace is not None:
        print("-n/--namespace goes with --gateway", file=sys.stderr)
        return EXIT_UNUSABLE
    rendered = None
    try:
        if args.gateway is not None:
            rendered = RenderedGateway.connect(args.gateway, args.namespace, args.kubeconfig)
            loaded = load_rendered(rendered, args.secrets_dir, args.server)
        else:
            loaded = load_file(args.config, args.secrets_dir, args.server)
    except LoadError as exc:
        exc.report()
        return EXIT_UNUSABLE
    except SourceError as exc:
        LoadError.unreadable_source(exc).report()
        return EXIT_UNUSABLE
    report = asyncio.run(
        explain_request(
            loaded, args.method, args.path, headers, at=at, tls=args.tls, server_name=args.sni
        )
    )
    if rendered is not None and report.path is not None:
        try:
            report.policy = rendered.route_policy(report.path)
        except SourceError as exc:
            report.warnings.append(f"policy: {exc}")
    if args.output == "json":
        document = {"config": loaded.source, **report.to_json()}
        print(json.dumps(document, indent=2, ensure_ascii=False, default=str))
    else:
        sys.stdout.write(render_text(report, loaded.source))
    return 0 if report.admitted else 1


def load_rendered(
    rendered: RenderedGateway, secrets_dir: Path | None, overrides: list[str]
) -> LoadedConfig:
    """The config the operator rendered for a Gateway, its secrets from `secrets_dir`, then
    the Secrets it names (when this user may read them), then the environment (raises
    `LoadError`, or `SourceError` when the cluster cannot be read)."""
    config_map = rendered.config()
    origin = config_map.origin
    source = SecretSource(
        directory=secrets_dir, environ={**os.environ, **config_map.snapshot.secrets}
    )
    document = apply_server_overrides(config_map.snapshot.document, overrides)
    try:
        references = parse_config(document).secret_references()
    except ConfigError as exc:
        raise LoadError(origin, exc.problems, EXIT_INVALID) from None
    unreadable = [
        f"{where}: {reference}"
        for where, reference in references
        if source.lookup(secret_name(reference)) is None
    ]
    if unreadable and all(u.startswith("tls.") for u in unreadable):
        # The TLS listener's certificates are not needed to explain a decision: without
        # access to their Secrets, the request is explained as plain HTTP.
        print(
            f"{origin}: the TLS certificates' Secrets are not readable: --tls/--sni "
            "are not explained",
            file=sys.stderr,
        )
        if isinstance(document, dict):
            document = {k: v for k, v in document.items() if k != "tls"}
    elif unreadable:
        raise LoadError.unusable(
            origin,
            "cannot read the secrets these references name (no access to the Secret?): "
            + ", ".join(unreadable)
            + "; pass --secrets-dir with one file per name",
        )
    return load_document(document, source, origin=origin)


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


def parse_headers(
    items: list[str], token: str | None, host: str | None = None
) -> list[tuple[str, str]]:
    """`--header 'Name: value'` items (and `--token`, `--host`) as header pairs."""
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
    if host is not None:
        if any(name.lower() == "host" for name, _ in headers):
            raise ValueError("--host and a Host --header: give one of them")
        headers.append(("Host", host))
    return headers


# --- text output ---------------------------------------------------------------------


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
                f": expires in {format_duration(delta)}"
                if delta > 0
                else f": expired {format_duration(delta)} ago"
            )
        elif delta > 0:
            text += f": {format_duration(delta)} in the future"
        else:
            text += f": {format_duration(delta)} ago"
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
        elif host_check.actual:
            add("host", f"FAIL {host_check.actual!r} is not among {_value(host_check.expected)}")
        else:
            add(
                "host",
                "FAIL the request has no Host, and the gateway serves only "
                f"{_value(host_check.expected)} (give --host)",
            )
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
