"""Token attacks through a running gateway (RFC 8725 and the well-known JWT attack lists).

Each attack is a request to a protected route, answered with its expected status and
error code, and none reaches the upstream, which counts what it receives. The same checks
at the authorizer level, with their expected-versus-actual details, are in
`tests/unit/test_authorizers.py` and `tests/unit/test_tokens.py`; here they go through the
whole HTTP pipeline (header parsing, routing, the error middleware, the proxy).

Two routes: `/private/orders` behind the seed's HS256 authorizer (leeway 60 s) and
`/private/strict` behind an HS256 authorizer with no leeway; `/rs/orders` behind a JWKS
authorizer (RS256, ES256) fed by a loopback JWKS server. A few valid tokens ("controls")
go through each group, so that a group cannot pass by blocking everything.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from tests.support import results
from tests.support.gateway import AUDIENCE, ISSUER, CountingUpstream, StartGateway, seed_document
from tests.support.jwks_server import JwksServer
from tests.support.tokens import (
    HS512_SECRET,
    HS_SECRET,
    NOW,
    Clock,
    KeyPair,
    b64url,
    ec_key,
    good,
    hs_token,
    json_bytes,
    jwks,
    raw_token,
    rsa_key,
)

MAX_TOKEN_BYTES = 2048
SUITE = "token attacks"


@dataclass(frozen=True)
class Case:
    """One request: `code` None means a control, which must reach the upstream (200)."""

    name: str
    path: str
    authorization: str | None
    status: int = 401
    code: str | None = None


def attack(name: str, path: str, token: str, code: str, status: int = 401) -> Case:
    return Case(name, path, f"Bearer {token}", status, code)


def control(name: str, path: str, token: str) -> Case:
    return Case(name, path, f"Bearer {token}", 200, None)


@dataclass
class Keys:
    rsa: KeyPair
    ec: KeyPair
    attacker: KeyPair
    attacker_jwks: JwksServer
    trusted_jwks: JwksServer


@pytest.fixture
async def keys() -> AsyncIterator[Keys]:
    rsa, ec = rsa_key("trusted-rsa"), ec_key("trusted-ec")
    attacker = rsa_key("attacker-rsa")
    trusted_jwks = await JwksServer(jwks(rsa, ec)).start()
    attacker_jwks = await JwksServer(jwks(attacker)).start()
    yield Keys(rsa, ec, attacker, attacker_jwks, trusted_jwks)
    await trusted_jwks.stop()
    await attacker_jwks.stop()


def document(upstream: CountingUpstream, jwks_url: str) -> dict[str, Any]:
    doc = seed_document(upstream.url, limits={"maxTokenBytes": MAX_TOKEN_BYTES})
    doc["authorizers"] = {
        "strict": {
            "type": "jwt",
            "secret": "$secret.JWT_SECRET",
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "leeway": 0,
        },
        "rs": {
            "type": "jwt",
            "jwksUri": jwks_url,
            "algorithms": ["RS256", "ES256"],
            "issuer": ISSUER,
            "audience": AUDIENCE,
        },
    }
    for path, name in (("/private/strict", "strict"), ("/rs/orders", "rs")):
        doc["paths"].append(
            {
                "method": "GET",
                "path": path,
                "auth": {"authorizer": name},
                "integration": {"type": "http_proxy", "server": "orders"},
            }
        )
    return doc


HS = "/private/orders"
STRICT = "/private/strict"
RS = "/rs/orders"


def alg_none(k: Keys) -> list[Case]:
    cases = [control("valid HS256", HS, hs_token(good()))]
    for alg in ("none", "None", "NONE", "nOnE", "NoNe", "nonE", "none "):
        header = json_bytes({"alg": alg, "typ": "JWT"})
        unsigned = raw_token(header, json_bytes(good()))
        for path in (HS, RS):
            cases.append(attack(f"alg {alg!r} unsigned {path}", path, unsigned, ALG))
            signed = unsigned + b64url(b"signature")
            cases.append(attack(f"alg {alg!r} with signature {path}", path, signed, ALG))
    header = json_bytes({"alg": "none", "kid": k.rsa.kid})
    cases.append(
        attack("alg none with trusted kid", RS, raw_token(header, json_bytes(good())), ALG)
    )
    return cases


ALG = "algorithm_not_allowed"


def algorithm_confusion(k: Keys) -> list[Case]:
    cases = [control("valid RS256", RS, k.rsa.sign(good()))]
    cases.append(control("valid ES256", RS, k.ec.sign(good())))
    for key in (k.rsa, k.ec):
        pems = [key.public_pem(), key.public_pem().strip()]
        jwk_text = json_bytes(key.jwk())
        for secret_name, secret in (("PEM", pems[0]), ("bare PEM", pems[1]), ("JWK", jwk_text)):
            for alg in ("HS256", "HS384", "HS512"):
                header = json_bytes({"alg": alg, "typ": "JWT", "kid": key.kid})
                token = raw_token(header, json_bytes(good()), secret, alg)
                name = f"{alg} keyed with the {key.alg} {secret_name}"
                cases.append(attack(name + " on the JWKS route", RS, token, ALG))
                # On the HMAC route the public key is simply the wrong secret.
                bad = "invalid_signature" if alg == "HS256" else ALG
                cases.append(attack(name + " on the HMAC route", HS, token, bad))
    cases.append(attack("RS256 token on the HMAC route", HS, k.rsa.sign(good()), ALG))
    cases.append(
        attack("HS512 on an HS256 route", HS, hs_token(good(), HS512_SECRET, "HS512"), ALG)
    )
    rs512 = KeyPair(k.rsa.private, k.rsa.kid, "RS512").sign(good())
    cases.append(attack("RS512 with a trusted RSA key", RS, rs512, ALG))
    ps256 = KeyPair(k.rsa.private, k.rsa.kid, "PS256").sign(good())
    cases.append(attack("PS256 with a trusted RSA key", RS, ps256, ALG))
    es_as_rs = raw_token(
        json_bytes({"alg": "RS256", "kid": k.ec.kid}), json_bytes(good()), k.ec.private, "ES256"
    )
    # The kid names an ES256 key: a key is only ever used with its own algorithm.
    cases.append(attack("ES256 signature labelled RS256", RS, es_as_rs, ALG))
    return cases


def hostile_kids(k: Keys) -> list[Case]:
    cases = [control("valid RS256", RS, k.rsa.sign(good()))]
    kids = [
        "../../../../etc/passwd",
        "/dev/null",
        "..\\..\\windows\\win.ini",
        "file:///etc/passwd",
        "' OR '1'='1",
        "x' UNION SELECT 'secret' --",
        "x; rm -rf /",
        "$(id)",
        "`id`",
        "{{7*7}}",
        "${jndi:ldap://127.0.0.1:1/a}",
        "\u0000",
        "trusted-rsa\u0000",
        "TRUSTED-RSA",
        " trusted-rsa",
        "",
        "k" * 600,
    ]
    for kid in kids:
        token = KeyPair(k.attacker.private, kid, "RS256").sign(good())
        cases.append(attack(f"kid {kid[:30]!r}", RS, token, "unknown_kid"))
        # An HMAC authorizer has one key: a kid plays no part, the signature still counts.
        hs = hs_token(good(), "attacker-secret-0123456789-abcdefghijklmnop", headers={"kid": kid})
        cases.append(attack(f"kid {kid[:30]!r} on the HMAC route", HS, hs, "invalid_signature"))
    forged = KeyPair(k.attacker.private, k.rsa.kid, "RS256").sign(good())
    cases.append(attack("trusted kid, attacker's key", RS, forged, "invalid_signature"))
    return cases


def _certificate(key: KeyPair) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public)
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key.private, hashes.SHA256())
    )
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def embedded_keys(k: Keys) -> list[Case]:
    cases = [
        control("valid RS256 naming a jku", RS, k.rsa.sign(good(), {"jku": k.attacker_jwks.url}))
    ]
    headers: dict[str, Any] = {
        "jku": k.attacker_jwks.url,
        "x5u": k.attacker_jwks.base_url + "/cert.pem",
        "x5c": [_certificate(k.attacker)],
        "jwk": k.attacker.jwk(),
    }
    for name, value in headers.items():
        for kid, code in ((k.attacker.kid, "unknown_kid"), (k.rsa.kid, "invalid_signature")):
            token = KeyPair(k.attacker.private, kid, "RS256").sign(good(), {name: value})
            cases.append(attack(f"{name} header with kid {kid}", RS, token, code))
        no_kid = raw_token(
            json_bytes({"alg": "RS256", name: value}),
            json_bytes(good()),
            k.attacker.private,
            "RS256",
        )
        cases.append(attack(f"{name} header without kid", RS, no_kid, "invalid_signature"))
    hs_jwk = {"kty": "oct", "k": b64url(b"attacker-secret-0123456789-abcdefghijklmnop")}
    token = raw_token(
        json_bytes({"alg": "HS256", "jwk": hs_jwk}),
        json_bytes(good()),
        "attacker-secret-0123456789-abcdefghijklmnop",
    )
    cases.append(attack("embedded oct jwk on the HMAC route", HS, token, "invalid_signature"))
    return cases


def header_extensions(k: Keys) -> list[Case]:
    cases = [control("valid HS256", HS, hs_token(good()))]
    payload = json_bytes(good())
    headers = {
        "unknown crit": {"alg": "HS256", "crit": ["urn:example:ext"], "urn:example:ext": 1},
        "crit naming exp": {"alg": "HS256", "crit": ["exp"]},
        "empty crit": {"alg": "HS256", "crit": []},
        "crit not a list": {"alg": "HS256", "crit": "b64"},
        "b64 false with crit": {"alg": "HS256", "b64": False, "crit": ["b64"]},
        "b64 false": {"alg": "HS256", "b64": False},
        "b64 null": {"alg": "HS256", "b64": None},
    }
    for name, header in headers.items():
        cases.append(attack(name, HS, raw_token(json_bytes(header), payload, HS_SECRET), MALFORMED))
    # RFC 7797: with b64 false the payload is sent unencoded (detached or inline).
    header = b64url(json_bytes({"alg": "HS256", "b64": False, "crit": ["b64"]}))
    cases.append(attack("b64 false, raw payload", HS, f"{header}.$.sig", MALFORMED))
    rs_crit = k.rsa.sign(good(), {"crit": ["exp"]})
    cases.append(attack("crit on the JWKS route", RS, rs_crit, MALFORMED))
    return cases


MALFORMED = "malformed_token"


def signatures(k: Keys) -> list[Case]:
    token = hs_token(good())
    head, payload, sig = token.split(".")
    rs_head, rs_payload, rs_sig = k.rsa.sign(good()).split(".")
    other = hs_token(good(sub="someone-else")).split(".")[2]
    forged = b64url(json_bytes(good(sub="admin")))
    short_rs = b64url(base64.urlsafe_b64decode(rs_sig + "==")[:-3])
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    cases = [control("valid HS256", HS, token), control("valid RS256", RS, k.rsa.sign(good()))]
    cases += [
        attack("stripped signature", HS, f"{head}.{payload}.", "invalid_signature"),
        attack("stripped signature (RS)", RS, f"{rs_head}.{rs_payload}.", "invalid_signature"),
        attack("signature of another token", HS, f"{head}.{payload}.{other}", "invalid_signature"),
        attack("payload swapped", HS, f"{head}.{forged}.{sig}", "invalid_signature"),
        attack("payload swapped (RS)", RS, f"{rs_head}.{forged}.{rs_sig}", "invalid_signature"),
        attack("flipped signature bits", HS, f"{head}.{payload}.{flipped}", "invalid_signature"),
        attack("truncated signature", HS, f"{head}.{payload}.{sig[:-4]}", "invalid_signature"),
        attack(
            "truncated RSA signature", RS, f"{rs_head}.{rs_payload}.{short_rs}", "invalid_signature"
        ),
        attack("no signature segment", HS, f"{head}.{payload}", MALFORMED),
        attack("padded signature", HS, f"{token}=", MALFORMED),
        attack(
            "base64 signature alphabet", HS, f"{head}.{payload}.{sig.replace('-', '+')}+", MALFORMED
        ),
        attack("wrong secret", HS, hs_token(good(), "x" * 40), "invalid_signature"),
        attack("empty secret", HS, hs_token(good(), b""), "invalid_signature"),
    ]
    return cases


def time_claims(k: Keys) -> list[Case]:
    def at(**values: Any) -> str:
        return hs_token({**good(iat=NOW - 100), **values})

    cases = [
        # leeway 60 (the default)
        control("exp 59 s ago, leeway 60", HS, at(exp=NOW - 59)),
        attack("exp 60 s ago, leeway 60", HS, at(exp=NOW - 60), "token_expired"),
        attack("exp 61 s ago, leeway 60", HS, at(exp=NOW - 61), "token_expired"),
        attack("exp a year ago", HS, at(exp=NOW - 365 * 86400), "token_expired"),
        attack("no exp (a token for life)", HS, hs_token(good(exp=...)), "missing_claim"),
        attack("no exp, nbf or iat", HS, hs_token(good(exp=..., iat=...)), "missing_claim"),
        control("nbf in 60 s, leeway 60", HS, at(nbf=NOW + 60)),
        attack("nbf in 61 s, leeway 60", HS, at(nbf=NOW + 61), "token_not_yet_valid"),
        control("iat in 60 s, leeway 60", HS, at(iat=NOW + 60)),
        attack("iat in 61 s, leeway 60", HS, at(iat=NOW + 61), "token_not_yet_valid"),
        # no leeway
        control("exp in 1 s, leeway 0", STRICT, at(exp=NOW + 1)),
        attack("exp now, leeway 0", STRICT, at(exp=NOW), "token_expired"),
        attack("exp 1 s ago, leeway 0", STRICT, at(exp=NOW - 1), "token_expired"),
        control("nbf now, leeway 0", STRICT, at(nbf=NOW)),
        attack("nbf in 1 s, leeway 0", STRICT, at(nbf=NOW + 1), "token_not_yet_valid"),
        control("iat now, leeway 0", STRICT, at(iat=NOW)),
        attack("iat in 1 s, leeway 0", STRICT, at(iat=NOW + 1), "token_not_yet_valid"),
    ]
    for claim in ("exp", "nbf", "iat"):
        for value in ("1900000000", None, True, [NOW + 600], {"t": NOW}):
            token = hs_token({**good(), claim: value})
            cases.append(attack(f"{claim} as {value!r}", HS, token, MALFORMED))
    return cases


def claim_types(k: Keys) -> list[Case]:
    cases = [
        control("aud as an array holding ours", HS, hs_token(good(aud=["other", AUDIENCE]))),
        control("iss and aud on the JWKS route", RS, k.rsa.sign(good())),
    ]
    for iss in ([ISSUER], None, 42, {"iss": ISSUER}, True, "", ISSUER + "/", ISSUER.upper(), ...):
        cases.append(attack(f"iss {iss!r}", HS, hs_token(good(iss=iss)), "issuer_mismatch"))
    rs_iss = raw_token(
        json_bytes({"alg": "RS256", "kid": k.rsa.kid}),
        json_bytes(good(iss=[ISSUER])),
        k.rsa.private,
        "RS256",
    )
    cases.append(attack("iss array (RS)", RS, rs_iss, "issuer_mismatch"))
    for aud in (None, 42, [42], [[AUDIENCE]], {"aud": AUDIENCE}, [], "", AUDIENCE.upper(), ...):
        cases.append(attack(f"aud {aud!r}", HS, hs_token(good(aud=aud)), "audience_mismatch"))
    return cases


def nesting(k: Keys) -> list[Case]:
    inner = hs_token(good())
    nested = raw_token(json_bytes({"alg": "HS256", "cty": "JWT"}), inner, HS_SECRET)
    nested_lower = raw_token(json_bytes({"alg": "HS256", "cty": "jwt"}), inner, HS_SECRET)
    nested_rs = k.rsa.sign(good(), {"cty": "JWT"})
    jwe_header = b64url(json_bytes({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": k.rsa.kid}))
    jwe = ".".join([jwe_header, *(b64url(part) for part in (b"k" * 256, b"iv" * 6, b"c" * 40))])
    jwe += "." + b64url(b"t" * 16)
    jwe_dir = b64url(json_bytes({"alg": "dir", "enc": "A128CBC-HS256"}))
    return [
        control("valid HS256", HS, inner),
        attack("nested JWT (cty JWT)", HS, nested, MALFORMED),
        attack("nested JWT (cty jwt)", HS, nested_lower, MALFORMED),
        attack("nested JWT (RS)", RS, nested_rs, MALFORMED),
        attack("JWE RSA-OAEP", RS, jwe, MALFORMED),
        attack(
            "JWE dir", HS, f"{jwe_dir}..{b64url(b'iv')}.{b64url(b'c')}.{b64url(b't')}", MALFORMED
        ),
        attack("JWE-shaped five segments", HS, inner + ".x.y", MALFORMED),
        attack(
            "JWS JSON serialisation",
            HS,
            b64url(json_bytes({"payload": "x", "signatures": []})),
            "opaque_token",
        ),
    ]


def sizes(k: Keys) -> list[Case]:
    big = hs_token(good(padding="p" * MAX_TOKEN_BYTES))
    just_fits = hs_token(good())
    room = MAX_TOKEN_BYTES - len(just_fits) - len(',"p":""') * 2
    padded = hs_token(good(p="q" * (room * 3 // 4)))
    assert len(padded) <= MAX_TOKEN_BYTES
    return [
        control(f"{len(padded)}-byte token", HS, padded),
        attack(f"{len(big)}-byte token", HS, big, "token_too_large"),
        attack(
            "kid of 3000 bytes",
            RS,
            KeyPair(k.attacker.private, "k" * 3000, "RS256").sign(good()),
            "token_too_large",
        ),
        attack("one-segment garbage of 5000 bytes", HS, "a" * 5000, "token_too_large"),
        # Below the header size limit (16384 by default), the token limit answers.
        attack("Authorization header of 9000 bytes", HS, "a" * 9000, "token_too_large"),
        # Past it, the parser refuses the field: a catalogue error too, with a JSON body.
        Case(
            "Authorization header of 20000 bytes",
            HS,
            "Bearer " + "a" * 20000,
            431,
            "header_too_large",
        ),
    ]


def encodings(k: Keys) -> list[Case]:
    payload = json_bytes(good())
    hs_header = json_bytes({"alg": "HS256"})
    cases = [control("valid HS256", HS, raw_token(hs_header, payload, HS_SECRET))]
    bad: dict[str, tuple[bytes, bytes]] = {
        "invalid UTF-8 in the header": (b'{"alg":"HS256","x":"\xff"}', payload),
        "invalid UTF-8 in the claims": (hs_header, payload[:-1] + b',"x":"\xc3\x28"}'),
        "UTF-16 claims": (hs_header, payload.decode().encode("utf-16")),
        "encoded surrogate": (hs_header, payload[:-1] + b',"x":"\xed\xa0\x80"}'),
        "duplicate alg": (b'{"alg":"HS256","alg":"none"}', payload),
        "duplicate sub": (hs_header, payload[:-1] + b',"sub":"admin"}'),
        "duplicate exp": (hs_header, payload[:-1] + b',"exp":99999999999}'),
        "duplicate aud": (hs_header, payload[:-1] + b',"aud":"other"}'),
        "nested duplicate": (hs_header, payload[:-1] + b',"o":{"r":"u","r":"admin"}}'),
        "NaN exp": (hs_header, payload[:-1] + b',"nbf":NaN}'),
        "huge number": (hs_header, payload[:-1] + b',"nbf":1e400}'),
        "claims not an object": (hs_header, b"[]"),
        "header not an object": (b'"HS256"', payload),
        "trailing data after claims": (hs_header, payload + b"{}"),
        "comment in claims": (hs_header, b"/*x*/" + payload),
        "BOM before claims": (hs_header, b"\xef\xbb\xbf" + payload),
    }
    for name, (header, body) in bad.items():
        cases.append(attack(name, HS, raw_token(header, body, HS_SECRET), MALFORMED))
    token = hs_token(good())
    head, rest = token.split(".", 1)
    cases += [
        attack("padding in the header segment", HS, f"{head}==.{rest}", MALFORMED),
        attack(
            "base64 (not url) alphabet",
            HS,
            token.replace("-", "+").replace("_", "/") + "+/",
            MALFORMED,
        ),
        attack("quotes around the token", HS, f'"{token}"', MALFORMED),
        attack("percent-encoded dot", HS, token.replace(".", "%2E", 1), MALFORMED),
    ]
    return cases


def schemes(k: Keys) -> list[Case]:
    token = hs_token(good())
    return [
        Case("no Authorization", HS, None, 401, "missing_token"),
        Case("empty Authorization", HS, "", 401, "missing_token"),
        Case("Basic credentials", HS, "Basic dXNlcjpwYXNzd29yZA==", 401, "invalid_auth_scheme"),
        Case("token without scheme", HS, token, 401, "invalid_auth_scheme"),
        Case("two spaces", HS, f"Bearer  {token}", 401, "invalid_auth_scheme"),
        Case("two tokens", HS, f"Bearer {token} {token}", 401, "invalid_auth_scheme"),
        Case("token, then a comma", HS, f"Bearer {token}, Basic eA==", 401, "invalid_auth_scheme"),
        Case("opaque token", HS, "Bearer 2YotnFZFEjr1zCsicMWpAA", 401, "opaque_token"),
        Case("lower-case scheme", HS, f"bearer {token}", 200, None),
    ]


GROUPS: dict[str, Callable[[Keys], list[Case]]] = {
    "alg-none": alg_none,
    "algorithm-confusion": algorithm_confusion,
    "hostile-kid": hostile_kids,
    "embedded-keys": embedded_keys,
    "crit-and-b64": header_extensions,
    "signature": signatures,
    "time-claims": time_claims,
    "claim-types": claim_types,
    "nested-and-jwe": nesting,
    "size": sizes,
    "encoding-and-duplicates": encodings,
    "scheme": schemes,
}


@pytest.mark.parametrize("group", list(GROUPS))
async def test_token_attacks_are_blocked_before_the_upstream(
    group: str, keys: Keys, upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    gateway = await gateway_factory(document(upstream, keys.trusted_jwks.url), clock=Clock(NOW))
    cases = GROUPS[group](keys)
    failures: list[str] = []
    for case in cases:
        before = len(upstream.seen)
        headers = {} if case.authorization is None else {"Authorization": case.authorization}
        answer = await gateway.request("GET", case.path, headers)
        reached = len(upstream.seen) - before
        got = (answer.status, answer.code, reached)
        if case.code is None and case.status == 200:
            if got != (200, None, 1):
                failures.append(f"control {case.name!r}: got {got}")
            continue
        expected = (case.status, case.code, 0)
        if got != expected:
            failures.append(f"{case.name!r}: expected {expected}, got {got}")
        elif answer.status == 401 and "WWW-Authenticate" not in answer.headers:
            failures.append(f"{case.name!r}: a 401 without WWW-Authenticate")
        else:
            results.record(SUITE, "attacks blocked")
    assert failures == []
    assert upstream.protected_hits() == [s for s in upstream.seen if s.authorization]
    # No token names the URL the gateway should fetch keys from: the attacker's server
    # is never contacted.
    assert keys.attacker_jwks.fetches == 0
    results.record(SUITE, "attack groups")
    results.record(SUITE, "valid controls passed", sum(c.status == 200 for c in cases))
