"""JWKS-backed authorizers against a real JWKS server on 127.0.0.1: Auth0, Supabase and
plain JWT; rotation, outage, coalescing, rate limit, max-age, garbage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import jwt
import pytest
from pydantic import SecretStr

from tests.support.jwks_server import JwksServer
from tests.support.tokens import (
    AUDIENCE,
    HS_SECRET,
    ISSUER,
    NOW,
    Clock,
    KeyPair,
    ec_key,
    ed25519_key,
    good,
    hs_token,
    json_bytes,
    jwks,
    raw_token,
    rsa_key,
)
from wardgate.gateway.authorizers import Authorizers
from wardgate.gateway.config import RouteAuth, parse_config
from wardgate.gateway.errors import GatewayError
from wardgate.gateway.loading import LoadedConfig
from wardgate.gateway.recording import Check, Trace


class Metrics:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    def jwks_fetch(self, authorizer: str, ok: bool) -> None:
        self.calls.append((authorizer, ok))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def server() -> AsyncIterator[JwksServer]:
    jwks_server = await JwksServer().start()
    yield jwks_server
    if jwks_server.gate is not None:
        jwks_server.gate.set()
    await jwks_server.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def factory(
    session: aiohttp.ClientSession, clock: Clock, metrics: Metrics
) -> AsyncIterator[Callable[..., Authorizers]]:
    """Builds `Authorizers` around one authorizer, sharing the test's session and clock."""
    built: list[Authorizers] = []

    def build(authorizer: dict[str, Any], secrets: dict[str, str] | None = None) -> Authorizers:
        loaded = LoadedConfig(
            parse_config({"authorizer": authorizer, "paths": []}),
            {k: SecretStr(v) for k, v in (secrets or {}).items()},
        )
        auth = Authorizers.build(loaded, session, metrics, clock)
        built.append(auth)
        return auth

    yield build
    for auth in built:
        await auth.close()


def jwt_authorizer(server: JwksServer, **extra: Any) -> dict[str, Any]:
    return {
        "type": "jwt",
        "jwksUri": server.url,
        "algorithms": ["RS256", "PS256", "ES256", "ES384", "EdDSA"],
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwksRefetchSeconds": 10,
        **extra,
    }


async def code(auth: Authorizers, token: str, route: RouteAuth | None = None) -> str:
    with pytest.raises(GatewayError) as info:
        await auth.authorize(route or RouteAuth(), f"Bearer {token}")
    return info.value.error.code


async def detail(auth: Authorizers, token: str) -> dict[str, Any]:
    with pytest.raises(GatewayError) as info:
        await auth.authorize(RouteAuth(), f"Bearer {token}")
    return info.value.detail


async def ok(auth: Authorizers, token: str, route: RouteAuth | None = None) -> None:
    await auth.authorize(route or RouteAuth(), f"Bearer {token}")


# --- providers -----------------------------------------------------------------------


async def test_every_algorithm_from_a_fetched_key_set(server: JwksServer, factory: Any) -> None:
    keys = [rsa_key("r1"), rsa_key("p1", "PS256"), ec_key("e1"), ec_key("e2", "ES384")]
    keys.append(ed25519_key("d1"))
    server.document = jwks(*keys)
    auth = factory(jwt_authorizer(server))
    for key in keys:
        await ok(auth, key.sign(good()))
    assert server.fetches == 1


async def test_auth0(server: JwksServer, factory: Any) -> None:
    key = rsa_key("auth0-key")
    server.document = jwks(key)
    auth = factory(
        {
            "type": "auth0",
            "domain": "tenant.eu.auth0.com",
            "audience": "https://api.example.com",
            "jwksUri": server.url,
        }
    )
    token_claims = good(
        iss="https://tenant.eu.auth0.com/",
        aud=["https://api.example.com", "https://tenant.eu.auth0.com/userinfo"],
        scope="openid read:orders",
        permissions=["write:orders"],
    )
    route = RouteAuth(scopes=["read:orders", "write:orders"])
    await ok(auth, key.sign(token_claims), route)
    no_slash = key.sign({**token_claims, "iss": "https://tenant.eu.auth0.com"})
    d = await detail(auth, no_slash)
    assert d["check"] == "issuer"
    assert "trailing slash" in d["note"]
    assert await code(auth, key.sign({**token_claims, "aud": "https://other"})) == (
        "audience_mismatch"
    )
    assert await code(auth, "ZXlKaGJHY2lPaUprYVhJaUxDSmxibU1pT2lKQk") == "opaque_token"


