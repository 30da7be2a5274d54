"""The runtime authorizers with HMAC secrets and inline key sets: every code, the check
order, the token attacks of RFC 8725, and the verified-token cache."""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from tests.support.tokens import (
    AUDIENCE,
    HS512_SECRET,
    HS_SECRET,
    ISSUER,
    NOW,
    Clock,
    KeyPair,
    b64url,
    ec_key,
    ed25519_key,
    good,
    hs_token,
    json_bytes,
    jwks,
    raw_token,
    rsa_key,
)
from wardgate.gateway.authorizers import Authorizers, Principal, RuntimeAuthorizer
from wardgate.gateway.config import ConfigError, RouteAuth, parse_config
from wardgate.gateway.errors import GatewayError
from wardgate.gateway.keysources import HmacKeys
from wardgate.gateway.loading import LoadedConfig
from wardgate.gateway.recording import Check, Trace


def build(
    authorizer: dict[str, Any] | None = None,
    *,
    authorizers: dict[str, dict[str, Any]] | None = None,
    secrets: dict[str, str] | None = None,
    clock: Clock | None = None,
    **config: Any,
) -> Authorizers:
    document: dict[str, Any] = {"paths": [], **config}
    if authorizer is not None:
        document["authorizer"] = authorizer
    if authorizers is not None:
        document["authorizers"] = authorizers
    values = {"JWT_SECRET": HS_SECRET} if secrets is None else secrets
    loaded = LoadedConfig(parse_config(document), {k: SecretStr(v) for k, v in values.items()})
    return Authorizers.build(loaded, clock=clock or Clock(NOW))


def hs_authorizer(**extra: Any) -> dict[str, Any]:
    return {
        "type": "jwt",
        "secret": "$secret.JWT_SECRET",
        "algorithm": "HS256",
        "issuer": ISSUER,
        "audience": AUDIENCE,
        **extra,
    }


async def code(
    auth: Authorizers, token: str | None, route: RouteAuth | None = None, *, raw: bool = False
) -> str:
    header = token if raw or token is None else f"Bearer {token}"
    with pytest.raises(GatewayError) as info:
        await auth.authorize(route or RouteAuth(), header)
    return info.value.error.code


async def detail(auth: Authorizers, token: str, route: RouteAuth | None = None) -> dict[str, Any]:
    with pytest.raises(GatewayError) as info:
        await auth.authorize(route or RouteAuth(), f"Bearer {token}")
    return info.value.detail


@pytest.fixture
def hs() -> Authorizers:
    return build(hs_authorizer())


async def test_seed_example_accepts_a_good_token(hs: Authorizers) -> None:
    principal = await hs.authorize(RouteAuth(), f"Bearer {hs_token(good(scope='a b'))}")
    assert principal == Principal(
        authorizer="default",
        subject="user-1",
        claims=principal.claims,
        scopes=frozenset({"a", "b"}),
    )
    assert principal.claims["iss"] == ISSUER
    with pytest.raises(TypeError):
        principal.claims["sub"] = "other"  # type: ignore[index]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "missing_token"),
        ("Basic dXNlcjpwYXNz", "invalid_auth_scheme"),
        ("Bearer a b", "invalid_auth_scheme"),
        ("Bearer " + "a." * 5000, "token_too_large"),
        ("Bearer opaque-access-token", "opaque_token"),
        ("Bearer a.b.c", "malformed_token"),
    ],
)
async def test_request_shape_codes(hs: Authorizers, header: str | None, expected: str) -> None:
    assert await code(hs, header, raw=True) == expected


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", "NoNe", "nonE"])
async def test_alg_none_in_every_capitalisation(hs: Authorizers, alg: str) -> None:
    header = json_bytes({"alg": alg, "typ": "JWT"})
    for token in (
        raw_token(header, json_bytes(good())),
        raw_token(header, json_bytes(good())) + b64url(b"x"),
    ):
        assert await code(hs, token) == "algorithm_not_allowed"


async def test_algorithm_outside_the_configured_list(hs: Authorizers) -> None:
    token = hs_token(good(), HS512_SECRET, "HS512")
    d = await detail(hs, token)
    assert d["check"] == "algorithm"
    assert d["expected"] == ["HS256"]
    assert d["actual"] == "HS512"
    assert await code(hs, rsa_key().sign(good())) == "algorithm_not_allowed"


