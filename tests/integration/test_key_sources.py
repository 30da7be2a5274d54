"""The remote JWKS behind `KeySource.keys(kid, alg, recorder)`, against a real JWKS
endpoint on loopback (the other sources: tests/unit/test_key_sources.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.jwks_server import JwksServer
from tests.support.tokens import NOW, Clock, ec_key, good
from wardgate.gateway.errors import GatewayError
from wardgate.gateway.jwks import ALGORITHMS, JwksCache
from wardgate.gateway.keysources import RemoteJwks
from wardgate.gateway.recording import NO_RECORDER, Check, Trace
from wardgate.gateway.tokens import parse_token


@pytest.fixture
async def server() -> AsyncIterator[JwksServer]:
    jwks_server = await JwksServer().start()
    yield jwks_server
    await jwks_server.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def remote(server: JwksServer, session: aiohttp.ClientSession, clock: Clock) -> RemoteJwks:
    cache = JwksCache(
        authorizer="default",
        url=server.url,
        algorithms=["ES256"],
        session=session,
        clock=clock,
        ttl=300.0,
        refetch_interval=10.0,
    )
    return RemoteJwks(cache)


async def test_remote_jwks_fetches_verifies_and_refuses_unknown_kids(
    server: JwksServer, session: aiohttp.ClientSession
) -> None:
    clock = Clock(NOW)
    key = ec_key("a")
    server.document = {"keys": [key.jwk()]}
    source = remote(server, session, clock)
    removed: list[bool] = []
    source.on_keys_removed(lambda: removed.append(True))
    await source.prefetch()
    assert server.fetches == 1
    trace = Trace()
    keys = await source.keys("a", "ES256", trace)
    parsed = parse_token(key.sign(good()))
    assert any(ALGORITHMS["ES256"].verify(parsed.signing_input, k, parsed.signature) for k in keys)
    assert trace.checks == [Check("kid", True, ["a"], "a")]
    # An unknown kid refetches (at most once per refetch interval), then is refused
    # naming what is available.
    clock.advance(11)
    with pytest.raises(GatewayError) as info:
        await source.keys("zzz", "ES256", NO_RECORDER)
    assert info.value.error.code == "unknown_kid"
    assert info.value.detail["expected"] == ["a"]
    assert server.fetches == 2
    # Past the keys' lifetime a hit revalidates in the background; a removed key is noticed.
    server.document = {"keys": [ec_key("b").jwk()]}
    clock.advance(400)
    source.revalidate(clock())
    await source.cache.refresh()
    assert removed == [True]
    assert source.health()["jwks"]["kids"] == ["b"]
    await source.close()


async def test_remote_jwks_that_cannot_be_fetched_is_idp_unavailable(
    server: JwksServer, session: aiohttp.ClientSession
) -> None:
    server.status = 500
    source = remote(server, session, Clock(NOW))
    with pytest.raises(GatewayError) as info:
        await source.keys("a", "ES256", NO_RECORDER)
    assert info.value.error.code == "idp_unavailable"
    assert info.value.detail["jwksUri"] == server.url
    assert source.health()["jwks"]["reachable"] is False
    await source.close()