def supabase_claims(server: JwksServer, **extra: Any) -> dict[str, Any]:
    base = {"iss": f"{server.base_url}/auth/v1", "aud": "authenticated", "role": "authenticated"}
    return good(**{**base, **extra})


async def test_supabase_asymmetric_and_legacy_keys(server: JwksServer, factory: Any) -> None:
    es, rs = ec_key("sb-es"), rsa_key("sb-rs")
    server.document = jwks(es, rs)
    auth = factory(
        {"type": "supabase", "projectUrl": server.base_url, "jwtSecret": "$secret.SB"},
        {"SB": HS_SECRET},
    )
    await ok(auth, es.sign(supabase_claims(server)))
    await ok(auth, rs.sign(supabase_claims(server)))
    await ok(auth, hs_token(supabase_claims(server)))
    assert await code(auth, es.sign(supabase_claims(server, aud="other"))) == ("audience_mismatch")
    anon = hs_token({"iss": "supabase", "role": "anon", "exp": NOW + 10**6})
    assert await code(auth, anon) == "supabase_api_key"
    await ok(auth, anon, RouteAuth(allowed_api_key_roles=["anon"]))
    # An API key signed with a JWKS key is still an API key.
    es_anon = es.sign({"iss": "supabase", "role": "service_role", "exp": NOW + 100})
    assert await code(auth, es_anon) == "supabase_api_key"


async def test_supabase_empty_key_set(server: JwksServer, factory: Any) -> None:
    server.document = {"keys": []}
    legacy = factory(
        {"type": "supabase", "projectUrl": server.base_url, "jwtSecret": "$secret.SB"},
        {"SB": HS_SECRET},
    )
    await legacy.prefetch()
    assert legacy.health()["default"]["jwks"]["reachable"] is True
    await ok(legacy, hs_token(supabase_claims(server)))
    assert await code(legacy, ec_key("x").sign(supabase_claims(server))) == "unknown_kid"

    no_secret = factory({"type": "supabase", "projectUrl": server.base_url})
    with pytest.raises(GatewayError) as info:
        await no_secret.authorize(RouteAuth(), f"Bearer {ec_key('x').sign(good())}")
    assert info.value.error.code == "idp_unavailable"
    assert info.value.error.status == 503
    assert info.value.detail["note"] == "JWKS is empty: legacy HS256 project? configure jwtSecret"


async def test_hmac_with_the_published_public_key_is_rejected(
    server: JwksServer, factory: Any
) -> None:
    key = rsa_key("pub")
    server.document = jwks(key)
    auth = factory(jwt_authorizer(server))
    for alg in ("HS256", "HS384", "HS512"):
        token = raw_token(
            json_bytes({"alg": alg, "kid": key.kid}), json_bytes(good()), key.public_pem(), alg
        )
        assert await code(auth, token) == "algorithm_not_allowed"
    jwk_json = json_bytes(key.jwk())
    token = raw_token(json_bytes({"alg": "HS256", "kid": key.kid}), json_bytes(good()), jwk_json)
    assert await code(auth, token) == "algorithm_not_allowed"


async def test_jku_is_never_followed(server: JwksServer, factory: Any) -> None:
    trusted, attacker = rsa_key("trusted"), rsa_key("attacker-kid")
    attacker_server = await JwksServer(jwks(KeyPair(attacker.private, "trusted", "RS256"))).start()
    try:
        server.document = jwks(trusted)
        auth = factory(jwt_authorizer(server))
        forged = KeyPair(attacker.private, "trusted", "RS256").sign(
            good(), {"jku": attacker_server.url, "x5u": attacker_server.url}
        )
        assert await code(auth, forged) == "invalid_signature"
        assert attacker_server.fetches == 0
    finally:
        await attacker_server.stop()


# --- rotation, outage ----------------------------------------------------------------


