"""The gateway config: the contract between the operator, which renders it, and the gateway.

JSON keys are camelCase (`jwksUri`, `projectUrl`); Python attributes are snake_case.
Every model forbids unknown keys and is frozen. Secret material never appears in a config:
fields that hold it take a `$secret.NAME` reference, resolved when the config loads
(see `wardgate.gateway.secrets`).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Final, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from wardgate.gateway.framing import (
    FRAMING_HEADERS,
    GATEWAY_SET_HEADERS,
    METHOD_OVERRIDE_HEADERS,
)
from wardgate.gateway.hosts import check_hostname, check_unique_hostnames, hostname_covers
from wardgate.gateway.keysets import asymmetric, parse_key_set
from wardgate.gateway.matching import PatternError, validate_pattern

SECRET_REFERENCE_PREFIX: Final = "$secret."
SECRET_NAME_PATTERN: Final = r"[A-Za-z_][A-Za-z0-9_.-]*"
_SECRET_REFERENCE_RE: Final = re.compile(re.escape(SECRET_REFERENCE_PREFIX) + SECRET_NAME_PATTERN)
_METHOD_RE: Final = re.compile(r"[A-Z]+")

# The names once, as types; the runtime tuples are read from them.
HmacAlgorithm = Literal["HS256", "HS384", "HS512"]
AsymmetricAlgorithm = Literal[
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "EdDSA",
]
Algorithm = Literal[HmacAlgorithm, AsymmetricAlgorithm]
HMAC_ALGORITHMS: Final[tuple[HmacAlgorithm, ...]] = get_args(HmacAlgorithm)
HMAC_MIN_KEY_BYTES: Final[dict[str, int]] = {"HS256": 32, "HS384": 48, "HS512": 64}
"""The shortest HMAC secret per algorithm: the hash output's size, which RFC 7518 section
3.2 makes a MUST. A shorter secret is refused by the gateway, `wardgate validate` and the
operator alike (it can be brute-forced from one token)."""


def hmac_min_key_bytes(algorithms: Iterable[str]) -> int | None:
    """The shortest secret every HMAC algorithm of `algorithms` accepts (None: no HMAC)."""
    return max((HMAC_MIN_KEY_BYTES[a] for a in algorithms if a in HMAC_MIN_KEY_BYTES), default=None)


def hmac_key_problem(algorithms: Iterable[str], size: int) -> str | None:
    """Why a secret of `size` bytes cannot verify `algorithms`' HMAC tokens, or None."""
    minimum = hmac_min_key_bytes(algorithms)
    if minimum is None or size >= minimum:
        return None
    return f"is {size} bytes; the algorithm needs at least {minimum}"


ASYMMETRIC_ALGORITHMS: Final[tuple[AsymmetricAlgorithm, ...]] = get_args(AsymmetricAlgorithm)
ANY_METHOD: Final = "*"
# `Authorization` and `Bearer ` around a token in a header field (name and value, as the
# parser counts them).
AUTHORIZATION_FIELD_OVERHEAD: Final = len("Authorization") + len("Bearer ")
AUTH0_ALGORITHMS: Final[tuple[Algorithm, ...]] = ("RS256",)


class Model(BaseModel):
    """Base of every config model."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
    )


def _check_secret_reference(value: str) -> str:
    if not _SECRET_REFERENCE_RE.fullmatch(value):
        raise ValueError(
            "must be a secret reference of the form `$secret.NAME`; secret values are "
            "never written in a config"
        )
    return value


SecretReference = Annotated[str, AfterValidator(_check_secret_reference)]
"""A `$secret.NAME` reference; `secret_name()` extracts NAME."""


def secret_name(reference: str) -> str:
    """The NAME of a `$secret.NAME` reference."""
    return reference.removeprefix(SECRET_REFERENCE_PREFIX)


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    if "@" in parts.netloc:
        # Never sent (upstream credentials are not a URL's), and a URL is no place for a
        # password: it would show in the rendered config and `/config`.
        raise ValueError("must not hold user info (`user:password@`)")
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number in range
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    if parts.port == 0:
        raise ValueError("the port must be a number from 1 to 65535")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("must not hold spaces or control characters (percent-encode them)")
    return value


HttpUrl = Annotated[str, AfterValidator(_check_http_url)]


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


StrList = Annotated[list[str], BeforeValidator(_one_or_many)]
"""A list of strings that may also be written as one string."""


def _check_method(value: str) -> str:
    if value != ANY_METHOD and not _METHOD_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not an upper-case HTTP method or `*`")
    return value


Method = Annotated[str, AfterValidator(_check_method)]


class ClaimHeader(Model):
    """A claim forwarded to the upstream as a request header."""

    claim: str = Field(min_length=1)
    """Claim name; a dotted path (`app_metadata.tenant`) reaches into objects."""
    header: Annotated[str, AfterValidator(_check_forwarded_field_name)] = Field(
        min_length=1, pattern=r"^[A-Za-z0-9-]+$"
    )
    """Header name the upstream receives. Incoming headers with this name are removed. Not
    one that frames the request (`Content-Length`, `Transfer-Encoding`, hop-by-hop fields)
    nor one the gateway sets (`Host`, `X-Forwarded-*`, `X-Request-Id`)."""


# RFC 9110 section 5.6.2 `token` (WebSocket subprotocols are tokens).
_HTTP_TOKEN: Final = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"
# Cookie and query parameter names: unreserved characters only (RFC 3986 section 2.3, and
# valid cookie names), so that a name has one spelling and needs no percent-decoding.
_SOURCE_NAME: Final = r"^[A-Za-z0-9._~-]+$"
_FIELD_NAME_RE: Final = re.compile(_HTTP_TOKEN)
# RFC 9110 section 5.5: a field value holds no control character but HTAB. CR and LF would
# end the line (a header or a response of the config's choosing); NUL is refused by peers.
_FIELD_VALUE_CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _check_field_name(value: str) -> str:
    if not _FIELD_NAME_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a header name: letters, digits and !#$%&'*+-.^_`|~ only "
            "(RFC 9110 token; no spaces, colons, CR or LF)"
        )
    return value


def _check_field_value(value: str) -> str:
    if _FIELD_VALUE_CONTROL.search(value):
        raise ValueError(
            "a header value cannot hold a control character (CR, LF, NUL, ...): "
            "it would end the header line"
        )
    return value


def _check_written_field_name(value: str) -> str:
    _check_field_name(value)
    if value.lower() in FRAMING_HEADERS:
        raise ValueError(
            f"{value!r} frames the message or its connection: the gateway writes it, a config "
            "cannot"
        )
    return value


def _check_forwarded_field_name(value: str) -> str:
    _check_written_field_name(value)
    if value.lower() in GATEWAY_SET_HEADERS | METHOD_OVERRIDE_HEADERS:
        raise ValueError(
            f"{value!r} is set or removed by the gateway on every proxied request: a claim "
            "cannot be forwarded in it"
        )
    return value


def _check_cors_field_name(value: str) -> str:
    return value if value == "*" else _check_field_name(value)


FieldValue = Annotated[str, AfterValidator(_check_field_value)]
CorsFieldName = Annotated[str, AfterValidator(_check_cors_field_name)]


class AuthorizationHeaderSource(Model):
    """The `Authorization: Bearer <token>` header (the default source)."""

    type: Literal["authorization"]


class CookieSource(Model):
    """A cookie whose value is the token (a session cookie set by the front end). Unsafe
    methods and WebSocket upgrades must then come from an allowed `Origin` (CSRF)."""

    type: Literal["cookie"]
    name: str = Field(min_length=1, max_length=256, pattern=_SOURCE_NAME)
    """The cookie's name."""


