"""The gateway app in-process on a real loopback port, in front of a real aiohttp upstream
that records every request it receives, with real HS256 tokens."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from tests.support.gateway import (
    AUDIENCE,
    ISSUER,
    RunningGateway,
    bearer,
    start_gateway,
    stop_gateway,
)
from tests.support.tokens import HS_SECRET, claims, hs_token
from wardgate.gateway.app import GatewayRunner
from wardgate.gateway.embedded import demo_document
from wardgate.gateway.errors import CATALOGUE
from wardgate.gateway.metrics import GatewayMetrics


@dataclass
class Upstream:
    """A loopback upstream that records what reaches it."""

    seen: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    delay: asyncio.Event | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            {
                "method": request.method,
                "path": request.raw_path,
                "headers": dict(request.headers),
                "body": body,
            }
        )
        self.arrived.set()
        tail = request.match_info["tail"].rsplit("/", 1)[-1]
        if tail == "slow" and self.delay is not None:
            await self.delay.wait()
        if tail == "redirect":
            raise web.HTTPFound("https://elsewhere.example.com/")
        if tail == "hop":
            return web.Response(
                text="hop",
                headers={
                    "Connection": "close, X-Secret-Hop",
                    "X-Secret-Hop": "1",
                    "Keep-Alive": "x",
                },
            )
        if tail == "big":
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(64):
                await response.write(b"x" * 16384)
            await response.write_eof()
            return response
        if tail == "cut":
            response = web.StreamResponse()
            response.content_length = 1_000_000
            await response.prepare(request)
            await response.write(b"x" * 100_000)
            assert request.transport is not None
            request.transport.close()
            return response
        return web.json_response(
            {"path": request.raw_path, "len": len(body)}, headers={"X-Upstream": "yes"}
        )


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    recorder = Upstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    recorder.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield recorder
    if recorder.delay is not None:
        recorder.delay.set()
    await runner.cleanup()


@dataclass
class Running:
    url: str
    runner: GatewayRunner
    metrics: GatewayMetrics
    client: aiohttp.ClientSession

    async def get(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request("GET", path, **kwargs)

    async def request(self, method: str, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        response = await self.client.request(
            method, URL(self.url + path, encoded=True), allow_redirects=False, **kwargs
        )
        await response.read()
        return response


def seed(upstream_url: str, **extra: Any) -> dict[str, Any]:
    """The seed example with `servers.orders` at the upstream, top-level keys from `extra`."""
    return {**demo_document(upstream_url), **extra}


Start = Callable[[dict[str, Any]], Awaitable[Running]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    started: list[RunningGateway] = []

    async def _start(document: dict[str, Any]) -> Running:
        gateway = await start_gateway(document, log_requests=False)
        started.append(gateway)
        return Running(gateway.url, gateway.runner, gateway.metrics, gateway.client)

    yield _start
    for gateway in started:
        await stop_gateway(gateway)


async def raw_request(url: str, data: bytes) -> tuple[int, bytes]:
    """Send raw bytes (request targets a client library would rewrite); status and body."""
    target = URL(url)
    assert target.host is not None
    assert target.port is not None
    reader, writer = await asyncio.open_connection(target.host, target.port)
    writer.write(data)
    await writer.drain()
    received = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_seed_example(start: Start, upstream: Upstream) -> None:
    gw = await start(seed(upstream.url))
    health = await gw.get("/health")
    assert health.status == 200
    assert await health.json() == {"status": "ok"}
    assert health.headers["Content-Type"] == "application/json"
    denied = await gw.get("/private/orders")
    assert denied.status == 401
    assert (await denied.json())["error"]["code"] == "missing_token"
    assert upstream.seen == []
    allowed = await gw.get("/private/orders", headers=bearer())
    assert allowed.status == 200
    assert allowed.headers["X-Upstream"] == "yes"
    assert [s["path"] for s in upstream.seen] == ["/private/orders"]


async def test_error_body_and_challenge(start: Start, upstream: Upstream) -> None:
    gw = await start(seed(upstream.url))
    response = await gw.get("/private/orders", headers={"X-Request-Id": "trace-123"})
    body = await response.json()
    assert body == {
        "error": {
            "code": "missing_token",
            "message": "The request carries no token; it is read from the Authorization header.",
            "requestId": "trace-123",
        }
    }
    assert response.headers["X-Request-Id"] == "trace-123"
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="wardgate", error="invalid_request"')
    assert 'error_description="missing_token: ' in challenge

    expired = await gw.get("/private/orders", headers=bearer(lifetime=-3600))
    assert (await expired.json())["error"]["code"] == "token_expired"
    assert 'error="invalid_token"' in expired.headers["WWW-Authenticate"]
    assert "detail" not in (await expired.json())["error"]

    bad_id = await gw.get("/health", headers={"X-Request-Id": 'a"b'})
    assert bad_id.headers["X-Request-Id"] != 'a"b'


async def test_debug_mode_adds_detail_and_hint(start: Start, upstream: Upstream) -> None:
    gw = await start(seed(upstream.url, debug=True))
    response = await gw.get("/private/orders", headers=bearer(aud="someone-else"))
    error = (await response.json())["error"]
    assert error["code"] == "audience_mismatch"
    assert error["hint"]
    assert error["detail"]["expected"] == [AUDIENCE]
    assert HS_SECRET not in json.dumps(error)


async def test_insufficient_scope_is_403_with_challenge(start: Start, upstream: Upstream) -> None:
    document = seed(upstream.url)
    document["paths"][1]["auth"] = {"scopes": ["orders:read"]}
    gw = await start(document)
    response = await gw.get("/private/orders", headers=bearer(scope="profile"))
    assert response.status == 403
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    ok = await gw.get("/private/orders", headers=bearer(scope="profile orders:read"))
    assert ok.status == 200
    assert len(upstream.seen) == 1


async def test_no_route_and_method_not_allowed(start: Start, upstream: Upstream) -> None:
    gw = await start(seed(upstream.url))
    missing = await gw.get("/nowhere")
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "no_route"
    wrong = await gw.request("POST", "/private/orders", headers=bearer())
    assert wrong.status == 405
    assert (await wrong.json())["error"]["code"] == "method_not_allowed"
    assert wrong.headers["Allow"] == "GET, HEAD"
    assert upstream.seen == []


@pytest.mark.parametrize(
    "path",
    [
        "//private/orders",
        "/private//orders",
        "/private/./orders",
        "/public/../private/orders",
        "/public/%2e%2e/private/orders",
        "/%70rivate/orders",
        "/private/orders/../orders",
    ],
)
async def test_path_confusion_never_bypasses_auth(
    start: Start, upstream: Upstream, path: str
) -> None:
    document = seed(upstream.url)
    document["paths"].append({"method": "GET", "path": "/public/*", "response": {"public": True}})
    gw = await start(document)
    denied = await gw.get(path)
    assert denied.status == 401
    assert upstream.seen == []
    allowed = await gw.get(path, headers=bearer())
    assert allowed.status == 200
    assert [s["path"] for s in upstream.seen] == ["/private/orders"]


@pytest.mark.parametrize(
    "path", ["/private%2Forders", "/private%2forders", "/private%5Corders", "/private/orders%00"]
)
async def test_encoded_separators_are_rejected(start: Start, upstream: Upstream, path: str) -> None:
    gw = await start(seed(upstream.url))
    response = await gw.get(path, headers=bearer())
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_path"
    assert upstream.seen == []


@pytest.mark.parametrize("path", ["/Private/orders", "/private/orders/", "/private/orders;x"])
async def test_variants_are_other_paths(start: Start, upstream: Upstream, path: str) -> None:
    gw = await start(seed(upstream.url))
    response = await gw.get(path, headers=bearer())
    assert response.status == 404
    assert upstream.seen == []


async def test_absolute_form_target_uses_its_path(start: Start, upstream: Upstream) -> None:
    gw = await start(seed(upstream.url))
    request = (
        b"GET http://example.com/private/orders HTTP/1.1\r\nHost: example.com\r\n"
        b"Connection: close\r\n\r\n"
    )
    status, body = await raw_request(gw.url, request)
    assert status == 401
    assert b"missing_token" in body
    token = bearer()["Authorization"].encode()
    request = (
        b"GET http://example.com/private/../private/orders?x=1 HTTP/1.1\r\nHost: example.com\r\n"
        b"Authorization: " + token + b"\r\nConnection: close\r\n\r\n"
    )
    status, _ = await raw_request(gw.url, request)
    assert status == 200
    assert [s["path"] for s in upstream.seen] == ["/private/orders?x=1"]


async def test_asterisk_form_is_invalid_path(start: Start, upstream: Upstream) -> None:
    gw = await start(seed(upstream.url))
    status, body = await raw_request(
        gw.url, b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 400
    assert b"invalid_path" in body


async def test_head_is_authorised_like_get(start: Start, upstream: Upstream) -> None:
    gw = await start(seed(upstream.url))
    denied = await gw.request("HEAD", "/private/orders")
    assert denied.status == 401
    assert upstream.seen == []
    allowed = await gw.request("HEAD", "/private/orders", headers=bearer())
    assert allowed.status == 200
    assert int(allowed.headers["Content-Length"]) > 0
    assert [s["method"] for s in upstream.seen] == ["HEAD"]


async def test_method_override_headers_are_ignored_and_stripped(
    start: Start, upstream: Upstream
) -> None:
    gw = await start(seed(upstream.url))
    overrides = {
        "X-HTTP-Method-Override": "GET",
        "X-Method-Override": "GET",
        "X-HTTP-Method": "GET",
    }
    post = await gw.request("POST", "/private/orders", headers={**overrides, **bearer()})
    assert post.status == 405
    ok = await gw.get("/private/orders", headers={**bearer(), **{k: "DELETE" for k in overrides}})
    assert ok.status == 200
    forwarded = {k.lower() for k in upstream.seen[0]["headers"]}
    assert not forwarded & {k.lower() for k in overrides}


async def test_cors_preflight_before_auth_and_plain_options_authorised(
    start: Start, upstream: Upstream
) -> None:
    document = seed(upstream.url, cors={"allowOrigins": ["https://app.example.com"]})
    document["paths"].append(
        {
            "method": ["OPTIONS", "PUT"],
            "path": "/private/items",
            "auth": True,
            "integration": {"type": "http_proxy", "server": "orders"},
        }
    )
    gw = await start(document)
    preflight = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    answer = await gw.request("OPTIONS", "/private/orders", headers=preflight)
    assert answer.status == 204
    assert answer.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert answer.headers["Access-Control-Allow-Methods"] == "GET"
    assert "authorization" in answer.headers["Access-Control-Allow-Headers"]
    refused_origin = await gw.request(
        "OPTIONS", "/private/orders", headers={**preflight, "Origin": "https://evil.example.com"}
    )
    assert "Access-Control-Allow-Origin" not in refused_origin.headers
    # Not a preflight: an OPTIONS the route does not accept, or one that needs auth.
    plain = await gw.request("OPTIONS", "/private/orders")
    assert plain.status == 405
    items = await gw.request("OPTIONS", "/private/items")
    assert items.status == 401
    assert upstream.seen == []
    items_ok = await gw.request("OPTIONS", "/private/items", headers=bearer())
    assert items_ok.status == 200
    # Actual responses, errors included, carry the CORS headers so browsers can read them.
    denied = await gw.get("/private/orders", headers={"Origin": "https://app.example.com"})
    assert denied.status == 401
    assert denied.headers["Access-Control-Allow-Origin"] == "https://app.example.com"


async def test_request_headers_to_upstream(start: Start, upstream: Upstream) -> None:
    document = seed(upstream.url)
    document["authorizer"]["forwardClaims"] = [{"claim": "sub", "header": "X-User-Id"}]
    gw = await start(document)
    response = await gw.get(
        "/private/orders?b=2&a=%2F",
        headers={
            **bearer(sub="alice"),
            "X-User-Id": "mallory",
            "X-Forwarded-For": "203.0.113.9",
            "Connection": "X-Drop-Me",
            "X-Drop-Me": "1",
            "Proxy-Authorization": "Basic eA==",
            "TE": "trailers",
            "Cookie": "a=b",
            "Host": "api.example.com",
        },
    )
    assert response.status == 200
    seen = upstream.seen[0]
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert seen["path"] == "/private/orders?b=2&a=%2F"
    assert headers["x-user-id"] == "alice"
    assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == "api.example.com"
    assert headers["authorization"].startswith("Bearer ")
    assert headers["cookie"] == "a=b"
    assert headers["x-request-id"] == response.headers["X-Request-Id"]
    for dropped in ("x-drop-me", "proxy-authorization", "te"):
        assert dropped not in headers
    assert headers["host"] == upstream.url.removeprefix("http://")


async def test_authorization_not_forwarded_when_configured(
    start: Start, upstream: Upstream
) -> None:
    document = seed(upstream.url)
    document["authorizer"]["forwardAuthorization"] = False
    gw = await start(document)
    assert (await gw.get("/private/orders", headers=bearer())).status == 200
    assert "authorization" not in {k.lower() for k in upstream.seen[0]["headers"]}


async def test_public_route_strips_forged_claim_headers(start: Start, upstream: Upstream) -> None:
    document = seed(upstream.url)
    document["authorizer"]["forwardClaims"] = [{"claim": "sub", "header": "X-User-Id"}]
    document["paths"].append(
        {
            "method": "*",
            "path": "/open/*",
            "integration": {"type": "http_proxy", "server": "orders", "stripPrefix": "/open"},
        }
    )
    gw = await start(document)
    response = await gw.request("DELETE", "/open/a/b", headers={"X-User-Id": "admin"})
    assert response.status == 200
    assert upstream.seen[0]["path"] == "/a/b"
    assert upstream.seen[0]["method"] == "DELETE"
    assert "x-user-id" not in {k.lower() for k in upstream.seen[0]["headers"]}


def _open_routes(url: str, **server: Any) -> dict[str, Any]:
    document = seed(url)
    document["servers"] = {"orders": {"url": url, **server}}
    document["paths"].append(
        {
            "method": "*",
            "path": "/open/*",
            "integration": {"type": "http_proxy", "server": "orders"},
        }
    )
    return document


async def test_response_hop_by_hop_removed_and_redirects_passed(
    start: Start, upstream: Upstream
) -> None:
    gw = await start(_open_routes(upstream.url))
    hop = await gw.get("/open/hop")
    assert await hop.text() == "hop"
    assert "X-Secret-Hop" not in hop.headers
    assert "Keep-Alive" not in hop.headers
    redirect = await gw.get("/open/redirect")
    assert redirect.status == 302
    assert redirect.headers["Location"] == "https://elsewhere.example.com/"
    assert len(upstream.seen) == 2


async def test_streamed_bodies_and_limits(start: Start, upstream: Upstream) -> None:
    document = _open_routes(upstream.url)
    document["limits"] = {"maxBodyBytes": 200_000}
    gw = await start(document)
    big = await gw.get("/open/big")
    assert big.status == 200
    assert len(await big.read()) == 64 * 16384

    small = await gw.request("POST", "/open/echo", data=b"y" * 1000)
    assert (await small.json())["len"] == 1000

    async def chunks(n: int) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield b"z" * 10_000

    streamed = await gw.request("POST", "/open/echo", data=chunks(15))
    assert (await streamed.json())["len"] == 150_000
    count = len(upstream.seen)

    too_big = await gw.request("POST", "/open/echo", data=b"y" * 200_001)
    assert too_big.status == 413
    assert (await too_big.json())["error"]["code"] == "body_too_large"
    assert len(upstream.seen) == count

    too_big_chunked = await gw.request("POST", "/open/echo", data=chunks(30))
    assert too_big_chunked.status == 413


async def test_protected_body_not_sent_without_token(start: Start, upstream: Upstream) -> None:
    document = seed(upstream.url)
    document["paths"][1]["method"] = ["GET", "POST"]
    gw = await start(document)
    response = await gw.request(
        "POST", "/private/orders", data=b"x" * 100, headers={"Expect": "100-continue"}
    )
    assert response.status == 401
    assert upstream.seen == []
    ok = await gw.request(
        "POST", "/private/orders", data=b"x" * 100, headers={**bearer(), "Expect": "100-continue"}
    )
    assert (await ok.json())["len"] == 100


async def test_upstream_failures(start: Start, upstream: Upstream) -> None:
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    document = _open_routes(upstream.url, readTimeout=0.2)
    document["servers"]["down"] = f"http://127.0.0.1:{port}"
    document["paths"].append(
        {"method": "GET", "path": "/down", "integration": {"type": "http_proxy", "server": "down"}}
    )
    gw = await start(document)
    down = await gw.get("/down")
    assert down.status == 502
    assert (await down.json())["error"]["code"] == "upstream_unreachable"

    upstream.delay = asyncio.Event()
    slow = await gw.get("/open/slow")
    assert slow.status == 504
    assert (await slow.json())["error"]["code"] == "upstream_timeout"

    with pytest.raises(aiohttp.ClientPayloadError):
        await gw.get("/open/cut")
    # The gateway itself stays healthy.
    assert (await gw.get("/open/ok")).status == 200


async def test_metrics_count_requests_and_denials(start: Start, upstream: Upstream) -> None:
    gw = await start(seed(upstream.url))
    await gw.get("/private/orders")
    await gw.get("/private/orders", headers=bearer())
    text = (await asyncio.to_thread(_exposition, gw.metrics)).decode()
    assert (
        'wardgate_requests_total{code="missing_token",route="/private/orders",status="401"} 1.0'
        in text
    )
    assert 'wardgate_denials_total{authorizer="default",code="missing_token"} 1.0' in text
    assert 'wardgate_upstream_latency_seconds_count{server="orders"} 1.0' in text


def _exposition(metrics: GatewayMetrics) -> bytes:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry)


async def test_header_limits(start: Start, upstream: Upstream) -> None:
    document = seed(
        upstream.url, limits={"maxHeaders": 20, "maxHeaderBytes": 1024, "maxTokenBytes": 512}
    )
    gw = await start(document)
    many = "".join(f"X-H{i}: v\r\n" for i in range(40)).encode()
    status, _ = await raw_request(
        gw.url, b"GET /health HTTP/1.1\r\nHost: x\r\n" + many + b"Connection: close\r\n\r\n"
    )
    assert status in (400, 431)
    long = b"X-Long: " + b"v" * 2000 + b"\r\n"
    status, _ = await raw_request(
        gw.url, b"GET /health HTTP/1.1\r\nHost: x\r\n" + long + b"Connection: close\r\n\r\n"
    )
    assert status in (400, 431)
    conflicting = (
        b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"
    )
    status, _ = await raw_request(gw.url, conflicting)
    assert status == 400


async def test_static_response_explicit_form(start: Start, upstream: Upstream) -> None:
    document = seed(upstream.url)
    document["paths"].append(
        {
            "method": "GET",
            "path": "/teapot",
            "integration": {
                "type": "static",
                "status": 418,
                "headers": {"X-Tea": "earl-grey"},
                "body": "short and stout",
            },
        }
    )
    gw = await start(document)
    response = await gw.get("/teapot")
    assert response.status == 418
    assert response.headers["X-Tea"] == "earl-grey"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert await response.text() == "short and stout"


def test_every_catalogue_code_is_documented() -> None:
    from pathlib import Path

    from wardgate.gateway.errordocs import render_errors_markdown

    doc = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
    assert doc.read_text() == render_errors_markdown(), (
        "docs/errors.md is stale: run `wardgate errors --markdown > docs/errors.md`"
    )
    for entry in CATALOGUE:
        assert f"## `{entry.code}`" in doc.read_text()


def test_seed_helper_is_not_mutated() -> None:
    first = seed("http://127.0.0.1:1")
    second = copy.deepcopy(first)
    assert first == second


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        ("Basic dXNlcjpwYXNz", "invalid_auth_scheme"),
        ("Bearer opaque-token", "opaque_token"),
        ("Bearer a.b.c", "malformed_token"),
        ("Bearer " + hs_token(claims(iss=ISSUER, aud=AUDIENCE), alg="HS512"), None),
        ("Bearer " + hs_token(claims(iss=ISSUER, aud=AUDIENCE), secret="x" * 40), None),
        ("Bearer " + hs_token(claims(iss=ISSUER, aud=AUDIENCE, lifetime=-600)), None),
        ("Bearer " + hs_token(claims(iss="https://evil.example.com", aud=AUDIENCE)), None),
        ("Bearer " + hs_token(claims(iss=ISSUER, aud=AUDIENCE)).rsplit(".", 1)[0] + ".", None),
    ],
)
async def test_invalid_tokens_never_reach_the_upstream(
    start: Start, upstream: Upstream, authorization: str, code: str | None
) -> None:
    gw = await start(seed(upstream.url))
    for method in ("GET", "HEAD"):
        response = await gw.request(
            method, "/private/orders", headers={"Authorization": authorization}
        )
        assert response.status == 401
    body = await (await gw.get("/private/orders", headers={"Authorization": authorization})).json()
    if code is not None:
        assert body["error"]["code"] == code
    assert upstream.seen == []


async def test_drain_finishes_in_flight_and_refuses_new(start: Start, upstream: Upstream) -> None:
    from wardgate.gateway.admin import AdminSource
    from wardgate.gateway.server import drain

    gw = await start(_open_routes(upstream.url))
    gateway = gw.runner.gateway
    source = AdminSource(gateway.loaded, ready=lambda: gateway.ready and not gateway.draining)
    assert source.ready()
    upstream.delay = asyncio.Event()
    in_flight = asyncio.ensure_future(gw.get("/open/slow"))
    async with asyncio.timeout(10):
        await upstream.arrived.wait()
    (site,) = gw.runner.sites
    draining = asyncio.ensure_future(drain(gw.runner, site, 10.0))
    await asyncio.sleep(0)  # one step: drain marks the gateway and closes the listener
    assert gateway.draining
    assert not source.ready()
    async with aiohttp.ClientSession() as fresh:
        with pytest.raises(aiohttp.ClientConnectorError):
            await fresh.get(gw.url + "/health")
    assert not draining.done()
    upstream.delay.set()
    response = await in_flight
    assert response.status == 200
    assert response.headers.get("Connection") == "close"
    await asyncio.wait_for(draining, 10)
