"""Path and method confusion through a running gateway, with raw request targets.

The gateway serves the seed example plus an open `/public/*` proxied to the same upstream
as the protected `/private/orders`: the setting in which a path that the gateway matches as
public but the upstream serves as private would be a bypass. No request here carries a
token; the upstream counts what it receives, and no forwarded path may reach a protected
path under any common server's reading of it (`;` path parameters stripped per segment as
Tomcat and Jetty do, `\\` read as `/` as IIS does, case folded, dot segments resolved).

The normaliser's own rules are unit-tested in `tests/unit/test_paths.py`; the basics of
these cases through the app are in `tests/integration/test_gateway_app.py`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

import pytest

from tests.support import results
from tests.support.gateway import (
    CountingUpstream,
    RunningGateway,
    StartGateway,
    raw_exchange,
    seed_document,
    status_of,
)
from tests.support.tokens import AUDIENCE, ISSUER, claims, hs_token

SUITE = "path and method confusion"

# Target -> the statuses that are acceptable answers without a token.
DENIED = {401}
REFUSED = {400}
UNKNOWN = {404}
PATHS: dict[str, set[int]] = {
    "/private/orders": DENIED,
    "//private/orders": DENIED,
    "///private///orders": DENIED,
    "/private//orders": DENIED,
    "/private/./orders": DENIED,
    "/./private/orders": DENIED,
    "/private/orders/.": UNKNOWN,  # `/private/orders/`: the trailing slash is significant
    "/private/orders/": UNKNOWN,
    "/private/orders/..": UNKNOWN,
    "/private/x/../orders": DENIED,
    "/public/../private/orders": DENIED,
    "/public/x/../../private/orders": DENIED,
    "/../private/orders": DENIED,
    "/public/../../../private/orders": DENIED,
    "/public/%2e%2e/private/orders": DENIED,
    "/public/%2E%2E/private/orders": DENIED,
    "/public/.%2e/private/orders": DENIED,
    "/public/%2e./private/orders": DENIED,
    "/public/%2e/../private/orders": DENIED,
    "/%70rivate/orders": DENIED,
    "/private/%6Frders": DENIED,
    "/%70%72%69%76%61%74%65/%6f%72%64%65%72%73": DENIED,
    "/public/..%2Fprivate/orders": REFUSED,
    "/public/..%2fprivate/orders": REFUSED,
    "/public%2F..%2Fprivate%2Forders": REFUSED,
    "/private%2Forders": REFUSED,
    "/private%2forders": REFUSED,
    "/public/..%5Cprivate/orders": REFUSED,
    "/public/..%5cprivate/orders": REFUSED,
    "/public\\..\\private\\orders": REFUSED,
    "/public/..\\private/orders": REFUSED,
    "/public/%252e%252e/private/orders": {200},  # decoded once: a literal `%2e%2e` segment
    "/public/%252e%252e%252fprivate%252forders": {200},
    "/public/%25%32%65%25%32%65/private/orders": {200},
    "/public/%2e%2e%252fprivate/orders": {200},
    "/public/%c0%ae%c0%ae/private/orders": REFUSED,  # overlong UTF-8 dots
    "/public/%e0%80%ae%e0%80%ae/private/orders": REFUSED,
    "/public/%u002e%u002e/private/orders": REFUSED,
    "/Private/orders": UNKNOWN,
    "/PRIVATE/ORDERS": UNKNOWN,
    "/private/Orders": UNKNOWN,
    "/PRIVATE/orders": UNKNOWN,
    "/private/orders;": UNKNOWN,
    "/private/orders;x=1": UNKNOWN,
    "/private;x=1/orders": UNKNOWN,
    "/private/orders;/": UNKNOWN,
    "/public;/../private/orders": DENIED,
    "/public/..;/private/orders": REFUSED,
    "/public/.;/../private/orders": REFUSED,
    "/public/%2e%2e;/private/orders": REFUSED,
    "/public/..;x=1/private/orders": REFUSED,
    "/public/x/..;/..;/private/orders": REFUSED,
    "/private/orders%00": REFUSED,
    "/private/orders%00.json": REFUSED,
    "/public/x%00/../../private/orders": REFUSED,
    "/private/orders%20": UNKNOWN,
    "/private/orders%09": REFUSED,
    "/private/orders%0d%0aX-Injected:%201": REFUSED,
    "/private/orders?x=1": DENIED,
    "/private/orders?/../../public/x": DENIED,
    "/public/x?/../../private/orders": {200},  # the query is not part of the path
    "/private/orders#/../../public/x": DENIED,
    "/public/x#/../../private/orders": {200, 400},
    "/privat%C3%A9/orders": UNKNOWN,
    # Raw non-ASCII bytes in the request line: aiohttp's parser refuses them.
    "/\uff50rivate/orders": {400, 404},  # fullwidth p
    "/private/orders\u200b": {400, 404},
    "private/orders": REFUSED,
    "*": REFUSED,
}

ABSOLUTE_FORM: dict[str, set[int]] = {
    "http://127.0.0.1/private/orders": DENIED,
    "HTTP://127.0.0.1/private/orders": DENIED,
    "http://evil.example.com/private/orders": DENIED,
    "https://127.0.0.1/public/../private/orders": DENIED,
    "http://127.0.0.1/public/%2e%2e/private/orders": DENIED,
    "http://127.0.0.1//private/orders": DENIED,
    "http://user:pass@127.0.0.1/private/orders": REFUSED,  # userinfo: not host[:port]
    "http://127.0.0.1/public/..;/private/orders": REFUSED,
    "http://127.0.0.1?/private/orders": UNKNOWN,  # path `/`
    "http://127.0.0.1": UNKNOWN,
    "ftp://127.0.0.1/private/orders": REFUSED,
    "127.0.0.1:80": REFUSED,  # authority form is for CONNECT only
}


def upstream_readings(path: str) -> set[str]:
    """How common servers could read a forwarded path: each resolved to a plain path."""
    path = path.partition("?")[0]
    variants = {path, path.replace("\\", "/"), path.lower()}
    variants |= {re.sub(r";[^/]*", "", v) for v in list(variants)}  # Tomcat, Jetty
    variants |= {unquote(v) for v in list(variants)}
    readings = set()
    for variant in variants:
        kept: list[str] = []
        for segment in variant.split("/"):
            if segment in ("", "."):
                continue
            if segment == "..":
                if kept:
                    kept.pop()
                continue
            kept.append(segment)
        readings.add("/" + "/".join(kept))
    return readings


def reaches_protected(path: str) -> bool:
    return any(r.lower().startswith(("/private", "/rs")) for r in upstream_readings(path))


def assert_no_protected_reach(upstream: CountingUpstream) -> None:
    bypasses = [s.path for s in upstream.seen if not s.authorization and reaches_protected(s.path)]
    assert bypasses == []


def request_bytes(method: str, target: str, extra: str = "") -> bytes:
    line = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n"
    return line.encode("utf-8")


@pytest.fixture
async def gateway(upstream: CountingUpstream, gateway_factory: StartGateway) -> RunningGateway:
    return await gateway_factory(seed_document(upstream.url))


async def check_targets(
    gateway: RunningGateway, upstream: CountingUpstream, targets: dict[str, set[int]]
) -> None:
    failures: list[str] = []
    for target, allowed in targets.items():
        for method in ("GET", "HEAD"):
            before = len(upstream.seen)
            response = await raw_exchange(gateway.port, request_bytes(method, target))
            status = status_of(response)
            if status not in allowed:
                failures.append(f"{method} {target!r}: {status}, expected one of {allowed}")
            elif status == 200 and len(upstream.seen) != before + 1:
                failures.append(f"{method} {target!r}: 200 without reaching the upstream")
            elif status != 200 and len(upstream.seen) != before:
                failures.append(f"{method} {target!r}: {status}, yet the upstream saw it")
            else:
                results.record(SUITE, "confusing targets answered as expected")
    assert failures == [], "\n".join(failures)
    assert_no_protected_reach(upstream)


async def test_path_confusion(gateway: RunningGateway, upstream: CountingUpstream) -> None:
    await check_targets(gateway, upstream, PATHS)


async def test_absolute_form_targets(gateway: RunningGateway, upstream: CountingUpstream) -> None:
    await check_targets(gateway, upstream, ABSOLUTE_FORM)


async def test_forwarded_paths_are_the_normalised_ones(
    gateway: RunningGateway, upstream: CountingUpstream
) -> None:
    cases = {
        "/public/a/./b//c/../d": "/public/a/b/d",
        "/public/%7euser/%41": "/public/~user/A",
        "/public/%3b/x": "/public/%3B/x",
        "/public/caf%c3%a9": "/public/caf%C3%A9",
        "/public/%252e%252e/private/orders": "/public/%252e%252e/private/orders",
    }
    for target, forwarded in cases.items():
        response = await raw_exchange(gateway.port, request_bytes("GET", target))
        assert status_of(response) == 200, target
        assert upstream.seen[-1].path == forwarded
        results.record(SUITE, "confusing targets answered as expected")
    assert_no_protected_reach(upstream)


# Method and target combinations on the protected route: (method, extra headers, statuses).
METHODS: list[tuple[str, str, set[int]]] = [
    ("GET", "", DENIED),
    ("HEAD", "", DENIED),
    ("OPTIONS", "", {405}),
    (
        "OPTIONS",
        "Origin: https://evil.example.com\r\nAccess-Control-Request-Method: GET\r\n",
        {405},
    ),
    ("POST", "Content-Length: 0\r\n", {405}),
    ("PUT", "Content-Length: 0\r\n", {405}),
    ("DELETE", "", {405}),
    ("PATCH", "Content-Length: 0\r\n", {405}),
    ("TRACE", "", {405}),
    ("CONNECT", "", {400, 405}),
    ("PROPFIND", "", {405}),
    ("FOO", "", {400, 405}),
    ("get", "", {400, 405}),
    ("Get", "", {400, 405}),
    ("GET ", "", {400, 401}),
    ("POST", "X-HTTP-Method-Override: GET\r\nContent-Length: 0\r\n", {405}),
    ("POST", "X-Method-Override: GET\r\nContent-Length: 0\r\n", {405}),
    ("POST", "X-HTTP-Method: GET\r\nContent-Length: 0\r\n", {405}),
    ("GET", "X-HTTP-Method-Override: OPTIONS\r\n", DENIED),
    ("GET", "X-HTTP-Method-Override: HEAD\r\n", DENIED),
    ("HEAD", "X-HTTP-Method-Override: GET\r\n", DENIED),
    ("GET", "X-Original-URL: /public/x\r\n", DENIED),
    ("GET", "X-Rewrite-URL: /public/x\r\n", DENIED),
    ("GET", "X-Forwarded-Prefix: /public\r\n", DENIED),
]


async def test_methods_and_overrides_on_a_protected_route(
    gateway: RunningGateway, upstream: CountingUpstream
) -> None:
    failures: list[str] = []
    for method, extra, allowed in METHODS:
        for target in ("/private/orders", "//private/./orders"):
            response = await raw_exchange(gateway.port, request_bytes(method, target, extra))
            status = status_of(response)
            if status not in allowed:
                failures.append(f"{method!r} {target} {extra!r}: {status}, expected {allowed}")
            else:
                results.record(SUITE, "method confusions answered as expected")
    assert failures == [], "\n".join(failures)
    assert upstream.seen == []


async def test_public_route_cannot_carry_a_request_to_a_protected_one(
    gateway: RunningGateway, upstream: CountingUpstream
) -> None:
    """Headers that some frameworks read as the real path reach the upstream only with the
    public path the gateway matched; the gateway never rewrites them into a route."""
    extra = (
        "X-Original-URL: /private/orders\r\nX-Rewrite-URL: /private/orders\r\n"
        "X-HTTP-Method-Override: DELETE\r\n"
    )
    response = await raw_exchange(gateway.port, request_bytes("GET", "/public/x", extra))
    assert status_of(response) == 200
    (seen,) = upstream.seen
    assert seen.path == "/public/x"
    assert "X-HTTP-Method-Override" not in seen.headers
    results.record(SUITE, "method confusions answered as expected")


async def test_pipelined_requests_are_each_authorised(
    gateway: RunningGateway, upstream: CountingUpstream
) -> None:
    """A public request followed on the same connection by a protected one: the second is
    matched and authorised on its own, not as part of the first."""
    data = (
        b"GET /public/x HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /private/orders HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /public/../private/orders HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    response = await raw_exchange(gateway.port, data)
    statuses = [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3})", response)]
    assert statuses == [200, 401, 401]
    assert [s.path for s in upstream.seen] == ["/public/x"]
    results.record(SUITE, "method confusions answered as expected")


def nested_document(upstream_url: str) -> dict[str, Any]:
    """Protected routes inside a public wildcard and beside a public parameter route."""
    proxied = {"type": "http_proxy", "server": "orders"}
    return {
        "authorizer": {
            "type": "jwt",
            "secret": "$secret.JWT_SECRET",
            "issuer": ISSUER,
            "audience": AUDIENCE,
        },
        "servers": {"orders": upstream_url},
        "paths": [
            {"method": "*", "path": "/public/*", "integration": proxied},
            {"method": "GET", "path": "/public/secret", "auth": True, "integration": proxied},
            {"method": "GET", "path": "/items/{id}", "integration": proxied},
            {"method": "GET", "path": "/items/admin", "auth": True, "integration": proxied},
        ],
    }


# Spellings of a protected path that the gateway matches to a public route while upstream
# servers read the protected one: `;` parameters (Tomcat, Jetty, Spring), case and a
# trailing slash (Express's defaults).
LENIENT_SPELLINGS = [
    "/public/secret;jsessionid=x",
    "/public/secret;",
    "/public/Secret",
    "/public/SECRET",
    "/public/secret/",
    "/public/SECRET;a=b/",
    "/items/admin;x",
    "/items/ADMIN",
    "/items/Admin;v=1",
]


@pytest.mark.parametrize("spelling", LENIENT_SPELLINGS)
async def test_a_protected_route_is_not_reached_through_a_lenient_spelling(
    upstream: CountingUpstream, gateway_factory: StartGateway, spelling: str
) -> None:
    gateway = await gateway_factory(nested_document(upstream.url))
    answer = await gateway.request("GET", spelling)
    assert (answer.status, answer.code) == (400, "invalid_path"), spelling
    assert upstream.seen == []
    # With a token the protected route itself is reachable as written.
    token = hs_token(claims(iss=ISSUER, aud=AUDIENCE))
    protected = spelling.split(";")[0].rstrip("/").lower()
    allowed = await gateway.request("GET", protected, {"Authorization": f"Bearer {token}"})
    assert allowed.status == 200


async def test_public_paths_that_read_as_no_protected_route_still_pass(
    upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    gateway = await gateway_factory(nested_document(upstream.url))
    for path in ["/public/Other", "/public/a;b", "/public/x/", "/items/ABC123", "/items/x;y"]:
        answer = await gateway.request("GET", path)
        assert answer.status == 200, path
    assert len(upstream.seen) == 5
