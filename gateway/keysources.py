"""Where an authorizer's verification keys come from, behind one method.

A key source answers `await source.keys(kid, alg, recorder)`: the prepared keys that may
verify a token with that `kid` and `alg`, or the catalogued refusal (`unknown_kid`,
`idp_unavailable`, `algorithm_not_allowed` for a key of another algorithm). There are three:

- `HmacKeys`: the HS* secret, prepared once per accepted HMAC algorithm;
- `StaticKeys`: an inline key set (`jwks` in the config), parsed once;
- `RemoteJwks`: a JWKS URL, fetched and cached by `wardgate.gateway.jwks.JwksCache`.

`AuthorizerKeys` holds an authorizer's sources by algorithm (a Supabase project may verify
HS256 with its legacy secret and ES256 with its JWKS), so the authorizer never asks which
source it has. `build_authorizer_keys` prepares them from the spec and the secret: it
raises `ConfigError` for what makes keys unusable, the same refusals as `wardgate validate`
and the operator (see `wardgate.gateway.config.authorizer_warnings`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import aiohttp
from jwt.exceptions import InvalidKeyError

from wardgate.gateway.config import (
    HMAC_ALGORITHMS,
    Auth0Authorizer,
    ConfigError,
    JwtAuthorizer,
    SupabaseAuthorizer,
    authorizer_refusals,
    hmac_key_problem,
)
from wardgate.gateway.errors import (
    ALGORITHM_NOT_ALLOWED,
    IDP_UNAVAILABLE,
    INTERNAL_ERROR,
    UNKNOWN_KID,
    ErrorCode,
    GatewayError,
)
from wardgate.gateway.jwks import (
    ALGORITHMS,
    AuthMetrics,
    JwksCache,
    KeySet,
    KeysUnavailable,
    asymmetric,
    parse_key_set,
)
from wardgate.gateway.recording import Check, Recorder
from wardgate.gateway.tokens import clip

__all__ = [
    "AuthorizerKeys",
    "HmacKeys",
    "KeySource",
    "RemoteJwks",
    "StaticKeys",
    "build_authorizer_keys",
    "refusal",
]

logger = logging.getLogger("wardgate.gateway.authorizers")

AuthorizerSpec = JwtAuthorizer | Auth0Authorizer | SupabaseAuthorizer


def refusal(error: ErrorCode, check: str, note: str | None = None, **facts: Any) -> GatewayError:
    """A check's refusal: `detail` names the check, then the note and the facts."""
    detail: dict[str, Any] = {"check": check}
    if note is not None:
        detail["note"] = note
    detail.update(facts)
    return GatewayError(error, detail)


class KeySource:
    """Keys for tokens of some algorithms. `keys` is the one method callers use; the
    others have nothing to do for a source that fetches nothing."""

    __slots__ = ()

    refreshes: ClassVar[bool] = False
    """Whether `revalidate` has anything to do (a hit on a verified token calls it)."""

    async def keys(self, kid: str | None, alg: str, recorder: Recorder) -> list[Any]:
        """The prepared keys that may verify a token with this `kid` and `alg` (at least
        one), or the refusal as a `GatewayError`."""
        raise NotImplementedError

    def revalidate(self, now: float) -> None:
        """Start a background refresh of keys past their lifetime."""

    def on_keys_removed(self, forget: Callable[[], None]) -> None:
        """Call `forget` whenever keys disappear (verdicts they verified are stale)."""

    async def prefetch(self) -> None:
        """Have the keys at hand before the first request (failures are logged)."""

    def health(self) -> dict[str, Any]:
        """This source's part of the admin port's authorizer report (no key material)."""
        return {}

    async def close(self) -> None:
        """Stop what runs in the background."""


def _secret_step(kid: str | None, alg: str) -> Check:
    return Check("kid", True, actual=clip(kid), note=f"{alg}: the secret")


def _key_set_step(key_set: KeySet, kid: str | None) -> Check:
    return Check("kid", True, key_set.kids(), clip(kid))