class QuerySource(Model):
    """A query parameter whose value is the token (for `WebSocket` and `EventSource`, which
    cannot set headers). The parameter is removed from the URL sent upstream."""

    type: Literal["query"]
    name: str = Field(min_length=1, max_length=256, pattern=_SOURCE_NAME)
    """The parameter's name."""


class SubprotocolSource(Model):
    """A `Sec-WebSocket-Protocol` entry `PREFIX<token>` (a browser's `WebSocket` can set
    only this header)."""

    type: Literal["subprotocol"]
    prefix: str = Field(min_length=1, max_length=128, pattern=_HTTP_TOKEN)
    """What the entry starts with, e.g. `bearer.` for `new WebSocket(url, ["chat",
    "bearer." + token])`."""


TokenSource = Annotated[
    AuthorizationHeaderSource | CookieSource | QuerySource | SubprotocolSource,
    Field(discriminator="type"),
]


def _check_token_sources(
    sources: list[AuthorizationHeaderSource | CookieSource | QuerySource | SubprotocolSource],
) -> list[AuthorizationHeaderSource | CookieSource | QuerySource | SubprotocolSource]:
    seen: set[str] = set()
    for source in sources:
        key: str = source.type
        if isinstance(source, CookieSource | QuerySource):
            key = f"{source.type} {source.name}"
        if key in seen:
            raise ValueError(f"the source `{key}` is listed twice")
        seen.add(key)
    if len([s for s in sources if isinstance(s, SubprotocolSource)]) > 1:
        raise ValueError("one `subprotocol` source at most")
    return sources


TokenSources = Annotated[
    list[TokenSource], Field(min_length=1, max_length=8), AfterValidator(_check_token_sources)
]
"""Where a token is looked for, in this order; the first place that has one is used."""


class AuthorizerCommon(Model):
    """Fields every authorizer type has."""

    leeway: float = Field(default=60.0, ge=0, le=3600)
    """Seconds of clock skew tolerated for `exp`, `nbf` and `iat`."""
    required_claims: list[str] = Field(default_factory=list)
    """Claims that must be present in every token."""
    require_exp: bool = True
    """Refuse tokens without `exp` (`missing_claim`): a token that never expires is a
    credential for life (RFC 8725 section 3.10)."""
    forward_claims: list[ClaimHeader] = Field(default_factory=list)
    """Claims passed to the upstream as headers."""
    forward_authorization: bool = True
    """Whether the upstream receives the client's `Authorization` header."""
    token_sources: TokenSources | None = None
    """Where tokens are read, in order: `authorization` (the header), `cookie`, `query`,
    `subprotocol`. The `Authorization` header only when absent."""
    jwks_uri: HttpUrl | None = None
    """URL of a JSON Web Key Set (for asymmetric algorithms)."""
    jwks_cache_seconds: float = Field(default=300.0, ge=1, le=86400)
    """Default lifetime of fetched keys; `Cache-Control: max-age` overrides it within bounds."""
    jwks_refetch_seconds: float = Field(default=10.0, ge=0, le=3600)
    """Least time between two fetches of the JWKS (an unknown `kid` or a failed fetch)."""
    jwks_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    """Time limit of one JWKS fetch."""


