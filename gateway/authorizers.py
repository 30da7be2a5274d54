"""The runtime authorizers: from an `Authorization` header to a `Principal`, or a
catalogued `GatewayError` whose `detail` says what was expected and what was found.

Checks run in this order, always; the first failure decides the code:

 1. authorization  header present (`missing_token`), `Bearer` scheme with exactly one
                   token (`invalid_auth_scheme`); or the token the route's `tokenSources`
                   found (`wardgate.gateway.credentials`: a cookie, a query parameter...)
 2. size           `limits.maxTokenBytes` (`token_too_large`)
 3. format         three base64url segments of UTF-8 JSON objects without duplicate names
                   (`opaque_token` when there is no `.` at all; `malformed_token`: JWE,
                   nested JWT, `b64`, `crit`, bad base64url/UTF-8/JSON, `alg` missing)
 4. algorithm      `alg` among the authorizer's configured algorithms; `none` never
                   (`algorithm_not_allowed`)
 5. kid            a key for the token's `kid` and `alg` from the authorizer's key source
                   for that algorithm (`wardgate.gateway.keysources`): the HS* secret, the
                   inline key set, or the JWKS (refetched once for an unknown `kid`,
                   rate-limited) (`unknown_kid`; `idp_unavailable`, a 503, when the JWKS
                   cannot be had)
 6. signature      (`invalid_signature`)
 7. exp            present unless `requireExp` is false (`missing_claim`);
                   `now < exp + leeway` (`token_expired`)
 8. nbf, iat       `nbf - leeway <= now`, `iat - leeway <= now` (`token_not_yet_valid`)
 9. issuer         `iss` is one of the accepted issuers (`issuer_mismatch`)
10. audience       `aud` (string or array) holds an accepted audience (`audience_mismatch`)
11. required_claims  the authorizer's `requiredClaims` are present (`missing_claim`)
12. api_key        Supabase only: a token with `iss: "supabase"` and `role` `anon` or
                   `service_role` is an API key, not a user token (`supabase_api_key`)
                   unless the route's `allowedApiKeyRoles` lists the role; API keys skip
                   steps 9-11, which are rules for user tokens
13. claims         the route's `claims` (`missing_claim`, `claim_mismatch`)
14. scopes         the route's `scopes` (all) and `anyScopes` (one) among `scope`, `scp`
                   and `permissions` (`insufficient_scope`, a 403, naming the missing
                   scopes in its message and in `WWW-Authenticate`'s `scope`)

Two diagnostics answer before the algorithm step on Supabase authorizers, because they
are certain whatever the signature: a new-style `sb_publishable_`/`sb_secret_` key, and
a legacy HS256 API key sent to an authorizer that has no `jwtSecret` to verify it.

Steps 3-11 do not depend on the route: their result is cached per token
(`wardgate.gateway.verification`), so a repeated token costs a dict lookup, the
`exp`/`nbf` window and steps 12-14.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import aiohttp
from jwt.exceptions import InvalidKeyError

from wardgate.gateway.config import (
    HMAC_ALGORITHMS,
    Auth0Authorizer,
    ClaimHeader,
    JwtAuthorizer,
    RouteAuth,
    SupabaseAuthorizer,
    authorizer_warnings,
    is_scope_token,
    secret_reference,
)
from wardgate.gateway.credentials import Credential
from wardgate.gateway.errors import (
    ALGORITHM_NOT_ALLOWED,
    AUDIENCE_MISMATCH,
    CLAIM_MISMATCH,
    INSUFFICIENT_SCOPE,
    INTERNAL_ERROR,
    INVALID_SIGNATURE,
    ISSUER_MISMATCH,
    MALFORMED_TOKEN,
    MISSING_CLAIM,
    SUPABASE_API_KEY,
    TOKEN_EXPIRED,
    TOKEN_NOT_YET_VALID,
    GatewayError,
    bearer_challenge,
)
from wardgate.gateway.jwks import ALGORITHMS, AuthMetrics
from wardgate.gateway.keysources import AuthorizerKeys, build_authorizer_keys, refusal
from wardgate.gateway.loading import LoadedConfig
from wardgate.gateway.recording import NO_RECORDER, Check, Recorder
from wardgate.gateway.tokens import (
    ParsedToken,
    bearer_token,
    clip,
    json_type,
    no_authorization,
    parse_token,
)
from wardgate.gateway.verification import Verified, VerifiedTokens

__all__ = ["AuthMetrics", "Authorizers", "Check", "Principal"]

logger = logging.getLogger("wardgate.gateway.authorizers")

SUPABASE_API_KEY_ISSUER: Final = "supabase"
SUPABASE_API_KEY_ROLES: Final = frozenset({"anon", "service_role"})
SUPABASE_NEW_KEY_PREFIXES: Final = ("sb_publishable_", "sb_secret_")
CLOCK_SKEW_HINT_SECONDS: Final = 300.0
_MISSING: Final = object()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for."""

    authorizer: str
    subject: str | None
    claims: Mapping[str, Any]
    """Verified claims (read-only)."""
    scopes: frozenset[str]
    """From `scope` (space-separated), `scp` (string or array) and `permissions` (array)."""


