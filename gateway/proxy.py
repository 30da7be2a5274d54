"""The `http_proxy` integration: forward an allowed request to a named upstream server.

- Requests go through `wardgate.gateway.upstream`: one keep-alive pool per upstream
  origin, owned by the process's `UpstreamPools` (the `Gateway` holds it; the app's
  `cleanup_ctx` closes it). No cookies are kept, no header is added beyond those below,
  nothing is decompressed: bytes pass through as the upstream sent them.
- `create_client_session` makes the process's one `aiohttp.ClientSession`, which the
  authorizers use for JWKS; the proxy does not.
- The upstream receives the normalised path (minus `stripPrefix`), joined to the server
  URL's path, and the raw query string.
- Hop-by-hop headers (and those the `Connection` header names) are removed both ways.
  Method-override headers, `Host`, `Expect` and the headers that carry forwarded claims are
  removed from the request, in any case and with `_` for `-` (which WSGI/CGI servers read
  as the same name); verified claims, `X-Forwarded-For/-Proto/-Host` and
  `X-Request-Id` are added. `Authorization` goes upstream unless the route's authorizer says
  otherwise.
- Request bodies are streamed upstream (chunked) with a running count against `limits.maxBodyBytes`
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

import functools
import time
from collections.abc import AsyncIterator, Mapping
from typing import Final
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict

from wardgate.gateway.config import HttpProxyIntegration, Limits, Server
from wardgate.gateway.credentials import SUBPROTOCOL_HEADER, without_subprotocol_tokens
from wardgate.gateway.errors import (
    BODY_TOO_LARGE,
    UPSTREAM_BAD_UPGRADE,
    UPSTREAM_TIMEOUT,
    UPSTREAM_UNREACHABLE,
    GatewayError,
)
from wardgate.gateway.exchange import (
    SERVER_HEADER,
    Exchange,
    Incoming,
    Reply,
    StreamBroken,
    status_line,
)
from wardgate.gateway.framing import (
    FRAMING_HEADERS,
    GATEWAY_SET_HEADERS,
    HOP_BY_HOP_HEADERS,
    METHOD_OVERRIDE_HEADERS,
)
from wardgate.gateway.metrics import GatewayMetrics
from wardgate.gateway.upstream import (
    UpstreamConnection,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamPools,
    UpstreamSwitched,
)
from wardgate.gateway.websockets import WebSocketReply, WebSocketSession, check_upstream_answer

REQUEST_DROPPED_HEADERS: Final = HOP_BY_HOP_HEADERS | METHOD_OVERRIDE_HEADERS | GATEWAY_SET_HEADERS
RESPONSE_DROPPED_HEADERS: Final = FRAMING_HEADERS
_RESPONSE_DROPPED_BYTES: Final = frozenset(n.encode() for n in RESPONSE_DROPPED_HEADERS)
_PLAIN_CONNECTION_BYTES: Final = frozenset({b"keep-alive", b"close", b"Keep-Alive", b"Close"})
_SERVER_FIELD: Final = f"Server: {SERVER_HEADER}\r\n".encode()

SMALL_BODY: Final = 64 * 1024
STREAM_CHUNK: Final = 64 * 1024
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
# Methods sent without `Content-Length: 0` when the request has no body.
_NO_BODY_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})
# Statuses whose responses have no body (RFC 9110 sections 15.3.5 and 15.4.5).
_NO_BODY_STATUSES: Final = frozenset({204, 304})
CONNECTION_LIMIT: Final = 1024
CONNECTION_LIMIT_PER_HOST: Final = 512
# Below the idle timeout of common upstream servers (Node.js: 5 s), so that the pool rarely
# picks a connection the upstream is closing.
KEEPALIVE_SECONDS: Final = 4.0


def create_upstream_pools() -> UpstreamPools:
    """The process's upstream connection pools."""
    return UpstreamPools(limit=CONNECTION_LIMIT_PER_HOST, keepalive=KEEPALIVE_SECONDS)


def create_client_session() -> aiohttp.ClientSession:
    """The process's one client session (the authorizers fetch JWKS with it)."""
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


