"""`wardgate explain` agrees with the gateway: a corpus of requests, each sent to the gateway
running in-process on loopback (real upstream, real JWKS server, real tokens) and given to
`explain` (the function and the command with `--output json`). Every request must get the
same status and code from all three, and explain must name the check that failed.

The corpus holds a request for every code of the catalogue that a request can produce,
and admitted requests. The codes an integration decides after admission
(`upstream_unreachable`, `upstream_timeout`, `body_too_large`) are in it too: explain
never sends the request upstream, so for those it must say "admitted, proxied"."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from pydantic import SecretStr
from yarl import URL

from tests.support.gateway import RunningGateway, start_gateway, stop_gateway
from tests.support.jwks_server import JwksServer
from tests.support.ports import free_port
from tests.support.tokens import AUDIENCE, HS_SECRET, ISSUER, claims, hs_token, jwks, rsa_key
from wardgate.cli import main
from wardgate.commands.explain import parse_time, render_text
from wardgate.gateway.app import Admission
from wardgate.gateway.config import parse_config
from wardgate.gateway.errors import CATALOGUE
from wardgate.gateway.exchange import Exchange
from wardgate.gateway.explain import Report, explain_request
from wardgate.gateway.loading import LoadedConfig
from wardgate.gateway.requestlog import RequestLog

ORIGIN = "https://app.example.com"
# Decided after admission, by the proxy: explain reports "admitted" for these.
INTEGRATION_CODES = frozenset({"upstream_unreachable", "upstream_timeout", "body_too_large"})
# A gateway bug, never the answer to a request of a valid config.
# `internal_error` is a bug; the other two are answered by the HTTP parser, before the
# decision (explain receives headers already parsed).
NOT_PRODUCIBLE = frozenset({"internal_error", "malformed_request", "header_too_large"})
# Decided by the traffic server from a request's framing, before the decision that explain
# runs (tests/security/test_framing_differential.py covers them).
FRAMING_CODES = frozenset({"request_timeout", "unsupported_method", "unsupported_transfer_coding"})
# Decided before routing on a gateway that lists hostnames, which this corpus's is not:
# `tests/security/test_hostnames.py` has the gateway and explain agree on it.
# WebSocket upgrades are checked and sent upstream after the decision (explain reports
# whether the route allows them): `tests/integration/test_websockets.py` covers them.
OTHER_CORPUS = frozenset({"unknown_host", "invalid_websocket_upgrade", "upstream_bad_upgrade"})
# Decided on the TLS listener's connections: `tests/integration/test_tls_listener.py` has the
# gateway and explain (`--sni`) agree on it.
OTHER_CORPUS |= {"misdirected_request"}
MAX_BODY = 1024


@dataclass
class Servers:
    upstream: str
    jwks: JwksServer
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        if request.path.endswith("/slow"):
            await release.wait()
        return web.json_response({"path": request.path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    key_server = await JwksServer(jwks(rsa_key("rsa-1"))).start()
    yield Servers(f"http://127.0.0.1:{runner.addresses[0][1]}", key_server, release)
    release.set()
    await key_server.stop()
    await runner.cleanup()


def corpus_config(servers: Servers, *, debug: bool = False) -> dict[str, Any]:
    dead = f"http://127.0.0.1:{free_port()}"
    return {
        "authorizer": {
            "type": "jwt",
            "secret": "$secret.JWT_SECRET",
            "algorithm": "HS256",
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "requiredClaims": ["sub"],
        },
        "authorizers": {
            "rs": {
                "type": "jwt",
                "jwksUri": servers.jwks.url,
                "algorithms": ["RS256"],
                "issuer": ISSUER,
                "audience": AUDIENCE,
            },
            "down": {
                "type": "jwt",
                "jwksUri": f"{dead}/.well-known/jwks.json",
                "algorithms": ["RS256"],
                "issuer": ISSUER,
                "audience": AUDIENCE,
            },
            "supa": {
                "type": "supabase",
                "projectUrl": "https://ref.supabase.co",
                "jwtSecret": "$secret.JWT_SECRET",
                "algorithms": ["HS256"],
            },
        },
        "cors": {"allowOrigins": [ORIGIN]},
        "limits": {"maxTokenBytes": 1024, "maxBodyBytes": MAX_BODY},
        "paths": [
            {"method": "GET", "path": "/health", "response": {"status": "ok"}},
            {"method": "GET", "path": "/private/static", "auth": True, "response": {"ok": 1}},
            {
                "method": ["GET", "POST"],
                "path": "/private/orders",
                "auth": True,
                "integration": {"type": "http_proxy", "server": "orders"},
            },
            {
                "method": "GET",
                "path": "/scoped",
                "auth": {"scopes": ["orders:read"], "claims": {"org": "acme"}},
                "response": {"ok": 1},
            },
            {"method": "GET", "path": "/rs", "auth": {"authorizer": "rs"}, "response": {"ok": 1}},
            {"method": "GET", "path": "/down", "auth": {"authorizer": "down"}, "response": {}},
            {"method": "GET", "path": "/supa", "auth": {"authorizer": "supa"}, "response": {}},
            {
                "method": "GET",
                "path": "/dead/*",
                "integration": {"type": "http_proxy", "server": "dead"},
            },
            {
                "method": "GET",
                "path": "/slow",
                "integration": {"type": "http_proxy", "server": "slow"},
            },
            {
                "method": ["GET", "POST"],
                "path": "/browser",
                "auth": {
                    "tokenSources": [
                        {"type": "cookie", "name": "session"},
                        {"type": "query", "name": "access_token"},
                    ]
                },
                "response": {"ok": 1},
            },
        ],
        "servers": {
            "orders": servers.upstream,
            "dead": dead,
            "slow": {"url": servers.upstream, "readTimeout": 0.2},
        },
        "debug": debug,
    }


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    headers: Mapping[str, str]
    code: str | None
    check: str | None = None
    """The check explain must name as failing."""
    body: bytes | None = None


def build_corpus() -> list[Case]:
    now = time.time()
    rs = rsa_key("rsa-1")

    def good(**extra: Any) -> dict[str, Any]:
        return claims(**{"iss": ISSUER, "aud": AUDIENCE, "now": now, **extra})

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    ok = bearer(hs_token(good()))
    anon_key = hs_token(
        {"iss": "supabase", "ref": "ref", "role": "anon", "iat": int(now), "exp": int(now) + 600}
    )
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
    return [
        # admitted
        Case("public", "GET", "/health", {}, None),
        Case("hs256", "GET", "/private/static", ok, None),
        Case("normalised path", "GET", "/private//./x/../static", ok, None),
        Case("proxied", "GET", "/private/orders", ok, None),
        Case("preflight before auth", "OPTIONS", "/private/static", preflight, None),
        Case(
            "scopes and claims",
            "GET",
            "/scoped",
            bearer(hs_token(good(scope="orders:read", org="acme"))),
            None,
        ),
        Case("rs256 via jwks", "GET", "/rs", bearer(rs.sign(good())), None),
        Case("cookie token", "GET", "/browser", {"Cookie": f"session={hs_token(good())}"}, None),
        Case("query token", "GET", f"/browser?access_token={hs_token(good())}", {}, None),
        # refused by the decision
        Case("no header", "GET", "/private/static", {}, "missing_token", "authorization"),
        Case(
            "cookie and query disagree",
            "GET",
            f"/browser?access_token={hs_token(good(sub='other'))}",
            {"Cookie": f"session={hs_token(good())}"},
            "ambiguous_token",
            "token",
        ),
        Case(
            "cross-site cookie post",
            "POST",
            "/browser",
            {"Cookie": f"session={hs_token(good())}", "Origin": "https://evil.example.net"},
            "csrf_origin_refused",
            "origin",
        ),
        Case(
            "basic",
            "GET",
            "/private/static",
            {"Authorization": "Basic dXNlcjpwYXNz"},
            "invalid_auth_scheme",
            "authorization",
        ),
        Case("huge", "GET", "/private/static", bearer("a" * 2000), "token_too_large", "size"),
        Case(
            "two authorization headers",
            "GET",
            "/private/static",
            CIMultiDict([*ok.items(), ("Authorization", "Bearer " + hs_token(good()))]),
            "duplicate_authorization",
            "authorization",
        ),
        Case("opaque", "GET", "/private/static", bearer("x7Yq0Opaque"), "opaque_token", "format"),
        Case(
            "two segments", "GET", "/private/static", bearer("abc.def"), "malformed_token", "format"
        ),
        Case(
            "hs384",
            "GET",
            "/private/static",
            bearer(hs_token(good(), alg="HS384")),
            "algorithm_not_allowed",
            "algorithm",
        ),
        Case(
            "unknown kid",
            "GET",
            "/rs",
            bearer(rsa_key("rsa-other").sign(good())),
            "unknown_kid",
            "kid",
        ),
        Case(
            "wrong secret",
            "GET",
            "/private/static",
            bearer(hs_token(good(), secret="another-secret-0123456789-abcdefghijklmnop")),
            "invalid_signature",
            "signature",
        ),
        Case(
            "expired",
            "GET",
            "/private/static",
            bearer(hs_token(good(lifetime=-3600))),
            "token_expired",
            "exp",
        ),
        Case(
            "not yet valid",
            "GET",
            "/private/static",
            bearer(hs_token(good(nbf=int(now) + 3600))),
            "token_not_yet_valid",
            "nbf",
        ),
        Case(
            "issuer",
            "GET",
            "/private/static",
            bearer(hs_token(good(iss=ISSUER + "/"))),
            "issuer_mismatch",
            "issuer",
        ),
        Case(
            "audience",
            "GET",
            "/private/static",
            bearer(hs_token(good(aud="another-api"))),
            "audience_mismatch",
            "audience",
        ),
        Case(
            "no sub",
            "GET",
            "/private/static",
            bearer(hs_token(good(sub=...))),
            "missing_claim",
            "required_claims",
        ),
        Case(
            "wrong org",
            "GET",
            "/scoped",
            bearer(hs_token(good(scope="orders:read", org="evil"))),
            "claim_mismatch",
            "claims",
        ),
        Case(
            "no scope",
            "GET",
            "/scoped",
            bearer(hs_token(good(scope="profile", org="acme"))),
            "insufficient_scope",
            "scopes",
        ),
        Case("anon key", "GET", "/supa", bearer(anon_key), "supabase_api_key", "api_key"),
        Case("jwks down", "GET", "/down", bearer(rs.sign(good())), "idp_unavailable", "kid"),
        Case("encoded slash", "GET", "/private%2Fstatic", ok, "invalid_path", "path"),
        Case("no route", "GET", "/private/statik", ok, "no_route", "route"),
        Case("method", "DELETE", "/health", {}, "method_not_allowed", "route"),
        # refused by the integration, after admission
        Case("dead upstream", "GET", "/dead/x", {}, "upstream_unreachable"),
        Case("slow upstream", "GET", "/slow", {}, "upstream_timeout"),
        Case(
            "big body",
            "POST",
            "/private/orders",
            {**ok, "Content-Type": "application/octet-stream"},
            "body_too_large",
            body=b"x" * (MAX_BODY + 1),
        ),
    ]


@dataclass
class Running:
    url: str
    log: io.BytesIO
    request_log: RequestLog
    client: aiohttp.ClientSession

    async def send(self, case: Case) -> tuple[int, dict[str, Any] | None]:
        async with self.client.request(
            case.method,
            URL(self.url + case.path, encoded=True),
            headers=case.headers,
            data=case.body,
            allow_redirects=False,
        ) as response:
            body = await response.read()
            document = json.loads(body) if body.startswith(b"{") else None
            return response.status, document

    def log_lines(self) -> list[dict[str, Any]]:
        self.request_log.flush()
        return [json.loads(line) for line in self.log.getvalue().splitlines()]


Start = Callable[[dict[str, Any]], Any]


@pytest.fixture
async def start() -> AsyncIterator[Callable[[dict[str, Any]], Any]]:
    started: list[RunningGateway] = []

    async def _start(document: dict[str, Any]) -> Running:
        gateway = await start_gateway(document)
        started.append(gateway)
        return Running(gateway.url, gateway.log, gateway.request_log, gateway.client)

    yield _start
    for gateway in started:
        await stop_gateway(gateway)


def loaded_config(document: dict[str, Any]) -> LoadedConfig:
    return LoadedConfig(config=parse_config(document), secrets={"JWT_SECRET": SecretStr(HS_SECRET)})


def error_code(document: dict[str, Any] | None) -> str | None:
    if document is None or "error" not in document:
        return None
    code: str = document["error"]["code"]
    return code


def cli_args(config: Path, secrets_dir: Path, case: Case, *extra: str) -> list[str]:
    args = ["explain", "--config", str(config), "--secrets-dir", str(secrets_dir)]
    args += ["--output", "json", *extra]
    for name, value in case.headers.items():
        args += ["--header", f"{name}: {value}"]
    return [*args, case.method, case.path]


async def run_cli(
    config: Path, secrets_dir: Path, case: Case, *extra: str
) -> tuple[int, dict[str, Any]]:
    """`wardgate explain ... --output json` in a child process: exit status and document."""
    args = [sys.executable, "-m", "wardgate", *cli_args(config, secrets_dir, case, *extra)]
    process = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "JWT_SECRET"},
    )
    stdout, stderr = await process.communicate()
    assert process.returncode in (0, 1), stderr.decode()
    return process.returncode, json.loads(stdout)


def run_cli_in_process(args: list[str]) -> tuple[int, dict[str, Any]]:
    """`wardgate explain` through the command's entry point (parser, loading, output), in
    this process: a child process per request would cost a second each."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(args)
    return status, json.loads(out.getvalue())