@dataclass(frozen=True, slots=True)
class _Result:
    """What the route-independent checks establish about a token (the cached value)."""

    principal: Principal
    api_key_role: str | None


# Refusals after a verified signature that a repeat of the token cannot escape (see
# `RuntimeAuthorizer.refused`).
LASTING_REFUSALS: Final = frozenset(
    {TOKEN_EXPIRED, TOKEN_NOT_YET_VALID, ISSUER_MISMATCH, AUDIENCE_MISMATCH}
)


def _not_yet_valid_until(claims: Mapping[str, Any], leeway: float) -> float:
    """When a not-yet-valid token may become valid: its latest `nbf`/`iat` minus leeway."""
    starts = [
        value - leeway
        for value in (claims.get("nbf"), claims.get("iat"))
        if isinstance(value, int | float)
    ]
    return max(starts, default=-math.inf)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _seconds(name: str, value: object) -> float:
    """A time claim (`exp`, `nbf`, `iat`) as float seconds, or `malformed_token`.

    Integers of any size are valid JSON: one beyond the float range (`10**400`) is refused
    here rather than overflowing in the arithmetic of the validity window.
    """
    if _is_number(value):
        assert isinstance(value, int | float)
        try:
            return float(value)
        except OverflowError:
            raise refusal(
                MALFORMED_TOKEN,
                name,
                f"`{name}` is out of range: seconds since the epoch must fit a double",
                expected="number",
                actual="number out of range",
            ) from None
    raise refusal(
        MALFORMED_TOKEN,
        name,
        f"`{name}` must be a number of seconds since the epoch",
        expected="number",
        actual=json_type(value),
    )


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by name; a dotted name that is not itself a claim walks into objects."""
    if name in claims:
        return claims[name]
    if "." not in name:
        return _MISSING
    current: Any = claims
    for part in name.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return _MISSING
        current = current[part]
    return current


def _json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values without Python's `True == 1`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """Granted scopes: `scope` (space-separated), `scp` and `permissions`.

    A `scope` string is split on SP (0x20) only, as RFC 6749 section 3.3 says: Python's
    `str.split()` also splits on U+00A0, U+001F and the other Unicode spaces, so one odd
    token would grant several scopes. Only NQCHAR tokens are granted; anything else can
    never match a required scope (which the config holds to NQCHAR as well).
    """
    granted: set[str] = set()
    for name in ("scope", "scp", "permissions"):
        value = claims.get(name)
        if isinstance(value, str) and name != "permissions":
            granted.update(item for item in value.split(" ") if is_scope_token(item))
        elif isinstance(value, list):
            granted.update(item for item in value if isinstance(item, str) and is_scope_token(item))
    return frozenset(granted)


def header_value(value: Any) -> str:
    """A claim as a header value: plain printable ASCII strings as they are, anything
    else as ASCII JSON (so no claim can inject a line break or non-ASCII byte)."""
    if isinstance(value, str) and value.isascii() and value.isprintable():
        return value
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


# Descriptions of passed checks, built only when a recorder keeps steps
# (`Recorder.step_from`).


def _token_step(authorization: str | Credential | None, token: str, limit: int) -> Check:
    if isinstance(authorization, Credential):
        return Check(
            "token",
            True,
            None,
            f"{authorization.where}, {len(token)} characters",
            f"limit {limit} bytes",
        )
    return Check(
        "authorization",
        True,
        "Bearer <token>",
        f"Bearer, {len(token)} characters",
        f"limit {limit} bytes",
    )


def _format_step(parsed: ParsedToken) -> Check:
    note = "decoded, NOT verified yet"
    if parsed.ignored_headers:
        note += f"; ignored header parameters {list(parsed.ignored_headers)}"
    return Check(
        "format",
        True,
        actual={"header": dict(parsed.header), "claims": dict(parsed.claims)},
        note=note,
    )


def _signature_step(alg: str, keys: int) -> Check:
    return Check("signature", True, note=f"{alg}, {keys} candidate key(s)")


def _time_step(name: str, claims: Mapping[str, Any], now: float, leeway: float) -> Check:
    """`exp`, `nbf` or `iat` passed (or absent, which passes for `nbf` and `iat`)."""
    if name not in claims:
        if name == "exp":
            return Check("exp", True, None, round(now, 3), note="no exp claim")
        return Check(name, True, note=f"no {name} claim")
    return Check(name, True, claims[name], round(now, 3), note=f"leeway {leeway}s")


def _api_key_step(allowed: Sequence[str], role: str) -> Check:
    return Check("api_key", True, list(allowed), role)


def _claims_step(route_auth: RouteAuth) -> Check:
    return Check("claims", True, dict(route_auth.claims))


def _scopes_step(granted: frozenset[str], route_auth: RouteAuth) -> Check:
    expected: dict[str, list[str]] = {}
    if route_auth.scopes:
        expected["all"] = list(route_auth.scopes)
    if route_auth.any_scopes:
        expected["any"] = list(route_auth.any_scopes)
    return Check("scopes", True, expected, sorted(granted))


class RuntimeAuthorizer:
    """One configured authorizer, ready to verify tokens with the keys it is given."""

    def __init__(
        self,
        name: str,
        spec: JwtAuthorizer | Auth0Authorizer | SupabaseAuthorizer,
        keys: AuthorizerKeys,
        clock: Callable[[], float],
    ) -> None:
        self.name = name
        self.kind = spec.type
        self.clock = clock
        self.keys = keys
        self.algorithms: tuple[str, ...] = spec.accepted_algorithms()
        self.leeway = spec.leeway
        self.required_claims: tuple[str, ...] = tuple(spec.required_claims)
        self.require_exp = spec.require_exp
        self.forward_claims: tuple[ClaimHeader, ...] = tuple(spec.forward_claims)
        self.forward_authorization = spec.forward_authorization
        self.is_supabase = isinstance(spec, SupabaseAuthorizer)
        self.has_secret = secret_reference(spec) is not None
        self.issuers: tuple[str, ...] | None = tuple(spec.issuer) if spec.issuer else None
        self.audiences: tuple[str, ...] | None = tuple(spec.audience) if spec.audience else None
        self.cache: VerifiedTokens[_Result] = VerifiedTokens()
        self.refused: VerifiedTokens[tuple[Mapping[str, Any], float | None]] = VerifiedTokens()
        """Tokens with a verified signature refused by a claim that cannot change for
        the better (expired, wrong issuer or audience; not yet valid until it may be): their
        claims, so that a repeat is refused again without parsing or a signature check,
        and for an expired one its `exp`, so that a repeat checks that claim alone."""
        # What a recorded step shows as expected, built once.
        self._algorithm_list = list(self.algorithms)
        self._issuer_list = list(self.issuers) if self.issuers is not None else None
        self._audience_list = list(self.audiences) if self.audiences is not None else None
        self._required_claims_list = list(self.required_claims)
        keys.on_keys_removed(self.forget_verdicts)

    def forget_verdicts(self) -> None:
        """Keys were removed: verdicts that relied on a signature check are stale."""
        self.cache.clear()
        self.refused.clear()

    def cached(self, token: str) -> _Result | None:
        """The verified-token cache's result for `token` (a hit also starts a background
        refresh of keys past their lifetime), or None; raises the refusal of a token
        refused before by a lasting claim check."""
        now = self.clock()
        result = self.cache.get(token, now)
        if result is not None:
            self.keys.revalidate(now)
            return result
        self.refuse_again(token, now)
        return None

    def refuse_again(self, token: str, now: float) -> None:
        """Raise the refusal of a token refused before by a lasting claim check (a cache
        hit re-runs only the claim checks, so the details are those of now)."""
        entry = self.refused.get(token, now)
        if entry is None:
            return
        claims, exp = entry
        if exp is not None and now >= exp + self.leeway:
            # Still expired: the refusal `_check_claims` would raise first (the checks
            # before it passed for these claims, and pass again), without the others.
            raise self._expired(claims, exp, now)
        self._check_claims(claims, now, NO_RECORDER)

    # --- route-independent checks (cached) ---------------------------------------------

    async def verify(self, token: str, recorder: Recorder) -> _Result:
        """Steps 3-11 of the module docstring, then cache the result."""
        if self.is_supabase and token.startswith(SUPABASE_NEW_KEY_PREFIXES):
            raise refusal(
                SUPABASE_API_KEY,
                "format",
                "a Supabase publishable/secret API key identifies the project, not a user",
            )
        parsed = parse_token(token)
        claims = parsed.claims
        recorder.step_from(_format_step, parsed)
        self._check_algorithm(parsed)
        recorder.step("algorithm", True, self._algorithm_list, parsed.alg)
        keys = await self._keys(parsed, recorder)
        self._check_signature(parsed, keys)
        recorder.step_from(_signature_step, parsed.alg, len(keys))

        now = self.clock()
        try:
            not_before, expires, api_key_role = self._check_claims(claims, now, recorder)
        except GatewayError as exc:
            if exc.error in LASTING_REFUSALS:
                # Until `nbf` (with the leeway) a not-yet-valid token stays refused; the
                # other refusals last as long as the keys that verified the signature.
                until = math.inf
                if exc.error is TOKEN_NOT_YET_VALID:
                    until = _not_yet_valid_until(claims, self.leeway)
                exp = _seconds("exp", claims["exp"]) if exc.error is TOKEN_EXPIRED else None
                self.refused.put(token, Verified((claims, exp), -math.inf, until))
            raise

        subject = claims.get("sub")
        principal = Principal(
            authorizer=self.name,
            subject=subject if isinstance(subject, str) else None,
            claims=MappingProxyType(claims),
            scopes=scopes_of(claims),
        )
        result = _Result(principal, api_key_role)
        self.cache.put(token, Verified(result, not_before, expires))
        return result

    def _check_claims(
        self, claims: Mapping[str, Any], now: float, recorder: Recorder
    ) -> tuple[float, float, str | None]:
        """Steps 7-11: the validity window, and the API-key role of a Supabase key."""
        not_before, expires = self._check_times(claims, now, recorder)

        api_key_role: str | None = None
        role = claims.get("role")
        if (
            self.is_supabase
            and claims.get("iss") == SUPABASE_API_KEY_ISSUER
            and isinstance(role, str)
            and role in SUPABASE_API_KEY_ROLES
        ):
            api_key_role = role
            skipped = "skipped: a Supabase API key, not a user token"
            recorder.step("issuer", True, actual=SUPABASE_API_KEY_ISSUER, note=skipped)
            recorder.step("audience", True, note=skipped)
            recorder.step("required_claims", True, note=skipped)
        else:
            self._check_issuer(claims, recorder)
            self._check_audience(claims, recorder)
            self._check_required_claims(claims, recorder)
        return not_before, expires, api_key_role

    def _check_algorithm(self, parsed: ParsedToken) -> None:
        alg = parsed.alg
        if alg.lower() == "none":
            raise refusal(
                ALGORITHM_NOT_ALLOWED,
                "algorithm",
                "unsigned tokens (`alg: none`) are never accepted",
                expected=list(self.algorithms),
                actual=clip(alg),
            )
        if alg in self.algorithms:
            return
        if self.is_supabase and alg in HMAC_ALGORITHMS and not self.has_secret:
            claims = parsed.claims
            role = claims.get("role")
            # `role` is any JSON value the client chose: a list or an object is no role
            # (and cannot be looked up in a set).
            if (
                claims.get("iss") == SUPABASE_API_KEY_ISSUER
                and isinstance(role, str)
                and role in SUPABASE_API_KEY_ROLES
            ):
                raise refusal(
                    SUPABASE_API_KEY,
                    "algorithm",
                    f"the token has the shape of a Supabase API key (iss supabase, role {role}); "
                    "its signature was not checked, since the authorizer has no `jwtSecret`",
                    expected=list(self.algorithms),
                    actual=alg,
                )
            raise refusal(
                ALGORITHM_NOT_ALLOWED,
                "algorithm",
                f"a legacy {alg} Supabase token: this authorizer verifies the project's JWKS "
                "and has no `jwtSecret`; set `jwtSecret` (the project's legacy JWT secret) to "
                "accept it, or issue tokens with the project's signing keys",
                expected=list(self.algorithms),
                actual=alg,
            )
        raise refusal(
            ALGORITHM_NOT_ALLOWED,
            "algorithm",
            "the authorizer's algorithms decide, never the token",
            expected=list(self.algorithms),
            actual=clip(alg),
        )

    async def _keys(self, parsed: ParsedToken, recorder: Recorder) -> list[Any]:
        alg = parsed.alg
        source = self.keys.source(alg)
        if source is None:  # a configuration the models rule out; never a 401 for it
            raise refusal(INTERNAL_ERROR, "kid", f"no key source for {alg}")
        return await source.keys(parsed.kid, alg, recorder)

    def _check_signature(self, parsed: ParsedToken, keys: Sequence[Any]) -> None:
        algorithm = ALGORITHMS[parsed.alg]
        for key in keys:
            try:
                if algorithm.verify(parsed.signing_input, key, parsed.signature):
                    return
            except (ValueError, TypeError, InvalidKeyError):
                continue
        raise refusal(
            INVALID_SIGNATURE,
            "signature",
            "the signature does not verify"
            + ("" if parsed.signature else " (the signature segment is empty)"),
            alg=parsed.alg,
            kid=clip(parsed.kid),
            keysTried=len(keys),
        )

    def _check_times(
        self, claims: Mapping[str, Any], now: float, recorder: Recorder
    ) -> tuple[float, float]:
        """The validity window `[not_before, expires)` with the leeway applied."""
        leeway = self.leeway
        times: dict[str, float | None] = {}
        for name in ("exp", "nbf", "iat"):
            value = claims.get(name, _MISSING)
            times[name] = None if value is _MISSING else _seconds(name, value)
        exp = times["exp"]
        expires = math.inf
        if exp is None and self.require_exp:
            raise refusal(
                MISSING_CLAIM,
                "exp",
                "the token has no `exp` claim: a token that never expires is refused "
                "(the authorizer's `requireExp`)",
                missing=["exp"],
            )
        if exp is not None:
            expires = exp + leeway
            if now >= expires:
                raise self._expired(claims, exp, now)
        recorder.step_from(_time_step, "exp", claims, now, leeway)
        not_before = -math.inf
        for name in ("nbf", "iat"):
            value = times[name]
            if value is None:
                recorder.step_from(_time_step, name, claims, now, leeway)
                continue
            start = value - leeway
            if now < start:
                early = value - now
                raise refusal(
                    TOKEN_NOT_YET_VALID,
                    name,
                    f"`{name}` is {round(early, 3)}s ahead of the gateway's clock (leeway "
                    f"{leeway}s): the issuer's clock is ahead?",
                    expected=f"{name} <= now + leeway",
                    actual=claims.get(name),
                    now=round(now, 3),
                    leeway=leeway,
                    deltaSeconds=round(early, 3),
                )
            not_before = max(not_before, start)
            recorder.step_from(_time_step, name, claims, now, leeway)
        return not_before, expires

    def _expired(self, claims: Mapping[str, Any], exp: float, now: float) -> GatewayError:
        """The refusal of a token whose `exp` (with the leeway) is past at `now`."""
        late = now - exp
        shown_now = round(now, 3)
        return refusal(
            TOKEN_EXPIRED,
            "exp",
            "likely clock skew: expired less than 5 minutes ago"
            if late < CLOCK_SKEW_HINT_SECONDS
            else None,
            expected=claims.get("exp"),
            actual=shown_now,
            now=shown_now,
            leeway=self.leeway,
            deltaSeconds=round(late, 3),
        )

    def _check_issuer(self, claims: Mapping[str, Any], recorder: Recorder) -> None:
        issuers = self.issuers
        iss = claims.get("iss", _MISSING)
        if issuers is None:
            recorder.step("issuer", True, note="no issuer configured: unchecked")
            return
        if iss is _MISSING or not isinstance(iss, str) or iss not in issuers:
            note = None
            if iss is _MISSING:
                note = "the token has no `iss` claim"
            elif not isinstance(iss, str):
                note = f"`iss` must be a string, found {json_type(iss)}"
            elif iss + "/" in issuers:
                note = (
                    "differs only in the trailing slash: the authorizer expects one, the "
                    "token's `iss` has none"
                )
            elif iss.endswith("/") and iss[:-1] in issuers:
                note = (
                    f"differs only in the trailing slash: the token's `iss` ends with `/` "
                    f"(as Auth0's do); set the authorizer's issuer to {clip(iss)!r}"
                )
            raise refusal(
                ISSUER_MISMATCH,
                "issuer",
                note,
                expected=list(issuers),
                actual=clip(iss) if isinstance(iss, str) else None,
            )
        recorder.step("issuer", True, self._issuer_list, iss)

    def _check_audience(self, claims: Mapping[str, Any], recorder: Recorder) -> None:
        audiences = self.audiences
        if audiences is None:
            recorder.step("audience", True, note="no audience configured: unchecked")
            return
        aud = claims.get("aud", _MISSING)
        if isinstance(aud, str):
            found: list[str] | None = [aud]
        elif isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
            found = aud
        else:
            found = None
        if found is None or not any(a in audiences for a in found):
            if aud is _MISSING:
                note: str | None = "the token has no `aud` claim"
            elif found is None:
                note = "`aud` must be a string or a non-empty array of strings, found " + json_type(
                    aud
                )
            else:
                note = None
            raise refusal(
                AUDIENCE_MISMATCH,
                "audience",
                note,
                expected=list(audiences),
                actual=[clip(a) for a in found[:10]] if found is not None else None,
            )
        recorder.step("audience", True, self._audience_list, found)

    def _check_required_claims(self, claims: Mapping[str, Any], recorder: Recorder) -> None:
        if not self.required_claims:
            return
        missing = [n for n in self.required_claims if _claim(claims, n) in (_MISSING, None)]
        if missing:
            raise refusal(
                MISSING_CLAIM,
                "required_claims",
                "the authorizer's requiredClaims are not all present",
                expected=list(self.required_claims),
                missing=missing,
            )
        recorder.step("required_claims", True, self._required_claims_list)


def check_route(result: _Result, route_auth: RouteAuth, recorder: Recorder) -> Principal:
    """Steps 12-14: the route's API key roles, claims and scopes."""
    principal = result.principal
    role = result.api_key_role
    if role is not None:
        allowed = route_auth.allowed_api_key_roles
        if role not in allowed:
            raise refusal(
                SUPABASE_API_KEY,
                "api_key",
                "a Supabase API key, not a user's access token",
                expected=list(allowed),
                actual=role,
            )
        recorder.step_from(_api_key_step, allowed, role)
    if route_auth.claims:
        for name, wanted in route_auth.claims.items():
            value = _claim(principal.claims, name)
            if value is _MISSING:
                raise refusal(
                    MISSING_CLAIM, "claims", f"the route requires the claim {name!r}", claim=name
                )
            if isinstance(wanted, list):
                have = value if isinstance(value, list) else [value]
                ok = all(any(_json_equal(w, h) for h in have) for w in wanted)
            else:
                ok = _json_equal(wanted, value)
            if not ok:
                raise refusal(
                    CLAIM_MISMATCH,
                    "claims",
                    f"the claim {name!r} does not have the value the route requires",
                    claim=name,
                    expected=wanted,
                    actual=clip(value),
                )
        recorder.step_from(_claims_step, route_auth)
    if route_auth.scopes or route_auth.any_scopes:
        _check_scopes(principal.scopes, route_auth, recorder)
    return principal