async def test_invalid_signature_cases(hs: Authorizers) -> None:
    token = hs_token(good())
    head, payload, signature = token.split(".")
    assert await code(hs, hs_token(good(), "another-secret-of-32-bytes-or-more!")) == (
        "invalid_signature"
    )
    assert await code(hs, f"{head}.{payload}.") == "invalid_signature"  # stripped
    assert await code(hs, f"{head}.{payload}.{b64url(b'')}") == "invalid_signature"
    forged = b64url(json_bytes(good(sub="admin")))
    assert await code(hs, f"{head}.{forged}.{signature}") == "invalid_signature"
    assert await code(hs, f"{head}.{payload}.{signature[:-4]}") == "invalid_signature"


async def test_details_never_hold_the_signature_or_the_secret(hs: Authorizers) -> None:
    bad = hs_token(good(iss="https://evil"), HS_SECRET)
    wrong = hs_token(good(), "another-secret-of-32-bytes-or-more!")
    for token in (bad, wrong):
        d = await detail(hs, token)
        assert token.split(".")[2] not in repr(d)
        assert HS_SECRET not in repr(d)


# --- algorithm confusion and key-selecting headers -----------------------------------


@pytest.mark.parametrize("key", [rsa_key("conf-rsa"), ec_key("conf-ec")], ids=["rsa", "ec"])
async def test_hmac_keyed_with_the_public_key_is_rejected(key: KeyPair) -> None:
    auth = build(
        {
            "type": "jwt",
            "jwks": jwks(key),
            "algorithms": ["RS256", "ES256"],
            "issuer": ISSUER,
            "audience": AUDIENCE,
        }
    )
    for pem in (key.public_pem(), key.public_pem().decode().strip().encode()):
        for alg in ("HS256", "HS384", "HS512"):
            header = json_bytes({"alg": alg, "kid": key.kid})
            token = raw_token(header, json_bytes(good()), pem, alg)
            assert await code(auth, token) == "algorithm_not_allowed"
    assert await auth.authorize(RouteAuth(), f"Bearer {key.sign(good())}")


def test_a_public_key_as_hmac_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        build(hs_authorizer(), secrets={"JWT_SECRET": rsa_key().public_pem().decode()})
    assert "algorithm-confusion" in str(info.value)


def test_hs_secret_shorter_than_the_algorithm_is_refused() -> None:
    """RFC 7518 section 3.2 makes the hash size a minimum: refused, as the operator and
    `wardgate validate` refuse it (tests/unit/test_key_length.py holds them to agree)."""
    with pytest.raises(ConfigError) as info:
        build(hs_authorizer(algorithm=None, algorithms=["HS256", "HS512"]))
    assert f"is {len(HS_SECRET)} bytes; the algorithm needs at least 64" in str(info.value)
    with pytest.raises(ConfigError) as short:
        build(hs_authorizer(), secrets={"JWT_SECRET": "short"})
    assert "is 5 bytes; the algorithm needs at least 32" in str(short.value)
    assert "'short'" not in str(short.value)


def test_auth0_issuer_without_trailing_slash_is_a_warning() -> None:
    auth = build(hs_authorizer(issuer="https://tenant.eu.auth0.com"))
    assert any("trailing slash" in w for w in auth.warnings())


@pytest.fixture(scope="module")
def inline_keys() -> dict[str, KeyPair]:
    return {
        "rs": rsa_key("rs-1"),
        "ps": rsa_key("ps-1", "PS256"),
        "es": ec_key("es-1"),
        "es384": ec_key("es384-1", "ES384"),
        "ed": ed25519_key("ed-1"),
    }


@pytest.fixture
def inline(inline_keys: dict[str, KeyPair]) -> Authorizers:
    return build(
        {
            "type": "jwt",
            "jwks": jwks(*inline_keys.values()),
            "algorithms": ["RS256", "PS256", "ES256", "ES384", "EdDSA"],
            "issuer": ISSUER,
            "audience": AUDIENCE,
        }
    )


@pytest.mark.parametrize("which", ["rs", "ps", "es", "es384", "ed"])
async def test_every_asymmetric_algorithm(
    inline: Authorizers, inline_keys: dict[str, KeyPair], which: str
) -> None:
    principal = await inline.authorize(RouteAuth(), f"Bearer {inline_keys[which].sign(good())}")
    assert principal.subject == "user-1"