def write_config(tmp_path: Path, document: dict[str, Any]) -> tuple[Path, Path]:
    config = tmp_path / "gateway.json"
    config.write_text(json.dumps(document, indent=2))
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(exist_ok=True)
    (secrets_dir / "JWT_SECRET").write_text(HS_SECRET)
    return config, secrets_dir


def assert_agrees(case: Case, status: int, code: str | None, report: Report) -> None:
    """The gateway's answer and explain's report agree on one case."""
    assert code == case.code, f"{case.name}: the gateway answered {status} {code}"
    if case.code in INTEGRATION_CODES or (case.code is None and report.status is None):
        # Proxied: admitted by the decision, the status comes from the upstream side.
        assert report.admitted, case.name
        assert report.code is None
        assert report.integration is not None
        assert report.integration.startswith("http_proxy"), case.name
        return
    assert (report.status, report.code) == (status, code), case.name
    assert report.admitted == (code is None)
    if case.check is not None:
        failing = report.failing_check
        assert failing is not None, case.name
        assert failing.name == case.check, f"{case.name}: {failing}"


async def test_corpus_gateway_and_explain_agree(
    start: Start, servers: Servers, tmp_path: Path
) -> None:
    document = corpus_config(servers)
    corpus = build_corpus()
    produced = {case.code for case in corpus if case.code is not None}
    decidable = {entry.code for entry in CATALOGUE} - NOT_PRODUCIBLE - FRAMING_CODES - OTHER_CORPUS
    assert produced == decidable, f"codes without a request: {sorted(decidable - produced)}"

    gateway = await start(document)
    loaded = loaded_config(document)
    config, secrets_dir = write_config(tmp_path, document)
    for case in corpus:
        status, body = await gateway.send(case)
        code = error_code(body)
        report = await explain_request(loaded, case.method, case.path, case.headers)
        assert_agrees(case, status, code, report)
        text = render_text(report, "gateway.json")
        if case.check is not None:
            assert f"check {case.check!r}" in text, text

    # The command runs its own event loop: in a thread, while this loop serves the JWKS.
    for case in corpus:
        args = cli_args(config, secrets_dir, case)
        exit_status, result = await asyncio.to_thread(run_cli_in_process, args)
        outcome = result["result"]
        assert exit_status == (0 if outcome["admitted"] else 1)
        if case.code in INTEGRATION_CODES:
            assert outcome["admitted"], case.name
            continue
        assert outcome["code"] == case.code, case.name
        assert outcome["failingCheck"] == case.check, case.name
        if case.code is not None:
            assert outcome["docs"] == f"docs/errors.md#{case.code}"
            assert result["checks"][-1]["name"] == case.check