class JwtAuthorizer(AuthorizerCommon):
    """Verifies JWTs signed with an HMAC secret or with keys from a JWKS."""

    type: Literal["jwt"]
    secret: SecretReference | None = None
    """HMAC secret for HS* algorithms, as `$secret.NAME`."""
    jwks: dict[str, JsonValue] | None = None
    """An inline JSON Web Key Set (`{"keys": [...]}`) for asymmetric algorithms."""
    algorithm: Algorithm | None = None
    """One accepted algorithm (shorthand for `algorithms`)."""
    algorithms: list[Algorithm] | None = Field(default=None, min_length=1)
    """Accepted algorithms. They come from here, never from the token."""
    issuer: StrList | None = None
    """Accepted issuer(s) (`iss`); unchecked when absent."""
    audience: StrList | None = None
    """Accepted audience(s); the token's `aud` (string or list) must contain one."""

    @model_validator(mode="after")
    def _check_keys(self) -> JwtAuthorizer:
        sources = [
            n
            for n, v in (("secret", self.secret), ("jwksUri", self.jwks_uri), ("jwks", self.jwks))
            if v is not None
        ]
        if len(sources) != 1:
            raise ValueError(
                "exactly one key source is required: `secret` (HS*), `jwksUri` or `jwks`; "
                f"found {', '.join(sources) or 'none'}"
            )
        if self.algorithm is not None and self.algorithms is not None:
            raise ValueError("give `algorithm` or `algorithms`, not both")
        allowed = self.accepted_algorithms()
        if self.secret is not None:
            wrong = [a for a in allowed if a not in HMAC_ALGORITHMS]
            if wrong:
                raise ValueError(f"`secret` works only with HS* algorithms, not {wrong}")
        else:
            wrong = [a for a in allowed if a in HMAC_ALGORITHMS]
            if wrong:
                raise ValueError(
                    f"HS* algorithms {wrong} need `secret`; a key set holds public keys, and "
                    "using one as an HMAC secret is the algorithm-confusion attack"
                )
        return self

    def accepted_algorithms(self) -> tuple[str, ...]:
        if self.algorithms is not None:
            return tuple(self.algorithms)
        if self.algorithm is not None:
            return (self.algorithm,)
        return ("HS256",) if self.secret is not None else ("RS256", "ES256")


def _check_domain(value: str) -> str:
    if "://" in value or "/" in value:
        raise ValueError("must be a bare domain such as `tenant.eu.auth0.com`, without scheme")
    return value


class Auth0Authorizer(AuthorizerCommon):
    """Auth0: issuer `https://DOMAIN/`, keys from `https://DOMAIN/.well-known/jwks.json`."""

    type: Literal["auth0"]
    domain: Annotated[str, AfterValidator(_check_domain)] = Field(min_length=1)
    """The tenant's domain or custom domain, e.g. `tenant.eu.auth0.com`."""
    audience: StrList = Field(min_length=1)
    """The API identifier(s) the tokens are requested for."""
    algorithms: list[Algorithm] = Field(
        default_factory=lambda: list(AUTH0_ALGORITHMS), min_length=1
    )

    @model_validator(mode="after")
    def _check_algorithms(self) -> Auth0Authorizer:
        if any(a in HMAC_ALGORITHMS for a in self.algorithms):
            raise ValueError("Auth0 authorizers verify with the tenant's JWKS: use RS256/PS256")
        return self

    @property
    def issuer(self) -> list[str]:
        return [f"https://{self.domain}/"]

    def accepted_algorithms(self) -> tuple[str, ...]:
        return tuple(self.algorithms)

    def effective_jwks_uri(self) -> str:
        return self.jwks_uri or f"https://{self.domain}/.well-known/jwks.json"


def secret_reference(spec: JwtAuthorizer | Auth0Authorizer | SupabaseAuthorizer) -> str | None:
    """The `$secret.NAME` reference of an authorizer's HMAC secret, if it has one."""
    if isinstance(spec, SupabaseAuthorizer):
        return spec.jwt_secret
    if isinstance(spec, JwtAuthorizer):
        return spec.secret
    return None


def authorizer_refusals(
    spec: JwtAuthorizer | Auth0Authorizer | SupabaseAuthorizer, where: str
) -> list[str]:
    """What makes a valid-looking authorizer spec unusable without its secrets at hand: an
    inline `jwks` that is no key set, or holds no usable key. The gateway and `wardgate
    validate` refuse the config, the operator the Authorizer (`Accepted=False`)."""
    if not isinstance(spec, JwtAuthorizer) or spec.jwks is None:
        return []
    try:
        key_set, skipped = parse_key_set(
            spec.jwks, asymmetric(spec.accepted_algorithms()), f"{where}.jwks"
        )
    except ValueError as exc:
        return [f"{where}.jwks: {exc}"]
    if key_set.keys:
        return []
    return [*skipped, f"{where}.jwks: no usable key (see the problems above)"]


def authorizer_warnings(
    spec: JwtAuthorizer | Auth0Authorizer | SupabaseAuthorizer, where: str
) -> list[str]:
    """Smells of a valid authorizer spec that make tokens fail or pass unexpectedly: logged
    by the gateway at start, printed by `wardgate validate`, and the operator's `Lint`
    condition on the Authorizer's status (the one list all three show).

    A warning never stops an authorizer; what makes it unusable is refused instead, in the
    same three places: a spec the models refuse, a secret shorter than its algorithm needs
    (`hmac_key_problem`), a key-pair as HMAC secret, an inline key set without a usable key.
    """
    lints: list[str] = []
    if isinstance(spec, JwtAuthorizer) and spec.jwks is not None:
        try:
            _, skipped = parse_key_set(
                spec.jwks, asymmetric(spec.accepted_algorithms()), f"{where}.jwks"
            )
        except ValueError:
            skipped = []  # not a key set at all: `authorizer_refusals` says so
        lints.extend(skipped)
    if isinstance(spec, JwtAuthorizer):
        for issuer in spec.issuer or ():
            if ".auth0.com" in issuer and not issuer.endswith("/"):
                lints.append(
                    f"{where}.issuer: {issuer!r} has no trailing slash, but Auth0 issues "
                    f"`iss: {issuer}/`; every token would fail with issuer_mismatch"
                )
        if spec.audience is None:
            lints.append(f"{where}: no `audience`: tokens issued for any API are accepted")
    return lints