async def test_key_is_used_with_its_own_algorithm_only(
    inline: Authorizers, inline_keys: dict[str, KeyPair]
) -> None:
    rs = inline_keys["rs"]
    # The RS256-pinned key must not verify PS256 even though it is an RSA key.
    token = KeyPair(rs.private, rs.kid, "PS256").sign(good())
    d = await detail(inline, token)
    assert d["check"] == "algorithm"
    assert d["expected"] == ["RS256"]


async def test_kid_without_alg_in_jwk_serves_rs_and_ps() -> None:
    key = rsa_key("plain")
    auth = build(
        {
            "type": "jwt",
            "jwks": jwks(key, with_alg=False),
            "algorithms": ["RS256", "PS256"],
            "issuer": ISSUER,
            "audience": AUDIENCE,
        }
    )
    for alg in ("RS256", "PS256"):
        await auth.authorize(
            RouteAuth(), f"Bearer {KeyPair(key.private, 'plain', alg).sign(good())}"
        )


@pytest.mark.parametrize(
    "kid",
    [
        "../../../../dev/null",
        "/etc/passwd",
        "' OR '1'='1",
        "x; rm -rf /",
        "$(id)",
        "\u0000",
        "k" * 3000,
        "",
    ],
)
async def test_hostile_kids_are_unknown(
    inline: Authorizers, inline_keys: dict[str, KeyPair], kid: str
) -> None:
    key = inline_keys["rs"]
    token = KeyPair(key.private, kid, "RS256").sign(good())
    d = await detail(inline, token)
    assert d["check"] == "kid"
    assert d["expected"] == sorted(k.kid for k in inline_keys.values())
    assert len(repr(d["actual"])) < 120


async def test_hostile_kid_on_hmac_authorizer_is_just_ignored(hs: Authorizers) -> None:
    for kid in ("../../dev/null", "/dev/null", "' OR 1=1 --"):
        assert await code(hs, hs_token(good(), "", headers={"kid": kid})) == "invalid_signature"
        assert await hs.authorize(RouteAuth(), f"Bearer {hs_token(good(), headers={'kid': kid})}")


async def test_embedded_key_headers_are_ignored(
    inline: Authorizers, inline_keys: dict[str, KeyPair]
) -> None:
    attacker = rsa_key("attacker")
    trusted = inline_keys["rs"]
    embedded = {
        "jwk": attacker.jwk(),
        "jku": "http://127.0.0.1:1/jwks.json",
        "x5u": "http://127.0.0.1:1/cert.pem",
        "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"],
    }
    for name, value in embedded.items():
        # The attacker signs with their own key, under the trusted kid or their own.
        for kid in (trusted.kid, attacker.kid):
            token = KeyPair(attacker.private, kid, "RS256").sign(good(), {name: value})
            assert await code(inline, token) in ("invalid_signature", "unknown_kid")
    trace: list[Check] = []
    await inline.authorize(
        RouteAuth(), f"Bearer {trusted.sign(good(), {'jku': 'http://x'})}", Trace(trace)
    )
    format_check = next(c for c in trace if c.name == "format")
    assert "ignored header parameters ['jku']" in (format_check.note or "")


async def test_token_without_kid_tries_the_keys_fitting_its_alg(
    inline: Authorizers, inline_keys: dict[str, KeyPair]
) -> None:
    import jwt

    token = jwt.encode(good(), inline_keys["es"].private, algorithm="ES256")
    assert (await inline.authorize(RouteAuth(), f"Bearer {token}")).subject == "user-1"
    other = jwt.encode(good(), ec_key("x").private, algorithm="ES256")
    assert await code(inline, other) == "invalid_signature"


def test_weak_rsa_keys_are_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    weak = KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=1024), "weak", "RS256")
    auth = build(
        {"type": "jwt", "jwks": jwks(weak, ec_key("ok")), "algorithms": ["RS256", "ES256"]}
    )
    assert any("1024 bits" in w for w in auth.warnings())


