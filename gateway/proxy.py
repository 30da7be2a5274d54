"""The `http_proxy` integration: forward an allowed request to a named upstream server.

- One `aiohttp.ClientSession` per process (created in the app's `cleanup_ctx`, see
  `wardgate.gateway.app`), with a keep-alive connection pool, no cookie jar (a shared jar
  would hand one user's cookies to the next), no automatic `Accept`/`User-Agent` headers and
  no decompression: bytes pass through as the upstream sent them.
- The upstream receives the normalised path (minus `stripPrefix`), joined to the server
  URL's path, and the raw query string.
- Hop-by-hop headers (and those the `Connection` header names) are removed both ways.
  Method-override headers, `Host`, `Expect` and the headers that carry forwarded claims are
  removed from the request; verified claims, `X-Forwarded-For/-Proto/-Host` and
  `X-Request-Id` are added. `Authorization` goes upstream unless the route's authorizer says
  otherwise.
- Request bodies are streamed upstream with a running count against `limits.maxBodyBytes`
  (413 `body_too_large`); a `Content-Length` above the limit is refused before the upstream is
  contacted. Small bodies (known length up to `SMALL_BODY`) are read whole: one write instead
  of a generator.
- Responses are streamed back; small ones (known length up to `SMALL_BODY`) are read whole,
  which costs fewer event-loop turns. Redirects are passed to the client, never followed.
- Connection failures map to 502 `upstream_unreachable`, timeouts (`connectTimeout` to get a
  pooled or new connection, `readTimeout` between reads) to 504 `upstream_timeout`. An
  idempotent request without a body is retried once when a pooled keep-alive connection
  turns out to be closed by the upstream (the race every keep-alive client meets).
  A failure after the response has started closes the client connection, so that the
  client sees a truncated response rather than a complete-looking one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from wardgate.gateway.config import HttpProxyIntegration, Limits, Server
from wardgate.gateway.errors import (
    BODY_TOO_LARGE,
    UPSTREAM_TIMEOUT,
    UPSTREAM_UNREACHABLE,
    GatewayError,
)
from wardgate.gateway.exchange import Exchange
from wardgate.gateway.metrics import GatewayMetrics

# RFC 9110 section 7.6.1, plus `Proxy-Connection` (non-standard, still sent by some clients).
HOP_BY_HOP_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
METHOD_OVERRIDE_HEADERS: Final = frozenset(
    {"x-http-method-override", "x-method-override", "x-http-method"}
)
# Replaced by the gateway's own values.
GATEWAY_SET_HEADERS: Final = frozenset(
    {"host", "expect", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"}
)
REQUEST_DROPPED_HEADERS: Final = HOP_BY_HOP_HEADERS | METHOD_OVERRIDE_HEADERS | GATEWAY_SET_HEADERS
RESPONSE_DROPPED_HEADERS: Final = HOP_BY_HOP_HEADERS | {"content-length"}

SMALL_BODY: Final = 64 * 1024
STREAM_CHUNK: Final = 64 * 1024
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
CONNECTION_LIMIT: Final = 1024
CONNECTION_LIMIT_PER_HOST: Final = 512
# Below the idle timeout of common upstream servers (Node.js: 5 s), so that the pool rarely
# picks a connection the upstream is closing.
KEEPALIVE_SECONDS: Final = 4.0


def create_client_session() -> aiohttp.ClientSession:
    """The process's one client session, for upstreams and identity providers alike."""
    connector = aiohttp.TCPConnector(
        limit=CONNECTION_LIMIT,
        limit_per_host=CONNECTION_LIMIT_PER_HOST,
        keepalive_timeout=KEEPALIVE_SECONDS,
        ttl_dns_cache=10,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        timeout=aiohttp.ClientTimeout(total=None),
        trust_env=False,
    )


class _BodyTooLarge(Exception):
    pass


_PLAIN_CONNECTION: Final = frozenset({"keep-alive", "close", "Keep-Alive", "Close"})


def _connection_tokens(value: str) -> frozenset[str]:
    """The header names a `Connection` header lists (none for the usual plain values)."""
    if value in _PLAIN_CONNECTION:
        return frozenset()
    return frozenset(t.strip().lower() for t in value.split(",") if t.strip())


def filter_response_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The upstream response's headers minus hop-by-hop ones and `Content-Length`."""
    out: CIMultiDict[str] = CIMultiDict()
    connection = headers.get("Connection")
    dropped = RESPONSE_DROPPED_HEADERS
    if connection and connection not in _PLAIN_CONNECTION:
        dropped = dropped | _connection_tokens(connection)
    for name, value in headers.items():
        if name.lower() not in dropped:
            out.add(name, value)
    return out


