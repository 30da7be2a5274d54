"""The static integration: a fixed response whose bytes are built once, at load time."""

from __future__ import annotations

import json
from typing import Final

from aiohttp import web
from multidict import CIMultiDict

from wardgate.gateway.config import StaticIntegration
from wardgate.gateway.exchange import Exchange

JSON_CONTENT_TYPE: Final = "application/json"
TEXT_CONTENT_TYPE: Final = "text/plain; charset=utf-8"


class StaticResponse:
    """Answers with the configured status, headers and body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, integration: StaticIntegration) -> None:
        body = integration.body
        headers: CIMultiDict[str] = CIMultiDict(integration.headers)
        if body is None:
            self.body = b""
        elif isinstance(body, str):
            self.body = body.encode("utf-8")
            headers.setdefault("Content-Type", TEXT_CONTENT_TYPE)
        else:
            self.body = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
            headers.setdefault("Content-Type", JSON_CONTENT_TYPE)
        self.status = integration.status
        self.headers = tuple(headers.items())

    async def respond(self, request: web.BaseRequest, exchange: Exchange) -> web.StreamResponse:
        response = web.Response(body=self.body, status=self.status)
        headers = response.headers
        for name, value in self.headers:
            headers.add(name, value)
        return response
