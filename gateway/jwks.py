"""JSON Web Key Sets: parsing keys once, and an async cache of a remote JWKS.

The cache fetches with the process's one shared `aiohttp.ClientSession` (never PyJWT's
blocking `PyJWKClient`) and follows these rules:
- keys live for the authorizer's `jwksCacheSeconds`, or the response's
  `Cache-Control: max-age` clamped to [60 s, 24 h];
- past that lifetime, the cached keys are still used while one background refresh runs
  (stale-while-revalidate);
- a `kid` that is not cached triggers a refetch, at most once per `jwksRefetchSeconds`
  per authorizer, and concurrent misses await one shared fetch;
- a failed fetch (unreachable, non-200, garbage) keeps the previous keys (stale-if-error);
  keys that cannot be used are skipped one by one, with a log line;
- when a fetch succeeds and a key disappears (revocation), `on_keys_removed` runs so
  that tokens verified with it are forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import aiohttp

from wardgate.gateway.keysets import ALGORITHMS, KeySet, VerificationKey, asymmetric, parse_key_set
from wardgate.gateway.tokens import clip

__all__ = [
    "ALGORITHMS",
    "AuthMetrics",
    "JwksCache",
    "KeySet",
    "KeysUnavailable",
    "VerificationKey",
    "asymmetric",
    "max_age_from",
    "parse_key_set",
]

logger = logging.getLogger("wardgate.gateway.jwks")

MIN_MAX_AGE: Final = 60.0
MAX_MAX_AGE: Final = 86400.0
MAX_JWKS_BYTES: Final = 1024 * 1024
_MAX_AGE_RE: Final = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)\"?", re.IGNORECASE)
_NO_CACHE_RE: Final = re.compile(r"(?:^|[,\s])(?:no-cache|no-store)(?:$|[,\s])", re.IGNORECASE)


class AuthMetrics(Protocol):
    """What the authorizers report; the app implements it with prometheus-client."""

    def jwks_fetch(self, authorizer: str, ok: bool) -> None: ...


class KeysUnavailable(Exception):
    """No key set can be had: never fetched successfully, and the last attempt failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def max_age_from(cache_control: str | None, default: float) -> float:
    """The lifetime a response allows, clamped to [MIN_MAX_AGE, MAX_MAX_AGE]."""
    if not cache_control:
        return default
    match = _MAX_AGE_RE.search(cache_control)
    if match is not None:
        return min(max(float(match.group(1)), MIN_MAX_AGE), MAX_MAX_AGE)
    if _NO_CACHE_RE.search(cache_control):
        return MIN_MAX_AGE
    return default


