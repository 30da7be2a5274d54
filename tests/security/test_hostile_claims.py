"""Hostile claim and header values never produce a 500: every JSON value (any type, any
size, nested) in every claim and token header field that an authorizer or a preset reads
gets a catalogued 4xx (or is admitted), never a traceback, and `wardgate explain` gives the
same code.

One gateway serves a route per authorizer type (HS256 `jwt`, inline-JWKS `jwt`, `auth0`
and `supabase` with a loopback JWKS, `supabase` with a legacy secret); each route checks
claims, scopes and API key roles and forwards claims as headers, so every reader of a
claim is on the path. Tokens are signed with the route's real key (so the checks after the
signature run), with another key, or with an HS256 secret the authorizer does not have
(the Supabase API-key shape). Hypothesis drives the examples from a thread while the event
loop serves the gateway and the JWKS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from tests.support import results
from tests.support.gateway import RunningGateway, start_gateway, stop_gateway
from tests.support.jwks_server import JwksServer
from tests.support.tokens import (
    AUDIENCE,
    HS_SECRET,
    ISSUER,
    ec_key,
    json_bytes,
    jwks,
    raw_token,
    rsa_key,
)
from wardgate.gateway.config import parse_config
from wardgate.gateway.errors import BY_CODE, code_of_body
from wardgate.gateway.explain import explain_request
from wardgate.gateway.loading import LoadedConfig

SUITE = "hostile claim values"
AUTH0_DOMAIN = "tenant.eu.auth0.com"
SUPABASE_URL = "https://ref.supabase.co"
OTHER_SECRET = "another-secret-0123456789-abcdefghijklmnopqrstuvwxyz"

# Every claim an authorizer, a preset or a route reads; and the token header fields.
CLAIM_NAMES = (
    "exp",
    "nbf",
    "iat",
    "iss",
    "aud",
    "sub",
    "role",
    "scope",
    "scp",
    "permissions",
    "org",
    "tenant",
    "app_metadata",
    "is_anonymous",
    "email",
)
HEADER_NAMES = ("kid", "typ", "cty", "b64", "crit", "jku", "x5c", "jwk", "alg")

HUGE_NUMBERS = st.sampled_from(
    [10**400, -(10**400), 2**63, 2**64 + 1, -(2**63) - 1, 1e308, -1e308, 5e-324, 10**4000]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | HUGE_NUMBERS
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["anon", "service_role", "supabase", "authenticated", "read:orders admin"])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=6) | st.sampled_from(["tenant", "role"]), children, max_size=4
        )
    ),
    max_leaves=10,
)


@dataclass(frozen=True)
class Target:
    """A route behind one authorizer, and how to sign a valid token for it."""

    path: str
    issuer: str
    audience: str
    signer: Any
    alg: str
    kid: str | None


async def _explain(loaded: LoadedConfig, path: str, authorization: str) -> str | None:
    report = await explain_request(loaded, "GET", path, [("Authorization", authorization)])
    return report.code


@pytest.fixture
async def served() -> AsyncIterator[tuple[RunningGateway, LoadedConfig, list[Target]]]:
    rs, ec, a0 = rsa_key("rs-hostile"), ec_key("ec-hostile"), rsa_key("a0-hostile")
    auth0_jwks = await JwksServer(jwks(a0)).start()
    supabase_jwks = await JwksServer(jwks(ec)).start()
    forward = [
        {"claim": "sub", "header": "X-User"},
        {"claim": "app_metadata.tenant", "header": "X-Tenant"},
        {"claim": "role", "header": "X-Role"},
    ]
    route_auth = {
        "claims": {"org": "acme"},
        "scopes": ["read:orders"],
        "anyScopes": ["admin", "read:orders"],
    }
    document: dict[str, Any] = {
        "authorizers": {
            "hs": {
                "type": "jwt",
                "secret": "$secret.JWT_SECRET",
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "requiredClaims": ["sub"],
                "forwardClaims": forward,
            },
            "inline": {
                "type": "jwt",
                "jwks": jwks(rs),
                "algorithms": ["RS256"],
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "forwardClaims": forward,
            },
            "auth0": {
                "type": "auth0",
                "domain": AUTH0_DOMAIN,
                "audience": AUDIENCE,
                "jwksUri": auth0_jwks.url,
                "forwardClaims": forward,
            },
            "supabase": {
                "type": "supabase",
                "projectUrl": SUPABASE_URL,
                "jwksUri": supabase_jwks.url,
                "forwardClaims": forward,
            },
            "legacy": {
                "type": "supabase",
                "projectUrl": SUPABASE_URL,
                "jwtSecret": "$secret.JWT_SECRET",
                "jwksUri": supabase_jwks.url,
                "forwardClaims": forward,
            },
        },
        "paths": [
            {
                "method": "GET",
                "path": f"/{name}",
                "auth": {"authorizer": name, **route_auth},
                "response": {"ok": True},
            }
            for name in ("hs", "inline", "auth0", "supabase", "legacy")
        ]
        + [
            {
                "method": "GET",
                "path": f"/{name}-keys",
                "auth": {
                    "authorizer": name,
                    "allowedApiKeyRoles": ["anon"],
                    "claims": {"is_anonymous": False},
                },
                "response": {"ok": True},
            }
            for name in ("supabase", "legacy")
        ],
    }
    supabase_issuer = f"{SUPABASE_URL}/auth/v1"
    targets = [
        Target("/hs", ISSUER, AUDIENCE, HS_SECRET, "HS256", None),
        Target("/inline", ISSUER, AUDIENCE, rs.private, "RS256", rs.kid),
        Target("/auth0", f"https://{AUTH0_DOMAIN}/", AUDIENCE, a0.private, "RS256", a0.kid),
        Target("/supabase", supabase_issuer, "authenticated", ec.private, "ES256", ec.kid),
        Target("/legacy", supabase_issuer, "authenticated", HS_SECRET, "HS256", None),
        Target("/supabase-keys", "supabase", "authenticated", ec.private, "ES256", ec.kid),
        Target("/legacy-keys", "supabase", "authenticated", HS_SECRET, "HS256", None),
    ]
    gateway = await start_gateway(document)
    loaded = LoadedConfig(parse_config(document), {"JWT_SECRET": SecretStr(HS_SECRET)})
    yield gateway, loaded, targets
    await stop_gateway(gateway)
    await auth0_jwks.stop()
    await supabase_jwks.stop()


class _Failures(logging.Handler):
    """Every record at ERROR or with an exception, from any logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


