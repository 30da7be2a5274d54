"""Real keys and real tokens for tests: key pairs generated per test run, tokens minted
with PyJWT, and raw tokens assembled from arbitrary bytes for the attack cases."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

HS_SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"  # 50 bytes: fine for HS256/384
HS512_SECRET = HS_SECRET * 2
ISSUER = "https://issuer.example.com"
AUDIENCE = "api-audience"
NOW = 1_800_000_000.0
"""A fixed instant, for authorizers built with `Clock(NOW)` and the tokens they check."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class KeyPair:
    """A private key with its kid and algorithm; `jwk()` is the public JWK."""

    private: Any
    kid: str
    alg: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def public(self) -> Any:
        return self.private.public_key()

    def public_pem(self) -> bytes:
        return bytes(
            self.public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def jwk(self, *, with_alg: bool = True) -> dict[str, Any]:
        if isinstance(self.private, rsa.RSAPrivateKey):
            data = RSAAlgorithm.to_jwk(self.public, as_dict=True)
        elif isinstance(self.private, ec.EllipticCurvePrivateKey):
            data = ECAlgorithm.to_jwk(self.public, as_dict=True)
        else:
            data = OKPAlgorithm.to_jwk(self.public, as_dict=True)
        data = dict(data)
        data["kid"] = self.kid
        data["use"] = "sig"
        if with_alg:
            data["alg"] = self.alg
        data.update(self.extra)
        return data

    def sign(self, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        return jwt.encode(
            claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **(headers or {})}
        )


_RSA_KEYS: dict[str, rsa.RSAPrivateKey] = {}


def rsa_key(kid: str = "rsa-1", alg: str = "RS256") -> KeyPair:
    """A 2048-bit RSA key, one per kid for the whole run (generation is slow)."""
    if kid not in _RSA_KEYS:
        _RSA_KEYS[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return KeyPair(_RSA_KEYS[kid], kid, alg)


def ec_key(kid: str = "ec-1", alg: str = "ES256") -> KeyPair:
    curve = ec.SECP384R1() if alg == "ES384" else ec.SECP256R1()
    return KeyPair(ec.generate_private_key(curve), kid, alg)


def ed25519_key(kid: str = "ed-1") -> KeyPair:
    return KeyPair(ed25519.Ed25519PrivateKey.generate(), kid, "EdDSA")


def jwks(*keys: KeyPair, with_alg: bool = True) -> dict[str, Any]:
    return {"keys": [key.jwk(with_alg=with_alg) for key in keys]}


def claims(
    *,
    iss: Any = ISSUER,
    aud: Any = AUDIENCE,
    sub: Any = "user-1",
    lifetime: float = 600,
    now: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Claims of a valid token; pass a value of `...` to leave a claim out."""
    now = time.time() if now is None else now
    values: dict[str, Any] = {
        "iss": iss,
        "aud": aud,
        "sub": sub,
        "iat": int(now),
        "exp": int(now + lifetime),
        **extra,
    }
    return {k: v for k, v in values.items() if v is not ...}


def good(**extra: Any) -> dict[str, Any]:
    """Claims of a valid token issued at `NOW`."""
    return claims(now=NOW, **extra)


def hs_token(
    claim_set: dict[str, Any],
    secret: str | bytes = HS_SECRET,
    alg: str = "HS256",
    headers: dict[str, Any] | None = None,
) -> str:
    """An HMAC-signed token; unlike `jwt.encode`, any claim values (wrong types too)."""
    header = {"alg": alg, "typ": "JWT", **(headers or {})}
    return raw_token(json_bytes(header), json_bytes(claim_set), secret, alg)


def raw_token(
    header: bytes | str, payload: bytes | str, signer: Any = None, alg: str = "HS256"
) -> str:
    """A token from exact header and payload bytes, signed with `signer` (an HMAC secret or
    a private key) under `alg`; unsigned (empty signature) when signer is None."""
    header_b = header.encode() if isinstance(header, str) else header
    payload_b = payload.encode() if isinstance(payload, str) else payload
    signing_input = f"{b64url(header_b)}.{b64url(payload_b)}"
    if signer is None:
        return signing_input + "."
    if alg.startswith("HS"):
        # The standard library, not PyJWT: attack tokens use empty or PEM-shaped secrets,
        # which PyJWT rightly refuses to sign with.
        secret = signer.encode() if isinstance(signer, str) else signer
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
        signature = hmac.new(secret, signing_input.encode(), digest[alg]).digest()
        return f"{signing_input}.{b64url(signature)}"
    algorithm = jwt.get_algorithm_by_name(alg)
    key = algorithm.prepare_key(signer)
    return f"{signing_input}.{b64url(algorithm.sign(signing_input.encode(), key))}"


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class Clock:
    """A settable clock for `Authorizers.build(clock=...)`."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
