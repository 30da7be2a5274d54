"""JSON Web Key Sets parsed once: the usable public keys, prepared for each accepted
algorithm, and one problem line per key skipped. No I/O (`wardgate.gateway.jwks` fetches
remote sets; `wardgate.gateway.config.authorizer_warnings` reports an inline set's skipped
keys)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from jwt import PyJWK
from jwt.algorithms import Algorithm, get_default_algorithms
from jwt.exceptions import InvalidKeyError, PyJWTError

__all__ = ["ALGORITHMS", "KeySet", "VerificationKey", "asymmetric", "parse_key_set"]

ALGORITHMS: Final[Mapping[str, Algorithm]] = get_default_algorithms()
"""PyJWT's algorithm objects by name; `none` is never looked up (see authorizers)."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One usable public key, prepared for each accepted algorithm it can verify."""

    kid: str | None
    kty: str
    prepared: Mapping[str, Any]
    """Algorithm name → the key object PyJWT's algorithm verifies with."""
    identity: str
    """The JWK's canonical JSON: a key that changes under the same `kid` is another key."""


@dataclass(frozen=True, slots=True)
class KeySet:
    """Keys by `kid`; tokens without `kid` are tried against every key fit for their alg."""

    keys: tuple[VerificationKey, ...] = ()
    unreadable: int = 0
    """Entries that are not public keys at all (not a JWK, a secret or private key, one that
    does not load): a broken or mistaken publication, as opposed to public keys this
    authorizer does not use (another algorithm, `use: enc`)."""

    def candidates(self, kid: str | None, alg: str) -> list[Any]:
        """Prepared keys that may verify a token with this `kid` and `alg`."""
        return [
            key.prepared[alg]
            for key in self.keys
            if alg in key.prepared and (kid is None or key.kid == kid)
        ]

    def kids(self) -> list[str]:
        return sorted({key.kid for key in self.keys if key.kid is not None})

    def identities(self) -> frozenset[str]:
        return frozenset(key.identity for key in self.keys)


def parse_key_set(
    document: object, algorithms: Sequence[str], source: str
) -> tuple[KeySet, list[str]]:
    """The usable keys of a decoded JWKS, and one problem line per key skipped.

    Raises `ValueError` when the document is not a key set at all.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('not a JSON Web Key Set: expected an object with a "keys" array')
    keys: list[VerificationKey] = []
    problems: list[str] = []
    unreadable = 0
    for index, jwk in enumerate(document["keys"]):
        key, problem = _parse_key(jwk, algorithms)
        if isinstance(key, VerificationKey):
            keys.append(key)
        else:
            problems.append(f"{source} keys[{index}]: {problem}")
            unreadable += key == _BROKEN
    return KeySet(tuple(keys), unreadable), problems


_BROKEN: Final = "broken"
"""Not a public key at all (a broken or mistaken publication)."""
_UNUSED: Final = "unused"
"""A public key this authorizer does not use."""
_Parsed = tuple[VerificationKey | str, str]


def _parse_key(jwk: object, algorithms: Sequence[str]) -> _Parsed:
    """The key, or `_BROKEN` / `_UNUSED` with the reason it is skipped."""
    if not isinstance(jwk, dict):
        return _BROKEN, "not a JSON object"
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        return _BROKEN, "`kid` is not a string"
    kty = jwk.get("kty")
    if kty not in ("RSA", "EC", "OKP"):
        # `oct` keys are secrets: a published key set must never hold one.
        return _BROKEN, f"kty {kty!r} is not a public key type (RSA, EC, OKP)"
    if "d" in jwk:
        return _BROKEN, "holds private key material (`d`): refused"
    if jwk.get("use", "sig") != "sig":
        return _UNUSED, f"use {jwk.get('use')!r} is not `sig`"
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        return _UNUSED, "key_ops does not include `verify`"
    pinned = jwk.get("alg")
    if pinned is not None and not isinstance(pinned, str):
        return _BROKEN, "`alg` is not a string"
    try:
        parsed = PyJWK(jwk)
    except (PyJWTError, ValueError, TypeError, KeyError) as exc:
        return _BROKEN, f"cannot be loaded: {exc.__class__.__name__}"
    prepared: dict[str, Any] = {}
    too_weak: str | None = None
    for alg in algorithms:
        if pinned is not None and pinned != alg:
            continue  # RFC 8725 3.1: a key is used with its own algorithm only
        algorithm = ALGORITHMS.get(alg)
        if algorithm is None:
            continue
        try:
            # PyJWT checks the key family and, for ECDSA, the curve of the algorithm.
            key = algorithm.prepare_key(parsed.key)
        except (InvalidKeyError, ValueError, TypeError):
            continue
        too_weak = algorithm.check_key_length(key)  # RSA below 2048 bits
        if too_weak is None:
            prepared[alg] = key
    if not prepared:
        if too_weak is not None:
            return _UNUSED, f"refused: {too_weak}"
        return _UNUSED, f"fits none of the accepted algorithms {list(algorithms)}"
    identity = json.dumps(jwk, sort_keys=True, separators=(",", ":"), default=str)
    return VerificationKey(kid=kid, kty=kty, prepared=prepared, identity=identity), ""


def asymmetric(algorithms: Iterable[str]) -> list[str]:
    """The algorithms that verify with a public key."""
    return [alg for alg in algorithms if not alg.startswith("HS")]