async def test_explain_reports_each_step(servers: Servers) -> None:
    loaded = loaded_config(corpus_config(servers))
    now = time.time()
    token = hs_token(claims(iss=ISSUER, aud=AUDIENCE, now=now - 3600 - 120, lifetime=3600))
    report = await explain_request(
        loaded, "GET", "/private//static", {"Authorization": f"Bearer {token}"}
    )
    data = report.to_json()
    assert data["path"] == {
        "normalised": "/private/static",
        "note": "normalised from '/private//static'",
    }
    assert data["route"]["matched"] == "/private/static"
    assert data["auth"]["required"] is True
    assert data["auth"]["authorizer"] == "default"
    assert "default" in data["auth"]["why"]
    assert data["token"]["verified"] is False
    assert data["token"]["claims"]["iss"] == ISSUER
    assert [c["name"] for c in data["checks"]] == [
        "path", "route", "auth", "authorization", "format", "algorithm", "kid", "signature", "exp",
    ]  # fmt: skip
    assert data["result"]["code"] == "token_expired"
    assert "likely clock skew" in data["result"]["detail"]["note"]
    text = render_text(report, "gateway.json")
    assert "UNVERIFIED" in text
    assert "expired 2m00s ago" in text or "expired 2m01s ago" in text
    assert "leeway 60s" in text
    assert "docs/errors.md#token_expired" in text

    # Evaluated before it expired, the same token passes every check.
    earlier = await explain_request(
        loaded, "GET", "/private/static", {"Authorization": f"Bearer {token}"}, at=now - 3600
    )
    assert earlier.admitted
    assert earlier.status == 200
    assert earlier.to_json()["clock"]["source"] == "--at"