def _check_project_url(value: str) -> str:
    _check_http_url(value)
    if urlsplit(value).path not in ("", "/"):
        raise ValueError("must be the project's base URL, e.g. `https://REF.supabase.co`")
    return value.rstrip("/")


class SupabaseAuthorizer(AuthorizerCommon):
    """Supabase Auth: issuer `PROJECT/auth/v1`, keys from its JWKS or a legacy HS256 secret."""

    type: Literal["supabase"]
    project_url: Annotated[str, AfterValidator(_check_project_url)]
    """The project URL, `https://REF.supabase.co`."""
    jwt_secret: SecretReference | None = None
    """Legacy HS256 JWT secret, as `$secret.NAME`, for projects without asymmetric keys."""
    audience: StrList = Field(default_factory=lambda: ["authenticated"], min_length=1)
    algorithms: list[Algorithm] | None = Field(default=None, min_length=1)

    @property
    def issuer(self) -> list[str]:
        return [f"{self.project_url}/auth/v1"]

    def effective_jwks_uri(self) -> str:
        return self.jwks_uri or f"{self.project_url}/auth/v1/.well-known/jwks.json"

    def accepted_algorithms(self) -> tuple[str, ...]:
        if self.algorithms is not None:
            return tuple(self.algorithms)
        return ("ES256", "RS256", "HS256") if self.jwt_secret else ("ES256", "RS256")

    @model_validator(mode="after")
    def _check_algorithms(self) -> SupabaseAuthorizer:
        if self.jwt_secret is None and any(
            a in HMAC_ALGORITHMS for a in self.accepted_algorithms()
        ):
            raise ValueError("HS256 needs `jwtSecret` (the project's legacy JWT secret)")
        return self


Authorizer = Annotated[
    JwtAuthorizer | Auth0Authorizer | SupabaseAuthorizer, Field(discriminator="type")
]


# RFC 6749 section 3.3: scope-token = 1*NQCHAR, NQCHAR = %x21 / %x23-5B / %x5D-7E.
_SCOPE_TOKEN_RE: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def is_scope_token(value: str) -> bool:
    """Whether a string is one scope token of RFC 6749 section 3.3 (1*NQCHAR)."""
    return _SCOPE_TOKEN_RE.fullmatch(value) is not None


def _check_scope_token(value: str) -> str:
    if not is_scope_token(value):
        raise ValueError(
            f'{value!r} is not a scope token: scopes are printable ASCII without spaces, `"` '
            "or `\\` (RFC 6749 section 3.3); list several scopes as several entries"
        )
    return value


ScopeToken = Annotated[str, AfterValidator(_check_scope_token)]


class RouteAuth(Model):
    """Auth of one path: which authorizer, and what the token must carry."""

    authorizer: str | None = None
    """Name of an authorizer in `authorizers`; the config's default when absent."""
    scopes: list[ScopeToken] = Field(default_factory=list)
    """Scopes that must all be granted (`scope`, `scp` or `permissions` claims)."""
    any_scopes: list[ScopeToken] = Field(default_factory=list)
    """Scopes of which at least one must be granted (`read:orders` or `admin`); with
    `scopes` too, both hold."""
    claims: dict[str, JsonValue] = Field(default_factory=dict)
    """Claims that must equal these values (a list value: the claim must contain each)."""
    allowed_api_key_roles: list[Literal["anon", "service_role"]] = Field(default_factory=list)
    """Supabase API key roles accepted on this route, besides user tokens."""
    token_sources: TokenSources | None = None
    """Where this route reads its token, replacing the authorizer's `tokenSources`."""


class Server(Model):
    """An upstream server."""

    url: HttpUrl
    """Base URL; the request's normalised path is appended to its path."""
    connect_timeout: float = Field(default=5.0, gt=0, le=300)
    read_timeout: float = Field(default=30.0, gt=0, le=3600)
    ca_bundle: SecretReference | None = None
    """For an `https://` URL: PEM CA certificates, as `$secret.NAME`, that the upstream's
    certificate must chain to, instead of the system's trust store (its name is verified
    either way)."""
    ca_bundle_pem: str | None = Field(default=None, min_length=1)
    """The same as `caBundle`, given inline as PEM text (CA certificates are public: the
    operator renders a bundle taken from a ConfigMap this way)."""

    @model_validator(mode="after")
    def _check_ca_bundle(self) -> Server:
        if self.ca_bundle is not None and self.ca_bundle_pem is not None:
            raise ValueError("give at most one of `caBundle` or `caBundlePem`")
        named = self.ca_bundle is not None or self.ca_bundle_pem is not None
        if named and not self.url.lower().startswith("https://"):
            raise ValueError("`caBundle` applies to an `https://` URL only")
        return self


def _server_shorthand(value: Any) -> Any:
    return {"url": value} if isinstance(value, str) else value


ServerSpec = Annotated[Server, BeforeValidator(_server_shorthand)]


class HttpProxyIntegration(Model):
    """Proxy the request to a named server."""

    type: Literal["http_proxy"]
    server: str = Field(min_length=1)
    """Name of an entry in `servers`."""
    strip_prefix: str | None = None
    """A path prefix removed before the request is sent upstream."""


