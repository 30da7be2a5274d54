"""Token sources other than the `Authorization` header, end to end: the gateway in-process
on loopback in front of a recording upstream, real HS256 tokens.

A token taken from the query never reaches the upstream's URL nor the request log; a
cookie-borne token needs an allowed origin on unsafe methods and WebSocket upgrades; two
different tokens in one request are refused."""

from __future__ import annotations

from typing import Any

from tests.support.gateway import CountingUpstream, StartGateway
from tests.support.tokens import AUDIENCE, ISSUER, claims, hs_token
from wardgate.commands.explain import render_text
from wardgate.gateway.explain import explain_request
from wardgate.gateway.loading import LoadedConfig

APP_ORIGIN = "https://app.example.com"


def token(**extra: Any) -> str:
    return hs_token(claims(iss=ISSUER, aud=AUDIENCE, **extra))


def document(upstream: CountingUpstream, **route_auth: Any) -> dict[str, Any]:
    return {
        "authorizer": {
            "type": "jwt",
            "secret": "$secret.JWT_SECRET",
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "tokenSources": [
                {"type": "authorization"},
                {"type": "cookie", "name": "sb-access-token"},
                {"type": "query", "name": "access_token"},
                {"type": "subprotocol", "prefix": "bearer."},
            ],
        },
        "servers": {"api": upstream.url},
        "cors": {"allowOrigins": [APP_ORIGIN], "allowCredentials": True},
        "paths": [
            {
                "method": ["GET", "POST"],
                "path": "/private/*",
                "auth": route_auth or True,
                "integration": {"type": "http_proxy", "server": "api"},
            },
            {
                "method": "GET",
                "path": "/header-only/*",
                "auth": {"tokenSources": [{"type": "authorization"}]},
                "integration": {"type": "http_proxy", "server": "api"},
            },
        ],
    }


