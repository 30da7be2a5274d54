"""The request's edges through a running gateway: one credential per request, claim headers
the client cannot spoof in any spelling, scopes as RFC 6749 splits them, limits refused as
catalogue errors, malformed requests answered and logged in one line without a byte of the
token, and CORS headers on every answer.

The checks speak HTTP on loopback (raw bytes where a client library would tidy the
request), so they hold for any server in front of `Gateway.admit`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import results
from tests.support.gateway import (
    AUDIENCE,
    ISSUER,
    CountingUpstream,
    RunningGateway,
    StartGateway,
    bearer,
    raw_exchange,
    seed_document,
    status_of,
)
from tests.support.malformed import malformed_corpus, request, token_fragments
from tests.support.tokens import claims, hs_token, json_bytes, raw_token
from wardgate.gateway.authorizers import scopes_of
from wardgate.gateway.config import ConfigError, parse_config
from wardgate.gateway.errors import BY_CODE, code_of_body

SUITE = "request edges"
ORIGIN = "https://app.example.com"


def body_of(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]


def headers_of(response: bytes) -> dict[str, str]:
    head = response.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head)}


def forwarding_document(upstream_url: str) -> dict[str, Any]:
    document = seed_document(upstream_url)
    document["authorizer"]["forwardClaims"] = [
        {"claim": "sub", "header": "X-User-Id"},
        {"claim": "org", "header": "X-Org"},
    ]
    document["paths"].append(
        {
            "method": "GET",
            "path": "/private/scoped",
            "auth": {"scopes": ["read:orders"]},
            "integration": {"type": "http_proxy", "server": "orders"},
        }
    )
    document["paths"].append(
        {
            "method": "GET",
            "path": "/private/any",
            "auth": {"anyScopes": ["read:orders", "admin"]},
            "integration": {"type": "http_proxy", "server": "orders"},
        }
    )
    return document


@pytest.fixture
async def gateway(upstream: CountingUpstream, gateway_factory: StartGateway) -> RunningGateway:
    return await gateway_factory(forwarding_document(upstream.url))


# --- one request, one credential ---------------------------------------------------


UNSIGNED = raw_token(json_bytes({"alg": "none"}), json_bytes(claims(iss=ISSUER, aud=AUDIENCE)))


@pytest.mark.parametrize(
    "spellings",
    [
        ("Authorization", "Authorization"),
        ("Authorization", "authorization"),
        ("AUTHORIZATION", "Authorization"),
        ("authorization", "aUtHoRiZaTiOn"),
    ],
)
async def test_two_authorization_headers_are_refused(
    gateway: RunningGateway, upstream: CountingUpstream, spellings: tuple[str, str]
) -> None:
    valid = bearer()["Authorization"]
    for second in (f"Bearer {UNSIGNED}", valid, "Basic dXNlcjpwYXNz"):
        for path in ("/private/orders", "/public/x"):
            response = await raw_exchange(
                gateway.port,
                request(path, f"{spellings[0]}: {valid}", f"{spellings[1]}: {second}"),
            )
            assert status_of(response) == 400
            assert code_of_body(body_of(response)) == "duplicate_authorization"
            results.record(SUITE, "second credentials refused")
    assert upstream.seen == []


async def test_the_upstream_receives_exactly_the_verified_authorization(
    gateway: RunningGateway, upstream: CountingUpstream
) -> None:
    valid = bearer()["Authorization"]
    response = await raw_exchange(
        gateway.port, request("/private/orders", f"authorization: {valid}")
    )
    assert status_of(response) == 200
    [seen] = upstream.seen
    values = [v for k, v in seen.headers.items() if k.lower() == "authorization"]
    assert values == [valid]


CLAIM_HEADER_SPELLINGS = st.sampled_from(["X-User-Id", "X-Org"]).flatmap(
    lambda name: st.tuples(
        st.just(name),
        st.lists(st.booleans(), min_size=len(name), max_size=len(name)),
        st.lists(st.booleans(), min_size=name.count("-"), max_size=name.count("-")),
    )
)


def spelled(name: str, upper: list[bool], underscore: list[bool]) -> str:
    letters = [c.upper() if u else c.lower() for c, u in zip(name, upper, strict=True)]
    dashes = iter(underscore)
    return "".join("_" if c == "-" and next(dashes) else c for c in letters)


async def test_claim_headers_cannot_be_spoofed_in_any_spelling(
    gateway: RunningGateway, upstream: CountingUpstream
) -> None:
    token = hs_token(claims(iss=ISSUER, aud=AUDIENCE, sub="user-1", org="acme"))
    spellings: list[str] = []

    @settings(max_examples=60, deadline=None, database=None)
    @given(CLAIM_HEADER_SPELLINGS)
    def collect(choice: tuple[str, list[bool], list[bool]]) -> None:
        spellings.append(spelled(*choice))

    collect()
    spellings += ["x_user_id", "X_USER_ID", "x-user_id", "X-Forwarded_For", "x_request_id"]
    for spoof in spellings:
        upstream.seen.clear()
        response = await raw_exchange(
            gateway.port,
            request("/private/orders", f"Authorization: Bearer {token}", f"{spoof}: forged"),
        )
        assert status_of(response) == 200, spoof
        [seen] = upstream.seen
        forged = [k for k, v in seen.headers.items() if "forged" in v]
        assert forged == [], f"{spoof}: {forged}"
        assert seen.headers["X-User-Id"] == "user-1"
        assert seen.headers["X-Org"] == "acme"
        results.record(SUITE, "spoofed claim header spellings removed")


# --- scopes ----------------------------------------------------------------------------

NQCHAR = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"\\')


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_scope_strings_split_on_space_only(scope: str) -> None:
    granted = scopes_of({"scope": scope})
    assert granted == {t for t in scope.split(" ") if t and all(c in NQCHAR for c in t)}


@pytest.mark.parametrize("separator", ["\u00a0", "\u001f", "\t", "\n", "\u2003", "\u3000", "\x0b"])
async def test_odd_separators_never_grant_a_scope(
    gateway: RunningGateway, upstream: CountingUpstream, separator: str
) -> None:
    token = hs_token(claims(iss=ISSUER, aud=AUDIENCE, scope=f"profile{separator}read:orders"))
    answer = await gateway.request("GET", "/private/scoped", bearer(token))
    assert (answer.status, answer.code) == (403, "insufficient_scope")
    assert upstream.seen == []
    results.record(SUITE, "scope strings with odd separators refused")


async def test_insufficient_scope_names_the_scope(gateway: RunningGateway) -> None:
    answer = await gateway.request("GET", "/private/scoped", bearer(scope="profile"))
    assert answer.status == 403
    challenge = answer.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="read:orders"' in challenge
    assert "read:orders" in json.loads(answer.body)["error"]["message"]
    answer = await gateway.request("GET", "/private/any", bearer(scope="profile"))
    assert 'scope="read:orders admin"' in answer.headers["WWW-Authenticate"]
    assert "one of read:orders, admin" in json.loads(answer.body)["error"]["message"]


@pytest.mark.parametrize(
    ("scope", "status"),
    [("admin", 200), ("read:orders", 200), ("profile admin", 200), ("profile", 403), ("", 403)],
)
async def test_any_scopes_admits_one_of(gateway: RunningGateway, scope: str, status: int) -> None:
    answer = await gateway.request("GET", "/private/any", bearer(scope=scope))
    assert answer.status == status


@pytest.mark.parametrize("scope", ["read orders", 'a"b', "a\\b", "é", ""])
def test_route_scopes_must_be_scope_tokens(scope: str) -> None:
    for field in ("scopes", "anyScopes"):
        document = seed_document("http://127.0.0.1:9")
        document["paths"][1]["auth"] = {field: [scope]}
        with pytest.raises(ConfigError) as info:
            parse_config(document)
        assert any(p.startswith(f"paths.1.auth.{field}.0:") for p in info.value.problems)


# --- limits ----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.integers(256, 65536), st.integers(1024, 131072))
def test_limits_that_make_token_too_large_unreachable_are_refused(
    token_bytes: int, header_bytes: int
) -> None:
    limits = {"maxTokenBytes": token_bytes, "maxHeaderBytes": header_bytes}
    reachable = header_bytes >= token_bytes + len("AuthorizationBearer ") + 1
    if reachable:
        parse_config({"limits": limits})
        return
    with pytest.raises(ConfigError) as info:
        parse_config({"limits": limits})
    assert info.value.problems[0].startswith("limits: `maxHeaderBytes`")


def test_default_limits_are_consistent() -> None:
    limits = parse_config({}).limits
    assert limits.max_header_bytes >= limits.max_token_bytes + 21


@pytest.mark.parametrize("token_bytes", [256, 1000, 8192])
async def test_every_limit_refusal_is_a_catalogue_error(
    gateway_factory: StartGateway, upstream: CountingUpstream, token_bytes: int
) -> None:
    header_bytes = max(1024, token_bytes + 21)
    document = seed_document(
        upstream.url,
        limits={"maxTokenBytes": token_bytes, "maxHeaderBytes": header_bytes, "maxHeaders": 20},
    )
    gateway = await gateway_factory(document)
    cases = {
        "token_too_large": request(
            "/private/orders", "Authorization: Bearer " + "a" * (token_bytes + 1)
        ),
        "header_too_large": request("/private/orders", "X-Big: " + "v" * (header_bytes + 1)),
        "too many headers": request("/private/orders", *(f"X-H{i}: v" for i in range(30))),
        "long target": request("/private/orders?" + "q" * header_bytes),
    }
    for name, data in cases.items():
        response = await raw_exchange(gateway.port, data)
        code = code_of_body(body_of(response))
        assert code in BY_CODE, (name, response[:300])
        assert status_of(response) == BY_CODE[code].status
        assert headers_of(response)["content-type"] == "application/json"
        expected = "token_too_large" if name == "token_too_large" else "header_too_large"
        assert code == expected, (name, code)
        results.record(SUITE, "limit refusals answered with a catalogue error")
    big_body = (
        b"POST /public/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 2000\r\n"
        b"Connection: close\r\n\r\n" + b"x" * 2000
    )
    gateway2 = await gateway_factory(
        seed_document(upstream.url, limits={"maxBodyBytes": 1000})
        | {
            "paths": [
                {
                    "method": "POST",
                    "path": "/public/x",
                    "integration": {"type": "http_proxy", "server": "orders"},
                }
            ]
        }
    )
    response = await raw_exchange(gateway2.port, big_body)
    assert code_of_body(body_of(response)) == "body_too_large"


# --- malformed requests: one line, no token, no flood ----------------------------------


async def test_malformed_requests_get_one_line_and_no_token_in_any_log(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    token = hs_token(claims(iss=ISSUER, aud=AUDIENCE, secret_marker="s3cr3t-claim-value"))
    corpus = malformed_corpus(token)
    for name, data in corpus.items():
        response = await raw_exchange(gateway.port, data)
        status = status_of(response)
        assert status is not None, name
        assert 400 <= status < 500, (name, response[:200])
        code = code_of_body(body_of(response))
        assert code in BY_CODE, (name, response[:300])
        results.record(SUITE, "malformed requests answered with a catalogue error")
    gateway.request_log.flush()
    streams = (
        gateway.log_text()
        + "\n"
        + "\n".join(
            f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
        )
    )
    for fragment in token_fragments(token):
        assert fragment not in streams, f"a token fragment reached the logs: {fragment[:12]}..."
    assert "Traceback" not in streams
    assert not [r for r in caplog.records if r.exc_info]
    lines = [json.loads(line) for line in gateway.log_text().splitlines()]
    refused = [line for line in lines if line["code"] in ("malformed_request", "header_too_large")]
    assert refused
    assert all(set(line["detail"]) >= {"reason", "peer"} for line in refused)
    assert all(re.fullmatch(r"[\w-]+", line["detail"]["reason"]) for line in refused)
    results.record(SUITE, "log streams searched for token bytes", 2)


async def test_a_flood_of_malformed_requests_is_rate_limited_in_the_log(
    gateway: RunningGateway,
) -> None:
    data = request("/private/orders", "Authorization: Bearer", " folded")
    for _ in range(200):
        response = await raw_exchange(gateway.port, data)
        assert code_of_body(body_of(response)) == "malformed_request"
    gateway.request_log.flush()
    lines = [json.loads(line) for line in gateway.log_text().splitlines()]
    logged = [line for line in lines if line["code"] == "malformed_request"]
    # 10 a second at most: 200 requests in a few seconds leave far fewer lines.
    assert len(logged) < 100, len(logged)
    results.record(SUITE, "malformed requests in a flood", 200)


# --- CORS on every answer --------------------------------------------------------------


def cors_document(upstream_url: str) -> dict[str, Any]:
    document = seed_document(upstream_url, limits={"maxBodyBytes": 100})
    document["cors"] = {"allowOrigins": [ORIGIN], "allowCredentials": True}
    document["servers"]["down"] = "http://127.0.0.1:9"
    document["paths"] += [
        {
            "method": "POST",
            "path": "/public/upload",
            "integration": {"type": "http_proxy", "server": "orders"},
        },
        {"method": "GET", "path": "/down", "integration": {"type": "http_proxy", "server": "down"}},
    ]
    return document


def cors_cases(token: str) -> dict[str, tuple[bytes, int]]:
    def req(method: str, path: str, *lines: str, body: bytes = b"") -> bytes:
        head = f"{method} {path} HTTP/1.1\r\nHost: gw\r\n" + "".join(
            f"{line}\r\n" for line in lines
        )
        length = f"Content-Length: {len(body)}\r\n" if body else ""
        return (head + length + "Connection: close\r\n\r\n").encode() + body

    origin = f"Origin: {ORIGIN}"
    return {
        "404 no_route": (req("GET", "/privat/orders", origin), 404),
        "405": (req("DELETE", "/private/orders", origin), 405),
        "400 invalid_path": (req("GET", "/private%2forders", origin), 400),
        "400 duplicate_authorization": (
            req(
                "GET",
                "/private/orders",
                origin,
                f"Authorization: Bearer {token}",
                f"Authorization: Bearer {token}",
            ),
            400,
        ),
        "401": (req("GET", "/private/orders", origin), 401),
        "413": (req("POST", "/public/upload", origin, body=b"x" * 1000), 413),
        "502": (req("GET", "/down", origin), 502),
        "200": (req("GET", "/health", origin), 200),
        "preflight to an unknown path": (
            req(
                "OPTIONS",
                "/privat/orders",
                origin,
                "Access-Control-Request-Method: GET",
                "Access-Control-Request-Headers: authorization",
            ),
            204,
        ),
    }


async def test_cors_headers_on_every_answer_to_an_allowed_origin(
    gateway_factory: StartGateway, upstream: CountingUpstream
) -> None:
    gateway = await gateway_factory(cors_document(upstream.url))
    token = hs_token(claims(iss=ISSUER, aud=AUDIENCE))
    for name, (data, status) in cors_cases(token).items():
        response = await raw_exchange(gateway.port, data)
        headers = headers_of(response)
        assert status_of(response) == status, (name, response[:300])
        assert headers.get("access-control-allow-origin") == ORIGIN, name
        assert headers.get("access-control-allow-credentials") == "true", name
        assert "origin" in headers.get("vary", "").lower(), name
        if status != 204:
            exposed = {
                h.strip().lower() for h in headers["access-control-expose-headers"].split(",")
            }
            assert {"x-request-id", "www-authenticate"} <= exposed, name
        results.record(SUITE, "answers with CORS headers for an allowed origin")
    # A disallowed origin and no origin: no Allow-Origin, but `Vary: Origin` for caches.
    for origin_line in ("Origin: https://evil.example", None):
        for name, (data, _) in cors_cases(token).items():
            data = data.replace(
                f"Origin: {ORIGIN}\r\n".encode(),
                b"" if origin_line is None else f"{origin_line}\r\n".encode(),
            )
            response = await raw_exchange(gateway.port, data)
            headers = headers_of(response)
            assert "access-control-allow-origin" not in headers, name
            assert "origin" in headers.get("vary", "").lower(), (name, origin_line)


async def test_the_server_header_names_no_framework(gateway: RunningGateway) -> None:
    # (A proxied answer carries the upstream's own `Server`, if it sends one.)
    for path in ("/health", "/nowhere", "/private/orders"):
        answer = await gateway.request("GET", path)
        server = answer.headers.get("Server", "")
        assert "aiohttp" not in server.lower(), server
        assert "python" not in server.lower(), server
        assert not re.search(r"\d", server), server
    response = await raw_exchange(gateway.port, request("/x", "Authorization: Bearer", " folded"))
    server = headers_of(response).get("server", "")
    assert "aiohttp" not in server.lower()
    assert "python" not in server.lower()