class StaticIntegration(Model):
    """Answer with a fixed response."""

    type: Literal["static"]
    status: int = Field(default=200, ge=200, le=599)
    """A final status: 1xx answers are interim and carry no content of their own."""
    headers: dict[str, FieldValue] = Field(default_factory=dict)
    """Response fields; the gateway writes the framing (`Content-Length`, `Connection`)."""
    body: JsonValue = None
    """A string is sent as text/plain; anything else as JSON."""

    @model_validator(mode="after")
    def _check_answer(self) -> StaticIntegration:
        for name in self.headers:
            try:
                _check_written_field_name(name)
            except ValueError as exc:
                raise ValueError(f"headers: {exc}") from None
        if self.status in _NO_CONTENT_STATUSES and self.body is not None:
            raise ValueError(f"a {self.status} response has no body: remove `body`")
        return self


_NO_CONTENT_STATUSES: Final = frozenset({204, 304})


Integration = Annotated[HttpProxyIntegration | StaticIntegration, Field(discriminator="type")]


class CorsPolicy(Model):
    """Cross-origin resource sharing; preflights are answered before any auth check."""

    allow_origins: list[str] = Field(min_length=1)
    """Origins allowed (`https://app.example.com`), or `*`."""
    allow_methods: list[Method] = Field(default_factory=list)
    """Methods allowed; the route's own methods when empty."""
    allow_headers: list[CorsFieldName] = Field(
        default_factory=lambda: ["authorization", "content-type"]
    )
    expose_headers: list[CorsFieldName] = Field(default_factory=list)
    allow_credentials: bool = False
    max_age: int | None = Field(default=600, ge=0, le=86400)

    @model_validator(mode="after")
    def _check_credentials(self) -> CorsPolicy:
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError("`allowCredentials` cannot be used with the `*` origin")
        if self.allow_credentials and "null" in self.allow_origins:
            # Sandboxed iframes, data: URLs and local files all send `Origin: null`: any
            # page could read credentialed answers (the CSRF check refuses `null` too).
            raise ValueError("`allowCredentials` cannot be used with the `null` origin")
        return self


def _check_pattern(value: str) -> str:
    try:
        validate_pattern(value)
    except PatternError as exc:
        raise ValueError(exc.reason) from None
    return value


RoutePattern = Annotated[str, AfterValidator(_check_pattern)]
Hostname = Annotated[str, AfterValidator(check_hostname)]
"""`api.example.com`, or `*.example.com` (any name below `example.com`)."""
Hostnames = Annotated[list[Hostname], AfterValidator(check_unique_hostnames)]
"""Hostnames, each once."""
SomeHostnames = Annotated[
    list[Hostname], Field(min_length=1), AfterValidator(check_unique_hostnames)
]
"""At least one hostname, each once."""


def _auth_shorthand(value: Any) -> Any:
    if value is True:
        return {}
    if value is False:
        return None
    return value


DEFAULT_WEBSOCKET_IDLE_SECONDS: Final = 300.0


class WebSocketOptions(Model):
    """WebSocket upgrades on a path (`websocket: true` takes every default)."""

    idle_timeout_seconds: float = Field(default=DEFAULT_WEBSOCKET_IDLE_SECONDS, ge=1, le=86400)
    """A session with no frame either way for this long is closed (close code 1001)."""
    close_on_expiry: bool = True
    """Close the session (close code 4001) when the token that opened it expires (its `exp`
    plus the authorizer's `leeway`), as a request with that token would then be refused."""


class PathEntry(Model):
    """One method + path of the gateway."""

    method: Annotated[list[Method], BeforeValidator(_one_or_many)] = Field(min_length=1)
    """A method, a list of methods, or `*` for any."""
    path: RoutePattern
    """`/exact/segments`, `{param}` segments, and a trailing `/*` prefix wildcard."""
    hostnames: SomeHostnames | None = None
    """The hosts this entry serves (each within the gateway's `hostnames`); every host the
    gateway serves when absent."""
    auth: Annotated[RouteAuth | None, BeforeValidator(_auth_shorthand)] = None
    """`true`: the default authorizer; `false` or absent: public; an object: `authorizer`,
    `scopes` (all of), `anyScopes` (one of), `claims`, `allowedApiKeyRoles`."""
    response: JsonValue = None
    """Shorthand for a static 200 whose JSON body is this value."""
    integration: Integration | None = None
    cors: CorsPolicy | None = None
    """Overrides the gateway's CORS policy for this path."""
    websocket: Annotated[WebSocketOptions | None, BeforeValidator(_auth_shorthand)] = None
    """Allow WebSocket upgrades (`true`, or an object of `WebSocketOptions`); without it an
    `Upgrade` is removed and the request served as plain HTTP."""

    @model_validator(mode="after")
    def _check_action(self) -> PathEntry:
        # `response: null` beside an integration is how `model_dump` writes an entry with
        # no response: accepted, so that a dumped config (admin `/config`) loads again.
        has_response = "response" in self.model_fields_set and not (
            self.response is None and self.integration is not None
        )
        if has_response == (self.integration is not None):
            raise ValueError("give exactly one of `response` or `integration`")
        if len(self.methods()) != len(set(self.methods())):
            raise ValueError("`method` lists a method twice")
        if ANY_METHOD in self.methods() and len(self.methods()) > 1:
            raise ValueError("`*` (any method) cannot be combined with other methods")
        if self.websocket is not None:
            if not isinstance(self.integration, HttpProxyIntegration):
                raise ValueError("`websocket` needs an `http_proxy` integration")
            if "GET" not in self.methods() and ANY_METHOD not in self.methods():
                raise ValueError("`websocket` needs `GET` among the methods (an upgrade is a GET)")
        return self

    def methods(self) -> tuple[str, ...]:
        return tuple(self.method)

    def effective_integration(self) -> HttpProxyIntegration | StaticIntegration:
        if self.integration is not None:
            return self.integration
        return StaticIntegration(type="static", body=self.response)

    def route_auth(self) -> RouteAuth | None:
        """The auth this path requires, or None when it is public."""
        return self.auth