async def test_explain_lists_closest_routes_and_kids(servers: Servers) -> None:
    loaded = loaded_config(corpus_config(servers))
    missing = await explain_request(loaded, "GET", "/scope")
    assert missing.code == "no_route"
    assert missing.considered[0].pattern == "/scoped"
    assert "'scope'" in missing.considered[0].detail
    token = rsa_key("rsa-other").sign(claims(iss=ISSUER, aud=AUDIENCE))
    unknown = await explain_request(loaded, "GET", "/rs", {"Authorization": f"Bearer {token}"})
    kid = unknown.failing_check
    assert kid is not None
    assert (kid.name, kid.expected, kid.actual) == ("kid", ["rsa-1"], "rsa-other")
    text = render_text(unknown, "x")
    assert 'kid "rsa-other"; available ["rsa-1"]' in text


async def test_cli_time_and_text(servers: Servers, tmp_path: Path) -> None:
    config, secrets_dir = write_config(tmp_path, corpus_config(servers))
    expired_at = 1_900_000_000
    token = hs_token(claims(iss=ISSUER, aud=AUDIENCE, now=expired_at - 600, lifetime=600))
    case = Case("at", "GET", "/private/static", {"Authorization": f"Bearer {token}"}, None)
    status, before = await run_cli(config, secrets_dir, case, "--at", "2030-03-17T17:40:00Z")
    assert status == 0, before["checks"]
    assert before["clock"]["now"] == parse_time("2030-03-17T17:40:00Z")
    status, after = await run_cli(config, secrets_dir, case, "--at", str(expired_at + 61))
    assert status == 1
    assert after["result"]["code"] == "token_expired"
    assert parse_time("2030-03-17T17:33:00") == parse_time("2030-03-17T17:33:00+00:00")
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday")