def _check_scopes(granted: frozenset[str], route_auth: RouteAuth, recorder: Recorder) -> None:
    """Step 14: every scope of `scopes`, and one of `anyScopes`, among the granted ones.

    The refusal names what is missing in its message and in the RFC 6750 challenge's
    `scope` attribute (scope tokens need no escaping in a quoted string).
    """
    missing = [s for s in route_auth.scopes if s not in granted]
    any_of = route_auth.any_scopes
    if missing:
        needed, wanted = missing, ", ".join(missing)
    elif any_of and granted.isdisjoint(any_of):
        needed, wanted = list(any_of), "one of " + ", ".join(any_of)
    else:
        recorder.step_from(_scopes_step, granted, route_auth)
        return
    error = refusal(
        INSUFFICIENT_SCOPE,
        "scopes",
        f"the token lacks scopes the route requires: {wanted}",
        expected=list(route_auth.scopes) if missing else {"any": list(any_of)},
        actual=sorted(granted)[:50],
        missing=needed,
    )
    error.message = f"{INSUFFICIENT_SCOPE.message.rstrip('.')}: {wanted}."
    challenge = bearer_challenge(INSUFFICIENT_SCOPE, scope=needed)
    assert challenge is not None  # insufficient_scope is a challenge
    error.headers["WWW-Authenticate"] = challenge
    raise error


