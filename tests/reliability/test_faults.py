"""Faults through a running gateway: the upstream down, slow, or resetting mid-response;
the JWKS endpoint down, slow, serving garbage, or rotating keys. Each fault gets its error
code, the gateway survives it (other requests keep being served), and recovers as soon as
the fault ends.

The same faults at the unit level: the proxy in `tests/integration/test_gateway_app.py`
(`test_upstream_failures`), the key cache in `tests/integration/test_jwks.py`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.support import results
from tests.support.gateway import (
    AUDIENCE,
    ISSUER,
    CountingUpstream,
    RunningGateway,
    StartGateway,
    bearer,
    seed_document,
)
from tests.support.jwks_server import JwksServer
from tests.support.tokens import NOW, Clock, KeyPair, claims, ec_key, jwks, rsa_key

SUITE = "faults"


def open_document(upstream_url: str, **server: Any) -> dict[str, Any]:
    document = seed_document(upstream_url)
    document["servers"] = {"orders": {"url": upstream_url, **server}}
    return document


async def healthy(gateway: RunningGateway, path: str = "/public/ok") -> None:
    answer = await gateway.request("GET", path)
    assert answer.status == 200
    assert (await gateway.request("GET", "/health")).status == 200


async def test_upstream_down_slow_and_resetting(
    upstream: CountingUpstream, gateway_factory: StartGateway, long_run: bool
) -> None:
    gateway = await gateway_factory(open_document(upstream.url, readTimeout=0.3))
    rounds = 10 if long_run else 2
    for _ in range(rounds):
        await healthy(gateway)

        # Down: the port refuses connections; pooled connections die with the server.
        await upstream.stop()
        for _ in range(3):
            down = await gateway.request("GET", "/public/ok")
            assert (down.status, down.code) == (502, "upstream_unreachable")
            assert (await gateway.request("GET", "/health")).status == 200
            results.record(SUITE, "upstream down: 502 upstream_unreachable")
        await upstream.start()  # same port
        await healthy(gateway)
        results.record(SUITE, "recoveries after the fault ended")

        # Slow: past the read timeout.
        upstream.gate = asyncio.Event()
        slow = await gateway.request("GET", "/public/slow")
        assert (slow.status, slow.code) == (504, "upstream_timeout")
        results.record(SUITE, "upstream slow: 504 upstream_timeout")
        upstream.gate.set()
        upstream.gate = None
        await healthy(gateway)
        results.record(SUITE, "recoveries after the fault ended")

        # Closed before any response: 502 (retried once for an idempotent request).
        drop = await gateway.request("POST", "/public/drop", data=b"x")
        assert (drop.status, drop.code) == (502, "upstream_unreachable")
        results.record(SUITE, "upstream closes before responding: 502 upstream_unreachable")

        # Reset mid-response: the status line has gone out, so the client must see a
        # truncated response (never a complete-looking one).
        try:
            truncated = await gateway.request("GET", "/public/reset")
        except aiohttp.ClientPayloadError:
            pass
        else:
            raise AssertionError(f"a reset upstream response looked complete: {truncated}")
        results.record(SUITE, "upstream reset mid-response: truncated for the client")
        await healthy(gateway)
        results.record(SUITE, "recoveries after the fault ended")


async def test_upstream_faults_under_concurrent_load(
    upstream: CountingUpstream, gateway_factory: StartGateway, long_run: bool
) -> None:
    """While one path of the upstream hangs, requests to the others are answered."""
    gateway = await gateway_factory(open_document(upstream.url, readTimeout=0.5))
    upstream.gate = asyncio.Event()
    hanging = [asyncio.ensure_future(gateway.request("GET", "/public/slow")) for _ in range(20)]
    for _ in range(100 if long_run else 30):
        assert (await gateway.request("GET", "/public/ok")).status == 200
    answers = await asyncio.gather(*hanging)
    assert {(a.status, a.code) for a in answers} == {(504, "upstream_timeout")}
    results.record(SUITE, "upstream slow: 504 upstream_timeout", len(answers))


def jwks_document(upstream_url: str, jwks_url: str) -> dict[str, Any]:
    document = seed_document(upstream_url)
    document["authorizers"] = {
        "idp": {
            "type": "jwt",
            "jwksUri": jwks_url,
            "algorithms": ["RS256", "ES256"],
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "jwksRefetchSeconds": 1,
            "jwksCacheSeconds": 60,
            "jwksTimeoutSeconds": 0.3,
        }
    }
    document["paths"].append(
        {
            "method": "GET",
            "path": "/rs/orders",
            "auth": {"authorizer": "idp"},
            "integration": {"type": "http_proxy", "server": "orders"},
        }
    )
    return document


async def call(gateway: RunningGateway, key: KeyPair, clock: Clock) -> tuple[int, str | None]:
    token = key.sign(claims(now=clock.now))
    answer = await gateway.request("GET", "/rs/orders", bearer(token))
    return answer.status, answer.code


async def test_jwks_down_slow_garbage_and_rotating(
    upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    idp = await JwksServer().start()
    try:
        await _jwks_scenario(idp, upstream, gateway_factory)
    finally:
        if idp.gate is not None:
            idp.gate.set()
        await idp.stop()


async def _jwks_scenario(
    idp: JwksServer, upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    clock = Clock(NOW)
    first, third = rsa_key("rot-1"), ec_key("rot-3")
    ok = (200, None)
    unavailable = (503, "idp_unavailable")

    # No key can be had at all: 503, never 401.
    await idp.stop()
    gateway = await gateway_factory(jwks_document(upstream.url, idp.url), clock=clock)
    assert await call(gateway, first, clock) == unavailable
    results.record(SUITE, "JWKS unreachable with no key: 503 idp_unavailable")
    idp.document = jwks(first)
    await idp.start()
    clock.advance(2)
    assert await call(gateway, first, clock) == ok
    results.record(SUITE, "recoveries after the fault ended")

    faults = {
        "down": None,
        "garbage": (b"<html>502 Bad Gateway</html>", 200),
        "only unusable keys": (b'{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "x"}]}', 200),
        "server error": (b"{}", 500),
        "slow": "gate",
    }
    for name, fault in faults.items():
        second = ec_key(f"new-after-{name}")
        if fault is None:
            await idp.stop()
        elif fault == "gate":
            idp.gate = asyncio.Event()
        else:
            assert isinstance(fault, tuple)
            idp.document, idp.status = fault
        clock.advance(120)  # past the cache TTL: the next request revalidates
        # Cached keys keep working through the fault ...
        for _ in range(3):
            assert await call(gateway, first, clock) == ok, name
        results.record(SUITE, f"JWKS {name}: cached keys kept working")
        # ... a kid that cannot be looked up is a 503 ...
        clock.advance(2)
        assert await call(gateway, second, clock) == unavailable, name
        results.record(SUITE, f"JWKS {name}: unknown kid is 503 idp_unavailable")
        # ... and once the fault ends, a new key is picked up.
        if fault is None:
            await idp.start()
        elif fault == "gate":
            assert idp.gate is not None
            idp.gate.set()
            idp.gate = None
        idp.document, idp.status = jwks(first, second), 200
        clock.advance(2)
        assert await call(gateway, second, clock) == ok, name
        assert await call(gateway, first, clock) == ok, name
        results.record(SUITE, "recoveries after the fault ended")
        idp.document = jwks(first)

    # Rotation: a new key appears and the old one is removed.
    idp.document = jwks(first, third)
    clock.advance(2)
    assert await call(gateway, third, clock) == ok
    idp.document = jwks(third)
    clock.advance(120)
    await call(gateway, first, clock)  # served from the cache, refreshing in the background
    for _ in range(200):
        status = await call(gateway, first, clock)
        if status != ok:
            break
        await asyncio.sleep(0.01)
    assert status == (401, "unknown_kid")
    assert await call(gateway, third, clock) == ok
    results.record(SUITE, "JWKS rotation: new key picked up, removed key refused")
    assert upstream.protected_hits() == [s for s in upstream.seen if s.authorization]