def test_inline_key_set_without_usable_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        build({"type": "jwt", "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}})


# --- time claims ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("leeway", "offset", "ok"),
    [
        (0, 1, True),
        (0, 0, False),  # exp == now: expired (the current time must be before exp)
        (0, -1, False),
        (60, -59, True),
        (60, -60, False),
        (60, -61, False),
    ],
)
async def test_exp_boundaries(leeway: int, offset: int, ok: bool) -> None:
    auth = build(hs_authorizer(leeway=leeway))
    token = hs_token(good(exp=NOW + offset, iat=NOW - 100))
    if ok:
        await auth.authorize(RouteAuth(), f"Bearer {token}")
    else:
        d = await detail(auth, token)
        assert d["check"] == "exp"
        assert d["leeway"] == leeway
        assert d["now"] == NOW
        assert d["deltaSeconds"] == -offset


@pytest.mark.parametrize("claim", ["nbf", "iat"])
@pytest.mark.parametrize(
    ("leeway", "offset", "ok"),
    [(0, 0, True), (0, 1, False), (60, 60, True), (60, 61, False), (0, -100, True)],
)
async def test_nbf_and_iat_boundaries(claim: str, leeway: int, offset: int, ok: bool) -> None:
    auth = build(hs_authorizer(leeway=leeway))
    token = hs_token({**good(iat=NOW - 10), claim: NOW + offset})
    if ok:
        await auth.authorize(RouteAuth(), f"Bearer {token}")
    else:
        d = await detail(auth, token)
        assert d["check"] == claim
        assert d["deltaSeconds"] == offset
        assert (await code(auth, token)) == "token_not_yet_valid"


async def test_a_token_without_exp_is_refused_unless_require_exp_is_off(hs: Authorizers) -> None:
    token = hs_token(good(exp=...))
    assert await code(hs, token) == "missing_claim"
    d = await detail(hs, token)
    assert d["check"] == "exp"
    assert d["missing"] == ["exp"]
    assert "requireExp" in d["note"]
    lenient = build(hs_authorizer(requireExp=False))
    principal = await lenient.authorize(RouteAuth(), f"Bearer {token}")
    assert "exp" not in principal.claims
    # The check comes before issuer and audience: the first failure decides the code.
    assert await code(hs, hs_token(good(exp=..., iss="https://other.example.com"))) == (
        "missing_claim"
    )


async def test_recent_expiry_says_likely_clock_skew(hs: Authorizers) -> None:
    recent = await detail(hs, hs_token(good(exp=NOW - 100)))
    assert "likely clock skew" in recent["note"]
    old = await detail(hs, hs_token(good(exp=NOW - 3600)))
    assert "note" not in old


@pytest.mark.parametrize("value", ["1900000000", None, True, [1], {"a": 1}])
@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
async def test_time_claims_of_the_wrong_type_are_malformed(
    hs: Authorizers, claim: str, value: Any
) -> None:
    d = await detail(hs, hs_token({**good(), claim: value}))
    assert d["check"] == claim


async def test_a_cached_token_still_expires() -> None:
    clock = Clock(NOW)
    auth = build(hs_authorizer(leeway=0), clock=clock)
    token = hs_token(good(exp=NOW + 10))
    await auth.authorize(RouteAuth(), f"Bearer {token}")
    clock.advance(9)
    await auth.authorize(RouteAuth(), f"Bearer {token}")
    clock.advance(1)
    assert await code(auth, token) == "token_expired"


async def test_a_cached_token_is_not_valid_before_nbf() -> None:
    clock = Clock(NOW)
    auth = build(hs_authorizer(leeway=0), clock=clock)
    token = hs_token(good(nbf=NOW))
    await auth.authorize(RouteAuth(), f"Bearer {token}")
    clock.advance(-1)
    assert await code(auth, token) == "token_not_yet_valid"


# --- issuer, audience, claims, scopes ------------------------------------------------


@pytest.mark.parametrize(
    ("iss", "note"),
    [
        ("https://evil.example.com", None),
        ("https://issuer.example.com/", "the token's `iss` ends with `/`"),
        (["https://issuer.example.com"], "found array"),
        (None, "found null"),
        (42, "found number"),
        ({"iss": ISSUER}, "found object"),
        (..., "no `iss`"),
    ],
)
async def test_issuer_mismatch(hs: Authorizers, iss: Any, note: str | None) -> None:
    d = await detail(hs, hs_token(good(iss=iss)))
    assert d["check"] == "issuer"
    assert d["expected"] == [ISSUER]
    if note is not None:
        assert note in d["note"]
    assert await code(hs, hs_token(good(iss=iss))) == "issuer_mismatch"


async def test_issuer_missing_trailing_slash_is_named() -> None:
    auth0_style = build(hs_authorizer(issuer=ISSUER + "/"))
    d = await detail(auth0_style, hs_token(good(iss=ISSUER)))
    assert d["check"] == "issuer"
    assert "the authorizer expects one, the token's `iss` has none" in d["note"]


async def test_issuer_list() -> None:
    auth = build(hs_authorizer(issuer=["https://a", "https://b"]))
    await auth.authorize(RouteAuth(), f"Bearer {hs_token(good(iss='https://b'))}")


@pytest.mark.parametrize(
    ("aud", "ok"),
    [
        (AUDIENCE, True),
        ([AUDIENCE], True),
        (["other", AUDIENCE], True),
        ("other", False),
        (["other"], False),
        ([], False),
        (None, False),
        (42, False),
        ([42, AUDIENCE], False),
        ([[AUDIENCE]], False),
        ({"aud": AUDIENCE}, False),
        (..., False),
        ("API-AUDIENCE", False),
    ],
)
async def test_audience(hs: Authorizers, aud: Any, ok: bool) -> None:
    token = hs_token(good(aud=aud))
    if ok:
        await hs.authorize(RouteAuth(), f"Bearer {token}")
    else:
        d = await detail(hs, token)
        assert d["check"] == "audience"
        assert d["expected"] == [AUDIENCE]
        assert await code(hs, token) == "audience_mismatch"


async def test_unconfigured_issuer_and_audience_are_unchecked() -> None:
    auth = build(hs_authorizer(issuer=None, audience=None))
    await auth.authorize(RouteAuth(), f"Bearer {hs_token(good(iss=7, aud=[None]))}")
    assert any("no `audience`" in w for w in auth.warnings())


async def test_required_claims() -> None:
    auth = build(hs_authorizer(requiredClaims=["email", "app_metadata.tenant"]))
    ok = good(email="a@b", app_metadata={"tenant": "t1"})
    await auth.authorize(RouteAuth(), f"Bearer {hs_token(ok)}")
    d = await detail(auth, hs_token(good(email="a@b")))
    assert d["missing"] == ["app_metadata.tenant"]
    assert await code(auth, hs_token(good(email=None, app_metadata={"tenant": "t"}))) == (
        "missing_claim"
    )


async def test_route_claims(hs: Authorizers) -> None:
    route = RouteAuth(
        claims={"org": "acme", "roles": ["admin"], "https://x.com/tier": 2, "meta.beta": True}
    )
    ok = good(org="acme", roles=["user", "admin"], meta={"beta": True}, **{"https://x.com/tier": 2})
    await hs.authorize(route, f"Bearer {hs_token(ok)}")
    assert await code(hs, hs_token({**ok, "org": "evil"}), route) == "claim_mismatch"
    assert await code(hs, hs_token({**ok, "roles": ["user"]}), route) == "claim_mismatch"
    assert await code(hs, hs_token({**ok, "meta": {"beta": 1}}), route) == "claim_mismatch"
    assert await code(hs, hs_token({**ok, "https://x.com/tier": "2"}), route) == ("claim_mismatch")
    no_org = {k: v for k, v in ok.items() if k != "org"}
    assert await code(hs, hs_token(no_org), route) == "missing_claim"


async def test_scopes(hs: Authorizers) -> None:
    route = RouteAuth(scopes=["read:orders", "write:orders"])
    for grant in (
        {"scope": "openid read:orders write:orders"},
        {"scp": ["read:orders", "write:orders"]},
        {"scp": "read:orders write:orders"},
        {"permissions": ["read:orders", "write:orders"]},
        {"scope": "read:orders", "permissions": ["write:orders"]},
    ):
        await hs.authorize(route, f"Bearer {hs_token(good(**grant))}")
    d = await detail(hs, hs_token(good(scope="read:orders", permissions="write:orders")), route)
    assert d["missing"] == ["write:orders"]
    assert await code(hs, hs_token(good(scope="read:orders")), route) == "insufficient_scope"
    assert await code(hs, hs_token(good(scope=["read:orders write:orders"])), route) == (
        "insufficient_scope"
    )


# --- deterministic order -------------------------------------------------------------


async def test_first_failing_check_decides(hs: Authorizers) -> None:
    route = RouteAuth(scopes=["x"], claims={"org": "acme"})
    cases = [
        (
            hs_token(good(exp=NOW - 999, iss="e", aud="e"), "wrong-secret-wrong-secret-wrong-sec"),
            "invalid_signature",
        ),
        (hs_token(good(exp=NOW - 999, iss="e", aud="e")), "token_expired"),
        (hs_token(good(nbf=NOW + 999, iss="e", aud="e")), "token_not_yet_valid"),
        (hs_token(good(iss="e", aud="e")), "issuer_mismatch"),
        (hs_token(good(aud="e", org="evil")), "audience_mismatch"),
        (hs_token(good(scope="y")), "missing_claim"),
        (hs_token(good(org="evil")), "claim_mismatch"),
        (hs_token(good(org="acme")), "insufficient_scope"),
    ]
    for token, expected in cases:
        assert await code(hs, token, route) == expected


async def test_trace_lists_every_check_in_order(hs: Authorizers) -> None:
    trace: list[Check] = []
    route = RouteAuth(scopes=["a"], claims={"org": "acme"})
    await hs.authorize(route, f"Bearer {hs_token(good(scope='a', org='acme'))}", Trace(trace))
    assert [c.name for c in trace] == [
        "authorization", "format", "algorithm", "kid", "signature", "exp", "nbf", "iat",
        "issuer", "audience", "claims", "scopes",
    ]  # fmt: skip
    assert all(c.passed for c in trace)
    failing: list[Check] = []
    with pytest.raises(GatewayError):
        await hs.authorize(route, f"Bearer {hs_token(good(iss='x'))}", Trace(failing))
    assert failing[-1] == Check("issuer", False, [ISSUER], "x", None)
    assert [c.passed for c in failing[:-1]] == [True] * (len(failing) - 1)
    header: list[Check] = []
    with pytest.raises(GatewayError):
        await hs.authorize(route, None, Trace(header))
    assert header == [Check("authorization", False, None, None, "no Authorization header")]


# --- Supabase API keys (legacy HS256 secret, no JWKS needed) -------------------------


def supabase(**extra: Any) -> Authorizers:
    return build(
        {
            "type": "supabase",
            "projectUrl": "https://ref.supabase.co",
            "jwtSecret": "$secret.JWT_SECRET",
            "algorithms": ["HS256"],
            **extra,
        }
    )


def supabase_user(**extra: Any) -> dict[str, Any]:
    return good(
        iss="https://ref.supabase.co/auth/v1", aud="authenticated", role="authenticated", **extra
    )


def api_key(role: str) -> str:
    return hs_token(
        {"iss": "supabase", "ref": "ref", "role": role, "iat": NOW - 10, "exp": NOW + 10**8}
    )


async def test_supabase_user_token() -> None:
    auth = supabase()
    principal = await auth.authorize(RouteAuth(), f"Bearer {hs_token(supabase_user())}")
    assert principal.claims["role"] == "authenticated"


@pytest.mark.parametrize("role", ["anon", "service_role"])
async def test_supabase_api_keys(role: str) -> None:
    auth = supabase()
    d = await detail(auth, api_key(role))
    assert d["check"] == "api_key"
    assert d["actual"] == role
    assert await code(auth, api_key(role)) == "supabase_api_key"
    allowed = RouteAuth(allowed_api_key_roles=[role])
    principal = await auth.authorize(allowed, f"Bearer {api_key(role)}")
    assert principal.claims["role"] == role
    assert principal.subject is None
    other = "anon" if role == "service_role" else "service_role"
    assert await code(auth, api_key(role), RouteAuth(allowed_api_key_roles=[other])) == (
        "supabase_api_key"
    )
    forged = hs_token(
        {"iss": "supabase", "role": role, "exp": NOW + 100}, "forged-secret-forged-secret-forged!!"
    )
    assert await code(auth, forged, allowed) == "invalid_signature"


async def test_supabase_new_style_keys_and_unverifiable_legacy_keys() -> None:
    auth = supabase()
    assert await code(auth, "sb_publishable_abc123") == "supabase_api_key"
    no_secret = build(
        {"type": "supabase", "projectUrl": "https://ref.supabase.co", "algorithms": ["ES256"]}
    )
    d = await detail(no_secret, api_key("anon"))
    assert "not checked" in d["note"]
    assert await code(no_secret, api_key("anon"), RouteAuth(allowed_api_key_roles=["anon"])) == (
        "supabase_api_key"
    )


# --- cache, forwarding ---------------------------------------------------------------


async def test_cache_hits_skip_verification_but_not_route_checks(hs: Authorizers) -> None:
    token = hs_token(good(scope="a"))
    first = await hs.authorize(RouteAuth(), f"Bearer {token}")
    second = await hs.authorize(RouteAuth(), f"Bearer {token}")
    assert first is second
    assert hs.health()["default"]["cachedTokens"] == 1
    assert await code(hs, token, RouteAuth(scopes=["b"])) == "insufficient_scope"
    # One flipped signature byte is another cache key, and fails.
    head, payload, sig = token.split(".")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    assert await code(hs, f"{head}.{payload}.{flipped}") == "invalid_signature"


async def test_cache_is_bounded(hs: Authorizers) -> None:
    runtime: RuntimeAuthorizer = hs._by_name["default"]
    runtime.cache.max_entries = 5
    for n in range(20):
        await hs.authorize(RouteAuth(), f"Bearer {hs_token(good(n=n))}")
    assert len(runtime.cache) == 5


async def test_forwarded_and_stripped_headers() -> None:
    auth = build(
        authorizers={
            "a": hs_authorizer(
                forwardClaims=[
                    {"claim": "sub", "header": "X-User"},
                    {"claim": "app_metadata.tenant", "header": "X-Tenant"},
                    {"claim": "roles", "header": "X-Roles"},
                    {"claim": "name", "header": "X-Name"},
                    {"claim": "absent", "header": "X-Absent"},
                ],
                forwardAuthorization=False,
            ),
            "b": hs_authorizer(forwardClaims=[{"claim": "email", "header": "X-Email"}]),
        },
        defaultAuthorizer="a",
    )
    token = hs_token(
        good(app_metadata={"tenant": "t1"}, roles=["r1", "r2"], name="Zoë\r\nX-Evil: 1")
    )
    principal = await auth.authorize(RouteAuth(), f"Bearer {token}")
    assert auth.forwarded_headers(principal) == {
        "X-User": "user-1",
        "X-Tenant": "t1",
        "X-Roles": '["r1","r2"]',
        "X-Name": '"Zo\\u00eb\\r\\nX-Evil: 1"',
    }
    assert auth.stripped_request_headers() == frozenset(
        {"x-user", "x-tenant", "x-roles", "x-name", "x-absent", "x-email"}
    )
    assert auth.forwards_authorization("a") is False
    assert auth.forwards_authorization("b") is True
    assert set(auth.names()) == {"a", "b"}


# --- fuzzing -------------------------------------------------------------------------


_FUZZ_AUTH = build(hs_authorizer())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
async def test_random_bytes_never_pass(data: bytes) -> None:
    try:
        await _FUZZ_AUTH.authorize(RouteAuth(), "Bearer " + data.decode("latin-1"))
    except GatewayError:
        return
    raise AssertionError("random bytes were accepted as a token")


_B64 = string.ascii_letters + string.digits + "-_"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(alphabet=_B64, max_size=80), min_size=1, max_size=6),
    st.sampled_from([None, "Bearer", "bearer", "Basic"]),
)
async def test_random_dotted_tokens_never_pass(parts: list[str], scheme: str | None) -> None:
    token = ".".join(parts)
    header = token if scheme is None else f"{scheme} {token}"
    try:
        await _FUZZ_AUTH.authorize(RouteAuth(), header)
    except GatewayError:
        return
    raise AssertionError("a random token was accepted")


