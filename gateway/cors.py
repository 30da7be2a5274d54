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


@dataclass(frozen=True, slots=True)
class CorsRules:
    """A compiled `CorsPolicy`."""

    any_origin: bool
    origins: frozenset[str]
    allow_methods: str | None
    """Joined `allowMethods`; None: the route's own methods."""
    allow_headers: str
    echo_request_headers: bool
    expose_headers: str | None
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
            expose_headers=", ".join(policy.expose_headers) if policy.expose_headers else None,
            credentials=policy.allow_credentials,
            max_age=str(policy.max_age) if policy.max_age is not None else None,
        )

    def _origin_headers(self, origin: str) -> dict[str, str] | None:
        if self.any_origin and not self.credentials:
            return {"Access-Control-Allow-Origin": "*"}
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
        if headers is not None and self.expose_headers is not None:
            headers["Access-Control-Expose-Headers"] = self.expose_headers
        return headers


def is_preflight(method: str, request_headers: Mapping[str, str]) -> bool:
    """Whether a request is a CORS preflight rather than an ordinary `OPTIONS`."""
    return method == "OPTIONS" and ORIGIN in request_headers and REQUEST_METHOD in request_headers
