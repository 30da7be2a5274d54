"""Where a request's token comes from: the `Authorization` header, a cookie, a query
parameter or a `Sec-WebSocket-Protocol` entry, as the authorizer's (or the route's)
`tokenSources` say.

Rules, the same for every source:
- the sources are tried in their configured order and the first that holds a token is
  used; every other configured source present must hold the same token, else
  `ambiguous_token` (the gateway would verify one token while the upstream reads another);
  a source repeated in the request (two cookies or parameters of that name) likewise;
- a query parameter named by a query source never goes upstream, whichever source the
  token came from; the token, a token parameter's value and `NAME=` must not appear
  anywhere else in the query, as sent or decoded (a `;` separator or an encoding an
  upstream reads differently would otherwise carry a token upstream): `ambiguous_token`;
- a token from a cookie is sent by the browser on its own, so an unsafe method (anything
  but `GET`, `HEAD`, `OPTIONS`, `TRACE`) and a WebSocket upgrade (cross-site WebSocket
  hijacking) must come from an allowed origin: `Origin` (else the origin of `Referer`) is
  one of the CORS policy's listed origins, or the request's own `Host`; a missing origin,
  `null` or several `Origin` fields are refused (`csrf_origin_refused`);
- the token's size is held to `limits.maxTokenBytes` wherever it comes from.

Pure: no I/O, no aiohttp.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol
from urllib.parse import unquote, unquote_plus, urlsplit

from wardgate.gateway.config import (
    AuthorizationHeaderSource,
    CookieSource,
    QuerySource,
    SubprotocolSource,
)
from wardgate.gateway.errors import (
    AMBIGUOUS_TOKEN,
    CSRF_ORIGIN_REFUSED,
    MISSING_TOKEN,
    TOKEN_TOO_LARGE,
    GatewayError,
)
from wardgate.gateway.tokens import bearer_token

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
REDACTED: Final = "REDACTED"
SUBPROTOCOL_HEADER: Final = "Sec-WebSocket-Protocol"

SourceKind = Literal["authorization", "cookie", "query", "subprotocol"]
AnySource = AuthorizationHeaderSource | CookieSource | QuerySource | SubprotocolSource


class Headers(Protocol):
    """What the extraction reads of request headers (a `multidict` fits)."""

    def get(self, key: str, /) -> str | None: ...

    def getall(self, key: str, default: list[str], /) -> list[str]: ...


class OriginPolicy(Protocol):
    """The origins a CORS policy lists (`wardgate.gateway.cors.CorsRules` fits)."""

    @property
    def origins(self) -> frozenset[str]: ...


@dataclass(frozen=True, slots=True)
class Credential:
    """A token and where it was found."""

    token: str
    kind: SourceKind
    where: str
    """`the Authorization header`, `the cookie sb-access-token`..."""


def describe(source: AnySource) -> str:
    """A source as the docs and `wardgate explain` name it."""
    if isinstance(source, CookieSource):
        return f"the cookie {source.name}"
    if isinstance(source, QuerySource):
        return f"the query parameter {source.name}"
    if isinstance(source, SubprotocolSource):
        return f"the Sec-WebSocket-Protocol entry {source.prefix}<token>"
    return "the Authorization header"


def _ambiguous(note: str, *places: str) -> GatewayError:
    return GatewayError(AMBIGUOUS_TOKEN, {"check": "token", "note": note, "sources": list(places)})


class CredentialSources:
    """The compiled `tokenSources` of one route."""

    __slots__ = (
        "_cors",
        "_default",
        "_max_bytes",
        "_sources",
        "cookie_names",
        "query_names",
        "reads_authorization",
        "subprotocol_prefixes",
        "where",
    )

    def __init__(
        self, sources: Sequence[AnySource] | None, cors: OriginPolicy | None, max_bytes: int
    ) -> None:
        self._sources: tuple[AnySource, ...] = (
            tuple(sources) if sources else (AuthorizationHeaderSource(type="authorization"),)
        )
        self._cors = cors
        self._max_bytes = max_bytes
        self.query_names = frozenset(s.name for s in self._sources if isinstance(s, QuerySource))
        """Parameters removed from the query sent upstream."""
        self.cookie_names = frozenset(s.name for s in self._sources if isinstance(s, CookieSource))
        self.subprotocol_prefixes = tuple(
            s.prefix for s in self._sources if isinstance(s, SubprotocolSource)
        )
        """`Sec-WebSocket-Protocol` entries that carry tokens (never sent upstream)."""
        self.reads_authorization = any(
            isinstance(s, AuthorizationHeaderSource) for s in self._sources
        )
        """Whether the `Authorization` header is a source (else it never goes upstream:
        the upstream receives no credential the gateway did not verify)."""
        self.where = [describe(s) for s in self._sources]
        # Known once (it was a model comparison per refused request).
        self._default = self._sources == (AuthorizationHeaderSource(type="authorization"),)

    @property
    def default(self) -> bool:
        """Only the `Authorization` header."""
        return self._default

    def find(self, method: str, headers: Headers, query: str) -> Credential:
        """The request's token, or `missing_token`, `ambiguous_token`,
        `csrf_origin_refused` and the `Authorization` header's refusals."""
        found: Credential | None = None
        for source in self._sources:
            token = self._read(source, headers, query)
            if token is None:
                continue
            if found is None:
                found = Credential(token, source.type, describe(source))
            elif token != found.token:
                raise _ambiguous(
                    f"{found.where} and {describe(source)} hold different tokens",
                    found.where,
                    describe(source),
                )
        if found is None:
            # The body names where this route reads a token; the catalogue's message cannot.
            message = f"The request carries no token; it is read from {', '.join(self.where)}."
            if self.default:
                bearer_token(None, self._max_bytes)  # the header's own `missing_token`
            error = GatewayError(
                MISSING_TOKEN,
                {"check": "token", "note": "no token in " + ", ".join(self.where)},
            )
            error.message = message
            raise error
        if found.kind != "authorization":
            size = len(found.token.encode("utf-8", "surrogateescape"))
            if size > self._max_bytes:
                raise GatewayError(
                    TOKEN_TOO_LARGE,
                    {
                        "check": "size",
                        "note": "the token is larger than limits.maxTokenBytes",
                        "expected": self._max_bytes,
                        "actual": size,
                    },
                )
        if self.query_names and query:
            # Whichever source the token came from, the query that goes upstream must not
            # carry it (nor a token parameter's value) under another spelling.
            remaining = self.upstream_query(query)
            hidden = {found.token}
            for name in self.query_names:
                hidden.update(query_values(query, name))
            if any(_appears_in(token, remaining) for token in hidden) or any(
                _appears_in(f"{name}=", remaining) for name in self.query_names
            ):
                raise _ambiguous(
                    "a token appears in the query besides its parameter (a `;` separator or "
                    "another encoding?); it would reach the upstream",
                    found.where,
                )
        if found.kind == "cookie" and needs_origin_check(method, headers):
            check_origin(headers, self._cors)
        return found

    def _read(self, source: AnySource, headers: Headers, query: str) -> str | None:
        if isinstance(source, AuthorizationHeaderSource):
            authorization = headers.get("Authorization")
            if authorization is None:
                return None
            return bearer_token(authorization, self._max_bytes)
        if isinstance(source, CookieSource):
            return _one(cookie_values(headers.getall("Cookie", []), source.name), describe(source))
        if isinstance(source, QuerySource):
            return _one(query_values(query, source.name), describe(source))
        return _one(
            subprotocol_tokens(headers.getall(SUBPROTOCOL_HEADER, []), source.prefix),
            describe(source),
        )

    def upstream_query(self, query: str) -> str:
        """The query without the parameters that query sources name."""
        if not self.query_names or not query:
            return query
        return without_parameters(query, self.query_names)


