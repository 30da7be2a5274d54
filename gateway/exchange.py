"""What the app hands to an integration for one request, and what the integration reports.

An integration (a static response or the HTTP proxy) is an object with
`async respond(request, exchange) -> StreamResponse`. It sends `exchange.response_headers`
(the request ID, CORS) with its response, and sets `exchange.code` when it fails after the
response has started, so that the request log and the metrics still see the failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Protocol

from aiohttp import web

NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})
SERVER_HEADER: Final = "wardgate"
"""The `Server` of the gateway's own answers (and of upstream answers that have none):
no framework and no version, which would tell a scanner which advisories to try."""


class Exchange:
    """The state of one request after routing and auth."""

    __slots__ = (
        "claim_headers",
        "code",
        "method",
        "path",
        "query",
        "request_id",
        "response_headers",
    )

    def __init__(
        self,
        request_id: str,
        method: str,
        path: str,
        query: str,
        response_headers: dict[str, str],
    ) -> None:
        self.request_id = request_id
        self.method = method
        self.path = path
        """The normalised path: the one matched, authorised and sent upstream."""
        self.query = query
        """The raw query string, without `?`."""
        self.response_headers = response_headers
        self.claim_headers: Mapping[str, str] = NO_HEADERS
        """Verified claims to forward upstream as headers."""
        self.code: str | None = None


class Integration(Protocol):
    """What a route does once the request is allowed."""

    async def respond(self, request: web.BaseRequest, exchange: Exchange) -> web.StreamResponse:
        """Answer the request."""
        ...
