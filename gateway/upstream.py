"""The proxy's HTTP/1.1 client: keep-alive connection pools on asyncio protocols.

Why not aiohttp's `ClientSession`: measured with wrk on one core, it was about 90 µs of the
105 µs a proxied request cost (request and response objects, URL and header handling,
connector bookkeeping, a stream reader, timers), for a job that is a write of prepared
bytes and one parse. This client does only what the proxy needs:

- one `UpstreamPool` per origin (scheme, host, port), shared by every route to it, owned by
  one `UpstreamPools` per gateway process; connections are reused most recently used
  first, and an idle one is closed after `keepalive` seconds (below the idle timeout of
  common upstream servers, so that the pool rarely picks one the upstream is closing);
  at most `limit` connections per origin, the next request waits for one (within the
  connect timeout);
- the request goes out as one write of prepared bytes (head, and a known-length body);
  a streamed body is sent with chunked transfer coding;
- responses are parsed by httptools (llhttp, Node.js's parser): `Content-Length`,
  chunked and read-until-close bodies; 1xx interim responses are skipped; a response to
  `HEAD` ends with its head;
- timeouts: `connect` to get a pooled or new connection, `read` for each wait on the
  upstream (the head, each part of the body, each write of a streamed request body);
- a connection closed before any byte of the response arrived raises
  `UpstreamDisconnected`, which the caller may retry on a new connection (the race
  every keep-alive client meets); any other failure closes the connection;
- reading is paused while more than `HIGH_WATER` bytes of a streamed body wait for the
  client, so a slow client does not make the gateway buffer a large response.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from collections import deque
from typing import Final, Protocol, cast

import httptools

from wardgate.gateway.tls import upstream_tls_context

HIGH_WATER: Final = 256 * 1024
MAX_HEAD_BYTES: Final = 64 * 1024
"""An upstream's response head (fields of interim and final responses) is at most this
large: a larger one is a broken upstream (502), as nginx's "upstream sent too big header"."""


class _StopParsing(Exception):
    """Raised in a parser callback: the rest of the bytes are not parsed."""


class UpstreamError(Exception):
    """The upstream could not be reached, or broke the exchange."""


class UpstreamSwitched(UpstreamError):
    """The upstream answered `101 Switching Protocols` to a request without an upgrade."""


class UpstreamDisconnected(UpstreamError):
    """The connection closed before any byte of the response arrived."""


