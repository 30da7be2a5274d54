"""Routing by hostname, end to end: the gateway in-process on loopback in front of a
recording upstream; the `Host` header chooses among exact hosts, wildcards and the paths of
any host."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.gateway import CountingUpstream, StartGateway, raw_exchange, status_of
from wardgate.gateway.config import ConfigError, parse_config
from wardgate.gateway.hosts import HostTable, hostname_covers, request_host
from wardgate.gateway.matching import Match, MethodNotAllowed, NoRoute, RouteEntry


def proxied(path: str, server: str, **extra: Any) -> dict[str, Any]:
    return {
        "method": "GET",
        "path": path,
        "integration": {"type": "http_proxy", "server": server},
        **extra,
    }


def document(upstream: CountingUpstream) -> dict[str, Any]:
    return {
        "hostnames": ["api.example.com", "*.tenants.example.com"],
        "servers": {
            "exact": f"{upstream.url}/exact",
            "wild": f"{upstream.url}/wild",
            "any": f"{upstream.url}/any",
        },
        "paths": [
            proxied("/items", "exact", hostnames=["api.example.com"]),
            proxied("/items", "wild", hostnames=["*.tenants.example.com"]),
            proxied("/items", "any"),
            proxied("/only-any", "any"),
            {
                "method": "POST",
                "path": "/write",
                "hostnames": ["api.example.com"],
                "response": {"ok": 1},
            },
            proxied("/write", "any"),
        ],
    }


async def test_exact_host_then_wildcard_then_any(
    upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    gateway = await gateway_factory(document(upstream), secrets={})
    for host, expected in [
        ("api.example.com", "/exact/items"),
        ("API.Example.COM:8443", "/exact/items"),
        ("api.example.com.", "/exact/items"),
        ("a.tenants.example.com", "/wild/items"),
        ("x.y.tenants.example.com", "/wild/items"),
    ]:
        answer = await gateway.request("GET", "/items", {"Host": host})
        assert answer.status == 200, host
        assert upstream.seen[-1].path == expected, host
    falls_through = await gateway.request("GET", "/only-any", {"Host": "a.tenants.example.com"})
    assert falls_through.status == 200
    assert upstream.seen[-1].path == "/any/only-any"
    # The exact host's /write accepts POST only: a GET falls through to the any-host route.
    get = await gateway.request("GET", "/write", {"Host": "api.example.com"})
    assert get.status == 200
    assert upstream.seen[-1].path == "/any/write"


async def test_unknown_host_is_a_catalogued_404(
    upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    gateway = await gateway_factory(document(upstream), secrets={})
    for host in ["evil.example.net", "tenants.example.com", "example.com", "api.example.com.evil"]:
        answer = await gateway.request("GET", "/items", {"Host": host})
        assert (answer.status, answer.code) == (404, "unknown_host"), host
    assert upstream.seen == []


# `Host` values (and absolute-form authorities) that are not one `host[:port]`: URL parsers
# upstream read another host in some (`a:80@b` is `b`), others carry a path or quotes into
# the links an upstream builds from `X-Forwarded-Host`.
MALFORMED_AUTHORITIES = [
    "api.example.com:80@evil.example.com",
    "user@api.example.com",
    "api.example.com/reset?x=",
    "api.example.com:notaport",
    "api.example.com:80:80",
    "a b",
    'a"<script>',
    "api.example.com\\evil",
    "[::1",
]


@pytest.mark.parametrize("host", MALFORMED_AUTHORITIES)
async def test_a_host_that_is_not_host_and_port_is_refused(
    upstream: CountingUpstream, gateway_factory: StartGateway, host: str
) -> None:
    gateway = await gateway_factory(document(upstream), secrets={})
    request = f"GET /only-any HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    response = await raw_exchange(gateway.port, request.encode())
    assert status_of(response) == 400, response[:200]
    assert b'"malformed_request"' in response
    absolute = (
        f"GET http://{host}/only-any HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n"
    )
    if not any(mark in host for mark in "/?# "):  # else the authority ends earlier
        assert status_of(await raw_exchange(gateway.port, absolute.encode())) == 400
    assert upstream.seen == []


async def test_the_upstream_is_told_the_host_that_was_routed_on(
    upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    """An absolute-form target's authority replaces `Host` (RFC 9112 section 3.2.2): it is
    the one routed on and the one `X-Forwarded-Host` names, never the ignored `Host`."""
    gateway = await gateway_factory(document(upstream), secrets={})
    request = (
        "GET http://api.example.com/items HTTP/1.1\r\nHost: evil.example.net\r\n"
        "Connection: close\r\n\r\n"
    )
    assert status_of(await raw_exchange(gateway.port, request.encode())) == 200
    seen = upstream.seen[-1]
    assert seen.path == "/exact/items"
    assert seen.headers["X-Forwarded-Host"] == "api.example.com"
    ordinary = await gateway.request("GET", "/items", {"Host": "API.example.com:8443"})
    assert ordinary.status == 200
    assert upstream.seen[-1].headers["X-Forwarded-Host"] == "API.example.com:8443"


async def test_every_connection_field_and_forwarded_for_field_counts(
    upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    """A `Connection` list split over two fields names hop-by-hop fields in both (RFC 9110
    section 5.3: one list); two `X-Forwarded-For` fields are one list too."""
    gateway = await gateway_factory(document(upstream), secrets={})
    request = (
        "GET /items HTTP/1.1\r\nHost: api.example.com\r\nConnection: keep-alive\r\n"
        "Connection: X-Secret, Keep-Alive\r\nX-Secret: must-be-removed\r\n"
        "X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n"
        "Connection: close\r\n\r\n"
    )
    assert status_of(await raw_exchange(gateway.port, request.encode())) == 200
    headers = upstream.seen[-1].headers
    assert "X-Secret" not in headers
    assert headers["X-Forwarded-For"] == "1.1.1.1, 2.2.2.2, 127.0.0.1"


async def test_explain_agrees_on_hosts(upstream: CountingUpstream) -> None:
    from wardgate.commands.explain import render_text
    from wardgate.gateway.explain import explain_request
    from wardgate.gateway.loading import LoadedConfig

    loaded = LoadedConfig(config=parse_config(document(upstream)), secrets={})
    refused = await explain_request(loaded, "GET", "/items", {"Host": "evil.example.net"})
    assert (refused.status, refused.code) == (404, "unknown_host")
    assert refused.failing_check is not None
    assert refused.failing_check.name == "host"
    assert "host      FAIL 'evil.example.net' is not among" in render_text(refused, "t")
    admitted = await explain_request(loaded, "GET", "/items", {"Host": "b.tenants.example.com"})
    assert admitted.admitted
    assert admitted.route == "/items"
    assert "host      b.tenants.example.com" in render_text(admitted, "t")


async def test_a_gateway_without_hostnames_serves_any_host_and_narrowed_paths_only_theirs(
    upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    config = document(upstream)
    del config["hostnames"]
    gateway = await gateway_factory(config, secrets={})
    anywhere = await gateway.request("GET", "/items", {"Host": "other.example.org"})
    assert anywhere.status == 200
    assert upstream.seen[-1].path == "/any/items"
    narrowed = await gateway.request("POST", "/write", {"Host": "other.example.org"})
    assert (narrowed.status, narrowed.code) == (405, "method_not_allowed")


def test_config_problems_name_the_field() -> None:
    base: dict[str, Any] = {
        "hostnames": ["api.example.com"],
        "paths": [{"method": "GET", "path": "/a", "response": 1, "hostnames": ["b.example.com"]}],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(base)
    assert caught.value.problems == [
        "paths.0.hostnames.0: b.example.com is not among the gateway's hostnames (api.example.com)"
    ]
    with pytest.raises(ConfigError) as bad:
        parse_config({"hostnames": ["API.example.com:80"]})
    assert bad.value.problems[0].startswith("hostnames.0: 'API.example.com:80' is not a hostname")
    twice = {
        "paths": [
            {"method": "GET", "path": "/a", "response": 1, "hostnames": ["a.example.com"]},
            {"method": "GET", "path": "/a", "response": 2, "hostnames": ["a.example.com"]},
            {"method": "GET", "path": "/a", "response": 3, "hostnames": ["b.example.com"]},
        ]
    }
    with pytest.raises(ConfigError) as duplicate:
        parse_config(twice)
    assert duplicate.value.problems == ["paths.1: GET /a on a.example.com duplicates paths.0"]


def test_host_helpers() -> None:
    assert request_host("Api.Example.com:8080") == "api.example.com"
    assert request_host("[::1]:8080") == "[::1]"
    assert request_host(None) == ""
    assert hostname_covers("*.example.com", "a.example.com")
    assert hostname_covers("*.example.com", "*.a.example.com")
    assert not hostname_covers("*.example.com", "example.com")
    assert not hostname_covers("a.example.com", "*.example.com")


def test_host_table_precedence() -> None:
    get = frozenset({"GET"})
    table = HostTable.build(
        [
            (["a.example.com"], RouteEntry("/x", frozenset({"POST"}), "exact-post")),
            (["*.example.com"], RouteEntry("/x", get, "wild")),
            (None, RouteEntry("/y", get, "any")),
        ],
        [],
    )
    result, key = table.match("GET", "a.example.com", "/x")
    assert isinstance(result, Match)
    assert (result.payload, key) == ("wild", "*.example.com")
    refused, _ = table.match("PUT", "a.example.com", "/x")
    assert isinstance(refused, MethodNotAllowed)
    missing, _ = table.match("GET", "a.example.com", "/z")
    assert isinstance(missing, NoRoute)
