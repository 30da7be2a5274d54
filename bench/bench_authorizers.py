"""Cost of `Authorizers.authorize` per call, in-process: a cached token (the verified-token
cache hit) and a first-seen token (parse + signature + claims) for each algorithm family.

Usage: `.venv/bin/python -m bench.bench_authorizers [--number N]`. Prints the best mean of
several repeats, in microseconds per call. Keys are generated per run; the asymmetric
authorizers use an inline key set, so no network is involved (a fetched JWKS costs the
same per call once cached).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from pydantic import SecretStr

from tests.support.tokens import AUDIENCE as AUD
from tests.support.tokens import HS_SECRET as SECRET
from tests.support.tokens import ISSUER as ISS
from wardgate.gateway.authorizers import Authorizers
from wardgate.gateway.config import RouteAuth, parse_config
from wardgate.gateway.loading import LoadedConfig


def authorizers(authorizer: dict[str, Any]) -> Authorizers:
    loaded = LoadedConfig(
        parse_config({"authorizer": authorizer, "paths": []}), {"S": SecretStr(SECRET)}
    )
    return Authorizers.build(loaded)


def claims(n: int) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": ISS,
        "aud": AUD,
        "sub": f"user-{n}",
        "iat": now,
        "exp": now + 3600,
        "scope": "read:orders write:orders",
    }


def public_jwk(private: Any, kid: str, alg: str) -> dict[str, Any]:
    public = private.public_key()
    if isinstance(private, rsa.RSAPrivateKey):
        data = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(private, ec.EllipticCurvePrivateKey):
        data = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**data, "kid": kid, "alg": alg, "use": "sig"}


async def per_call(auth: Authorizers, headers: list[str], route: RouteAuth, repeat: int) -> float:
    """Best mean seconds per call over `repeat` passes over `headers`."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for header in headers:
            await auth.authorize(route, header)
        best = min(best, (time.perf_counter() - start) / len(headers))
    return best


async def main(number: int) -> None:
    route = RouteAuth()
    scoped = RouteAuth(scopes=["read:orders"])
    hs = authorizers(
        {"type": "jwt", "secret": "$secret.S", "algorithm": "HS256", "issuer": ISS, "audience": AUD}
    )
    keys: dict[str, Any] = {
        "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate(),
    }
    asym = authorizers(
        {
            "type": "jwt",
            "jwks": {"keys": [public_jwk(k, alg, alg) for alg, k in keys.items()]},
            "algorithms": list(keys),
            "issuer": ISS,
            "audience": AUD,
        }
    )
    signers: dict[str, Callable[[int], str]] = {
        "HS256": lambda n: jwt.encode(claims(n), SECRET, algorithm="HS256"),
        **{
            alg: (
                lambda n, alg=alg, key=key: jwt.encode(
                    claims(n), key, algorithm=alg, headers={"kid": alg}
                )
            )
            for alg, key in keys.items()
        },
    }
    print(f"python {sys.version.split()[0]} on {platform.machine()}, {number} calls per pass")
    for alg, sign in signers.items():
        auth = hs if alg == "HS256" else asym
        one = f"Bearer {sign(0)}"
        await auth.authorize(route, one)
        hit = await per_call(auth, [one] * number, route, 5)
        hit_scoped = await per_call(auth, [one] * number, scoped, 5)
        misses = max(number // 10, 200)
        fresh = [f"Bearer {sign(n)}" for n in range(1, misses * 3 + 1)]
        miss = min(
            [await per_call(auth, fresh[i * misses : (i + 1) * misses], route, 1) for i in range(3)]
        )
        print(
            f"{alg:6} cached hit {hit * 1e6:7.2f} us   hit + scope check {hit_scoped * 1e6:7.2f} us"
            f"   miss (full verification) {miss * 1e6:8.1f} us"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000)
    asyncio.run(main(parser.parse_args().number))
