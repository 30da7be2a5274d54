"""Cross-origin resource sharing: preflight answers and the headers of actual responses.

A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered by the
gateway before any auth check, because browsers send it without credentials. Everything a
policy can precompute (joined header values) is computed once when the gateway is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from wardgate.gateway.config import CorsPolicy

ORIGIN: Final = "Origin"
REQUEST_METHOD: Final = "Access-Control-Request-Method"
REQUEST_HEADERS: Final = "Access-Control-Request-Headers"
# Readable by every allowed page without configuration: the request ID to quote in a
# report, and the challenge that says why a token was refused (and which scope is missing).
DEFAULT_EXPOSE_HEADERS: Final = ("X-Request-Id", "WWW-Authenticate")
# What a policy may add to an answer; replaced as a whole when another policy decides.
CORS_RESPONSE_HEADERS: Final = (
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Credentials",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Expose-Headers",
    "Access-Control-Max-Age",
    "Vary",
)


@dataclass(frozen=True, slots=True)
class CorsRules:
    """A compiled `CorsPolicy`."""

    any_origin: bool
    origins: frozenset[str]
    allow_methods: str | None
    """Joined `allowMethods`; None: the route's own methods."""
    allow_headers: str
    echo_request_headers: bool
    expose_headers: str
    """Joined `exposeHeaders` after `DEFAULT_EXPOSE_HEADERS`."""
    credentials: bool
    max_age: str | None

    @classmethod
    def build(cls, policy: CorsPolicy) -> CorsRules:
        headers = [h.lower() for h in policy.allow_headers]
        return cls(
            any_origin="*" in policy.allow_origins,
            origins=frozenset(o for o in policy.allow_origins if o != "*"),
            allow_methods=", ".join(policy.allow_methods) if policy.allow_methods else None,
            allow_headers=", ".join(headers),
            echo_request_headers="*" in headers,
            expose_headers=", ".join(_expose_headers(policy.expose_headers)),
            credentials=policy.allow_credentials,
            max_age=str(policy.max_age) if policy.max_age is not None else None,
        )

    def _origin_headers(self, origin: str) -> dict[str, str] | None:
        if self.any_origin and not self.credentials:
            return {"Access-Control-Allow-Origin": "*", "Vary": "Origin"}
        if self.any_origin or origin in self.origins:
            headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
            if self.credentials:
                headers["Access-Control-Allow-Credentials"] = "true"
            return headers
        return None

    def preflight_headers(
        self, request_headers: Mapping[str, str], route_methods: tuple[str, ...] | None
    ) -> dict[str, str]:
        """Headers of the answer to a preflight; no `Allow-*` ones when the origin is refused.

        `route_methods` are the methods of the route the actual request would take (None:
        any method), used when the policy lists no methods of its own.
        """
        origin = request_headers.get(ORIGIN, "")
        headers = self._origin_headers(origin)
        if headers is None:
            return {"Vary": "Origin"}
        if self.allow_methods is not None:
            methods = self.allow_methods
        elif route_methods is None:
            methods = request_headers.get(REQUEST_METHOD, "")
        else:
            methods = ", ".join(route_methods)
        headers["Access-Control-Allow-Methods"] = methods
        if self.echo_request_headers:
            requested = request_headers.get(REQUEST_HEADERS)
            if requested:
                headers["Access-Control-Allow-Headers"] = requested
        elif self.allow_headers:
            headers["Access-Control-Allow-Headers"] = self.allow_headers
        if self.max_age is not None:
            headers["Access-Control-Max-Age"] = self.max_age
        return headers

    def response_headers(self, origin: str) -> dict[str, str] | None:
        """Headers added to an actual (non-preflight) response for an allowed origin."""
        headers = self._origin_headers(origin)
        if headers is not None:
            headers["Access-Control-Expose-Headers"] = self.expose_headers
        return headers

    def apply(self, request_headers: Mapping[str, str], response_headers: dict[str, str]) -> None:
        """Add this policy's headers to an actual response: `Vary: Origin` always (a shared
        cache must not serve one origin's answer to another), the `Allow-*` ones when the
        request's origin is allowed."""
        origin = request_headers.get(ORIGIN)
        extra = self.response_headers(origin) if origin is not None else None
        if extra is not None:
            response_headers.update(extra)
        else:
            response_headers["Vary"] = "Origin"


def _expose_headers(configured: list[str]) -> list[str]:
    names = list(DEFAULT_EXPOSE_HEADERS)
    known = {name.lower() for name in names}
    for name in configured:
        if name.lower() not in known:
            known.add(name.lower())
            names.append(name)
    return names


def is_preflight(method: str, request_headers: Mapping[str, str]) -> bool:
    """Whether a request is a CORS preflight rather than an ordinary `OPTIONS`."""
    return method == "OPTIONS" and ORIGIN in request_headers and REQUEST_METHOD in request_headers