class UpstreamConnection(asyncio.Protocol):
    """One connection to an upstream; one request at a time."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.open = True
        self.reused = False
        self.expires = 0.0
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = False
        self.head_done = False
        self.complete = False
        self._counted = True
        self._parser: httptools.HttpResponseParser | None = None
        self._skip_body = False
        self._framed = False
        self._interim = False
        self._received = False
        self._head_bytes = 0
        self._coded = False
        self._extra_bytes = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._reading_paused = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = 0.0
        """When the wait in progress times out (loop time)."""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        """When `_timer` fires: at or before the deadline of the wait in progress, so one
        timer serves many waits (a wait arms none while it fires in time)."""
        self._writable = True
        self._drain_waiter: asyncio.Future[None] | None = None
        self._upgrade = False
        self.upgraded = False
        """The upstream switched to WebSocket (`101`): bytes go to `tunnel` from now on."""
        self.tunnel: Tunnel | None = None
        self.early: list[bytes] = []
        """Bytes after the `101`, before the tunnel takes them."""

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but are ones.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.pool.forget(self)
        if self.tunnel is not None:
            self.tunnel.upstream_lost()
            return
        if self._parser is not None and not self.complete and self._error is None:
            if self.head_done and not self._framed and not self._skip_body:
                # A body without Content-Length or chunked coding ends with the connection.
                self.complete = True
            elif not self._received:
                self._error = UpstreamDisconnected("the upstream closed the connection")
            else:
                self._error = UpstreamError("the upstream closed the connection mid-response")
        self._wake()
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_exception(UpstreamError("the upstream closed the connection"))

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            if self.tunnel is not None:
                self.tunnel.from_upstream(data)
            else:
                self.early.append(data)
            return
        parser = self._parser
        if parser is None or self.complete:
            # Nothing was asked: a confused upstream; this connection is not reusable.
            self.close()
            return
        self._received = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as switch:
            # llhttp stops after a `101` head: what follows is in the new protocol (the
            # head's callback set `upgraded` when the request asked for it).
            if self.status == 101:
                offset = switch.args[0] if switch.args else len(data)
                if offset < len(data):
                    self.early.append(data[offset:])
            elif self._error is None:
                self._error = UpstreamError("an upgrade nobody asked for")
                self.close()
            self._wake()
        except httptools.HttpParserError as exc:
            if self._extra_bytes:
                # Bytes after the complete response: it is relayed, the connection is not
                # reused (they would be read as the next request's answer).
                self.keep_alive = False
                self.close()
            else:
                if self._error is None:
                    self._error = UpstreamError(f"invalid response: {exc}")
                self.close()
            self._wake()

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self._writable = False
        if self.tunnel is not None:
            self.tunnel.upstream_writable(False)

    def resume_writing(self) -> None:
        self._writable = True
        if self.tunnel is not None:
            self.tunnel.upstream_writable(True)
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)

    # httptools callbacks

    def _refuse(self, reason: str) -> None:
        """End the exchange as a broken upstream (502) from a parser callback."""
        self._error = UpstreamError(reason)
        raise _StopParsing(reason)

    def on_message_begin(self) -> None:
        if self.complete:
            # A second response in the bytes of the first: nothing was asked for it.
            self._extra_bytes = True
            raise _StopParsing("bytes after the response")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:
            return  # a trailer field: never merged into the head already relayed
        self._head_bytes += len(name) + len(value) + 4
        if len(name) == 17 and name.lower() == b"transfer-encoding":
            self._coded = True
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(f"the response head is larger than {MAX_HEAD_BYTES} bytes")
        self.headers.append((name, value))
        if not self._framed:
            lowered = name.lower()
            if lowered == b"content-length" or lowered == b"transfer-encoding":
                self._framed = True

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if status == 101:
            if not self._upgrade:
                # A switch to a request that asked for none: no tunnel is ever opened on it.
                self._error = UpstreamSwitched(
                    "101 Switching Protocols to a request without Upgrade"
                )
                self.close()
                self._wake()
                return
            self.status = status
            self.head_done = True
            self.complete = True
            self.keep_alive = False
            self.upgraded = True
            self._wake()
            return
        if 100 <= status < 200:
            # An interim response (103 Early Hints): the real one follows. It has no content
            # (RFC 9110 section 15.2): framing fields on it are a broken upstream.
            if self._framed:
                self._refuse(
                    f"an interim {status} response with Content-Length or Transfer-Encoding"
                )
            self.headers = []
            self._framed = False
            self._coded = False
            self._interim = True
            return
        codings = _transfer_codings(self.headers) if self._coded else [b"chunked"]
        if codings != [b"chunked"]:
            # Only chunked is decoded here; relaying `gzip, chunked` de-chunked would pass on
            # compressed bytes nothing labels, and `identity` is obsolete (RFC 9112 6.1).
            shown = b", ".join(codings)[:64]
            self._refuse(f"unsupported Transfer-Encoding {shown!r} in the response")
        self.status = status
        self.head_done = True
        self.keep_alive = self._parser.should_keep_alive()
        if status in (204, 304):
            self._framed = True
        if self._skip_body:
            self.complete = True
        elif not self._framed:
            self.keep_alive = False
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self._skip_body:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.complete = True
        self._wake()

    # the exchange

    def send(
        self, head: bytes, body: bytes | None, *, head_request: bool, upgrade: bool = False
    ) -> None:
        """Write a request (its head, and its body when given whole); `upgrade`: the head
        asks for a WebSocket upgrade, so a `101` answer switches the connection."""
        self._parser = httptools.HttpResponseParser(self)
        self._upgrade = upgrade
        self.status = 0
        self.headers = []
        self.keep_alive = False
        self.head_done = False
        self.complete = False
        self._skip_body = head_request
        self._framed = False
        self._interim = False
        self._received = False
        self._head_bytes = 0
        self._coded = False
        self._extra_bytes = False
        self._error = None
        assert self.transport is not None
        if body:
            self.transport.write(head + body)
        else:
            self.transport.write(head)

    async def write_chunk(self, data: bytes, wait_seconds: float) -> None:
        """Write part of a request body, waiting while the transport's buffer is full."""
        if self._error is not None:
            raise self._error
        assert self.transport is not None
        self.transport.write(data)
        if not self._writable:
            loop = asyncio.get_running_loop()
            waiter = self._drain_waiter = loop.create_future()
            try:
                async with asyncio.timeout(wait_seconds):
                    await waiter
            finally:
                self._drain_waiter = None

    async def read_head(self, wait_seconds: float) -> None:
        """Wait for the response's status line and headers."""
        while not self.head_done:
            await self._wait(wait_seconds)

    def take_body(self) -> bytes:
        """The body received so far (all of it once `complete`)."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._consumed()
        return data

    async def read_body(self, wait_seconds: float) -> bytes:
        """The whole body."""
        while not self.complete:
            await self._wait(wait_seconds)
        return self.take_body()

    async def read_chunk(self, wait_seconds: float) -> bytes:
        """The next part of the body; empty at its end."""
        while not self._chunks and not self.complete:
            await self._wait(wait_seconds)
        return self.take_body()

    def detach(self) -> None:
        """Take an upgraded connection out of its pool (a session holds it, not a slot of
        the pool's limit)."""
        self.pool.forget(self)

    def rest(self) -> None:
        """Between exchanges: any byte that arrives now closes the connection."""
        self._parser = None

    def reusable(self) -> bool:
        return self.open and self.complete and self.keep_alive and not self._chunks

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()
        self.pool.forget(self)

    def _consumed(self) -> None:
        self._buffered = 0
        if self._reading_paused and self.transport is not None and self.open:
            self._reading_paused = False
            self.transport.resume_reading()

    async def _wait(self, wait_seconds: float) -> None:
        if self._error is not None:
            raise self._error
        if not self.open:
            raise UpstreamDisconnected("the connection is closed")
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        deadline = self._deadline = loop.time() + wait_seconds
        if self._timer is None or self._timer_at > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = loop.call_at(deadline, self._check_deadline)
        try:
            await waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    def _check_deadline(self) -> None:
        """The connection's timer: time out the wait in progress once its deadline is
        past; else fire again at that deadline (none when nothing waits)."""
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._timer_at >= self._deadline:
            # Armed for this wait's deadline (as the loop measures it when it fires).
            self._time_out(waiter)
        else:
            self._timer_at = self._deadline
            self._timer = asyncio.get_running_loop().call_at(self._deadline, self._check_deadline)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @staticmethod
    def _time_out(waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(TimeoutError("no data from the upstream in time"))


class Tunnel(Protocol):
    """What an upgraded connection feeds (`wardgate.gateway.websockets.WebSocketSession`)."""

    def from_upstream(self, data: bytes) -> None: ...

    def upstream_lost(self) -> None: ...

    def upstream_writable(self, writable: bool) -> None: ...


class UpstreamPool:
    """Keep-alive connections to one origin."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: bool,
        limit: int,
        keepalive: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        # TLS upstreams are verified against the system's trust store, by host name.
        self._ssl: ssl.SSLContext | None = None
        if tls:
            self._ssl = ssl_context or ssl.create_default_context()
        self._limit = limit
        self._keepalive = keepalive
        self._idle: list[UpstreamConnection] = []
        self._count = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def connections(self) -> int:
        """Open connections, idle and busy."""
        return self._count

    def idle_connection(self) -> UpstreamConnection | None:
        """A pooled connection still open and within its keep-alive (the most recently
        used), or None; idle ones past it are closed on the way."""
        idle = self._idle
        if idle:
            now = asyncio.get_running_loop().time()
            while idle:
                conn = idle.pop()
                if conn.open and conn.expires > now:
                    conn.reused = True
                    return conn
                conn.close()
        return None

    async def acquire(self, connect_seconds: float, *, fresh: bool = False) -> UpstreamConnection:
        """A pooled connection, or a new one (`fresh`: always a new one)."""
        loop = asyncio.get_running_loop()
        idle = self._idle
        if not fresh:
            pooled = self.idle_connection()
            if pooled is not None:
                return pooled
        if self._closed:
            raise UpstreamError("the gateway is shutting down")
        if self._count >= self._limit:
            deadline = loop.time() + connect_seconds
            while self._count >= self._limit:
                waiter = loop.create_future()
                self._waiters.append(waiter)
                try:
                    async with asyncio.timeout_at(deadline):
                        await waiter
                finally:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
                if not fresh and idle:
                    return await self.acquire(max(0.0, deadline - loop.time()))
            connect_seconds = max(0.0, deadline - loop.time())
        self._count += 1
        try:
            async with asyncio.timeout(connect_seconds):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(self),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                )
        except BaseException:
            self._count -= 1
            self._wake_waiter()
            raise
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection after its exchange: kept when reusable, else closed."""
        if self._closed or not conn.reusable():
            conn.close()
            return
        conn.rest()
        loop = asyncio.get_running_loop()
        conn.expires = loop.time() + self._keepalive
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._keepalive, self._sweep)
        self._wake_waiter()

    def forget(self, conn: UpstreamConnection) -> None:
        """Called once a connection is closed: its slot is free."""
        if conn._counted:
            conn._counted = False
            self._count -= 1
            self._wake_waiter()

    def close(self) -> None:
        """Close idle connections now, busy ones when released; refuse new requests."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        while self._idle:
            self._idle.pop().close()

    def _wake_waiter(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _sweep(self) -> None:
        self._sweeper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        keep = []
        for conn in self._idle:
            if conn.open and conn.expires > now:
                keep.append(conn)
            else:
                conn.close()
        self._idle = keep
        if keep:
            self._sweeper = loop.call_at(min(c.expires for c in keep), self._sweep)


class UpstreamPools:
    """The pools of one gateway process, one per origin."""

    def __init__(self, *, limit: int, keepalive: float) -> None:
        self._limit = limit
        self._keepalive = keepalive
        self._pools: dict[tuple[str, str, int, str], UpstreamPool] = {}

    def pool(self, scheme: str, host: str, port: int, ca_bundle: str | None = None) -> UpstreamPool:
        """The pool of an origin; with `ca_bundle` (PEM CA certificates), one whose TLS
        connections trust only those CAs (raises `ValueError` when it holds none)."""
        trust = hashlib.sha256(ca_bundle.encode()).hexdigest() if ca_bundle else ""
        key = (scheme, host, port, trust)
        pool = self._pools.get(key)
        if pool is None:
            context = upstream_tls_context(ca_bundle) if ca_bundle else None
            pool = self._pools[key] = UpstreamPool(
                host,
                port,
                tls=scheme == "https",
                limit=self._limit,
                keepalive=self._keepalive,
                ssl_context=context,
            )
        return pool

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()


def _transfer_codings(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """The codings of every `Transfer-Encoding` field of a response, lower case, in order."""
    return [
        coding.strip().lower()
        for name, value in headers
        if name.lower() == b"transfer-encoding"
        for coding in value.split(b",")
    ]