class TlsCertificate(Model):
    """One certificate of the TLS listener: a PEM chain and its key (a Kubernetes TLS
    Secret's `tls.crt` and `tls.key`)."""

    certificate: SecretReference
    """The PEM chain, leaf first, as `$secret.NAME`."""
    key: SecretReference
    """The PEM private key (unencrypted), as `$secret.NAME`."""
    name: str | None = Field(default=None, min_length=1, max_length=253)
    """How logs, `explain` and statuses name it; the certificate reference's NAME (without
    a `.tls.crt` ending: the Secret's name, as the operator renders it) when absent."""
    hostnames: list[Hostname] | None = Field(default=None, min_length=1)
    """The server names (SNI) it is selected for; the DNS names of its subjectAltName when
    absent."""

    def label(self) -> str:
        return self.name or secret_name(self.certificate).removesuffix(".tls.crt")


class TlsSettings(Model):
    """The TLS listener of the traffic server (`--tls-port`, 8443 by default)."""

    certificates: list[TlsCertificate] = Field(min_length=1, max_length=100)
    """Selected by the ClientHello's server name (exact names, then `*.` wildcards); the
    first is the default, also for clients that send no server name."""
    min_version: Literal["1.2", "1.3"] = "1.2"
    """The oldest TLS version accepted; the newest both sides have is negotiated (1.3)."""
    redirect_http: bool = False
    """The plain-HTTP port answers every request with `308` to the same host, path and
    query over HTTPS."""
    https_port: int = Field(default=443, ge=1, le=65535)
    """The port clients reach the TLS listener on, for redirects (not written when 443)."""

    @model_validator(mode="after")
    def _check_names(self) -> TlsSettings:
        seen: dict[str, int] = {}
        for index, certificate in enumerate(self.certificates):
            label = certificate.label()
            if label in seen:
                raise ValueError(
                    f"certificates.{index}: the name {label!r} is taken by "
                    f"certificates.{seen[label]}"
                )
            seen[label] = index
        return self


DEFAULT_MAX_HEAD_BYTES: Final = 32768


class Limits(Model):
    """Request limits."""

    max_token_bytes: int = Field(default=8192, ge=256, le=65536)
    """Largest bearer token (`token_too_large` above it)."""
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=0)
    max_header_bytes: int = Field(default=16384, ge=1024, le=131072)
    """Longest request line or header field, name and value together (`header_too_large`
    above it). At least `maxTokenBytes` plus the `Authorization: Bearer ` around a token,
    so that a large token is answered `token_too_large`."""
    max_headers: int = Field(default=100, ge=8, le=1000)
    max_head_bytes: int | None = Field(default=None, ge=4096, le=2 * 1024 * 1024)
    """The whole request head: request line and every header field (431 `header_too_large`
    above it). Default: 32768, or twice `maxHeaderBytes` when that is more (nginx's default
    bounds a head near 32 KB, HAProxy's near 16 KB)."""
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    """Time allowed from the first byte of a request head to its end; then 408 and the
    connection is closed (slow clients, slowloris). Idle keep-alive connections are not
    affected."""
    keep_alive_timeout_seconds: float = Field(default=75.0, gt=0, le=3600)
    """How long an idle keep-alive connection stays open. Above the idle timeout of the
    load balancer in front (60 s for most; raise it for one that keeps connections
    longer), so that the load balancer never sends on a connection the gateway closes."""
    body_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    """Time allowed between two reads of a request body (nginx's `client_body_timeout`):
    a body that stalls longer is answered 408, its upstream request is aborted and the
    connection is closed."""
    send_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    """Time allowed for a client that reads nothing of its answer while the gateway has
    bytes to send it (nginx's `send_timeout`): then the client connection is closed, and
    the upstream connection the answer comes from too."""

    @model_validator(mode="after")
    def _check_reachable(self) -> Limits:
        # The header limit applies first (the parser): below this, a token one byte over
        # `maxTokenBytes` would be refused as a header and `token_too_large` never answered.
        if self.max_head_bytes is not None and self.max_head_bytes < self.max_header_bytes:
            raise ValueError(
                f"`maxHeadBytes` ({self.max_head_bytes}) must be at least `maxHeaderBytes` "
                f"({self.max_header_bytes}): the whole head holds the longest field"
            )
        needed = self.max_token_bytes + AUTHORIZATION_FIELD_OVERHEAD + 1
        if self.max_header_bytes < needed:
            raise ValueError(
                f"`maxHeaderBytes` ({self.max_header_bytes}) must be at least `maxTokenBytes` "
                f"+ {AUTHORIZATION_FIELD_OVERHEAD + 1} ({needed}): a header field holds "
                "`Authorization`, `Bearer ` and the token, and a smaller limit refuses large "
                "tokens before `maxTokenBytes` can"
            )
        return self

    def head_bytes_limit(self) -> int:
        """`maxHeadBytes`, or its default for `maxHeaderBytes`."""
        if self.max_head_bytes is not None:
            return self.max_head_bytes
        return max(DEFAULT_MAX_HEAD_BYTES, 2 * self.max_header_bytes)