async def test_debug_bodies_and_logs(start: Start, servers: Servers) -> None:
    """Without debug, a denial body has the code, message and request ID only; with debug,
    the detail and hint too. The log line carries the detail either way."""
    plain = await start(corpus_config(servers))
    debug = await start(corpus_config(servers, debug=True))
    denials = [c for c in build_corpus() if c.code is not None and c.code not in INTEGRATION_CODES]
    for case in denials:
        _, quiet = await plain.send(case)
        _, loud = await debug.send(case)
        assert quiet is not None
        assert loud is not None
        assert set(quiet["error"]) == {"code", "message", "requestId"}, case.name
        assert set(loud["error"]) == {"code", "message", "requestId", "detail", "hint"}
        assert loud["error"]["hint"]
        assert HS_SECRET not in json.dumps(loud)
    for running in (plain, debug):
        lines = running.log_lines()
        assert len(lines) == len(denials)
        for case, line in zip(denials, lines, strict=True):
            assert line["code"] == case.code
            assert line["detail"], case.name
            if case.check is not None and "check" in line["detail"]:
                assert line["detail"]["check"] == case.check


def test_admission_sets_every_exchange_field() -> None:
    """`Admission` sets the fields of `Exchange` itself (no `super().__init__` on the hot
    path): a field added to `Exchange` must be added there too."""
    admission = Admission("id", "GET", "/x", {})
    for name in Exchange.__slots__:
        getattr(admission, name)


async def test_explain_names_the_kid_when_the_idp_is_unavailable(servers: Servers) -> None:
    loaded = loaded_config(corpus_config(servers))
    token = rsa_key("rsa-1").sign(claims(iss=ISSUER, aud=AUDIENCE))
    report = await explain_request(loaded, "GET", "/down", {"Authorization": f"Bearer {token}"})
    assert report.code == "idp_unavailable"
    assert report.detail["actual"] == "rsa-1"
    text = render_text(report, "gateway.json")
    assert "kid 'rsa-1'" in text or 'kid "rsa-1"' in text or "kid rsa-1" in text, text
    assert "kid null" not in text
