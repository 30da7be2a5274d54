"""The gateway's error catalogue: every denial and failure has one stable code.

A code is a contract with our users: it appears in the JSON error body, in the
`WWW-Authenticate` header's `error_description`, in the log line of the request and in
`docs/errors.md`. Codes are never renamed; new ones are added.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final, Literal

BearerError = Literal["invalid_request", "invalid_token", "insufficient_scope"]


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """One entry of the catalogue."""

    code: str
    status: int
    message: str
    hint: str
    # RFC 6750 error attribute for `WWW-Authenticate: Bearer`; None when the response is
    # not an authentication challenge.
    bearer_error: BearerError | None = None


# Ordered as `docs/errors.md` lists them: request shape, token format, token validation,
# authorization, identity provider, routing, upstream.
MALFORMED_REQUEST: Final = ErrorCode(
    "malformed_request",
    400,
    "The request is not valid HTTP/1.1.",
    "The request line or a header could not be parsed (a folded or unterminated header, a "
    "bad character, conflicting `Content-Length`/`Transfer-Encoding`, a `Host` that is not "
    "`host[:port]`: no user info, path or quote). Check the client or "
    "the proxy in front of the gateway. The connection is closed.",
)
HEADER_TOO_LARGE: Final = ErrorCode(
    "header_too_large",
    431,
    "A request header or the request line is larger than the gateway accepts.",
    "Each header field (name and value) and the request line must fit "
    "`limits.maxHeaderBytes`, there may be at most `limits.maxHeaders` fields, and the "
    "whole head must fit `limits.maxHeadBytes`. Send smaller cookies or tokens, or raise "
    "the limits in the gateway config.",
)
MISSING_TOKEN: Final = ErrorCode(
    "missing_token",
    401,
    "The request carries no token where the route reads one (the Authorization header, "
    "unless its `tokenSources` name a cookie, a query parameter or a WebSocket subprotocol).",
    "Send `Authorization: Bearer <token>`, or the token where the route's `tokenSources` say "
    "(the error body names them). Browsers drop `Authorization` on cross-origin redirects, "
    "and a browser's `WebSocket` and `EventSource` cannot set it.",
    "invalid_request",
)
INVALID_AUTH_SCHEME: Final = ErrorCode(
    "invalid_auth_scheme",
    401,
    "The Authorization header does not use the Bearer scheme.",
    "Send `Authorization: Bearer <token>` with exactly one space; Basic and other schemes "
    "are not accepted on this route.",
    "invalid_request",
)
DUPLICATE_AUTHORIZATION: Final = ErrorCode(
    "duplicate_authorization",
    400,
    "The request has more than one Authorization header.",
    "Send one `Authorization: Bearer <token>` header. With two, the gateway would verify "
    "one and an upstream might read the other, so such requests are refused.",
    "invalid_request",
)
AMBIGUOUS_TOKEN: Final = ErrorCode(
    "ambiguous_token",
    400,
    "The request carries different tokens, or its token more than once.",
    "Send one token in one place: the gateway would verify one while an upstream could read "
    "another. The sources are the authorizer's (or the route's) `tokenSources`; a token from "
    "the query must appear there once, in its own `&`-separated parameter.",
    "invalid_request",
)
CSRF_ORIGIN_REFUSED: Final = ErrorCode(
    "csrf_origin_refused",
    403,
    "A request authenticated by a cookie comes from an origin the gateway does not allow.",
    "With a `cookie` token source, unsafe methods and WebSocket upgrades must send an "
    "`Origin` (or a `Referer`) that is listed in the CORS policy's `allowOrigins` or is the "
    "request's own host. Add the page's origin to `allowOrigins`, or send the token in the "
    "`Authorization` header (clients that are not browsers should).",
)
TOKEN_TOO_LARGE: Final = ErrorCode(
    "token_too_large",
    401,
    "The bearer token is larger than the gateway accepts.",
    "Reduce the claims in the token, or raise `limits.maxTokenBytes` in the gateway config.",
    "invalid_token",
)
OPAQUE_TOKEN: Final = ErrorCode(
    "opaque_token",
    401,
    "The bearer token is not a JWT.",
    "The token has no `.`-separated segments: it is an opaque access token. Auth0 issues "
    "opaque tokens when the authorization request names no `audience`: request one for "
    "this API's audience.",
    "invalid_token",
)
MALFORMED_TOKEN: Final = ErrorCode(
    "malformed_token",
    401,
    "The bearer token is not a well-formed JWT.",
    "A JWT has three base64url segments (header.payload.signature) whose first two decode "
    "to JSON objects. Check that the token was not truncated or wrapped in quotes.",
    "invalid_token",
)
ALGORITHM_NOT_ALLOWED: Final = ErrorCode(
    "algorithm_not_allowed",
    401,
    "The token's signing algorithm is not accepted by this authorizer.",
    "The authorizer's `algorithms` list decides what is accepted, never the token. Align "
    "the identity provider's signing algorithm with the authorizer.",
    "invalid_token",
)
UNKNOWN_KID: Final = ErrorCode(
    "unknown_kid",
    401,
    "No key with the token's key ID is known to this authorizer.",
    "The token's `kid` is not in the identity provider's JWKS, even after a refresh. The "
    "token may come from another tenant or environment, or the key was removed.",
    "invalid_token",
)
INVALID_SIGNATURE: Final = ErrorCode(
    "invalid_signature",
    401,
    "The token's signature does not verify.",
    "The token was signed with another key or secret than the authorizer's, or altered. "
    "For HS* authorizers, compare the secret; for JWKS, check the issuer's tenant.",
    "invalid_token",
)
TOKEN_EXPIRED: Final = ErrorCode(
    "token_expired",
    401,
    "The token has expired.",
    "Obtain a new token. If it expired only moments ago, compare the clocks of the gateway "
    "and the identity provider (the authorizer's `leeway` allows for skew).",
    "invalid_token",
)
TOKEN_NOT_YET_VALID: Final = ErrorCode(
    "token_not_yet_valid",
    401,
    "The token is not valid yet (`nbf` or `iat` is in the future).",
    "The issuer's clock is ahead of the gateway's, beyond the authorizer's `leeway`. "
    "Synchronise clocks (NTP).",
    "invalid_token",
)
ISSUER_MISMATCH: Final = ErrorCode(
    "issuer_mismatch",
    401,
    "The token's issuer is not the one this authorizer accepts.",
    "Compare the token's `iss` with the authorizer's `issuer` exactly, including the "
    "scheme and trailing slash (Auth0's issuer ends with `/`).",
    "invalid_token",
)
AUDIENCE_MISMATCH: Final = ErrorCode(
    "audience_mismatch",
    401,
    "The token is not intended for this API (audience mismatch).",
    "Request the token for the audience the authorizer expects; the token's `aud` may be "
    "a string or a list and one entry must match.",
    "invalid_token",
)
MISSING_CLAIM: Final = ErrorCode(
    "missing_claim",
    401,
    "The token lacks a claim this route requires.",
    "Add the claim in the identity provider (a rule, action or hook), or drop it from the "
    "authorizer's `requiredClaims` or the route's `claims`. A token without `exp` is refused "
    "unless the authorizer sets `requireExp: false`: issue tokens with an expiry.",
    "invalid_token",
)
CLAIM_MISMATCH: Final = ErrorCode(
    "claim_mismatch",
    403,
    "A claim of the token does not have the value this route requires.",
    "Compare the route's `auth.claims` with the token's claims.",
    "insufficient_scope",
)
INSUFFICIENT_SCOPE: Final = ErrorCode(
    "insufficient_scope",
    403,
    "The token lacks a scope this route requires.",
    "Grant the scope to the client or user (Auth0: `scope` or `permissions`), or request "
    "it when obtaining the token.",
    "insufficient_scope",
)
SUPABASE_API_KEY: Final = ErrorCode(
    "supabase_api_key",
    401,
    "A Supabase API key was sent instead of a user's access token.",
    "`anon` and `service_role` keys identify the project, not a user. Send the session's "
    "access token (`supabase.auth.getSession()`), or allow the role on the route with "
    "`auth.allowedApiKeyRoles`.",
    "invalid_token",
)
IDP_UNAVAILABLE: Final = ErrorCode(
    "idp_unavailable",
    503,
    "The identity provider's keys cannot be fetched and none are cached.",
    "The gateway could not reach the authorizer's JWKS URL. Check the identity provider's "
    "status and the gateway's egress; `kubectl get authorizers` shows the last fetch.",
)
UNSUPPORTED_METHOD: Final = ErrorCode(
    "unsupported_method",
    405,
    "The gateway does not serve this method.",
    "`CONNECT` (tunnels) is never served, and `TRACE` only on a route that lists it in "
    "`method`. The connection is closed after this answer.",
)
UNSUPPORTED_TRANSFER_CODING: Final = ErrorCode(
    "unsupported_transfer_coding",
    501,
    "The request's Transfer-Encoding is not supported.",
    "Only `Transfer-Encoding: chunked`, alone, is accepted (RFC 9112 section 6.1); "
    "compress the body with `Content-Encoding` instead. The connection is closed after "
    "this answer.",
)
REQUEST_TIMEOUT: Final = ErrorCode(
    "request_timeout",
    408,
    "The request head or body did not arrive in time.",
    "`limits.headerTimeoutSeconds` bounds the time from the first byte of a head to its "
    "end, `limits.bodyTimeoutSeconds` the time between two reads of a body. The connection "
    "is closed after this answer.",
)
INVALID_PATH: Final = ErrorCode(
    "invalid_path",
    400,
    "The request path is not valid.",
    "Encoded slashes (`%2F`, `%5C`), encoded control characters and malformed "
    "percent-escapes are rejected. Send the path segments unencoded. A path that servers "
    "ignoring case, `;` parameters or a trailing slash read as another route's, protected "
    "otherwise, is ambiguous (`readAs` names that reading): send the path as the route "
    "writes it.",
)
UNKNOWN_HOST: Final = ErrorCode(
    "unknown_host",
    404,
    "The gateway does not serve this host.",
    "The request's `Host` (without its port) is not among the gateway's `hostnames`. Check "
    "the DNS name the client uses, or add the host (or a `*.` wildcard covering it) to the "
    "gateway's `hostnames`.",
)
MISDIRECTED_REQUEST: Final = ErrorCode(
    "misdirected_request",
    421,
    "The request's host is not the one this TLS connection was opened for.",
    "On a TLS connection, the `Host` (without its port) must be the server name the client "
    "sent in its TLS handshake (SNI), or a name of the certificate that name selected. A "
    "client that reuses one connection for another host gets this; it should open a new "
    "connection for that host (browsers and HTTP libraries retry on 421 by themselves). "
    "Check that the client sends SNI for the host it asks for.",
)
NO_ROUTE: Final = ErrorCode(
    "no_route",
    404,
    "No route matches the request path.",
    "Matching is exact and case-sensitive after normalisation. Run `wardgate explain` "
    "with the method and path to see the closest routes.",
)
METHOD_NOT_ALLOWED: Final = ErrorCode(
    "method_not_allowed",
    405,
    "The route does not accept this method.",
    "The `Allow` header lists the methods the path accepts.",
)
INVALID_WEBSOCKET_UPGRADE: Final = ErrorCode(
    "invalid_websocket_upgrade",
    400,
    "The WebSocket upgrade request is not a valid opening handshake.",
    "A WebSocket upgrade is a `GET` over HTTP/1.1 without a body, with `Connection: Upgrade`, "
    "`Upgrade: websocket`, one `Sec-WebSocket-Key` (16 bytes, base64) and "
    "`Sec-WebSocket-Version: 13` (RFC 6455 section 4.1). Use a WebSocket client library. "
    "The connection is closed after this answer.",
)
BODY_TOO_LARGE: Final = ErrorCode(
    "body_too_large",
    413,
    "The request body is larger than the gateway accepts.",
    "Raise `limits.maxBodyBytes` in the gateway config, or send a smaller body.",
)
UPSTREAM_UNREACHABLE: Final = ErrorCode(
    "upstream_unreachable",
    502,
    "The upstream server could not be reached.",
    "Check that the server named by the route's integration is running and that its URL "
    "and port are right.",
)
UPSTREAM_TIMEOUT: Final = ErrorCode(
    "upstream_timeout",
    504,
    "The upstream server did not answer in time.",
    "The server's `readTimeout` (or `connectTimeout`) elapsed. Check the upstream's load, "
    "or raise the timeout.",
)
UPSTREAM_BAD_UPGRADE: Final = ErrorCode(
    "upstream_bad_upgrade",
    502,
    "The upstream answered with a protocol switch the gateway does not relay.",
    "The upstream sent `101 Switching Protocols` to a request that asked for no upgrade, or "
    "a WebSocket handshake answer that does not match the request (`Upgrade`, "
    "`Sec-WebSocket-Accept`, a subprotocol or extension the client did not offer). Check "
    "the upstream's WebSocket server; only routes with `websocket` are upgraded.",
)
INTERNAL_ERROR: Final = ErrorCode(
    "internal_error",
    500,
    "The gateway failed to handle the request.",
    "This is a bug in the gateway: the log line with this request ID has the details.",
)

CATALOGUE: Final[tuple[ErrorCode, ...]] = (
    MALFORMED_REQUEST,
    HEADER_TOO_LARGE,
    MISSING_TOKEN,
    INVALID_AUTH_SCHEME,
    DUPLICATE_AUTHORIZATION,
    AMBIGUOUS_TOKEN,
    CSRF_ORIGIN_REFUSED,
    TOKEN_TOO_LARGE,
    OPAQUE_TOKEN,
    MALFORMED_TOKEN,
    ALGORITHM_NOT_ALLOWED,
    UNKNOWN_KID,
    INVALID_SIGNATURE,
    TOKEN_EXPIRED,
    TOKEN_NOT_YET_VALID,
    ISSUER_MISMATCH,
    AUDIENCE_MISMATCH,
    MISSING_CLAIM,
    CLAIM_MISMATCH,
    INSUFFICIENT_SCOPE,
    SUPABASE_API_KEY,
    IDP_UNAVAILABLE,
    UNSUPPORTED_METHOD,
    UNSUPPORTED_TRANSFER_CODING,
    REQUEST_TIMEOUT,
    INVALID_PATH,
    UNKNOWN_HOST,
    MISDIRECTED_REQUEST,
    NO_ROUTE,
    METHOD_NOT_ALLOWED,
    INVALID_WEBSOCKET_UPGRADE,
    BODY_TOO_LARGE,
    UPSTREAM_UNREACHABLE,
    UPSTREAM_TIMEOUT,
    UPSTREAM_BAD_UPGRADE,
    INTERNAL_ERROR,
)

BY_CODE: Final[dict[str, ErrorCode]] = {entry.code: entry for entry in CATALOGUE}


@dataclass(slots=True)
class GatewayError(Exception):
    """A request ends with a catalogued error.

    `detail` holds expected-versus-actual facts (issuer, audience, kid, clock...). It is
    always logged, and added to the response body only in debug mode. It must never hold
    a token's signature or a secret.
    """

    error: ErrorCode
    detail: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    message: str | None = None
    """The body's message when it says more than the catalogue's (which scope is missing);
    built from the config, never from the token."""

    def __str__(self) -> str:
        return f"{self.error.code}: {self.error.message}"


REALM: Final = "wardgate"


def bearer_challenge(entry: ErrorCode, *, scope: list[str] | None = None) -> str | None:
    """The RFC 6750 `WWW-Authenticate` value for an error, or None when it is no challenge;
    `scope` names the scopes a 403 `insufficient_scope` needs (section 3)."""
    if entry.bearer_error is None:
        return None
    description = f"{entry.code}: {entry.message}".replace('"', "'").replace("\\", "/")
    challenge = (
        f'Bearer realm="{REALM}", error="{entry.bearer_error}", error_description="{description}"'
    )
    if scope:
        # Scope tokens are NQCHAR (the config holds them to it): no quote or backslash.
        challenge += f', scope="{" ".join(scope)}"'
    return challenge


def code_of_body(body: bytes | str) -> str | None:
    """The code of an error body (`{"error": {"code": ...}}`), else None."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    error = document.get("error") if isinstance(document, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None
