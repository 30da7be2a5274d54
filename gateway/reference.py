"""The aiohttp reference server: the gateway's pipeline (`Gateway.respond`) behind aiohttp's
low-level server, as the traffic port was served before `wardgate.gateway.traffic`.

It serves nothing in production; the differential tests send one corpus to both servers
and compare status, code and what the upstream received.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from multidict import CIMultiDictProxy

from wardgate.gateway.app import GATEWAY_KEY, Gateway
from wardgate.gateway.connections import ReferenceServer
from wardgate.gateway.exchange import SERVER_HEADER, ClientAborted, Reply, StreamBroken

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class AiohttpIncoming:
    """An aiohttp request as an `Incoming`."""

    __slots__ = ("request",)

    def __init__(self, request: web.BaseRequest) -> None:
        self.request = request

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def target(self) -> str:
        return self.request.raw_path

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self.request.headers

    @property
    def version(self) -> tuple[int, int]:
        version = self.request.version
        return (version.major, version.minor)

    @property
    def remote(self) -> str | None:
        return self.request.remote

    @property
    def scheme(self) -> str:
        return self.request.scheme

    @property
    def content_length(self) -> int | None:
        return self.request.content_length

    @property
    def has_body(self) -> bool:
        return self.request.body_exists

    @property
    def head_bytes(self) -> int:
        request = self.request
        size = len(request.method) + len(request.raw_path) + 12
        for name, value in request.raw_headers:
            size += len(name) + len(value) + 4
        return size

    async def read(self) -> bytes:
        try:
            return await self.request.read()
        except ConnectionResetError as exc:
            raise ClientAborted(str(exc)) from None

    async def chunks(self, size: int) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.request.content.iter_chunked(size):
                yield chunk
        except ConnectionResetError as exc:
            raise ClientAborted(str(exc)) from None

    async def send_continue(self) -> None:
        await self.request.writer.write(_CONTINUE)


async def handle(gateway: Gateway, request: web.BaseRequest) -> web.StreamResponse:
    """Answer one request with the pipeline, through aiohttp's response objects."""
    gateway.in_flight += 1
    try:
        reply, admission = await gateway.respond(AiohttpIncoming(request))
        response = await _send(request, reply)
    finally:
        gateway.in_flight -= 1
    if gateway.draining or admission.close:
        response.force_close()
    gateway.finish(admission, reply.status, request.remote)
    return response


async def _send(request: web.BaseRequest, reply: Reply) -> web.StreamResponse:
    stream = reply.stream
    headers = reply.all_headers()
    headers.setdefault("Server", SERVER_HEADER)
    if stream is None:
        return web.Response(status=reply.status, headers=headers, body=reply.body)
    response = web.StreamResponse(status=reply.status, headers=headers)
    if reply.length is not None:
        response.content_length = reply.length
    try:
        await response.prepare(request)
        async for chunk in stream:
            await response.write(chunk)
        await response.write_eof()
    except ConnectionError:
        pass
    except StreamBroken:
        transport = request.transport
        if transport is not None:
            transport.close()
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    return response


class ReferenceRunner(web.BaseRunner):
    """Runs a gateway application on aiohttp's low-level server (keyword arguments: those
    of `wardgate.gateway.app.server_options`)."""

    __slots__ = ("_app", "_server_options")

    def __init__(
        self,
        app: web.Application,
        *,
        handle_signals: bool = False,
        shutdown_timeout: float = 60.0,
        **server_options: Any,
    ) -> None:
        super().__init__(
            handle_signals=handle_signals, shutdown_timeout=shutdown_timeout, **server_options
        )
        self._app = app
        self._server_options = server_options

    @property
    def app(self) -> web.Application:
        return self._app

    @property
    def gateway(self) -> Gateway:
        return self._app[GATEWAY_KEY]

    async def shutdown(self) -> None:
        await self._app.shutdown()

    async def _make_server(self) -> web.Server:
        self._app.on_startup.freeze()
        await self._app.startup()
        self._app.freeze()
        gateway = self.gateway

        async def handler(request: web.BaseRequest) -> web.StreamResponse:
            return await handle(gateway, request)

        return ReferenceServer(handler, malformed=gateway.refuse_malformed, **self._server_options)

    async def _cleanup_server(self) -> None:
        await self._app.cleanup()