def _token(target: Target, claims: dict[str, Any], header: dict[str, Any], signing: str) -> str:
    full_header: dict[str, Any] = {"alg": target.alg, "typ": "JWT"}
    if target.kid is not None:
        full_header["kid"] = target.kid
    full_header.update(header)
    alg = full_header["alg"] if isinstance(full_header["alg"], str) else target.alg
    header_bytes, claims_bytes = json_bytes(full_header), _json(claims)
    if signing == "other-hs256":
        return raw_token(header_bytes, claims_bytes, OTHER_SECRET, "HS256")
    if signing == "unsigned":
        return raw_token(header_bytes, claims_bytes)
    if alg != target.alg:
        return raw_token(header_bytes, claims_bytes, OTHER_SECRET, "HS256")
    return raw_token(header_bytes, claims_bytes, target.signer, target.alg)


def _json(value: Any) -> bytes:
    # Integers beyond Python's default str conversion limit are written by hand: JSON has
    # no limit, and the gateway must refuse them cleanly too.
    import sys

    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        return json_bytes(value)
    finally:
        sys.set_int_max_str_digits(limit)


async def test_hostile_claim_values_get_a_catalogued_4xx_and_explain_agrees(
    served: tuple[RunningGateway, LoadedConfig, list[Target]],
) -> None:
    gateway, loaded, targets = served
    loop = asyncio.get_running_loop()
    failures = _Failures()
    root = logging.getLogger()
    root.addHandler(failures)
    seen: dict[str, int] = {}

    def on_loop(coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(30)

    @settings(
        max_examples=400,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        target=st.sampled_from(targets),
        claims=st.dictionaries(st.sampled_from(CLAIM_NAMES), JSON_VALUES, max_size=4),
        header=st.dictionaries(st.sampled_from(HEADER_NAMES), JSON_VALUES, max_size=2),
        signing=st.sampled_from(["key", "key", "key", "other-hs256", "unsigned"]),
    )
    def check(target: Target, claims: dict[str, Any], header: dict[str, Any], signing: str) -> None:
        now = int(time.time())
        full = {
            "iss": target.issuer,
            "aud": target.audience,
            "sub": "user-1",
            "iat": now,
            "exp": now + 600,
            "org": "acme",
            "scope": "read:orders",
            "role": "authenticated" if target.issuer != "supabase" else "anon",
            "is_anonymous": False,
            **claims,
        }
        token = _token(target, full, header, signing)
        authorization = f"Bearer {token}"
        answer = on_loop(gateway.request("GET", target.path, {"Authorization": authorization}))
        code = code_of_body(answer.body)
        assert answer.status < 500, (answer.status, answer.body, full, header)
        if answer.status == 200:
            assert code is None
        else:
            assert code in BY_CODE, answer.body
            assert BY_CODE[code].status == answer.status
        assert on_loop(_explain(loaded, target.path, authorization)) == code, (full, header)
        seen[code or "admitted"] = seen.get(code or "admitted", 0) + 1

    try:
        await asyncio.to_thread(check)
    finally:
        root.removeHandler(failures)
    assert [r.getMessage() for r in failures.records] == []
    assert "Traceback" not in gateway.log_text()
    # The corpus reached past the signature: refusals of the later checks, and admissions.
    assert {"admitted", "claim_mismatch", "insufficient_scope"} <= set(seen), seen
    results.record(SUITE, "hostile tokens answered with a catalogued 4xx", sum(seen.values()))
    results.note(SUITE, codes=sorted(seen))


async def test_the_two_findings(served: tuple[RunningGateway, LoadedConfig, list[Target]]) -> None:
    """The instances of the report: a Supabase API-key-shaped token whose `role` is an
    array or an object, and `exp`/`nbf` of 10**400."""
    gateway, _, targets = served
    by_path = {t.path: t for t in targets}
    now = int(time.time())
    for role in (["anon"], {"anon": 1}):
        token = raw_token(
            json_bytes({"alg": "HS256", "typ": "JWT"}),
            json_bytes({"iss": "supabase", "role": role, "exp": now + 600}),
            OTHER_SECRET,
            "HS256",
        )
        answer = await gateway.request("GET", "/supabase", {"Authorization": f"Bearer {token}"})
        assert (answer.status, answer.code) == (401, "algorithm_not_allowed")
        results.record(SUITE, "reported instances answered with a catalogued 4xx")
    for claim in ("exp", "nbf"):
        target = by_path["/hs"]
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u", "exp": now + 600, claim: 10**400}
        token = raw_token(json_bytes({"alg": "HS256"}), json_bytes(claims), HS_SECRET, "HS256")
        answer = await gateway.request("GET", target.path, {"Authorization": f"Bearer {token}"})
        assert (answer.status, answer.code) == (401, "malformed_token")
        results.record(SUITE, "reported instances answered with a catalogued 4xx")


async def test_a_legacy_supabase_token_without_jwt_secret_gets_a_hint(
    served: tuple[RunningGateway, LoadedConfig, list[Target]],
) -> None:
    _, loaded, _ = served
    now = int(time.time())
    token = raw_token(
        json_bytes({"alg": "HS256", "typ": "JWT"}),
        json_bytes(
            {"iss": f"{SUPABASE_URL}/auth/v1", "aud": "authenticated", "sub": "u", "exp": now + 600}
        ),
        OTHER_SECRET,
        "HS256",
    )
    report = await explain_request(
        loaded, "GET", "/supabase", [("Authorization", f"Bearer {token}")]
    )
    assert report.code == "algorithm_not_allowed"
    assert "jwtSecret" in report.detail["note"]
