"""Reading a bearer token: the `Authorization` header, then the JWS compact serialisation.

Nothing here trusts the token: this module only decides whether it is well-formed and
returns its header and claims as *unverified* data. Signatures are checked in
`wardgate.gateway.authorizers`.

The parser is strict on purpose (RFC 8725):
- exactly three base64url segments without padding, in canonical form;
- header and claims are UTF-8 JSON objects; invalid UTF-8, duplicate member names,
  `NaN`/`Infinity` and non-finite numbers are rejected (two parsers reading one token
  differently is how signature checks are bypassed);
- five segments (JWE), `cty: JWT` (nested JWT), `b64` (RFC 7797 unencoded payloads) and
  any `crit` extension are rejected: the gateway implements none of them;
- `jku`, `x5u`, `x5c`, `x5t` and `jwk` headers are ignored: keys come from the
  authorizer's config only, never from the token.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from wardgate.gateway.errors import (
    INVALID_AUTH_SCHEME,
    MALFORMED_TOKEN,
    MISSING_TOKEN,
    OPAQUE_TOKEN,
    TOKEN_TOO_LARGE,
    ErrorCode,
    GatewayError,
)

# Token header parameters that would let the token choose its own key: never followed.
IGNORED_KEY_HEADERS: Final = frozenset({"jku", "x5u", "x5c", "x5t", "x5t#S256", "jwk"})
# Longest header value echoed in a denial's detail (a `kid` or `alg` may be attacker-sized).
DETAIL_TEXT_LIMIT: Final = 64

_BASE64URL_SEGMENTS: Final = re.compile(r"[A-Za-z0-9_\-.]*")
_WHITESPACE: Final = re.compile(r"\s")


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A well-formed JWS whose header and claims are decoded but NOT verified."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    alg: str
    kid: str | None
    signing_input: bytes
    signature: bytes
    ignored_headers: tuple[str, ...] = ()
    """Key-selecting header parameters present in the token and ignored (`jku`, `x5c`...)."""


def clip(value: object) -> object:
    """A token-supplied value made safe to echo in a detail: long strings are cut."""
    if isinstance(value, str) and len(value) > DETAIL_TEXT_LIMIT:
        return value[:DETAIL_TEXT_LIMIT] + f"...({len(value)} characters)"
    return value


def json_type(value: object) -> str:
    """The JSON type name of a decoded value, for "expected a string, found a number"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _fail(error: ErrorCode, check: str, note: str, **facts: Any) -> GatewayError:
    return GatewayError(error, {"check": check, "note": note, **facts})


def no_authorization() -> GatewayError:
    """The refusal of a request without an `Authorization` header (to a route that reads
    its token from that header alone)."""
    missing = _fail(MISSING_TOKEN, "authorization", "no Authorization header")
    # The catalogue's message covers every token source; this route reads only the header.
    missing.message = "The request carries no token; it is read from the Authorization header."
    return missing


_SCHEME_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,31}")
NOT_SHOWN: Final = "(not shown: no scheme name before a space)"


def shown_scheme(scheme: str, separator: str) -> str:
    """What a refusal may echo of a non-Bearer Authorization value: its scheme name only.

    Without a space after a short token-character name the value is not a scheme and a
    credential (an API key, `Basic<TAB>...`, `Token:ghp_...`): nothing of it is shown."""
    if separator and _SCHEME_NAME.fullmatch(scheme):
        return scheme
    return NOT_SHOWN


def bearer_token(authorization: str | None, max_bytes: int) -> str:
    """The token of an `Authorization: Bearer <token>` header value.

    The scheme is case-insensitive; exactly one space and one token must follow it.
    """
    if authorization is None:
        raise no_authorization()
    scheme, separator, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        if not authorization.strip():
            raise _fail(MISSING_TOKEN, "authorization", "the Authorization header is empty")
        raise _fail(
            INVALID_AUTH_SCHEME,
            "authorization",
            "the Authorization header must use the Bearer scheme",
            expected="Bearer",
            actual=shown_scheme(scheme, separator),
        )
    if not token:
        raise _fail(
            INVALID_AUTH_SCHEME, "authorization", "the Bearer scheme is not followed by a token"
        )
    # `isprintable` is a fast pre-check: only a token with a non-printable character
    # needs the regular expression.
    if " " in token or (not token.isprintable() and _WHITESPACE.search(token)):
        raise _fail(
            INVALID_AUTH_SCHEME,
            "authorization",
            "expected `Bearer <token>`: exactly one space, then exactly one token",
        )
    size = len(token) if token.isascii() else len(token.encode("utf-8", "surrogateescape"))
    if size > max_bytes:
        raise _fail(
            TOKEN_TOO_LARGE,
            "size",
            "the token is larger than limits.maxTokenBytes",
            expected=max_bytes,
            actual=size,
        )
    return token