class GatewayConfig(Model):
    """The whole config of one gateway."""

    authorizer: Authorizer | None = None
    """The default authorizer, inline. (A string here is read as `defaultAuthorizer`.)"""
    default_authorizer: str | None = None
    """The default authorizer as the name of an entry in `authorizers`."""
    authorizers: dict[str, Authorizer] = Field(default_factory=dict)
    servers: dict[str, ServerSpec] = Field(default_factory=dict)
    paths: list[PathEntry] = Field(default_factory=list)
    hostnames: Hostnames = Field(default_factory=list)
    """The hosts the gateway serves (exact or `*.example.com`); any host when empty. A
    request for another host is 404 `unknown_host`."""
    cors: CorsPolicy | None = None
    tls: TlsSettings | None = None
    """The TLS listener's certificates and versions; no TLS listener when absent."""
    limits: Limits = Field(default_factory=Limits)
    debug: bool = False
    """Add expected-versus-actual details to denial bodies (they are always logged)."""
    drain_seconds: float = Field(default=20.0, ge=0, le=600)
    """On SIGTERM, how long in-flight requests may take to finish."""

    @model_validator(mode="before")
    @classmethod
    def _authorizer_name_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("authorizer"), str):
            data = dict(data)
            data["defaultAuthorizer"] = data.pop("authorizer")
        return data

    @model_validator(mode="after")
    def _check_references(self) -> GatewayConfig:
        self.check_references()
        return self

    def check_references(self) -> None:
        """The checks across fields (names, duplicate routes, hostnames), run last when the
        config validates; raises `ValueError` with one `dotted.path: reason` line each."""
        problems: list[str] = []
        if self.authorizer is not None and self.default_authorizer is not None:
            problems.append("defaultAuthorizer: give an inline `authorizer` or a name, not both")
        elif (
            self.default_authorizer is not None and self.default_authorizer not in self.authorizers
        ):
            problems.append(
                "defaultAuthorizer: "
                + unknown_name("authorizer", self.default_authorizer, self.authorizers)
            )
        if self.authorizer is not None and DEFAULT_AUTHORIZER in self.authorizers:
            problems.append(
                f"authorizers.{DEFAULT_AUTHORIZER}: the name is taken by the inline default "
                "`authorizer`"
            )
        # Once per entry of a config of 20,000 paths, on every version: names read once,
        # and each problem's dotted path formatted only when there is one.
        seen: dict[tuple[str, str, str], int] = {}
        hostnames = self.hostnames
        authorizers = self.authorizers
        servers = self.servers
        no_default = self.default_authorizer_name() is None
        for index, entry in enumerate(self.paths):
            if entry.hostnames:
                for position, hostname in enumerate(entry.hostnames):
                    if hostnames and not any(
                        hostname_covers(served, hostname) for served in hostnames
                    ):
                        problems.append(
                            f"paths.{index}.hostnames.{position}: {hostname} is not among the "
                            f"gateway's hostnames ({', '.join(hostnames)})"
                        )
            route_auth = entry.auth
            if route_auth is not None:
                name = route_auth.authorizer
                if name is None:
                    if no_default:
                        problems.append(
                            f"paths.{index}.auth: the route needs auth but no default "
                            "`authorizer` is set"
                        )
                elif name not in authorizers and name != DEFAULT_AUTHORIZER:
                    known = [*authorizers, *([DEFAULT_AUTHORIZER] if self.authorizer else [])]
                    problems.append(
                        f"paths.{index}.auth.authorizer: " + unknown_name("authorizer", name, known)
                    )
            integration = entry.integration
            if isinstance(integration, HttpProxyIntegration) and integration.server not in servers:
                server = integration.server
                problems.append(
                    f"paths.{index}.integration.server: " + unknown_name("server", server, servers)
                )
            pattern_key = route_pattern_key(entry.path)
            for host in entry.hostnames or ("",):
                for method in entry.method:
                    key = (host, method, pattern_key)
                    if key in seen:
                        on = f" on {host}" if host else ""
                        problems.append(
                            f"paths.{index}: {method} {entry.path}{on} duplicates paths.{seen[key]}"
                        )
                    else:
                        seen[key] = index
        if problems:
            # One line each, already prefixed with its dotted path (see format_validation_error).
            raise ValueError("\n".join(problems))

    def unserved_hostnames(self) -> list[tuple[int, str]]:
        """(index, hostname) of the hostnames the gateway lists that no path serves (their
        requests are all 404)."""
        if any(not entry.hostnames for entry in self.paths):
            return []  # a path without hostnames serves every host
        named = {hostname for entry in self.paths for hostname in entry.hostnames or ()}
        return [
            (index, hostname)
            for index, hostname in enumerate(self.hostnames)
            if not any(hostname_covers(hostname, n) or hostname_covers(n, hostname) for n in named)
        ]

    def hostname_warnings(self) -> list[str]:
        """`validate`'s warnings about the hostnames."""
        return [
            f"hostnames.{index}: no path serves {hostname}: every request for it is 404 "
            "`no_route` (give a path `hostnames` that include it, or one without `hostnames`)"
            for index, hostname in self.unserved_hostnames()
        ]

    def named_authorizers(self) -> dict[str, JwtAuthorizer | Auth0Authorizer | SupabaseAuthorizer]:
        """Every authorizer by name; the inline default is named `default`."""
        named: dict[str, JwtAuthorizer | Auth0Authorizer | SupabaseAuthorizer] = dict(
            self.authorizers
        )
        if self.authorizer is not None:
            named[DEFAULT_AUTHORIZER] = self.authorizer
        return named

    def default_authorizer_name(self) -> str | None:
        if self.authorizer is not None:
            return DEFAULT_AUTHORIZER
        return self.default_authorizer

    def secret_references(self) -> Iterator[tuple[str, str]]:
        """(dotted field path, reference) of every secret reference, in config order."""
        for name, authorizer in self.named_authorizers().items():
            where = (
                "authorizer"
                if self.authorizer is not None and name == DEFAULT_AUTHORIZER
                else f"authorizers.{name}"
            )
            if isinstance(authorizer, JwtAuthorizer) and authorizer.secret:
                yield f"{where}.secret", authorizer.secret
            if isinstance(authorizer, SupabaseAuthorizer) and authorizer.jwt_secret:
                yield f"{where}.jwtSecret", authorizer.jwt_secret
        for name, server in self.servers.items():
            if server.ca_bundle is not None:
                yield f"servers.{name}.caBundle", server.ca_bundle
        if self.tls is not None:
            for index, certificate in enumerate(self.tls.certificates):
                yield f"tls.certificates.{index}.certificate", certificate.certificate
                yield f"tls.certificates.{index}.key", certificate.key