def response_headers(raw: list[tuple[bytes, bytes]]) -> tuple[CIMultiDict[str], int | None]:
    """An upstream response's raw headers minus hop-by-hop ones and `Content-Length`, and
    the `Content-Length` value."""
    out: CIMultiDict[str] = CIMultiDict()
    length = None
    dropped = RESPONSE_DROPPED_HEADERS
    decoded = []
    for raw_name, raw_value in raw:
        name = raw_name.decode("latin-1")
        # Decoded the way aiohttp's server encodes them again: bytes pass unchanged.
        value = raw_value.decode("utf-8", "surrogateescape")
        lowered = name.lower()
        if lowered == "connection" and value not in _PLAIN_CONNECTION:
            dropped = dropped | _connection_tokens(value)
        elif lowered == "content-length" and value.isdigit():
            length = int(value)
        decoded.append((name, lowered, value))
    for name, lowered, value in decoded:
        if lowered not in dropped:
            out.add(name, value)
    return out, length


def relayed_head(
    status: int, raw: list[tuple[bytes, bytes]], own: Mapping[str, str]
) -> bytes | None:
    """The status line and an upstream response's fields as relayed, still encoded: what
    `response_headers` keeps, minus the fields the gateway sets itself (`own`, written
    after this head), plus `Server` unless the upstream sent one. None when a `Connection`
    field names other fields to drop: then `response_headers` decodes them all.

    The bytes pass as received, as decoding and encoding them again would give (values
    are decoded with `surrogateescape`)."""
    dropped = _RESPONSE_DROPPED_BYTES
    if own:
        dropped = dropped | {name.lower().encode("latin-1") for name in own}
    lines = [status_line(status)]
    extend = lines.extend
    server = False
    for name, value in raw:
        lowered = name.lower()
        if lowered in dropped:
            if lowered == b"connection" and value not in _PLAIN_CONNECTION_BYTES:
                return None
            continue
        if lowered == b"server":
            server = True
        extend((name, b": ", value, b"\r\n"))
    if not server:
        lines.append(_SERVER_FIELD)
    return b"".join(lines)


@functools.lru_cache(maxsize=64)
def dropped_request_headers(
    claim_headers: frozenset[str], forward_authorization: bool
) -> frozenset[str]:
    """The request headers never sent upstream (one set shared by every proxied path: a
    config of 10,000 of them built 10,000 equal sets)."""
    dropped = REQUEST_DROPPED_HEADERS | {"content-length"} | {h.lower() for h in claim_headers}
    if not forward_authorization:
        dropped = dropped | {"authorization"}
    return frozenset(dropped)