def parse_token(token: str) -> ParsedToken:
    """Split and decode a JWS compact token; raises `GatewayError` (opaque or malformed)."""
    dots = token.count(".")
    if dots == 0:
        raise _fail(
            OPAQUE_TOKEN,
            "format",
            "the token has no `.`-separated segments: it is not a JWT (an opaque access token?)",
        )
    if dots == 4:
        raise _fail(
            MALFORMED_TOKEN,
            "format",
            "the token has five segments: it is an encrypted JWT (JWE), which is not accepted",
            expected="3 segments",
            actual="5 segments",
        )
    if dots != 2:
        raise _fail(
            MALFORMED_TOKEN,
            "format",
            "a JWT has three `.`-separated segments",
            expected="3 segments",
            actual=f"{dots + 1} segments",
        )
    if not _BASE64URL_SEGMENTS.fullmatch(token):
        raise _fail(
            MALFORMED_TOKEN,
            "format",
            "the token holds characters outside the base64url alphabet (padding `=`, quotes, "
            "spaces?)",
        )
    header_segment, payload_segment, signature_segment = token.split(".")
    header = decode_json_object(_segment(header_segment, "header"), "header")
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise _fail(
            MALFORMED_TOKEN,
            "format",
            "the header has no `alg` string",
            actual=clip(alg) if isinstance(alg, str) else json_type(alg),
        )
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise _fail(
            MALFORMED_TOKEN,
            "format",
            "the header's `kid` must be a string",
            actual=json_type(kid),
        )
    _check_header_extensions(header)
    claims = decode_json_object(_segment(payload_segment, "payload"), "payload")
    signature = _segment(signature_segment, "signature")
    ignored = tuple(sorted(name for name in header if name in IGNORED_KEY_HEADERS))
    return ParsedToken(
        header=header,
        claims=claims,
        alg=alg,
        kid=kid,
        signing_input=f"{header_segment}.{payload_segment}".encode("ascii"),
        signature=signature,
        ignored_headers=ignored,
    )


def _check_header_extensions(header: Mapping[str, Any]) -> None:
    cty = header.get("cty")
    if isinstance(cty, str) and cty.upper() == "JWT":
        raise _fail(
            MALFORMED_TOKEN,
            "format",
            "nested JWTs (`cty: JWT`) are not accepted",
            actual=clip(cty),
        )
    if "b64" in header and header["b64"] is not True:
        raise _fail(
            MALFORMED_TOKEN,
            "format",
            "unencoded payloads (`b64: false`, RFC 7797) are not accepted",
            actual=json_type(header["b64"]),
        )
    if "crit" in header:
        crit = header["crit"]
        names = (
            [clip(name) for name in crit if isinstance(name, str)]
            if isinstance(crit, list)
            else json_type(crit)
        )
        raise _fail(
            MALFORMED_TOKEN,
            "format",
            "the header lists critical extensions (`crit`) that the gateway does not implement",
            expected=[],
            actual=names,
        )


def _segment(segment: str, name: str) -> bytes:
    """Strict base64url: no padding, canonical trailing bits (one token, one encoding)."""
    if len(segment) % 4 == 1:
        raise _fail(MALFORMED_TOKEN, "format", f"the {name} segment is not valid base64url")
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise _fail(
            MALFORMED_TOKEN, "format", f"the {name} segment is not valid base64url"
        ) from None
    if base64.urlsafe_b64encode(data).rstrip(b"=") != segment.encode("ascii"):
        raise _fail(
            MALFORMED_TOKEN,
            "format",
            f"the {name} segment is not canonical base64url (non-zero trailing bits)",
        )
    return data


class _DuplicateKey(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_object_without_duplicates,
    parse_constant=_reject_constant,
    parse_float=_finite_float,
)


def decode_json_object(data: bytes, name: str) -> dict[str, Any]:
    """A UTF-8 JSON object with unique member names, or `malformed_token`."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(MALFORMED_TOKEN, "format", f"the {name} is not valid UTF-8") from None
    try:
        value = _DECODER.decode(text)
    except _DuplicateKey as exc:
        raise _fail(
            MALFORMED_TOKEN,
            "format",
            f"the {name} repeats the member {clip(str(exc))!r}: duplicate names are rejected",
        ) from None
    except (ValueError, RecursionError):
        raise _fail(MALFORMED_TOKEN, "format", f"the {name} is not valid JSON") from None
    if not isinstance(value, dict):
        raise _fail(
            MALFORMED_TOKEN,
            "format",
            f"the {name} must be a JSON object",
            actual=json_type(value),
        )
    return value