class HttpProxy:
    """Forwards requests of one route to its server."""

    __slots__ = (
        "_base_path",
        "_dropped",
        "_latency",
        "_limit",
        "_origin",
        "_server_name",
        "_session",
        "_strip",
        "_timeout",
    )

    def __init__(
        self,
        integration: HttpProxyIntegration,
        server: Server,
        *,
        limits: Limits,
        session: Callable[[], aiohttp.ClientSession],
        metrics: GatewayMetrics | None,
        claim_headers: frozenset[str],
        forward_authorization: bool,
    ) -> None:
        parts = urlsplit(server.url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._base_path = parts.path.rstrip("/")
        strip = integration.strip_prefix
        self._strip = strip.rstrip("/") if strip else None
        self._server_name = integration.server
        self._session = session
        self._latency = metrics.upstream_histogram(integration.server) if metrics else None
        self._limit = limits.max_body_bytes
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=server.connect_timeout, sock_read=server.read_timeout
        )
        dropped = REQUEST_DROPPED_HEADERS | {h.lower() for h in claim_headers}
        if not forward_authorization:
            dropped = dropped | {"authorization"}
        self._dropped = dropped

    def upstream_path(self, path: str) -> str:
        """The path sent upstream for a normalised request path."""
        strip = self._strip
        if strip:
            if path == strip:
                path = "/"
            elif path.startswith(strip) and path[len(strip)] == "/":
                path = path[len(strip) :]
        return self._base_path + path

    def _request_headers(self, request: web.BaseRequest, exchange: Exchange) -> CIMultiDict[str]:
        incoming = request.headers
        dropped = self._dropped
        connection = incoming.get("Connection")
        if connection and connection not in _PLAIN_CONNECTION:
            dropped = dropped | _connection_tokens(connection)
        out: CIMultiDict[str] = CIMultiDict()
        for name, value in incoming.items():
            if name.lower() not in dropped:
                out.add(name, value)
        for name, value in exchange.claim_headers.items():
            out[name] = value
        remote = request.remote or ""
        prior = incoming.get("X-Forwarded-For")
        out["X-Forwarded-For"] = f"{prior}, {remote}" if prior else remote
        out["X-Forwarded-Proto"] = request.scheme
        host = incoming.get("Host")
        if host:
            out["X-Forwarded-Host"] = host
        out["X-Request-Id"] = exchange.request_id
        return out

    async def _request_body(self, request: web.BaseRequest) -> bytes | AsyncIterator[bytes] | None:
        if not request.body_exists:
            return None
        length = request.content_length
        if length is not None and length > self._limit:
            raise GatewayError(BODY_TOO_LARGE, {"limit": self._limit, "contentLength": length})
        if request.headers.get("Expect", "").lower() == "100-continue":
            # Asked only now, after auth: an unauthorised client never sends its body.
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if length is not None and length <= SMALL_BODY:
            return await request.read()
        return self._stream_body(request)

    async def _stream_body(self, request: web.BaseRequest) -> AsyncIterator[bytes]:
        total = 0
        limit = self._limit
        async for chunk in request.content.iter_chunked(STREAM_CHUNK):
            total += len(chunk)
            if total > limit:
                raise _BodyTooLarge
            yield chunk

    async def respond(self, request: web.BaseRequest, exchange: Exchange) -> web.StreamResponse:
        method = exchange.method
        target = self._origin + self.upstream_path(exchange.path)
        if exchange.query:
            target = f"{target}?{exchange.query}"
        url = URL(target, encoded=True)
        headers = self._request_headers(request, exchange)
        body = await self._request_body(request)
        session = self._session()
        started = time.perf_counter()
        retry = body is None and method in IDEMPOTENT_METHODS
        while True:
            try:
                upstream = await session.request(
                    method,
                    url,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    timeout=self._timeout,
                )
                break
            except aiohttp.ServerDisconnectedError as exc:
                if retry:
                    retry = False
                    continue
                raise GatewayError(UPSTREAM_UNREACHABLE, self._failure(exc)) from None
            except TimeoutError as exc:
                raise GatewayError(UPSTREAM_TIMEOUT, self._failure(exc)) from None
            except (aiohttp.ClientError, OSError) as exc:
                if isinstance(exc.__cause__, _BodyTooLarge) or isinstance(exc, _BodyTooLarge):
                    raise GatewayError(BODY_TOO_LARGE, {"limit": self._limit}) from None
                raise GatewayError(UPSTREAM_UNREACHABLE, self._failure(exc)) from None
            except _BodyTooLarge:
                raise GatewayError(BODY_TOO_LARGE, {"limit": self._limit}) from None
        if self._latency is not None:
            self._latency.observe(time.perf_counter() - started)
        try:
            return await self._relay(request, exchange, upstream)
        finally:
            upstream.release()

    async def _relay(
        self,
        request: web.BaseRequest,
        exchange: Exchange,
        upstream: aiohttp.ClientResponse,
    ) -> web.StreamResponse:
        headers = filter_response_headers(upstream.headers)
        headers.update(exchange.response_headers)
        length = upstream.content_length
        status = upstream.status
        if exchange.method == "HEAD" or status in (204, 304):
            if length is not None:
                headers["Content-Length"] = str(length)
            return web.Response(status=status, headers=headers)
        if length is not None and length <= SMALL_BODY:
            try:
                body = await upstream.read()
            except TimeoutError as exc:
                raise GatewayError(UPSTREAM_TIMEOUT, self._failure(exc)) from None
            except (aiohttp.ClientError, OSError) as exc:
                raise GatewayError(UPSTREAM_UNREACHABLE, self._failure(exc)) from None
            return web.Response(status=status, headers=headers, body=body)
        response = web.StreamResponse(status=status, headers=headers)
        if length is not None:
            response.content_length = length
        try:
            await response.prepare(request)
        except ConnectionError:
            upstream.close()
            return response
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        except ConnectionError:
            # The client went away: drop the upstream connection rather than drain it.
            upstream.close()
            return response
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            timeout = isinstance(exc, TimeoutError)
            exchange.code = (UPSTREAM_TIMEOUT if timeout else UPSTREAM_UNREACHABLE).code
            upstream.close()
            transport = request.transport
            if transport is not None:
                transport.close()
            return response
        await response.write_eof()
        return response

    def _failure(self, exc: BaseException) -> dict[str, str]:
        reason = str(exc) or type(exc).__name__
        return {"server": self._server_name, "error": type(exc).__name__, "reason": reason}