async def test_rotation_picks_up_a_new_kid_and_forgets_removed_keys(
    server: JwksServer, factory: Any, clock: Clock
) -> None:
    old, new = rsa_key("old"), ec_key("new")
    server.document = jwks(old)
    auth = factory(jwt_authorizer(server))
    old_token = old.sign(good())
    await ok(auth, old_token)
    assert auth.health()["default"]["cachedTokens"] == 1

    server.document = jwks(old, new)
    clock.advance(10)  # the refetch rate limit
    await ok(auth, new.sign(good()))
    assert server.fetches == 2

    server.document = jwks(new)  # the old key is revoked
    clock.advance(400)  # past the TTL: the next request revalidates in the background
    await ok(auth, old_token)  # stale-while-revalidate: still the cached decision
    await wait_for(lambda: server.fetches == 3 and auth.health()["default"]["cachedTokens"] == 0)
    assert await code(auth, old_token) == "unknown_kid"
    assert auth.health()["default"]["jwks"]["kids"] == ["new"]


async def wait_for(condition: Any) -> None:
    """Await a condition that a background fetch makes true (5 s at most)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached within 5 s")


async def test_outage_keeps_cached_keys_working(
    server: JwksServer, factory: Any, clock: Clock, metrics: Metrics
) -> None:
    key = rsa_key("k1")
    server.document = jwks(key)
    auth = factory(jwt_authorizer(server))
    await auth.prefetch()
    await server.stop()
    clock.advance(100_000)  # far past the TTL
    await ok(auth, key.sign(good(iat=clock.now, exp=clock.now + 60)))
    await wait_for(lambda: metrics.calls[-1] == ("default", False))
    health = auth.health()["default"]["jwks"]
    assert health["reachable"] is False
    assert health["lastError"]
    assert health["kids"] == ["k1"]
    # Cached keys keep working while the provider is down ...
    await ok(auth, key.sign(good(iat=clock.now, exp=clock.now + 60, n=2)))
    # ... and a kid that cannot be looked up is a 503, not a 401.
    with pytest.raises(GatewayError) as info:
        await auth.authorize(RouteAuth(), f"Bearer {rsa_key('k2').sign(good(exp=clock.now + 60))}")
    assert info.value.error.code == "idp_unavailable"
    assert info.value.detail["expected"] == ["k1"]


async def test_no_keys_at_all_is_idp_unavailable(
    server: JwksServer, factory: Any, clock: Clock, metrics: Metrics
) -> None:
    await server.stop()
    auth = factory(jwt_authorizer(server))
    await auth.prefetch()
    assert metrics.calls == [("default", False)]
    token = rsa_key("k1").sign(good())
    for _ in range(3):  # rate-limited: no new fetch per request
        with pytest.raises(GatewayError) as info:
            await auth.authorize(RouteAuth(), f"Bearer {token}")
        assert info.value.error.code == "idp_unavailable"
        assert info.value.error.status == 503
        assert "cannot be fetched" in info.value.detail["note"]
    assert len(metrics.calls) == 1
    # Recovery: the provider comes back, the next attempt after the interval succeeds.
    server.document = jwks(rsa_key("k1"))
    await server.start()
    clock.advance(10)
    await ok(auth, token)
    assert metrics.calls[-1] == ("default", True)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"<html>oops</html>", 200),
        (b'{"keys": "nope"}', 200),
        (b"[]", 200),
        (b'{"keys":[{"kty":"RSA","n":"!!","e":"AQAB","kid":"bad"}]}', 200),
        (b'{"keys":[]}', 500),
        (b"", 404),
    ],
)
async def test_garbage_keeps_the_previous_keys(
    server: JwksServer, factory: Any, clock: Clock, body: bytes, status: int
) -> None:
    key = ec_key("good")
    server.document = jwks(key)
    auth = factory(jwt_authorizer(server))
    await ok(auth, key.sign(good()))
    server.document, server.status = body, status
    clock.advance(10)
    assert await code(auth, ec_key("other").sign(good())) == "idp_unavailable"
    assert server.fetches == 2
    await ok(auth, key.sign(good(n=1)))
    assert auth.health()["default"]["jwks"]["lastError"]


async def test_a_published_set_without_usable_keys_withdraws_the_keys_it_dropped(
    server: JwksServer, factory: Any, clock: Clock
) -> None:
    """The provider replaces the old key by one this authorizer cannot use (pinned to an
    algorithm it does not accept, or `use: enc`): the old key is no longer trusted, cached
    tokens included; tokens are refused as an outage until a usable set is published."""
    old = rsa_key("old")
    server.document = jwks(old)
    auth = factory(jwt_authorizer(server))
    for round_, replacement in enumerate(
        (jwks(rsa_key("next", alg="RS512")), {"keys": [{**rsa_key("next").jwk(), "use": "enc"}]})
    ):
        server.document = jwks(old)
        clock.advance(10)
        cached = old.sign(good(iat=clock.now, exp=clock.now + 3600, round=round_))
        await ok(auth, cached)
        server.document = replacement
        clock.advance(400)  # past the TTL: the next request revalidates
        await wait_for_code(auth, cached, "idp_unavailable")
        fresh = old.sign(good(iat=clock.now, exp=clock.now + 60, n=2))
        assert await code(auth, fresh) == "idp_unavailable"
        health = auth.health()["default"]
        assert health["jwks"]["kids"] == []
        assert health["jwks"]["lastError"] == "none of the 1 keys is usable"
    server.document = jwks(old)
    clock.advance(10)
    await ok(auth, old.sign(good(iat=clock.now, exp=clock.now + 60, n=3)))


async def wait_for_code(auth: Authorizers, token: str, expected: str) -> None:
    """Send `token` until it is refused with `expected` (a background fetch decides)."""
    for _ in range(1000):
        try:
            await auth.authorize(RouteAuth(), f"Bearer {token}")
        except GatewayError as error:
            if error.error.code == expected:
                return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{expected} not reached within 5 s")


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_redirects_are_not_followed(
    server: JwksServer, factory: Any, clock: Clock, status: int
) -> None:
    """A redirect to another URL would let whoever serves that URL choose the keys."""
    attacker = rsa_key("attacker")
    elsewhere = await JwksServer(jwks(attacker)).start()
    try:
        server.status, server.location = status, elsewhere.url
        auth = factory(jwt_authorizer(server))
        assert await code(auth, attacker.sign(good())) == "idp_unavailable"
        assert elsewhere.fetches == 0
        assert "redirects are not followed" in auth.health()["default"]["jwks"]["lastError"]
    finally:
        await elsewhere.stop()


async def test_bad_keys_are_skipped_one_by_one(server: JwksServer, factory: Any) -> None:
    key = ec_key("usable")
    server.document = {
        "keys": [
            "not an object",
            {"kty": "RSA", "kid": "broken", "n": "AA", "e": "!"},
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "wrong-curve", "crv": "P-521", "x": "AA", "y": "AA"},
            {**key.jwk(), "kid": "enc", "use": "enc"},
            {"kty": "XYZ"},
            key.jwk(),
        ]
    }
    auth = factory(jwt_authorizer(server))
    await ok(auth, key.sign(good()))
    assert auth.health()["default"]["jwks"]["kids"] == ["usable"]


# --- rate limit, coalescing, caching --------------------------------------------------


async def test_unknown_kid_refetch_is_rate_limited(
    server: JwksServer, factory: Any, clock: Clock
) -> None:
    server.document = jwks(ec_key("known"))
    auth = factory(jwt_authorizer(server))
    stranger = ec_key("stranger")
    d = await detail(auth, stranger.sign(good()))
    assert d["check"] == "kid"
    assert d["expected"] == ["known"]
    assert d["actual"] == "stranger"
    assert server.fetches == 1  # the first fetch, then no refetch in the same 10 s
    for _ in range(5):
        assert await code(auth, stranger.sign(good())) == "unknown_kid"
    assert server.fetches == 1
    clock.advance(9.9)
    assert await code(auth, stranger.sign(good())) == "unknown_kid"
    assert server.fetches == 1
    clock.advance(0.1)
    assert await code(auth, stranger.sign(good())) == "unknown_kid"
    assert server.fetches == 2


async def test_concurrent_unknown_kids_share_one_fetch(
    server: JwksServer, factory: Any, clock: Clock
) -> None:
    old, new = ec_key("old"), ec_key("new")
    server.document = jwks(old)
    auth = factory(jwt_authorizer(server))
    await auth.prefetch()
    server.document = jwks(old, new)
    server.gate = asyncio.Event()
    clock.advance(10)
    tokens = [new.sign(good(n=i)) for i in range(50)]
    tasks = [asyncio.create_task(ok(auth, token)) for token in tokens]
    await wait_for(lambda: server.fetches == 2)
    for _ in range(20):
        await asyncio.sleep(0)
    server.gate.set()
    await asyncio.gather(*tasks)
    assert server.fetches == 2


async def test_a_cancelled_request_does_not_cancel_the_shared_fetch(
    server: JwksServer, factory: Any
) -> None:
    key = ec_key("k")
    server.document = jwks(key)
    server.gate = asyncio.Event()
    auth = factory(jwt_authorizer(server))
    first = asyncio.create_task(ok(auth, key.sign(good())))
    second = asyncio.create_task(ok(auth, key.sign(good(n=2))))
    await wait_for(lambda: server.fetches == 1)
    first.cancel()
    server.gate.set()
    await second
    with pytest.raises(asyncio.CancelledError):
        await first


@pytest.mark.parametrize(
    ("cache_control", "lifetime"),
    [
        (None, 300),
        ("public, max-age=120", 120),
        ("max-age=5", 60),
        ("max-age=999999", 86400),
        ("no-cache", 60),
        ("private", 300),
    ],
)
async def test_max_age_within_bounds(
    server: JwksServer, factory: Any, cache_control: str | None, lifetime: float
) -> None:
    server.document = jwks(ec_key("k"))
    server.cache_control = cache_control
    auth = factory(jwt_authorizer(server))
    await auth.prefetch()
    health = auth.health()["default"]["jwks"]
    assert health["expiresAt"] - health["lastSuccess"] == lifetime


async def test_expiry_revalidates_in_the_background(
    server: JwksServer, factory: Any, clock: Clock
) -> None:
    key = ec_key("k")
    server.document = jwks(key)
    server.cache_control = "max-age=120"
    auth = factory(jwt_authorizer(server))
    await auth.prefetch()
    clock.advance(119)
    await ok(auth, key.sign(good()))
    assert server.fetches == 1
    clock.advance(1)
    await ok(auth, key.sign(good(n=1)))
    await wait_for(lambda: server.fetches == 2)


async def test_verified_tokens_skip_the_key_lookup(
    server: JwksServer, factory: Any, clock: Clock
) -> None:
    key = rsa_key("k")
    server.document = jwks(key)
    auth = factory(jwt_authorizer(server))
    token = key.sign(good())
    await ok(auth, token)
    await server.stop()
    clock.advance(400)  # past the TTL; the token is still valid
    await ok(auth, token)
    # The hit noticed the expired key set and tried to revalidate it in the background.
    await wait_for(lambda: auth.health()["default"]["jwks"]["lastError"] is not None)
    await ok(auth, token)


async def test_trace_shows_available_kids(server: JwksServer, factory: Any) -> None:
    server.document = jwks(ec_key("a"), ec_key("b"))
    auth = factory(jwt_authorizer(server))
    trace: list[Check] = []
    with pytest.raises(GatewayError):
        await auth.authorize(RouteAuth(), f"Bearer {ec_key('zzz').sign(good())}", Trace(trace))
    assert trace[-1] == Check("kid", False, ["a", "b"], "zzz", trace[-1].note)


async def test_health_reports_no_key_material(server: JwksServer, factory: Any) -> None:
    key = rsa_key("k")
    server.document = jwks(key)
    auth = factory(jwt_authorizer(server))
    await auth.prefetch()
    report = auth.health()
    assert report["default"]["jwks"]["kids"] == ["k"]
    assert report["default"]["jwks"]["jwksUri"] == server.url
    assert key.jwk()["n"] not in repr(report)


async def test_close_cancels_a_pending_fetch(server: JwksServer, factory: Any) -> None:
    server.document = jwks(ec_key("k"))
    server.gate = asyncio.Event()
    auth = factory(jwt_authorizer(server))
    pending = asyncio.create_task(auth.prefetch())
    await wait_for(lambda: server.fetches == 1)
    await auth.close()
    with pytest.raises(asyncio.CancelledError):
        await pending


async def test_jwt_with_pyjwt_defaults_round_trip(server: JwksServer, factory: Any) -> None:
    key = ed25519_key("ed")
    server.document = jwks(key, with_alg=False)
    auth = factory(jwt_authorizer(server))
    token = jwt.encode(good(), key.private, algorithm="EdDSA", headers={"kid": "ed"})
    await ok(auth, token)
