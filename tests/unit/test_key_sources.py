"""Each key source behind `KeySource.keys(kid, alg, recorder)`: the HS* secret, an inline
key set, and an authorizer's sources by algorithm (the remote JWKS:
tests/integration/test_key_sources.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.tokens import HS_SECRET, ec_key, good, hs_token, rsa_key
from wardgate.gateway.config import ConfigError, parse_config
from wardgate.gateway.errors import GatewayError
from wardgate.gateway.jwks import ALGORITHMS, parse_key_set
from wardgate.gateway.keysources import (
    AuthorizerKeys,
    HmacKeys,
    KeySource,
    RemoteJwks,
    StaticKeys,
    build_authorizer_keys,
)
from wardgate.gateway.recording import NO_RECORDER, Check, Trace
from wardgate.gateway.tokens import parse_token


def verifies(alg: str, token: str, keys: list[Any]) -> bool:
    parsed = parse_token(token)
    return any(ALGORITHMS[alg].verify(parsed.signing_input, key, parsed.signature) for key in keys)


async def refusal(source: KeySource, kid: str | None, alg: str) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        await source.keys(kid, alg, NO_RECORDER)
    return info.value


async def test_hmac_keys_give_the_secret_for_each_prepared_algorithm() -> None:
    source = HmacKeys.prepare(HS_SECRET.encode(), ["HS256", "HS384", "RS256"], "authorizer")
    assert sorted(source.prepared) == ["HS256", "HS384"]
    trace = Trace()
    keys = await source.keys("any-kid", "HS256", trace)
    assert verifies("HS256", hs_token(good()), keys)
    assert trace.checks == [Check("kid", True, actual="any-kid", note="HS256: the secret")]
    assert source.health() == {"secret": True}
    # An algorithm the secret was not prepared for is never a 401.
    assert (await refusal(source, None, "HS512")).error.code == "internal_error"


def test_hmac_keys_refuse_a_short_secret_and_a_key_pair() -> None:
    with pytest.raises(ConfigError) as short:
        HmacKeys.prepare(b"x" * 47, ["HS256", "HS384"], "authorizers.a")
    assert short.value.problems == [
        "authorizers.a: the secret is 47 bytes; the algorithm needs at least 48 "
        "(RFC 7518 section 3.2)"
    ]
    with pytest.raises(ConfigError) as pem:
        HmacKeys.prepare(rsa_key().public_pem(), ["HS256"], "authorizer")
    assert "algorithm-confusion" in pem.value.problems[0]


async def test_static_keys_by_kid_and_algorithm() -> None:
    rs, es = rsa_key("rs-1"), ec_key("es-1")
    key_set, problems = parse_key_set(
        {"keys": [rs.jwk(), es.jwk(), {"kty": "oct", "k": "c2VjcmV0"}]},
        ["RS256", "ES256"],
        "authorizer.jwks",
    )
    assert problems == [
        "authorizer.jwks keys[2]: kty 'oct' is not a public key type (RSA, EC, OKP)"
    ]
    source = StaticKeys(key_set)
    trace = Trace()
    keys = await source.keys("rs-1", "RS256", trace)
    assert verifies("RS256", rs.sign(good()), keys)
    assert trace.checks == [Check("kid", True, ["es-1", "rs-1"], "rs-1")]
    # No kid: every key fitting the algorithm.
    assert verifies("ES256", es.sign(good()), await source.keys(None, "ES256", NO_RECORDER))
    unknown = await refusal(source, "gone", "RS256")
    assert unknown.error.code == "unknown_kid"
    assert unknown.detail["expected"] == ["es-1", "rs-1"]
    other = await refusal(source, "es-1", "RS256")
    assert other.error.code == "algorithm_not_allowed"
    assert other.detail["expected"] == ["ES256"]
    assert source.health() == {"inlineKids": ["es-1", "rs-1"]}


async def test_authorizer_keys_pick_the_source_by_algorithm() -> None:
    """A Supabase project: HS256 from the legacy secret, ES256 from the JWKS; each source
    once, the secret first; only the remote one is revalidated on cache hits."""
    spec = parse_config(
        {
            "authorizer": {
                "type": "supabase",
                "projectUrl": "https://ref.supabase.co",
                "jwtSecret": "$secret.KEY",
            },
            "paths": [],
        }
    ).named_authorizers()["default"]
    keys = build_authorizer_keys(
        "default",
        spec,
        HS_SECRET.encode(),
        where="authorizer",
        session=None,
        clock=lambda: 0.0,
    )
    assert isinstance(keys.source("HS256"), HmacKeys)
    assert isinstance(keys.source("ES256"), RemoteJwks)
    assert keys.source("ES256") is keys.source("RS256")
    assert keys.source("PS256") is None
    assert [type(s) for s in keys.sources] == [HmacKeys, RemoteJwks]
    assert [type(s) for s in keys._refreshing] == [RemoteJwks]
    assert verifies(
        "HS256", hs_token(good()), await keys.source("HS256").keys(None, "HS256", NO_RECORDER)
    )  # type: ignore[union-attr]
    health = keys.health()
    assert health["secret"] is True
    assert health["jwks"]["jwksUri"] == "https://ref.supabase.co/auth/v1/.well-known/jwks.json"
    await keys.close()


def test_an_inline_key_set_without_a_usable_key_is_refused_with_its_problems() -> None:
    spec = parse_config(
        {
            "authorizer": {
                "type": "jwt",
                "jwks": {"keys": [{"kty": "oct"}]},
                "algorithms": ["RS256"],
            },
            "paths": [],
        }
    ).named_authorizers()["default"]
    with pytest.raises(ConfigError) as info:
        build_authorizer_keys(
            "default", spec, None, where="authorizer", session=None, clock=lambda: 0.0
        )
    assert info.value.problems[-1].startswith("authorizer.jwks: no usable key")


def test_sources_without_background_work_do_nothing() -> None:
    empty = AuthorizerKeys({})
    empty.revalidate(0.0)
    assert empty.health() == {}