def hmac_keys(runtime: RuntimeAuthorizer) -> dict[str, Any]:
    """The prepared secrets of an HS* authorizer (to take them away)."""
    source = runtime.keys.source("HS256")
    assert isinstance(source, HmacKeys)
    return source.prepared


@pytest.mark.parametrize(
    ("claim_values", "expected"),
    [
        ({"exp": int(NOW) - 3600}, "token_expired"),
        ({"iss": "https://elsewhere.example"}, "issuer_mismatch"),
        ({"aud": "another-api"}, "audience_mismatch"),
        ({"nbf": int(NOW) + 3600}, "token_not_yet_valid"),
    ],
)
async def test_lasting_refusals_are_cached_and_stay_exact(
    claim_values: dict[str, Any], expected: str
) -> None:
    """A verified token refused by a claim that cannot improve is refused again from the
    refusal cache (the signature is not checked again), with the same code and details of
    now; a not-yet-valid token leaves the cache once it may be valid."""
    clock = Clock(NOW)
    auth = build(hs_authorizer(), clock=clock)
    runtime = auth.runtime("default")
    token = hs_token(good(**claim_values))
    assert await code(auth, token) == expected
    assert len(runtime.refused) == 1
    # The signature is not checked again: with the key gone, the cached verdict stands.
    hmac_keys(runtime).clear()
    clock.advance(10)
    with pytest.raises(GatewayError) as info:
        await auth.authorize(RouteAuth(), f"Bearer {token}")
    assert info.value.error.code == expected
    if "now" in info.value.detail:
        assert info.value.detail["now"] == round(NOW + 10, 3)
    if expected == "token_not_yet_valid":
        clock.advance(7200)
        hmac_keys(runtime).clear()
        # Valid by now: out of the refusal cache, so the full path runs (and the key is
        # gone, so the signature check answers).
        assert await code(auth, token) != "token_not_yet_valid"