def _one(values: list[str], where: str) -> str | None:
    if not values:
        return None
    first = values[0]
    if any(value != first for value in values[1:]):
        raise _ambiguous(f"{where} is sent {len(values)} times with different values", where)
    return first


_NOT_TOKEN_CHARACTERS: Final = re.compile(r"[^!#$%&'*+.^_`|~0-9A-Za-z-]+")


def cookie_name_reading(key: str) -> str:
    """The name a lenient cookie parser may read in `key`: without the characters a cookie
    name cannot hold (any whitespace, controls, non-ASCII), case folded.

    Upstream frameworks disagree on what they trim (aiohttp strips any Unicode whitespace,
    so `\u00a0tok` is its `tok`) and some fold case; a pair that any of them could read as
    the token cookie counts as that cookie here, so two values are `ambiguous_token`
    rather than one verified and another forwarded."""
    return _NOT_TOKEN_CHARACTERS.sub("", key).lower()


def cookie_values(fields: Sequence[str], name: str) -> list[str]:
    """The non-empty values of the cookies named `name` in `Cookie` fields (RFC 6265
    section 5.4: `;`-separated `name=value` pairs; a value in double quotes is unquoted),
    names compared as `cookie_name_reading` reads them."""
    values: list[str] = []
    wanted = cookie_name_reading(name)
    for field in fields:
        for pair in field.split(";"):
            key, sep, value = pair.partition("=")
            if not sep:
                continue
            key = key.strip(" \t")
            if key != name and cookie_name_reading(key) != wanted:
                continue
            value = value.strip(" \t")
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if value:
                values.append(value)
    return values


def _pairs(query: str) -> list[str]:
    return query.split("&")


def _parameter_name(pair: str) -> str:
    return unquote_plus(pair.partition("=")[0])


def query_values(query: str, name: str) -> list[str]:
    """The non-empty values of the parameter `name` (names and values percent-decoded, `+`
    as a space, as form decoders read them)."""
    if not query:
        return []
    values: list[str] = []
    for pair in _pairs(query):
        if _parameter_name(pair) == name:
            value = unquote_plus(pair.partition("=")[2])
            if value:
                values.append(value)
    return values


