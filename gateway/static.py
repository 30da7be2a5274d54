"""The static integration: a fixed response whose bytes are built once, at load time."""

from __future__ import annotations

import json
from typing import Final

from multidict import CIMultiDict

from wardgate.gateway.config import StaticIntegration
from wardgate.gateway.exchange import SERVER_HEADER, Exchange, Incoming, Reply, encode_head

JSON_CONTENT_TYPE: Final = "application/json"
TEXT_CONTENT_TYPE: Final = "text/plain; charset=utf-8"


class StaticResponse:
    """Answers with the configured status, headers and body."""

    __slots__ = ("body", "head", "headers", "status")

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
        headers.setdefault("Server", SERVER_HEADER)
        self.status = integration.status
        self.headers = tuple(headers.items())
        # Prepared once: the traffic server writes these bytes and the request's own headers.
        self.head = encode_head(
            self.status, (*self.headers, ("Content-Length", str(len(self.body))))
        )

    async def respond(self, request: Incoming, exchange: Exchange) -> Reply:
        return self.reply(exchange)

    def reply(self, exchange: Exchange) -> Reply:
        """The answer, without a coroutine (the pipeline calls this for static routes)."""
        return Reply(
            self.status,
            exchange.response_headers,
            self.body,
            fixed=self.headers,
            head=self.head,
            head_has_length=True,
        )