class HttpProxy:
    """Forwards requests of one route to its server."""

    __slots__ = (
        "_base_path",
        "_connect_timeout",
        "_dropped",
        "_host_header",
        "_latency",
        "_limit",
        "_pool",
        "_read_timeout",
        "_server_name",
        "_strip",
        "_subprotocol_prefixes",
    )

    def __init__(
        self,
        integration: HttpProxyIntegration,
        server: Server,
        *,
        limits: Limits,
        upstreams: UpstreamPools,
        metrics: GatewayMetrics | None,
        claim_headers: frozenset[str],
        forward_authorization: bool,
        subprotocol_prefixes: tuple[str, ...] = (),
        ca_bundle: str | None = None,
    ) -> None:
        parts = urlsplit(server.url)
        scheme = parts.scheme
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        self._pool = upstreams.pool(scheme, host, port, ca_bundle)
        self._host_header = parts.netloc.rpartition("@")[2]
        self._base_path = parts.path.rstrip("/")
        strip = integration.strip_prefix
        self._strip = strip.rstrip("/") if strip else None
        self._server_name = integration.server
        self._latency = metrics.upstream_histogram(integration.server) if metrics else None
        self._limit = limits.max_body_bytes
        self._connect_timeout = server.connect_timeout
        self._read_timeout = server.read_timeout
        self._dropped = dropped_request_headers(claim_headers, forward_authorization)
        self._subprotocol_prefixes = subprotocol_prefixes
        """Token entries of `Sec-WebSocket-Protocol` (the route's subprotocol token
        sources): never sent upstream."""

    def upstream_path(self, path: str) -> str:
        """The path sent upstream for a normalised request path."""
        strip = self._strip
        if strip:
            if path == strip:
                path = "/"
            elif path.startswith(strip) and path[len(strip)] == "/":
                path = path[len(strip) :]
        return self._base_path + path

    def request_head(
        self,
        request: Incoming,
        exchange: Exchange,
        target: str,
        body: bytes | AsyncIterator[bytes] | None,
        *,
        upgrade: bool = False,
    ) -> bytes:
        """The request line and headers sent upstream (`upgrade`: with the WebSocket
        upgrade's `Connection` and `Upgrade`)."""
        incoming = request.headers
        dropped = self._dropped
        for connection in incoming.getall("Connection", ()):
            if connection not in _PLAIN_CONNECTION:
                # Every Connection field counts (RFC 9110 section 7.6.1: a list may be split).
                dropped = dropped | _connection_tokens(connection)
        method = exchange.method
        lines = [f"{method} {target} HTTP/1.1\r\nHost: {self._host_header}\r\n"]
        append = lines.append
        for name, value in incoming.items():
            lowered = name.lower()
            # `X_User_Id` is `X-User-Id` to WSGI/CGI servers (Django, PHP): a client's
            # copy of a gateway-set header is dropped in that spelling too.
            if lowered not in dropped and (
                "_" not in lowered or lowered.replace("_", "-") not in dropped
            ):
                if self._subprotocol_prefixes and lowered == "sec-websocket-protocol":
                    value = self._upstream_subprotocols(value)
                    if not value:
                        continue
                append(f"{name}: {value}\r\n")
        for name, value in exchange.claim_headers.items():
            append(f"{name}: {value}\r\n")
        remote = request.remote or ""
        prior = incoming.getall("X-Forwarded-For", ())
        append(
            f"X-Forwarded-For: {', '.join(prior)}, {remote}\r\n"
            if prior
            else f"X-Forwarded-For: {remote}\r\n"
        )
        append(f"X-Forwarded-Proto: {request.scheme}\r\n")
        host = exchange.authority
        if host:
            append(f"X-Forwarded-Host: {host}\r\n")
        append(f"X-Request-Id: {exchange.request_id}\r\n")
        if upgrade:
            append("Connection: Upgrade\r\nUpgrade: websocket\r\n")
        if body is None:
            if method not in _NO_BODY_METHODS:
                append("Content-Length: 0\r\n")
        elif isinstance(body, bytes):
            append(f"Content-Length: {len(body)}\r\n")
        else:
            append("Transfer-Encoding: chunked\r\n")
        append("\r\n")
        # The server decoded the incoming bytes this way: the upstream gets them unchanged.
        return "".join(lines).encode("utf-8", "surrogateescape")

    def _upstream_subprotocols(self, value: str) -> str:
        """A `Sec-WebSocket-Protocol` value without the route's token entries."""
        for prefix in self._subprotocol_prefixes:
            value = without_subprotocol_tokens(value, prefix)
        return value

    async def _request_body(self, request: Incoming) -> bytes | AsyncIterator[bytes] | None:
        if not request.has_body:
            return None
        length = request.content_length
        if length is not None and length > self._limit:
            raise GatewayError(BODY_TOO_LARGE, {"limit": self._limit, "contentLength": length})
        if (
            request.version >= (1, 1)
            and request.headers.get("Expect", "").lower() == "100-continue"
        ):
            # Asked only now, after auth: an unauthorised client never sends its body. Never
            # to an HTTP/1.0 client, which does not know interim responses (RFC 9110 15.2).
            await request.send_continue()
        if length is not None and length <= SMALL_BODY:
            return await request.read()
        return self._stream_body(request)

    async def _stream_body(self, request: Incoming) -> AsyncIterator[bytes]:
        total = 0
        limit = self._limit
        async for chunk in request.chunks(STREAM_CHUNK):
            total += len(chunk)
            if total > limit:
                raise _BodyTooLarge
            yield chunk

    async def _send_stream(
        self, conn: UpstreamConnection, first: bytes, body: AsyncIterator[bytes]
    ) -> None:
        timeout = self._read_timeout
        if first:
            await conn.write_chunk(b"%x\r\n%b\r\n" % (len(first), first), timeout)
        async for chunk in body:
            if chunk:
                await conn.write_chunk(b"%x\r\n%b\r\n" % (len(chunk), chunk), timeout)
        await conn.write_chunk(b"0\r\n\r\n", timeout)

    async def respond(self, request: Incoming, exchange: Exchange) -> Reply:
        method = exchange.method
        target = self.upstream_path(exchange.path)
        if exchange.query:
            target = f"{target}?{exchange.query}"
        body = await self._request_body(request) if request.has_body else None
        head = self.request_head(request, exchange, target, body)
        whole = body if isinstance(body, bytes) else None
        stream = None if body is None or isinstance(body, bytes) else body
        first = b""
        if stream is not None:
            # The head goes upstream with the first part of the body: a body that is broken
            # (or too large) from its start never reaches the upstream at all.
            try:
                first = await anext(stream, b"")
            except _BodyTooLarge:
                raise GatewayError(BODY_TOO_LARGE, {"limit": self._limit}) from None
        pool = self._pool
        started = time.perf_counter()
        retry = body is None and method in IDEMPOTENT_METHODS
        fresh = False
        while True:
            # A pooled connection is taken without the coroutine that may wait for one.
            conn = None if fresh else pool.idle_connection()
            if conn is None:
                try:
                    conn = await pool.acquire(self._connect_timeout, fresh=fresh)
                except TimeoutError as exc:
                    raise GatewayError(UPSTREAM_TIMEOUT, self._failure(exc)) from None
                except (OSError, UpstreamError) as exc:
                    raise GatewayError(UPSTREAM_UNREACHABLE, self._failure(exc)) from None
            try:
                conn.send(head, whole, head_request=method == "HEAD")
                if stream is not None:
                    await self._send_stream(conn, first, stream)
                await conn.read_head(self._read_timeout)
                break
            except UpstreamDisconnected as exc:
                conn.close()
                if retry and conn.reused:
                    retry = False
                    fresh = True
                    continue
                raise GatewayError(UPSTREAM_UNREACHABLE, self._failure(exc)) from None
            except TimeoutError as exc:
                conn.close()
                raise GatewayError(UPSTREAM_TIMEOUT, self._failure(exc)) from None
            except UpstreamSwitched as exc:
                conn.close()
                raise GatewayError(UPSTREAM_BAD_UPGRADE, self._failure(exc)) from None
            except _BodyTooLarge:
                conn.close()
                raise GatewayError(BODY_TOO_LARGE, {"limit": self._limit}) from None
            except (OSError, UpstreamError) as exc:
                conn.close()
                raise GatewayError(UPSTREAM_UNREACHABLE, self._failure(exc)) from None
            except BaseException:
                conn.close()
                raise
        if self._latency is not None:
            self._latency.observe(time.perf_counter() - started)
        try:
            if conn.complete and method != "HEAD" and conn.status not in _NO_BODY_STATUSES:
                # The whole answer is here: relayed as `_relay` would, without its coroutine,
                # and its fields without decoding them.
                status = conn.status
                own = exchange.response_headers
                relayed = relayed_head(status, conn.headers, own)
                if relayed is not None:
                    reply = Reply(status, own, conn.take_body(), head=relayed)
                else:
                    headers = self._relayed_headers(exchange, conn)[0]
                    reply = Reply(status, headers, conn.take_body())
            else:
                reply = await self._relay(exchange, conn)
        except BaseException:
            pool.release(conn)
            raise
        if reply.stream is None:
            pool.release(conn)
        return reply

    async def upgrade(
        self, request: Incoming, exchange: Exchange, key: str, session: WebSocketSession
    ) -> Reply:
        """Send a WebSocket upgrade upstream: a `WebSocketReply` (its `101`) when the
        upstream switches, else the upstream's answer as for any request."""
        target = self.upstream_path(exchange.path)
        if exchange.query:
            target = f"{target}?{exchange.query}"
        head = self.request_head(request, exchange, target, None, upgrade=True)
        pool = self._pool
        started = time.perf_counter()
        fresh = False
        while True:
            try:
                conn = await pool.acquire(self._connect_timeout, fresh=fresh)
            except TimeoutError as exc:
                raise GatewayError(UPSTREAM_TIMEOUT, self._failure(exc)) from None
            except (OSError, UpstreamError) as exc:
                raise GatewayError(UPSTREAM_UNREACHABLE, self._failure(exc)) from None
            try:
                conn.send(head, None, head_request=False, upgrade=True)
                await conn.read_head(self._read_timeout)
                break
            except UpstreamDisconnected as exc:
                conn.close()
                if conn.reused and not fresh:
                    fresh = True
                    continue
                raise GatewayError(UPSTREAM_UNREACHABLE, self._failure(exc)) from None
            except TimeoutError as exc:
                conn.close()
                raise GatewayError(UPSTREAM_TIMEOUT, self._failure(exc)) from None
            except (OSError, UpstreamError) as exc:
                conn.close()
                raise GatewayError(UPSTREAM_UNREACHABLE, self._failure(exc)) from None
            except BaseException:
                conn.close()
                raise
        if self._latency is not None:
            self._latency.observe(time.perf_counter() - started)
        if not conn.upgraded:
            try:
                reply = await self._relay(exchange, conn)
            except BaseException:
                conn.close()
                raise
            if reply.stream is None:
                pool.release(conn)
            return reply
        raw = CIMultiDict(
            (n.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for n, v in conn.headers
        )
        sent = request.headers
        # The subprotocols the upstream was offered (the token entries taken out).
        protocols = [self._upstream_subprotocols(v) for v in sent.getall(SUBPROTOCOL_HEADER, [])]
        problem = check_upstream_answer(
            key, protocols, sent.getall("Sec-WebSocket-Extensions", []), raw
        )
        if problem is not None:
            conn.close()
            raise GatewayError(
                UPSTREAM_BAD_UPGRADE, {"server": self._server_name, "reason": problem}
            )
        conn.detach()
        headers, _ = response_headers(conn.headers)
        headers.update(exchange.response_headers)
        headers.setdefault("Server", SERVER_HEADER)
        return WebSocketReply(headers, session, conn)

    @staticmethod
    def _relayed_headers(
        exchange: Exchange, conn: UpstreamConnection
    ) -> tuple[CIMultiDict[str], int | None]:
        """The upstream's headers as relayed (hop-by-hop ones dropped, the request's own
        added, `Server` unless the upstream sent one), and its `Content-Length`."""
        headers, length = response_headers(conn.headers)
        headers.update(exchange.response_headers)
        headers.setdefault("Server", SERVER_HEADER)
        return headers, length

    async def _relay(self, exchange: Exchange, conn: UpstreamConnection) -> Reply:
        headers, length = self._relayed_headers(exchange, conn)
        status = conn.status
        if exchange.method == "HEAD" or status in _NO_BODY_STATUSES:
            if length is not None and status != 204:  # never on a 204 (RFC 9110 8.6)
                headers["Content-Length"] = str(length)
            # Without the upstream's length the answer names none: `Content-Length: 0` would
            # say the GET's body is empty (`head_has_length` keeps the server from adding it).
            return Reply(status, headers, head_has_length="Content-Length" not in headers)
        if conn.complete or (length is not None and length <= SMALL_BODY):
            # Small, or already all here: one write to the client.
            try:
                body = await conn.read_body(self._read_timeout)
            except TimeoutError as exc:
                raise GatewayError(UPSTREAM_TIMEOUT, self._failure(exc)) from None
            except (OSError, UpstreamError) as exc:
                raise GatewayError(UPSTREAM_UNREACHABLE, self._failure(exc)) from None
            return Reply(status, headers, body)
        return Reply(status, headers, stream=self._relay_stream(exchange, conn), length=length)

    async def _relay_stream(
        self, exchange: Exchange, conn: UpstreamConnection
    ) -> AsyncIterator[bytes]:
        """The upstream's body as it arrives; the connection goes back to the pool at its
        end, and is closed when the client goes away (the server closes this stream) or the
        upstream fails (then `StreamBroken`)."""
        timeout = self._read_timeout
        try:
            while chunk := await conn.read_chunk(timeout):
                yield chunk
        except (TimeoutError, UpstreamError, OSError) as exc:
            timeout_hit = isinstance(exc, TimeoutError)
            exchange.code = (UPSTREAM_TIMEOUT if timeout_hit else UPSTREAM_UNREACHABLE).code
            conn.close()
            raise StreamBroken(str(exc)) from None
        except BaseException:
            # The client went away: drop the upstream connection rather than drain it.
            conn.close()
            raise
        finally:
            self._pool.release(conn)

    def _failure(self, exc: BaseException) -> dict[str, str]:
        reason = str(exc) or type(exc).__name__
        return {"server": self._server_name, "error": type(exc).__name__, "reason": reason}