class HmacKeys(KeySource):
    """The HS* secret, prepared for each accepted HMAC algorithm."""

    __slots__ = ("prepared",)

    def __init__(self, prepared: Mapping[str, Any]) -> None:
        self.prepared = dict(prepared)

    @classmethod
    def prepare(cls, secret: bytes, algorithms: Iterable[str], where: str) -> HmacKeys:
        """The secret for `algorithms`' HMAC ones; raises `ConfigError` for a secret shorter
        than an algorithm needs, or one that looks like a public or private key."""
        hmac = [alg for alg in algorithms if alg in HMAC_ALGORITHMS]
        problem = hmac_key_problem(hmac, len(secret))
        if problem is not None:
            raise ConfigError([f"{where}: the secret {problem} (RFC 7518 section 3.2)"])
        prepared: dict[str, Any] = {}
        for alg in hmac:
            try:
                # PyJWT refuses secrets that look like PEM or SSH public keys.
                prepared[alg] = ALGORITHMS[alg].prepare_key(secret)
            except InvalidKeyError:
                raise ConfigError(
                    [
                        f"{where}: the {alg} secret looks like a public or private key; "
                        "HMAC with a key-pair is the algorithm-confusion attack: use the "
                        "key set (`jwksUri`/`jwks`) with RS*/ES* instead"
                    ]
                ) from None
        return cls(prepared)

    async def keys(self, kid: str | None, alg: str, recorder: Recorder) -> list[Any]:
        key = self.prepared.get(alg)
        if key is None:  # the source serves the algorithms it was prepared for only
            raise refusal(INTERNAL_ERROR, "kid", f"no key source for {alg}")
        recorder.step_from(_secret_step, kid, alg)
        return [key]

    def health(self) -> dict[str, Any]:
        return {"secret": True} if self.prepared else {}


class _EmptySet:
    """What a key set without any key means for the tokens of one authorizer."""

    __slots__ = ("error", "note")

    def __init__(self, error: ErrorCode, note: str) -> None:
        self.error = error
        self.note = note


def _empty_set(spec: AuthorizerSpec) -> _EmptySet:
    if isinstance(spec, SupabaseAuthorizer):
        if spec.jwt_secret is not None:
            return _EmptySet(
                UNKNOWN_KID,
                "the project's JWKS is empty: it signs with the legacy HS256 secret only",
            )
        return _EmptySet(
            IDP_UNAVAILABLE, "JWKS is empty: legacy HS256 project? configure jwtSecret"
        )
    return _EmptySet(IDP_UNAVAILABLE, "the JWKS holds no keys")


def _no_key(
    kid: str | None, alg: str, key_set: KeySet, empty: _EmptySet, jwks: JwksCache | None
) -> GatewayError:
    """The refusal of a token no key of `key_set` fits."""
    available = key_set.kids()
    if not key_set.keys:
        if empty.error is UNKNOWN_KID:
            return refusal(UNKNOWN_KID, "kid", empty.note, expected=available, actual=clip(kid))
        return refusal(
            empty.error,
            "kid",
            empty.note,
            jwksUri=jwks.url if jwks else None,
            actual=clip(kid),
        )
    if jwks is not None and jwks.provider_down():
        return refusal(
            IDP_UNAVAILABLE,
            "kid",
            "the kid is not among the cached keys and the JWKS cannot be refreshed: "
            f"{jwks.last_error}",
            jwksUri=jwks.url,
            expected=available,
            actual=clip(kid),
            lastSuccess=jwks.last_success,
        )
    if kid is not None and kid in available:
        fits = sorted({a for key in key_set.keys if key.kid == kid for a in key.prepared})
        return refusal(
            ALGORITHM_NOT_ALLOWED,
            "algorithm",
            f"the key {clip(kid)!r} verifies {fits} only",
            expected=fits,
            actual=alg,
        )
    note = (
        f"the token has no kid and no key fits {alg}"
        if kid is None
        else "the kid is not in the key set, even after a refresh"
    )
    return refusal(UNKNOWN_KID, "kid", note, expected=available, actual=clip(kid))


class StaticKeys(KeySource):
    """An inline key set, parsed once."""

    __slots__ = ("_empty", "key_set")

    def __init__(self, key_set: KeySet, empty: _EmptySet | None = None) -> None:
        self.key_set = key_set
        self._empty = empty if empty is not None else _EmptySet(IDP_UNAVAILABLE, "no keys")

    async def keys(self, kid: str | None, alg: str, recorder: Recorder) -> list[Any]:
        key_set = self.key_set
        keys = key_set.candidates(kid, alg)
        if not keys:
            raise _no_key(kid, alg, key_set, self._empty, None)
        recorder.step_from(_key_set_step, key_set, kid)
        return keys

    def health(self) -> dict[str, Any]:
        return {"inlineKids": self.key_set.kids()}


class RemoteJwks(KeySource):
    """A JWKS URL, fetched with the process's client session and cached."""

    __slots__ = ("_empty", "cache")

    refreshes: ClassVar[bool] = True

    def __init__(self, cache: JwksCache, empty: _EmptySet | None = None) -> None:
        self.cache = cache
        self._empty = empty if empty is not None else _EmptySet(IDP_UNAVAILABLE, "no keys")

    async def keys(self, kid: str | None, alg: str, recorder: Recorder) -> list[Any]:
        cache = self.cache
        try:
            keys, key_set = await cache.lookup(kid, alg)
        except KeysUnavailable as exc:
            raise refusal(
                IDP_UNAVAILABLE,
                "kid",
                f"no key is cached and {exc.reason}",
                actual=clip(kid),
                jwksUri=cache.url,
                lastSuccess=cache.last_success,
            ) from None
        if not keys:
            raise _no_key(kid, alg, key_set, self._empty, cache)
        recorder.step_from(_key_set_step, key_set, kid)
        return keys

    def revalidate(self, now: float) -> None:
        if now >= self.cache.expires_at:
            self.cache.revalidate(now)

    def on_keys_removed(self, forget: Callable[[], None]) -> None:
        self.cache.on_keys_removed = forget

    async def prefetch(self) -> None:
        cache = self.cache
        await cache.refresh()
        if cache.last_error is not None:
            logger.warning(
                "jwks prefetch failed: authorizer=%s url=%s error=%s",
                cache.authorizer,
                cache.url,
                cache.last_error,
            )

    def health(self) -> dict[str, Any]:
        return {"jwks": self.cache.health()}

    async def close(self) -> None:
        await self.cache.close()


