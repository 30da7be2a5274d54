"""A JWKS endpoint on 127.0.0.1 that tests can rotate, break and count."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web


class JwksServer:
    """Serves `document` at `/.well-known/jwks.json` (and `/auth/v1/.well-known/jwks.json`).

    `document` may be a dict (served as JSON) or raw bytes (garbage); `status` and
    `cache_control` shape the response; `gate`, when set, holds every response until it
    is set; `fetches` counts the requests received.
    """

    def __init__(self, document: dict[str, Any] | bytes | None = None) -> None:
        self.document: dict[str, Any] | bytes = document if document is not None else {"keys": []}
        self.status = 200
        self.cache_control: str | None = None
        self.location: str | None = None
        """Sent as `Location` (with a 3xx `status`: a redirect)."""
        self.gate: asyncio.Event | None = None
        self.fetches = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.fetches += 1
        if self.gate is not None:
            await self.gate.wait()
        body = (
            self.document
            if isinstance(self.document, bytes)
            else json.dumps(self.document).encode()
        )
        headers = {"Content-Type": "application/json"}
        if self.cache_control is not None:
            headers["Cache-Control"] = self.cache_control
        if self.location is not None:
            headers["Location"] = self.location
        return web.Response(status=self.status, body=body, headers=headers)

    async def start(self) -> JwksServer:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._handle)
        app.router.add_get("/auth/v1/.well-known/jwks.json", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Stop listening (connections are refused); `start()` again on the same port."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