class Authorizers:
    """All runtime authorizers of one loaded config."""

    def __init__(
        self,
        authorizers: Mapping[str, RuntimeAuthorizer],
        default: str | None,
        max_token_bytes: int,
        clock: Callable[[], float],
        warnings: Sequence[str] = (),
        fingerprints: Mapping[str, str] | None = None,
        built_with: tuple[object, ...] = (),
    ) -> None:
        self._by_name = dict(authorizers)
        self._warnings = list(warnings)
        self._fingerprints = dict(fingerprints or {})
        """What each authorizer was built from (`authorizer_fingerprint`)."""
        self._built_with = built_with
        """The session, metrics and clock they were built with."""
        self._default = default
        self._max_token_bytes = max_token_bytes
        self._clock = clock
        self._stripped = frozenset(
            claim.header.lower()
            for authorizer in self._by_name.values()
            for claim in authorizer.forward_claims
        )

    @classmethod
    def build(
        cls,
        loaded: LoadedConfig,
        session: aiohttp.ClientSession | None = None,
        metrics: AuthMetrics | None = None,
        clock: Callable[[], float] = time.time,
        previous: Authorizers | None = None,
    ) -> Authorizers:
        """Runtime authorizers for every authorizer of the config: first each one's key
        sources, then the authorizer around them. Raises `ConfigError` for what only shows
        with the secrets and keys at hand (a short secret, a PEM as HMAC secret, an inline
        key set without a usable key). Remote JWKS are fetched with `session`, the process's
        (`ProcessContext`); without one the authorizers only check the config, fetching
        nothing.

        `previous`: the authorizers of the config serving before. One whose spec and
        secret are unchanged (`authorizer_fingerprint`), built with the same session,
        metrics and clock, is taken as it is, with its fetched keys and its verified-token
        caches; a changed one is built anew, with empty caches."""
        config = loaded.config
        built_with = (session, metrics, clock)
        reusable: Mapping[str, RuntimeAuthorizer] = {}
        earlier: Mapping[str, str] = {}
        if previous is not None and _same_objects(previous._built_with, built_with):
            reusable, earlier = previous._by_name, previous._fingerprints
        built: dict[str, RuntimeAuthorizer] = {}
        fingerprints: dict[str, str] = {}
        warnings: list[str] = []
        for name, spec in config.named_authorizers().items():
            where = "authorizer" if name == "default" else f"authorizers.{name}"
            reference = secret_reference(spec)
            secret = loaded.secret(reference).encode("utf-8") if reference is not None else None
            fingerprint = authorizer_fingerprint(spec, secret)
            fingerprints[name] = fingerprint
            warnings.extend(authorizer_warnings(spec, where))
            if name in reusable and earlier.get(name) == fingerprint:
                built[name] = reusable[name]
                continue
            keys = build_authorizer_keys(
                name,
                spec,
                secret,
                where=where,
                session=session,
                clock=clock,
                metrics=metrics,
            )
            built[name] = RuntimeAuthorizer(name, spec, keys, clock)
        return cls(
            built,
            config.default_authorizer_name(),
            config.limits.max_token_bytes,
            clock,
            warnings,
            fingerprints,
            built_with,
        )

    def names(self) -> list[str]:
        return list(self._by_name)

    def runtime(self, name: str) -> RuntimeAuthorizer:
        """The authorizer named `name` (`default` for the inline one)."""
        return self._by_name[name]

    def warnings(self) -> list[str]:
        """Configuration smells worth a startup log line (`authorizer_warnings`)."""
        return list(self._warnings)

    async def authorize(
        self,
        route_auth: RouteAuth,
        authorization: str | Credential | None,
        recorder: Recorder = NO_RECORDER,
    ) -> Principal:
        """The principal of a request to a route, or a `GatewayError` (see the module doc).

        `authorization` is an `Authorization` header value, or a token already found by
        the route's `CredentialSources` (a cookie, a query parameter...). `recorder` gets
        each check; a token the verified-token cache answers records only the route's
        checks (`wardgate explain` builds its own authorizers, so every check runs)."""
        name = route_auth.authorizer or self._default
        runtime = self._by_name.get(name) if name is not None else None
        if runtime is None:
            raise refusal(INTERNAL_ERROR, "authorizer", f"no authorizer named {name!r}")
        try:
            if isinstance(authorization, Credential):
                token = authorization.token
            else:
                token = bearer_token(authorization, self._max_token_bytes)
            result = runtime.cached(token)
            if result is None:
                recorder.step_from(_token_step, authorization, token, self._max_token_bytes)
                result = await runtime.verify(token, recorder)
            if (
                result.api_key_role is None
                and not route_auth.scopes
                and not route_auth.any_scopes
                and not route_auth.claims
            ):
                return result.principal
            return check_route(result, route_auth, recorder)
        except GatewayError as exc:
            detail = exc.detail
            detail.setdefault("authorizer", runtime.name)
            recorder.refusal(detail)
            raise

    def authorize_now(
        self,
        route_auth: RouteAuth,
        authorization: str | Credential | None,
        recorder: Recorder = NO_RECORDER,
    ) -> Principal | None:
        """What `authorize` decides without waiting, without its coroutine: the principal
        of a token the verified-token cache holds, or the refusal (raised, as `authorize`
        raises it) of a malformed header or of a token refused before; None when the token
        must be verified, and then `authorize` decides (and records its checks)."""
        name = route_auth.authorizer or self._default
        runtime = self._by_name.get(name) if name is not None else None
        if runtime is None:
            raise refusal(INTERNAL_ERROR, "authorizer", f"no authorizer named {name!r}")
        try:
            if isinstance(authorization, Credential):
                token = authorization.token
            else:
                token = bearer_token(authorization, self._max_token_bytes)
            result = runtime.cached(token)
            if result is None:
                return None
            if (
                result.api_key_role is None
                and not route_auth.scopes
                and not route_auth.any_scopes
                and not route_auth.claims
            ):
                return result.principal
            return check_route(result, route_auth, recorder)
        except GatewayError as exc:
            detail = exc.detail
            detail.setdefault("authorizer", runtime.name)
            recorder.refusal(detail)
            raise

    def refuse_without_token(
        self, route_auth: RouteAuth, recorder: Recorder = NO_RECORDER
    ) -> GatewayError:
        """What `authorize` raises for a request without an `Authorization` header, built
        without its coroutine: the commonest refusal costs what a missing route costs."""
        name = route_auth.authorizer or self._default
        runtime = self._by_name.get(name) if name is not None else None
        if runtime is None:
            return refusal(INTERNAL_ERROR, "authorizer", f"no authorizer named {name!r}")
        error = no_authorization()
        error.detail.setdefault("authorizer", runtime.name)
        recorder.refusal(error.detail)
        return error

    def forwarded_headers(self, principal: Principal) -> dict[str, str]:
        """Headers for the upstream from the authorizer's `forwardClaims`."""
        runtime = self._by_name.get(principal.authorizer)
        if runtime is None or not runtime.forward_claims:
            return {}
        headers: dict[str, str] = {}
        for item in runtime.forward_claims:
            value = _claim(principal.claims, item.claim)
            if value is not _MISSING and value is not None:
                headers[item.header] = header_value(value)
        return headers

    def stripped_request_headers(self) -> frozenset[str]:
        """Lower-case names of every `forwardClaims` header: removed from every request."""
        return self._stripped

    def forwards_authorization(self, name: str) -> bool:
        runtime = self._by_name.get(name)
        return runtime.forward_authorization if runtime is not None else False

    async def prefetch(self) -> None:
        """Warm the JWKS caches; failures are logged (and show in `health()`), not raised."""
        await asyncio.gather(*(runtime.keys.prefetch() for runtime in self._by_name.values()))

    def health(self) -> dict[str, Any]:
        """Per authorizer: key source and JWKS state (URL, last success and error, kids)."""
        report: dict[str, Any] = {}
        for name, runtime in self._by_name.items():
            entry: dict[str, Any] = {"type": runtime.kind, "algorithms": list(runtime.algorithms)}
            entry.update(runtime.keys.health())
            entry["cachedTokens"] = len(runtime.cache)
            report[name] = entry
        return report

    def runtimes(self) -> list[RuntimeAuthorizer]:
        return list(self._by_name.values())

    async def close(self, keep: Iterable[Authorizers] = ()) -> None:
        """Stop the authorizers' background work (JWKS refreshes), except for those that
        `keep` holds too (a later config took them over unchanged)."""
        kept = {id(runtime) for other in keep for runtime in other._by_name.values()}
        for runtime in self._by_name.values():
            if id(runtime) not in kept:
                await runtime.keys.close()


def authorizer_fingerprint(
    spec: JwtAuthorizer | Auth0Authorizer | SupabaseAuthorizer, secret: bytes | None
) -> str:
    """What a runtime authorizer is built from, as text to compare: the spec, and a hash of
    its secret (never the value) so that a rotated secret builds it anew."""
    digest = hashlib.sha256(secret).hexdigest() if secret is not None else ""
    return f"{spec.model_dump_json()} {digest}"


def _same_objects(first: Sequence[object], second: Sequence[object]) -> bool:
    return len(first) == len(second) and all(a is b for a, b in zip(first, second, strict=True))