def _nothing_to_revalidate(now: float) -> None:
    """The keys of a secret or an inline set never go stale."""


class AuthorizerKeys:
    """One authorizer's key sources by algorithm."""

    __slots__ = ("_by_algorithm", "_refreshing", "revalidate", "sources")

    def __init__(self, by_algorithm: Mapping[str, KeySource]) -> None:
        self._by_algorithm = dict(by_algorithm)
        self.sources: tuple[KeySource, ...] = tuple(
            {id(source): source for source in self._by_algorithm.values()}.values()
        )
        """Each source once, in the order of the algorithms."""
        self._refreshing = tuple(source for source in self.sources if source.refreshes)
        # Called on every verified-token cache hit: bound once to what there is to do.
        self.revalidate: Callable[[float], None] = (
            self._refreshing[0].revalidate
            if len(self._refreshing) == 1
            else self._revalidate_each
            if self._refreshing
            else _nothing_to_revalidate
        )

    def source(self, alg: str) -> KeySource | None:
        """The source of `alg`'s keys (None: an algorithm the authorizer does not accept)."""
        return self._by_algorithm.get(alg)

    async def keys(self, kid: str | None, alg: str, recorder: Recorder) -> list[Any]:
        source = self._by_algorithm.get(alg)
        if source is None:  # a configuration the models rule out; never a 401 for it
            raise refusal(INTERNAL_ERROR, "kid", f"no key source for {alg}")
        return await source.keys(kid, alg, recorder)

    def _revalidate_each(self, now: float) -> None:
        for source in self._refreshing:
            source.revalidate(now)

    def on_keys_removed(self, forget: Callable[[], None]) -> None:
        for source in self.sources:
            source.on_keys_removed(forget)

    async def prefetch(self) -> None:
        await asyncio.gather(*(source.prefetch() for source in self.sources))

    def health(self) -> dict[str, Any]:
        report: dict[str, Any] = {}
        for source in self.sources:
            report.update(source.health())
        return report

    async def close(self) -> None:
        for source in self.sources:
            await source.close()


def build_authorizer_keys(
    name: str,
    spec: AuthorizerSpec,
    secret: bytes | None,
    *,
    where: str,
    session: aiohttp.ClientSession | None,
    clock: Callable[[], float],
    metrics: AuthMetrics | None = None,
) -> AuthorizerKeys:
    """An authorizer's key sources; raises `ConfigError` for a secret or an inline key set
    that cannot be used (the inline keys skipped are `authorizer_warnings`). A remote JWKS
    is fetched with `session`; without one (a config being checked) it is never fetched."""
    algorithms = spec.accepted_algorithms()
    by_algorithm: dict[str, KeySource] = {}
    if secret is not None:
        hmac = HmacKeys.prepare(secret, algorithms, where)
        by_algorithm.update(dict.fromkeys(hmac.prepared, hmac))
    public_algorithms = asymmetric(algorithms)
    empty = _empty_set(spec)
    public: KeySource | None = None
    if isinstance(spec, JwtAuthorizer) and spec.jwks is not None:
        refusals = authorizer_refusals(spec, where)
        if refusals:
            raise ConfigError(refusals)
        key_set, _ = parse_key_set(spec.jwks, public_algorithms, f"{where}.jwks")
        public = StaticKeys(key_set, empty)
    elif public_algorithms:
        url = spec.jwks_uri if isinstance(spec, JwtAuthorizer) else spec.effective_jwks_uri()
        if url is not None:
            public = RemoteJwks(
                JwksCache(
                    authorizer=name,
                    url=url,
                    algorithms=public_algorithms,
                    session=session,
                    clock=clock,
                    ttl=spec.jwks_cache_seconds,
                    refetch_interval=spec.jwks_refetch_seconds,
                    timeout=spec.jwks_timeout_seconds,
                    metrics=metrics,
                ),
                empty,
            )
    if public is not None:
        by_algorithm.update(dict.fromkeys(public_algorithms, public))
    return AuthorizerKeys(by_algorithm)