DEFAULT_AUTHORIZER: Final = "default"


def unknown_name(kind: str, name: str, known: Iterable[str]) -> str:
    """ "no server named 'ordres'; did you mean 'orders'? servers: orders, billing"."""
    names = sorted(known)
    text = f"no {kind} named {name!r}"
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if close:
        text += f"; did you mean {close[0]!r}?"
    if names:
        return text + f" ({kind}s: {', '.join(names)})"
    return text + f" (there are no {kind}s)"


def reference_problems(data: object) -> list[str]:
    """The name references of a config document that does not validate (so has no model):
    reported with its schema problems, so that one run shows every problem."""
    if not isinstance(data, dict):
        return []
    authorizers = data.get("authorizers")
    servers = data.get("servers")
    authorizer_names = list(authorizers) if isinstance(authorizers, dict) else []
    server_names = list(servers) if isinstance(servers, dict) else []
    inline = isinstance(data.get("authorizer"), dict)
    if inline:
        authorizer_names.append(DEFAULT_AUTHORIZER)
    default = data.get("defaultAuthorizer", data.get("authorizer"))
    problems: list[str] = []
    if isinstance(default, str) and default not in authorizer_names:
        problems.append(
            "defaultAuthorizer: " + unknown_name("authorizer", default, authorizer_names)
        )
    paths = data.get("paths")
    for index, entry in enumerate(paths if isinstance(paths, list) else []):
        if not isinstance(entry, dict):
            continue
        auth, integration = entry.get("auth"), entry.get("integration")
        name = auth.get("authorizer") if isinstance(auth, dict) else None
        if isinstance(name, str) and name not in authorizer_names:
            problems.append(
                f"paths.{index}.auth.authorizer: "
                + unknown_name("authorizer", name, authorizer_names)
            )
        server = integration.get("server") if isinstance(integration, dict) else None
        if isinstance(server, str) and server not in server_names:
            problems.append(
                f"paths.{index}.integration.server: " + unknown_name("server", server, server_names)
            )
    return problems


_PARAMETER_RE: Final = re.compile(r"\{[^/}]*\}")


def route_pattern_key(path: str) -> str:
    """The pattern with parameter names erased: `/a/{x}` and `/a/{y}` are the same route."""
    if "{" not in path:
        return path
    return _PARAMETER_RE.sub("{}", path)


GATEWAY_CONFIG_ADAPTER: Final = TypeAdapter(GatewayConfig)


def parse_config(data: object) -> GatewayConfig:
    """Validate a decoded config document; raises `ConfigError` with dotted-path messages."""
    try:
        return GATEWAY_CONFIG_ADAPTER.validate_python(data)
    except ValidationError as exc:
        problems = format_validation_error(exc, data)
        # References are checked by the model only once every field is valid: checked on
        # the document too, so that one run reports them with the schema's problems.
        problems += [p for p in reference_problems(data) if p not in problems]
        raise ConfigError(problems) from None


def parse_config_json(text: str | bytes) -> GatewayConfig:
    """Validate a JSON config document."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError([f"(document): not valid JSON: {exc}"]) from None
    return parse_config(data)


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of the config (camelCase keys, as written)."""
    return GATEWAY_CONFIG_ADAPTER.json_schema(by_alias=True)


def format_validation_error(exc: ValidationError, data: object) -> list[str]:
    """One `dotted.path: reason` line per problem; input values are never echoed."""
    lines: list[str] = []
    for error in exc.errors(include_url=False, include_input=False):
        location = ".".join(_json_location(error["loc"], data))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden" and error["loc"]:
            message = _unknown_field(str(error["loc"][-1]))
        for line in message.splitlines():
            if location:
                lines.append(f"{location}: {line}")
            elif error["type"] == "value_error":
                lines.append(line)  # cross-reference checks name their own paths
            else:
                lines.append(f"(document): {line}")
    return lines


def _unknown_field(key: str) -> str:
    """ "unknown field; did you mean `scopes`?" from the names of every config model."""
    close = difflib.get_close_matches(key, _FIELD_NAMES, n=1, cutoff=0.7)
    return "unknown field" + (f"; did you mean `{close[0]}`?" if close else "")


def _field_names(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    if model in seen:
        return set()
    seen.add(model)
    names: set[str] = set()
    for name, info in model.model_fields.items():
        names.add(info.alias or name)
        for inner in _models_in(info.annotation):
            names |= _field_names(inner, seen)
    return names


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for argument in get_args(annotation):
        yield from _models_in(argument)


def _json_location(loc: tuple[int | str, ...], data: object) -> list[str]:
    """The location as the user wrote it: pydantic adds union tags (the `type` of a
    discriminated union member), which are not keys of the document, so walk the input
    and drop any part that is not a key or index there."""
    parts: list[str] = []
    current: object = data
    for position, part in enumerate(loc):
        last = position == len(loc) - 1
        if isinstance(current, dict):
            if part in current:
                current = current[part]
            elif not last or current.get("type") == part:
                continue  # a union tag (last when a model-level check of the variant failed)
            parts.append(str(part))
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
            parts.append(str(part))
        elif last and not isinstance(part, int):
            parts.append(str(part))
            current = None
    return parts


class ConfigError(Exception):
    """A config is invalid; `problems` are `dotted.path: reason` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


_FIELD_NAMES: Final = sorted(_field_names(GatewayConfig, set()))