def without_parameters(query: str, names: frozenset[str]) -> str:
    """`query` without the pairs whose decoded name is one of `names`; the others as sent."""
    kept = [pair for pair in _pairs(query) if _parameter_name(pair) not in names]
    return "&".join(kept)


_CLEAN_KEY: Final = re.compile(r"[A-Za-z0-9._~-]{1,64}")


def redact_target(target: str, names: frozenset[str]) -> str:
    """A request target with its query-borne tokens redacted (for display: `wardgate
    explain`): `name=REDACTED` for each token parameter. A query that could hide a token
    otherwise (a key that is not a plain name, a value naming a token parameter or holding
    a token's value) is redacted whole."""
    path, sep, query = target.partition("?")
    if not sep or not names or not query:
        return target
    values = [value for name in names for value in query_values(query, name)]
    shown: list[str] = []
    for pair in _pairs(query):
        key, _, value = pair.partition("=")
        if not _CLEAN_KEY.fullmatch(key):
            return f"{path}?{REDACTED}"
        if key in names:
            shown.append(f"{key}={REDACTED}")
            continue
        if any(_appears_in(hidden, value) for hidden in (*values, *names, ";")) or any(
            name in key for name in names
        ):
            # A look-alike name (`0access_token`) may carry a token too: shown by no one.
            return f"{path}?{REDACTED}"
        shown.append(pair)
    return f"{path}?{'&'.join(shown)}"


_ESCAPE: Final = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _unreserved_decoded(text: str) -> str:
    """`text` with only the escapes of unreserved characters decoded (RFC 3986 section
    6.2.2.2): a stray `%` before a name (`%access%5Ftoken`) swallows the name's first
    letters in a full decoding, while a lenient reader still sees `access_token`."""

    def decode(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else match.group(0)

    return _ESCAPE.sub(decode, text)


def _appears_in(token: str, query: str) -> bool:
    """Whether the token is in the query as sent, decoded once or twice, or with only its
    unreserved characters' escapes decoded."""
    if not query:
        return False
    once = unquote_plus(query)
    forms = (query, once, unquote(once), _unreserved_decoded(query), _unreserved_decoded(once))
    return any(token in form for form in forms)


def subprotocol_tokens(fields: Sequence[str], prefix: str) -> list[str]:
    """The tokens of the `Sec-WebSocket-Protocol` entries that start with `prefix`."""
    tokens: list[str] = []
    for field in fields:
        for entry in field.split(","):
            entry = entry.strip(" \t")
            if entry.startswith(prefix) and len(entry) > len(prefix):
                tokens.append(entry[len(prefix) :])
    return tokens


def without_subprotocol_tokens(field: str, prefix: str) -> str:
    """A `Sec-WebSocket-Protocol` value without the token entries (for the upstream)."""
    entries = [e.strip(" \t") for e in field.split(",")]
    return ", ".join(e for e in entries if e and not e.startswith(prefix))


def needs_origin_check(method: str, headers: Headers) -> bool:
    """Whether a cookie-authenticated request must come from an allowed origin: an unsafe
    method, or a WebSocket upgrade (a `GET` that opens a channel both ways)."""
    if method not in SAFE_METHODS:
        return True
    upgrade = headers.get("Upgrade")
    return upgrade is not None and "websocket" in upgrade.lower()


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of an absolute URL (a `Referer`), lower-cased; None if it has
    none."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme.lower()}://{parts.netloc.rpartition('@')[2].lower()}"


def check_origin(headers: Headers, cors: OriginPolicy | None) -> None:
    """Refuse (`csrf_origin_refused`) a request whose origin is not allowed (see the
    module docstring)."""
    origins = headers.getall("Origin", [])
    if len(origins) > 1:
        raise _csrf("several Origin fields", None)
    origin = origins[0].strip() if origins else None
    via = "Origin"
    if origin is None:
        referer = headers.get("Referer")
        origin = origin_of(referer) if referer else None
        via = "Referer"
        if origin is None:
            raise _csrf("neither Origin nor Referer: the request's origin is unknown", None)
    if origin == "null":
        raise _csrf("Origin `null` (a sandboxed frame, a file, a redirect across origins)", origin)
    allowed = cors.origins if cors is not None else frozenset()
    if origin in allowed or origin.lower() in allowed:
        return
    host = headers.get("Host")
    if host is not None and _same_host(origin, host):
        return
    raise _csrf(
        f"the {via} origin is neither in the CORS policy's allowOrigins nor the Host", origin
    )


_DEFAULT_PORTS: Final = {"http": ":80", "https": ":443"}


def _same_host(origin: str, host: str) -> bool:
    """Whether an origin names the request's `Host` (an origin omits its scheme's default
    port, a `Host` may carry it)."""
    scheme, _, netloc = origin.partition("://")
    if not netloc:
        return False
    host = host.strip().lower()
    default = _DEFAULT_PORTS.get(scheme.lower())
    if default is not None and host.endswith(default):
        host = host.removesuffix(default)
    return netloc.lower() == host


def _csrf(note: str, origin: str | None) -> GatewayError:
    return GatewayError(CSRF_ORIGIN_REFUSED, {"check": "origin", "note": note, "actual": origin})