@dataclass(slots=True)
class JwksCache:
    """The keys of one authorizer's JWKS URL."""

    authorizer: str
    url: str
    algorithms: Sequence[str]
    session: aiohttp.ClientSession | None
    """The process's client session; None when built to check a config (never fetches)."""
    clock: Callable[[], float]
    ttl: float = 300.0
    refetch_interval: float = 10.0
    timeout: float = 5.0
    metrics: AuthMetrics | None = None
    on_keys_removed: Callable[[], None] | None = None

    key_set: KeySet | None = None
    expires_at: float = 0.0
    last_attempt: float | None = None
    last_success: float | None = None
    last_error: str | None = None
    fetches: int = 0
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def lookup(self, kid: str | None, alg: str) -> tuple[list[Any], KeySet]:
        """Prepared keys for a token's `kid` and `alg` (empty when unknown), and the set.

        Raises `KeysUnavailable` when there is no key set at all.
        """
        now = self.clock()
        key_set = self.key_set
        if key_set is None:
            if self._task is None and not self._may_fetch(now):
                raise KeysUnavailable(self._unavailable_reason())
            await self.refresh()
            key_set = self.key_set
            if key_set is None:
                raise KeysUnavailable(self._unavailable_reason())
            return key_set.candidates(kid, alg), key_set
        self.revalidate(now)  # stale-while-revalidate: this request goes on
        candidates = key_set.candidates(kid, alg)
        if candidates:
            return candidates, key_set
        if self._task is not None or self._may_fetch(now):
            logger.debug(
                "jwks refetch for an unknown key: authorizer=%s kid=%r alg=%r",
                self.authorizer,
                clip(kid),
                alg,
            )
            await self.refresh()
            key_set = self.key_set or key_set
            candidates = key_set.candidates(kid, alg)
        return candidates, key_set

    def revalidate(self, now: float) -> None:
        """Start a background refresh if the keys are past their lifetime (a cache hit
        calls this, so that revoked keys are noticed even when every token is cached)."""
        if now >= self.expires_at and self._task is None and self._may_fetch(now):
            self._start_refresh()

    async def refresh(self) -> None:
        """Fetch now, or join the fetch already running; never raises for a failed fetch."""
        task = self._start_refresh()
        # Shielded: a client that disconnects must not cancel the fetch others await.
        await asyncio.shield(task)

    def provider_down(self) -> bool:
        """Whether the last fetch attempt failed."""
        return self.last_error is not None and (
            self.last_success is None
            or self.last_attempt is None
            or self.last_attempt > self.last_success
        )

    def health(self) -> dict[str, Any]:
        key_set = self.key_set
        return {
            "jwksUri": self.url,
            "lastSuccess": self.last_success,
            "lastAttempt": self.last_attempt,
            "lastError": self.last_error,
            "reachable": self.last_success is not None and not self.provider_down(),
            "expiresAt": self.expires_at if key_set is not None else None,
            "kids": key_set.kids() if key_set is not None else [],
            "keyCount": len(key_set.keys) if key_set is not None else 0,
            "fetches": self.fetches,
        }

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _may_fetch(self, now: float) -> bool:
        return self.last_attempt is None or now - self.last_attempt >= self.refetch_interval

    def _unavailable_reason(self) -> str:
        if self.last_error is None:
            return "the JWKS has not been fetched yet"
        return f"the JWKS cannot be fetched: {self.last_error}"

    def _start_refresh(self) -> asyncio.Task[None]:
        if self._task is None:
            self.last_attempt = self.clock()
            self._task = asyncio.create_task(self._fetch(), name=f"jwks-fetch-{self.authorizer}")
            self._task.add_done_callback(self._fetch_done)
        return self._task

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None

    async def _fetch(self) -> None:
        self.fetches += 1
        started = time.perf_counter()
        logger.debug("jwks fetch: authorizer=%s url=%s", self.authorizer, self.url)
        try:
            document, cache_control = await self._download()
            key_set, problems = parse_key_set(document, self.algorithms, self.url)
            for problem in problems:
                logger.warning("jwks key skipped: authorizer=%s %s", self.authorizer, problem)
            if not key_set.keys and problems:
                if not key_set.unreadable:
                    # Keys the provider published and this authorizer cannot use (another
                    # algorithm, `use: enc`): the keys it no longer lists are withdrawn, not
                    # kept as after a failed fetch, and tokens are an outage until a usable
                    # set appears. A set with unreadable entries is a broken publication:
                    # the previous keys stay (stale-if-error).
                    self._withdraw_keys()
                raise ValueError(f"none of the {len(problems)} keys is usable")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure keeps the previous keys (stale-if-error)
            self.last_error = _describe(exc)
            logger.warning(
                "jwks fetch failed: authorizer=%s url=%s error=%s",
                self.authorizer,
                self.url,
                self.last_error,
            )
            if self.metrics is not None:
                self.metrics.jwks_fetch(self.authorizer, False)
            return
        now = self.clock()
        previous = self.key_set
        self.key_set = key_set
        self.expires_at = now + max_age_from(cache_control, self.ttl)
        self.last_success = now
        self.last_error = None
        if self.metrics is not None:
            self.metrics.jwks_fetch(self.authorizer, True)
        logger.debug(
            "jwks fetched: authorizer=%s url=%s kids=%s maxAge=%ss cacheControl=%r ms=%.1f",
            self.authorizer,
            self.url,
            key_set.kids(),
            round(self.expires_at - now, 3),
            cache_control,
            (time.perf_counter() - started) * 1000,
        )
        if previous is not None and previous.identities() - key_set.identities():
            logger.info("jwks keys removed: authorizer=%s kids=%s", self.authorizer, key_set.kids())
            if self.on_keys_removed is not None:
                self.on_keys_removed()

    def _withdraw_keys(self) -> None:
        previous, self.key_set = self.key_set, None
        if previous is not None and previous.keys:
            logger.info(
                "jwks keys withdrawn: authorizer=%s kids=%s", self.authorizer, previous.kids()
            )
            if self.on_keys_removed is not None:
                self.on_keys_removed()

    async def _download(self) -> tuple[object, str | None]:
        if self.session is None:
            raise ValueError("built without a client session: fetches nothing")
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        # Redirects are not followed: keys served from another URL than the configured one
        # are not the provider's keys (a redirect to another host would choose the keys).
        async with self.session.get(
            self.url, timeout=timeout, headers={"Accept": "application/json"}, allow_redirects=False
        ) as response:
            if 300 <= response.status < 400:
                raise ValueError(
                    f"HTTP {response.status} from the JWKS URL: redirects are not followed; "
                    "set jwksUri to the final URL"
                )
            if response.status != 200:
                raise ValueError(f"HTTP {response.status} from the JWKS URL")
            if (response.content_length or 0) > MAX_JWKS_BYTES:
                raise ValueError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
            body = bytearray()
            async for chunk in response.content.iter_chunked(65536):
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
            cache_control = response.headers.get("Cache-Control")
        try:
            document = json.loads(bytes(body))
        except (ValueError, RecursionError):
            raise ValueError("the JWKS is not valid JSON") from None
        return document, cache_control


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientError):
        return f"{exc.__class__.__name__}: {exc}"
    return str(exc) or exc.__class__.__name__