async def test_query_token_admits_and_never_reaches_the_upstream_or_the_log(
    upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    gateway = await gateway_factory(document(upstream))
    jwt = token()
    answer = await gateway.request("GET", f"/private/feed?a=1&access_token={jwt}&b=2")
    assert answer.status == 200
    (seen,) = upstream.seen
    assert seen.path == "/private/feed?a=1&b=2"
    assert jwt not in str(seen.headers)
    assert "Authorization" not in seen.headers
    for part in jwt.split("."):
        assert part not in gateway.log_text()


async def test_query_token_percent_encoded_name_is_found_and_removed(
    upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    gateway = await gateway_factory(document(upstream))
    jwt = token()
    answer = await gateway.request("GET", f"/private/feed?access%5Ftoken={jwt}")
    assert answer.status == 200
    assert upstream.seen[0].path == "/private/feed"


async def test_query_token_hidden_elsewhere_in_the_query_is_refused(
    upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    gateway = await gateway_factory(document(upstream))
    jwt = token()
    answer = await gateway.request("GET", f"/private/feed?access_token={jwt}&x=1;t={jwt}")
    assert (answer.status, answer.code) == (400, "ambiguous_token")
    assert upstream.seen == []


async def test_a_query_token_parameter_is_removed_even_when_the_header_carries_the_token(
    upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    gateway = await gateway_factory(document(upstream))
    jwt = token()
    answer = await gateway.request(
        "GET", f"/private/feed?access_token={jwt}", {"Authorization": f"Bearer {jwt}"}
    )
    assert answer.status == 200
    assert upstream.seen[0].path == "/private/feed"


async def test_different_tokens_in_two_sources_are_refused(
    upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    gateway = await gateway_factory(document(upstream))
    answer = await gateway.request(
        "GET",
        f"/private/feed?access_token={token(sub='mallory')}",
        {"Authorization": f"Bearer {token(sub='alice')}"},
    )
    assert (answer.status, answer.code) == (400, "ambiguous_token")
    twice = await gateway.request(
        "GET", f"/private/feed?access_token={token(sub='a')}&access_token={token(sub='b')}"
    )
    assert (twice.status, twice.code) == (400, "ambiguous_token")
    assert upstream.seen == []


async def test_cookie_token_on_a_safe_method_needs_no_origin(
    upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    gateway = await gateway_factory(document(upstream))
    answer = await gateway.request(
        "GET", "/private/me", {"Cookie": f"theme=dark; sb-access-token={token()}"}
    )
    assert answer.status == 200


async def test_cookie_token_on_an_unsafe_method_needs_an_allowed_origin(
    upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    gateway = await gateway_factory(document(upstream))
    cookie = {"Cookie": f"sb-access-token={token()}"}
    allowed = await gateway.request("POST", "/private/orders", {**cookie, "Origin": APP_ORIGIN})
    assert allowed.status == 200
    same_host = await gateway.request(
        "POST", "/private/orders", {**cookie, "Origin": f"http://127.0.0.1:{gateway.port}"}
    )
    assert same_host.status == 200
    via_referer = await gateway.request(
        "POST", "/private/orders", {**cookie, "Referer": f"{APP_ORIGIN}/checkout?step=2"}
    )
    assert via_referer.status == 200
    refused = [
        {**cookie, "Origin": "https://evil.example.net"},
        {**cookie, "Origin": "null"},
        cookie,
        {**cookie, "Referer": "https://evil.example.net/page"},
    ]
    for headers in refused:
        answer = await gateway.request("POST", "/private/orders", headers)
        assert (answer.status, answer.code) == (403, "csrf_origin_refused"), headers
    assert len(upstream.seen) == 3


async def test_cookie_token_websocket_upgrade_needs_an_allowed_origin(
    upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    gateway = await gateway_factory(document(upstream))
    headers = {
        "Cookie": f"sb-access-token={token()}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Origin": "https://evil.example.net",
    }
    answer = await gateway.request("GET", "/private/socket", headers)
    assert (answer.status, answer.code) == (403, "csrf_origin_refused")


async def test_header_token_needs_no_origin(
    upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    gateway = await gateway_factory(document(upstream))
    answer = await gateway.request(
        "POST", "/private/orders", {"Authorization": f"Bearer {token()}", "Origin": "null"}
    )
    assert answer.status == 200


async def test_subprotocol_token(upstream: CountingUpstream, gateway_factory: StartGateway) -> None:
    gateway = await gateway_factory(document(upstream))
    answer = await gateway.request(
        "GET", "/private/feed", {"Sec-WebSocket-Protocol": f"chat, bearer.{token()}"}
    )
    assert answer.status == 200
    missing = await gateway.request("GET", "/private/feed", {"Sec-WebSocket-Protocol": "chat"})
    assert (missing.status, missing.code) == (401, "missing_token")
    assert "cookie sb-access-token" in missing.body.decode()


async def test_route_override_reads_the_header_only(
    upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    gateway = await gateway_factory(document(upstream))
    jwt = token()
    answer = await gateway.request("GET", f"/header-only/x?access_token={jwt}")
    assert (answer.status, answer.code) == (401, "missing_token")
    ok = await gateway.request("GET", "/header-only/x", {"Authorization": f"Bearer {jwt}"})
    assert ok.status == 200


async def test_an_unread_authorization_header_never_reaches_the_upstream(
    upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    config = document(upstream)
    config["authorizer"]["tokenSources"] = [{"type": "cookie", "name": "session"}]
    gateway = await gateway_factory(config)
    answer = await gateway.request(
        "GET",
        "/private/me",
        {"Cookie": f"session={token()}", "Authorization": "Bearer forged.by.client"},
    )
    assert answer.status == 200
    assert upstream.seen[0].authorization is None


async def test_explain_says_where_the_token_came_from_and_hides_a_query_token(
    upstream: CountingUpstream,
) -> None:
    from pydantic import SecretStr

    from tests.support.tokens import HS_SECRET
    from wardgate.gateway.config import parse_config

    loaded = LoadedConfig(
        config=parse_config(document(upstream)), secrets={"JWT_SECRET": SecretStr(HS_SECRET)}
    )
    jwt = token()
    report = await explain_request(loaded, "GET", f"/private/feed?access_token={jwt}&x=1")
    assert report.admitted
    assert report.token_source == "the query parameter access_token"
    text = render_text(report, "test")
    assert "token in  the query parameter access_token" in text
    assert "/private/feed?access_token=REDACTED&x=1" in text
    for part in jwt.split("."):
        assert part not in text
        assert part not in str(report.to_json()["request"])
    cookie = await explain_request(
        loaded,
        "POST",
        "/private/orders",
        [("Cookie", f"sb-access-token={jwt}"), ("Origin", "https://evil.example.net")],
    )
    assert cookie.code == "csrf_origin_refused"
    assert cookie.failing_check is not None
    assert cookie.failing_check.name == "origin"