async def test_refusal_cache_is_bounded_and_forgotten_with_the_keys() -> None:
    auth = build(hs_authorizer())
    runtime = auth.runtime("default")
    runtime.refused.max_entries = 5
    for n in range(20):
        await code(auth, hs_token(good(exp=int(NOW) - 3600 - n)))
    assert len(runtime.refused) == 5
    runtime.forget_verdicts()
    assert len(runtime.refused) == 0


async def test_authorize_now_decides_what_authorize_decides_without_verifying() -> None:
    """The pipeline's synchronous step: a token seen before is answered as `authorize`
    answers it (its principal, its route refusal, its lasting refusal), a token never seen
    is left to `authorize` (None), and a missing or malformed header is refused at once."""
    clock = Clock(NOW)
    auth = build(hs_authorizer(), clock=clock)
    valid = hs_token(good(scope="read:orders"))
    expired = hs_token(good(exp=int(NOW) - 3600))
    assert auth.authorize_now(RouteAuth(), f"Bearer {valid}") is None
    principal = await auth.authorize(RouteAuth(), f"Bearer {valid}")
    assert auth.authorize_now(RouteAuth(), f"Bearer {valid}") == principal
    with pytest.raises(GatewayError) as scoped:
        auth.authorize_now(RouteAuth(scopes=["write:orders"]), f"Bearer {valid}")
    assert scoped.value.error.code == "insufficient_scope"
    assert scoped.value.detail["authorizer"] == "default"
    assert auth.authorize_now(RouteAuth(), f"Bearer {expired}") is None
    assert await code(auth, expired) == "token_expired"
    clock.advance(10)
    with pytest.raises(GatewayError) as again:
        auth.authorize_now(RouteAuth(), f"Bearer {expired}")
    assert again.value.error.code == "token_expired"
    assert again.value.detail["now"] == round(NOW + 10, 3)
    assert again.value.detail["authorizer"] == "default"
    for header, expected in ((None, "missing_token"), ("Basic abc", "invalid_auth_scheme")):
        with pytest.raises(GatewayError) as refused:
            auth.authorize_now(RouteAuth(), header)
        assert refused.value.error.code == expected
        assert refused.value.error.code == await code(auth, header, raw=True)


async def test_refuse_without_token_is_the_refusal_authorize_raises() -> None:
    """`refuse_without_token` is the refusal `authorize` raises for no header: same code,
    message, detail and recorded step."""
    auth = build(hs_authorizer())
    expected_trace, trace = Trace(), Trace()
    with pytest.raises(GatewayError) as raised:
        await auth.authorize(RouteAuth(), None, expected_trace)
    built = auth.refuse_without_token(RouteAuth(), trace)
    assert (built.error, built.message, built.detail) == (
        raised.value.error,
        raised.value.message,
        raised.value.detail,
    )
    assert trace.checks
    assert trace.checks == expected_trace.checks
