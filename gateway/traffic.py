"""The traffic port's HTTP/1.1 server: asyncio protocol + llhttp (httptools), no framework.

aiohttp's request handler and response objects cost about 20 µs of CPU per request
before the gateway's own code runs (docs/performance.md); this server parses with llhttp,
hands each request to `Gateway.respond` and writes the reply's bytes itself. aiohttp still
serves the admin port, fetches JWKS, and is the reference server of the differential
tests (`wardgate.gateway.reference`).

What it owns, per connection:
- keep-alive and pipelining: requests are answered one at a time, in the order received;
  a framing error answers every complete request before it, then one 400
  `malformed_request`, then closes (data after a `Connection: close` request is ignored);
- request bodies (`Content-Length` or chunked) streamed to the pipeline as they arrive,
  reading paused while more than `BODY_HIGH_WATER` bytes wait; `100 Continue` only when
  the pipeline asks for the body, and never to an HTTP/1.0 client;
- limits: `maxHeaderBytes` per line, `maxHeaders` fields, `maxHeadBytes` for the whole
  head (431 `header_too_large`); `headerTimeoutSeconds` from a head's first byte to its end
  (408 `request_timeout`, then close), `bodyTimeoutSeconds` between two reads of a body
  (the same 408, the upstream request aborted); idle keep-alive connections close after
  `keepAliveTimeoutSeconds` (75 s by default; empty lines between requests are no
  activity); a client that reads nothing of its answer for `sendTimeoutSeconds` is cut
  (and the upstream connection the answer streams from);
- versions: HTTP/1.x only (1.2 and above are read as 1.1); HTTP/0.9 and other majors are
  refused at once; bare LF line ends are accepted (RFC 9112 section 2.2); an `Upgrade` is
  not performed (the request is answered as a plain one, the next bytes are the next
  request), except a WebSocket upgrade that the pipeline answers with the upstream's
  `101`: then the connection becomes a `WebSocketSession`'s (`wardgate.gateway.websockets`)
  and no more HTTP is parsed on it. Bytes after a WebSocket upgrade request wait, unparsed,
  until it is answered;
- a client that closes its connection while its body is read is a client abort: one log
  line, status 499 in the request log, no error answer;
- draining: replies carry `Connection: close` once the gateway drains; `pre_shutdown`
  closes idle connections, `shutdown` waits for busy ones;
- TLS: the same connections behind the TLS listener's socket (`wardgate.gateway.tls`: the
  handshake is done before `connection_made`); each request carries the connection's
  `TlsSession` (SNI name, certificate) for the 421 check; with `tls.redirectHttp`, requests
  on the plain port are answered 308 to HTTPS without going through the pipeline.

The server is a `web.Server` only so that aiohttp's runner and sites can serve it (the
listening socket, `--listen-fd`, shutdown); none of aiohttp's request machinery runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Final, cast

import httptools
from aiohttp import web
from multidict import CIMultiDict

from wardgate.gateway.errors import (
    HEADER_TOO_LARGE,
    MALFORMED_REQUEST,
    REQUEST_TIMEOUT,
    GatewayError,
)
from wardgate.gateway.exchange import (
    CLIENT_ABORT_STATUS,
    SERVER_HEADER,
    ClientAborted,
    Reply,
    StreamBroken,
    status_line,
)
from wardgate.gateway.tls import TlsSession, session_of
from wardgate.gateway.websockets import (
    GOING_AWAY,
    HELD_LIMIT,
    WebSocketReply,
    WebSocketSession,
    is_websocket_upgrade,
)

if TYPE_CHECKING:  # the pipeline imports this module to build its runner
    from wardgate.gateway.app import Gateway, GatewayHolder

logger = logging.getLogger("wardgate.gateway")

BODY_HIGH_WATER: Final = 256 * 1024
# Requests parsed ahead of the one being answered (pipelining) before reading pauses.
PIPELINE_DEPTH: Final = 16

_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_SERVER_LINE: Final = f"Server: {SERVER_HEADER}\r\n".encode()
_CHUNK_END: Final = b"0\r\n\r\n"
_NO_BODY_STATUSES: Final = frozenset({204, 304})
_FRAMING_LOOKALIKES: Final = frozenset({b"transfer_encoding", b"content_length"})
_HTTP10: Final = (1, 0)
_HTTP11: Final = (1, 1)


class _ParseStop(Exception):
    """Raised from a parser callback to stop parsing (the refusal is on the connection)."""


class TrafficRequest:
    """One request as the traffic server received it (an `Incoming`)."""

    __slots__ = (
        "_chunks",
        "_connection",
        "_continue_sent",
        "_error",
        "_waiter",
        "complete",
        "content_length",
        "discard",
        "has_body",
        "head_bytes",
        "headers",
        "keep_alive",
        "method",
        "target",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        connection: TrafficConnection,
        method: str,
        target: str,
        headers: CIMultiDict[str],
        version: tuple[int, int],
        head_bytes: int,
        keep_alive: bool,
        framed: bool = True,
    ) -> None:
        self._connection = connection
        self.method = method
        self.target = target
        self.headers = headers
        self.version = version
        self.head_bytes = head_bytes
        self.keep_alive = keep_alive
        if framed:
            length = headers.get("Content-Length")
            self.content_length = int(length) if length is not None and length.isdigit() else None
            self.has_body = "Transfer-Encoding" in headers or bool(self.content_length)
        else:
            # The head has neither `Content-Length` nor `Transfer-Encoding` (the parser's
            # caller saw every field name): no body, nothing to look up.
            self.content_length = None
            self.has_body = False
        self.complete = not self.has_body
        """Whether the whole body has arrived."""
        self.discard = False
        """Set once the reply is sent: body bytes still arriving are dropped."""
        self._chunks: deque[bytes] = deque()
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._continue_sent = False
        self.upgrade = False
        """Whether the parser read an upgrade (`Connection: upgrade` and `Upgrade`): only
        then may the connection switch protocols."""

    @property
    def remote(self) -> str | None:
        return self._connection.peer

    @property
    def scheme(self) -> str:
        return "https" if self._connection.secure else "http"

    @property
    def tls(self) -> TlsSession | None:
        """The TLS connection's SNI name and certificate; None over plain HTTP."""
        return self._connection.tls

    # fed by the connection

    def feed(self, data: bytes) -> None:
        if self.discard:
            return
        self._chunks.append(data)
        self._connection.buffered(len(data))
        self._wake()

    def end(self) -> None:
        self.complete = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        if not self.complete:
            self._error = error
            self._wake()

    # read by the pipeline

    async def read(self) -> bytes:
        while not self.complete:
            await self._wait()
        return self._take()

    async def chunks(self, size: int) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                yield self._take()
            elif self.complete:
                return
            else:
                await self._wait()

    async def send_continue(self) -> None:
        if not self._continue_sent and self.version >= (1, 1) and not self.complete:
            self._continue_sent = True
            self._connection.write(_CONTINUE)

    def _take(self) -> bytes:
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._connection.consumed(len(data))
        return data

    async def _wait(self) -> None:
        self._raise_failure()
        connection = self._connection
        loop = connection.loop
        waiter = self._waiter = loop.create_future()
        # Between two reads of the body, at most `bodyTimeoutSeconds` (a stalled body
        # would hold the connection, and an upstream connection, for ever).
        seconds = connection.server.body_timeout
        timer = loop.call_later(seconds, self._timed_out, seconds)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        if not self._chunks:
            self._raise_failure()

    def _timed_out(self, seconds: float) -> None:
        if self.complete or self._error is not None:
            return
        logger.debug("request body stalled for %ss: closing", seconds)
        self.fail(GatewayError(REQUEST_TIMEOUT, {"seconds": seconds}))
        self._connection.body_timed_out(self)

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Refusal:
    """A framing error in the queue: answered in turn, then the connection closes."""

    __slots__ = ("error", "method", "reason", "target")

    def __init__(self, error: GatewayError, method: str, target: str) -> None:
        self.error = error
        self.method = method
        self.target = target
        # For the log: a fixed phrase (llhttp's, or the code), never bytes received.
        self.reason = str(error.detail.get("reason") or error.error.code)


class TrafficConnection(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: TrafficServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self.secure = False
        """Whether the connection came through the TLS listener."""
        self.tls: TlsSession | None = None
        self.parser = self._new_parser()
        self.queue: deque[TrafficRequest | _Refusal] = deque()
        self.parsing: TrafficRequest | None = None
        """The request whose body is being parsed."""
        self.task: asyncio.Task[None] | None = None
        """Answers the queue; lives while the connection does, waiting for requests (one
        task per connection rather than one per request)."""
        self.busy = False
        """Whether the task is answering (else it waits, or there is none yet)."""
        self._wakeup: asyncio.Future[None] | None = None
        self.stopped = False
        """No more bytes are parsed (after a framing error or a request that closes)."""
        self.closing = False
        """Close once the queue is answered (drain, shutdown)."""
        self.tunnel: WebSocketSession | None = None
        """The WebSocket session the connection was switched to."""
        self._held: bytearray | None = None
        """Bytes after a WebSocket upgrade request, kept until it is answered."""
        # the head being parsed
        self._url: list[bytes] = []
        self._fields: list[tuple[str, str]] = []
        """The head's fields, decoded as they arrive."""
        self._field_bytes = 0
        """The fields' size as `head_bytes` counts it (name, value and 4 for `: ` and CRLF)."""
        self._hosts = 0
        self._framed = False
        """Whether a field may frame a body (a name of `Content-Length`'s or
        `Transfer-Encoding`'s length): without one, the request needs no look-up of either."""
        self._lookalike = False
        """Whether a field is `Content_Length` or `Transfer_Encoding` (refused once the
        head is complete, after the checks that come before it)."""
        self._head_bytes = 0
        self._head_started = 0.0
        self._head_timer: asyncio.TimerHandle | None = None
        # The serving config's limits for the head being parsed, read once at its start
        # rather than through the server's properties for every field.
        self._max_headers = 0
        self._max_line_bytes = 0
        # flow control
        self._buffered = 0
        self._reading_paused = False
        self._writable = True
        self._drain_waiter: asyncio.Future[None] | None = None
        # idleness
        self._last_active = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    def _new_parser(self) -> httptools.HttpRequestParser:
        parser = httptools.HttpRequestParser(self)
        # RFC 9112 section 2.2: a recipient may accept a bare LF as a line end. Versions are
        # checked here (HTTP/1.x only, and 1.2+ read as 1.1) rather than refused by llhttp.
        # (llhttp's leniency covers fields and chunk lines; the request line is mended in
        # `data_received`. Its other line-end leniency would let a bare CR end a line.)
        parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True, lenient_version=True)
        return parser

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but are ones.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.secure = True
            self.tls = session_of(ssl_object)
        self.server.connection_opened(self)
        self._last_active = self.loop.time()
        self._idle_timer = self.loop.call_later(self.server.keep_alive_timeout, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connection_closed(self)
        if self.tunnel is not None:
            self.tunnel.client_lost()
        self.transport = None
        self.stopped = True
        for timer in (self._head_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        if self.parsing is not None:
            self.parsing.fail(ClientAborted("the client closed the connection"))
        self._wake()
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_exception(ConnectionResetError("the client closed the connection"))

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.from_client(data)
            return
        held = self._held
        if held is not None:
            held += data
            if len(held) > HELD_LIMIT:
                self._pause_reading()
            return
        if self.stopped:
            return
        if not self._head_started and self.parsing is None:
            # A request line at the start of `data` (the usual case) is found with one
            # `find`; leading empty lines take the general scan.
            first = data[:1]
            if first != b"\r" and first != b"\n":
                self._last_active = self.loop.time()
                end = data.find(b"\n")
            else:
                # Empty lines between requests (llhttp skips them without beginning a
                # message, so no head timer runs) are no activity: a client sending only
                # CRLFs is idle, and closed after the keep-alive timeout.
                if data.strip(b"\r\n"):
                    self._last_active = self.loop.time()
                end = _request_line_end(data)
            if end >= 0:
                if data.find(b" HTTP/", 0, end) < 0:
                    # HTTP/0.9 (`GET /path`, no version) or not HTTP: llhttp would wait.
                    self._framing_error(
                        GatewayError(MALFORMED_REQUEST, {"reason": "no HTTP version"})
                    )
                    return
                if data[end - 1 : end] != b"\r":
                    # A request line ended by a bare LF (RFC 9112 section 2.2 lets a
                    # recipient accept it; llhttp accepts it in fields only).
                    data = data[:end] + b"\r" + data[end:]
        else:
            self._last_active = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            # No upgrade is performed: the request was answered as a plain one, and what
            # follows it is the next request.
            offset = upgrade.args[0] if upgrade.args else len(data)
            self.parser = self._new_parser()
            rest = data[offset:]
            last = self.queue[-1] if self.queue else None
            if isinstance(last, TrafficRequest) and is_websocket_upgrade(last.headers):
                # The protocol of what follows is known once the upgrade is answered.
                last.upgrade = True
                self._held = bytearray(rest)
                return
            if rest and not self.stopped:
                self.data_received(rest)
            return
        except _ParseStop:
            pass
        except httptools.HttpParserError as exc:
            self._framing_error(GatewayError(MALFORMED_REQUEST, {"reason": _reason(exc)}))
        if self._head_started and not self.stopped:
            self._head_bytes += len(data)
            if self._head_bytes > self.server.max_head_bytes:
                self._framing_error(
                    GatewayError(HEADER_TOO_LARGE, {"limit": self.server.max_head_bytes})
                )

    def eof_received(self) -> bool:
        if self.tunnel is not None:
            return False  # a session ends with either side's connection
        # The client sent all it will: answer what was received, then close.
        self.stopped = True
        if self.parsing is not None:
            self.parsing.fail(ClientAborted("the client closed the connection"))
        if not self.busy and not self.queue:
            return False
        self.closing = True
        return True

    def pause_writing(self) -> None:
        self._writable = False
        if self.tunnel is not None:
            self.tunnel.client_writable(False)

    def resume_writing(self) -> None:
        self._writable = True
        if self.tunnel is not None:
            self.tunnel.client_writable(True)
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url = []
        self._fields = []
        self._field_bytes = 0
        self._hosts = 0
        self._framed = self._lookalike = False
        self._head_bytes = 0
        self._head_started = self.loop.time()
        gateway = self.server.gateway
        self._max_headers = gateway.max_headers
        self._max_line_bytes = gateway.max_line_bytes
        if self._head_timer is None:
            self._head_timer = self.loop.call_at(
                self._head_started + gateway.header_timeout, self._check_head
            )

    def on_url(self, url: bytes) -> None:
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        fields = self._fields
        if len(fields) >= self._max_headers:
            self._stop(GatewayError(HEADER_TOO_LARGE, {"limit": self._max_headers}))
        length = len(name)
        line = length + len(value)
        if line > self._max_line_bytes:  # name and value, as documented
            self._stop(GatewayError(HEADER_TOO_LARGE, {"limit": self._max_line_bytes}))
        self._field_bytes += line + 4
        if length == 4:
            if name.lower() == b"host":
                self._hosts += 1
        elif length == 14 or length == 17:  # the lengths of the framing fields
            self._framed = True
            if b"_" in name and name.lower() in _FRAMING_LOOKALIKES:
                self._lookalike = True
        # Decoded the way the proxy encodes them again: bytes pass unchanged. Trailing
        # whitespace is no part of a field value (RFC 9110 section 5.5).
        fields.append(
            (name.decode("latin-1"), value.rstrip(b" \t").decode("utf-8", "surrogateescape"))
        )

    def on_headers_complete(self) -> None:
        self._head_started = 0.0
        parser = self.parser
        url = self._url
        target_bytes = url[0] if len(url) == 1 else b"".join(url)
        if len(target_bytes) > self._max_line_bytes:
            self._stop(GatewayError(HEADER_TOO_LARGE, {"limit": self._max_line_bytes}))
        version = parser.get_http_version()
        if version == "1.1":
            http10 = False
        else:
            major, _, minor = version.partition(".")
            if major != "1":
                self._stop(GatewayError(MALFORMED_REQUEST, {"reason": f"HTTP/{version}"}))
            http10 = minor == "0"
        if self._lookalike:
            # Servers behind CGI-style gateways read `_` as `-`: this would frame the body
            # there, and not here.
            self._stop(GatewayError(MALFORMED_REQUEST, {"reason": "framing field with _"}))
        hosts = self._hosts
        if hosts != 1 and (hosts > 1 or not http10):
            # RFC 9112 section 3.2: exactly one Host in an HTTP/1.1 request.
            self._stop(GatewayError(MALFORMED_REQUEST, {"reason": f"{hosts} Host fields"}))
        request = TrafficRequest(
            self,
            parser.get_method().decode("latin-1"),
            target_bytes.decode("utf-8", "surrogateescape"),
            CIMultiDict(self._fields),
            _HTTP10 if http10 else _HTTP11,
            len(target_bytes) + 16 + self._field_bytes,
            parser.should_keep_alive(),
            self._framed,
        )
        self._fields = []
        if request.has_body:
            self.parsing = request
        queue = self.queue
        queue.append(request)
        if not self.busy:
            self._schedule()
        elif len(queue) > PIPELINE_DEPTH:
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        if self.parsing is not None:
            self.parsing.feed(body)

    def on_message_complete(self) -> None:
        request = self.parsing
        if request is not None:
            self.parsing = None
            request.end()
        last = self.queue[-1] if self.queue else None
        if isinstance(last, TrafficRequest) and not last.keep_alive:
            # Nothing after a request that closes the connection is read.
            self.stopped = True
            raise _ParseStop

    # parse failures

    def _stop(self, error: GatewayError) -> None:
        self._framing_error(error)
        raise _ParseStop

    def _framing_error(self, error: GatewayError) -> None:
        if self.stopped:
            return
        self.stopped = True
        self._head_started = 0.0
        request = self.parsing
        if request is not None:
            # The body being read breaks: its request fails with the error.
            self.parsing = None
            request.fail(error)
            return
        method = ""
        with contextlib.suppress(httptools.HttpParserError):
            method = self.parser.get_method().decode("latin-1")
        target = b"".join(self._url).decode("utf-8", "surrogateescape")[:256]
        self.queue.append(_Refusal(error, method, target))
        if not self.busy:
            self._schedule()

    def body_timed_out(self, request: TrafficRequest) -> None:
        """`request`'s body stalled: nothing more is read; the connection closes once the
        request is answered (its body is not complete)."""
        self.stopped = True
        if self.parsing is request:
            self.parsing = None

    def _check_head(self) -> None:
        self._head_timer = None
        started = self._head_started
        if not started or self.stopped:
            return
        deadline = started + self.server.header_timeout
        if self.loop.time() < deadline:
            self._head_timer = self.loop.call_at(deadline, self._check_head)
            return
        logger.debug("request head not complete after %ss: closing", self.server.header_timeout)
        self._framing_error(GatewayError(REQUEST_TIMEOUT, {"seconds": self.server.header_timeout}))

    def _check_idle(self) -> None:
        self._idle_timer = None
        if self.transport is None:
            return
        timeout = self.server.keep_alive_timeout
        idle_until = self._last_active + timeout
        now = self.loop.time()
        if self.busy or self._head_started:
            # Not idle: a request is answered or a head arrives (which has its own limit).
            self._idle_timer = self.loop.call_at(now + min(timeout, 1.0), self._check_idle)
        elif now < idle_until:
            self._idle_timer = self.loop.call_at(idle_until, self._check_idle)
        else:
            self.transport.close()

    # answering

    def _schedule(self) -> None:
        """Have the task answer the queue (start it, or wake it)."""
        self.busy = True
        if self.task is None:
            self.task = self.loop.create_task(self._serve())
            return
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _serve(self) -> None:
        """Answer queued requests in order until the connection closes (one coroutine for
        the connection's life: a request costs no coroutine of its own here)."""
        queue = self.queue
        try:
            while True:
                # Answer the queued requests; then wait for more, unless the connection ends.
                try:
                    while queue and self.transport is not None:
                        item = queue[0]
                        gateway = self.server.gateway
                        if isinstance(item, _Refusal):
                            admission = gateway.begin(item.method, item.target)
                            reply = gateway.refusal(item.error, admission)
                            await self._send(reply, None, close=True)
                            gateway.finish_malformed(
                                admission, reply.status, item.reason, self.peer
                            )
                            self._close()
                            return
                        gateway.in_flight += 1
                        try:
                            close = await self._answer(item, gateway)
                        finally:
                            gateway.in_flight -= 1
                        queue.popleft()
                        if not self._writable:
                            # The answer is not sent yet: the next one waits for it (a
                            # client that never reads is cut after the send timeout).
                            try:
                                await self._drain()
                            except ConnectionError:
                                self._close()
                                return
                        if self._reading_paused and len(queue) <= PIPELINE_DEPTH:
                            self._resume_reading()
                        if close:
                            self._close()
                            return
                    if self.closing or self.stopped or self.transport is None:
                        self._close()
                        return
                finally:
                    self.busy = False
                # Woken by a request, or by the connection's end (then the loop returns).
                wakeup = self._wakeup = self.loop.create_future()
                await wakeup
                self._wakeup = None
        finally:
            self.task = None
            self.busy = False

    async def _answer(self, request: TrafficRequest, gateway: Gateway) -> bool:
        """Answer one request with `gateway` (the serving config's); whether the
        connection must close after it."""
        if gateway.https_redirect_port is not None and not self.secure:
            reply, admission = gateway.redirect_to_https(request)
        else:
            reply, admission = await gateway.respond(request)
        if admission.aborted:
            gateway.finish(admission, CLIENT_ABORT_STATUS, self.peer)
            return True
        if isinstance(reply, WebSocketReply):
            try:
                await self._switch(reply, request)
            finally:
                gateway.finish(admission, reply.status, self.peer)
            return True
        close = admission.close or not request.keep_alive or gateway.draining or self.closing
        request.discard = True
        if not request.complete:
            # The body was not read to its end: where the next request starts is unknown
            # until it is, so the connection closes after this reply.
            close = True
        try:
            if reply.stream is None and reply.head:
                self._write_whole(reply, request, close)
            else:
                close = await self._send(reply, request, close=close) or close
        finally:
            gateway.finish(admission, reply.status, self.peer)
        held = self._held
        if held is not None:
            # An upgrade answered as a plain request: what followed it is HTTP again.
            self._held = None
            self._resume_reading()
            if held and not close and not self.stopped:
                self.data_received(bytes(held))
        return close

    async def _switch(self, reply: WebSocketReply, request: TrafficRequest) -> None:
        """Send the upstream's `101`, then relay the session until it ends."""
        session = reply.session
        upstream = reply.upstream
        transport = self.transport
        if not request.upgrade or transport is None or upstream.transport is None:
            # Only a request the parser read as an upgrade switches the connection.
            upstream.close()
            return
        lines = [status_line(101)]
        for name, value in reply.headers.items():
            lines.append(f"{name}: {value}\r\n".encode("utf-8", "surrogateescape"))
        lines.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        self.write(b"".join(lines))
        held, self._held = self._held, None
        self.tunnel = session
        upstream.tunnel = session
        early = b"".join(upstream.early)
        upstream.early.clear()
        self.server.websocket_opened(session)
        if self._idle_timer is not None:
            # The session has its own idle timeout; the connection's would only poll.
            self._idle_timer.cancel()
            self._idle_timer = None
        try:
            session.start(transport, upstream.transport, bytes(held or b""), early)
            if not upstream.open:
                session.upstream_lost()
            self._resume_reading()
            if self.server.gateway.draining:
                session.going_away(GOING_AWAY, "the gateway is shutting down")
            await session.wait()
        finally:
            self.server.websocket_closed(session)

    async def _send(self, reply: Reply, request: TrafficRequest | None, *, close: bool) -> bool:
        """Write a reply; True when the connection must close after it."""
        status = reply.status
        headers = reply.headers
        stream = reply.stream
        if stream is None and reply.head and request is not None:
            self._write_whole(reply, request, close)
            return close
        head_only = request is not None and request.method == "HEAD"
        lines = [reply.head or status_line(status)]
        append = lines.append
        if not reply.head:
            for name, value in reply.fixed:
                append(f"{name}: {value}\r\n".encode("utf-8", "surrogateescape"))
            if "Server" not in headers and not any(n == "Server" for n, _ in reply.fixed):
                append(_SERVER_LINE)
        for name, value in headers.items():
            append(f"{name}: {value}\r\n".encode("utf-8", "surrogateescape"))
        chunked = False
        if stream is None:
            if (
                not reply.head_has_length
                and status not in _NO_BODY_STATUSES
                and "Content-Length" not in headers
            ):
                append(b"Content-Length: %d\r\n" % len(reply.body))
        elif reply.length is not None:
            append(b"Content-Length: %d\r\n" % reply.length)
        elif request is not None and request.version >= (1, 1):
            append(b"Transfer-Encoding: chunked\r\n")
            chunked = True
        else:
            close = True  # an HTTP/1.0 client reads an unknown length to the close
        if close:
            append(b"Connection: close\r\n")
        elif request is not None and request.version < (1, 1):
            append(b"Connection: keep-alive\r\n")
        append(b"\r\n")
        if stream is None:
            if not head_only and reply.body:
                append(reply.body)
            self.write(b"".join(lines))
            return close
        if head_only:
            self.write(b"".join(lines))
            await _close_stream(stream)
            return close
        return await self._send_stream(b"".join(lines), stream, chunked=chunked) or close

    def _write_whole(self, reply: Reply, request: TrafficRequest, close: bool) -> None:
        """Write a whole body after a prepared head (a static answer, an error): the
        per-request headers, the length unless the head has it, the connection's."""
        headers = reply.headers
        lines = [reply.head]
        for name, value in headers.items():
            lines.append(f"{name}: {value}\r\n".encode("utf-8", "surrogateescape"))
        if (
            not reply.head_has_length
            and reply.status not in _NO_BODY_STATUSES
            and "Content-Length" not in headers
        ):
            lines.append(b"Content-Length: %d\r\n" % len(reply.body))
        if close:
            lines.append(b"Connection: close\r\n\r\n")
        elif request.version < _HTTP11:
            lines.append(b"Connection: keep-alive\r\n\r\n")
        else:
            lines.append(b"\r\n")
        if request.method != "HEAD":
            lines.append(reply.body)
        self.write(b"".join(lines))

    async def _send_stream(
        self, head: bytes, stream: AsyncIterator[bytes], *, chunked: bool
    ) -> bool:
        self.write(head)
        try:
            async for chunk in stream:
                if self.transport is None:
                    break
                if chunk:
                    self.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                    if not self._writable:
                        await self._drain()
            else:
                if chunked:
                    self.write(_CHUNK_END)
                return False
        except StreamBroken:
            return True
        except ConnectionError:
            pass
        finally:
            await _close_stream(stream)
        return True

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    async def _drain(self) -> None:
        if self.transport is None:
            raise ConnectionResetError("the client closed the connection")
        waiter = self._drain_waiter = self.loop.create_future()
        # A client that reads nothing for `sendTimeoutSeconds` is cut (it would hold the
        # connection, and the upstream connection its answer streams from, for ever).
        seconds = self.server.send_timeout
        timer = self.loop.call_later(seconds, self._send_timed_out, waiter, seconds)
        try:
            await waiter
        finally:
            timer.cancel()
            self._drain_waiter = None

    def _send_timed_out(self, waiter: asyncio.Future[None], seconds: float) -> None:
        if waiter.done():
            return
        logger.debug("the client read nothing for %ss: closing", seconds)
        waiter.set_exception(ConnectionResetError(f"the client read nothing for {seconds}s"))
        self.stopped = True
        if self.transport is not None:
            self.transport.abort()  # `close` would wait for the unread bytes to be sent

    def _close(self) -> None:
        self.stopped = True
        if self.transport is not None:
            self.transport.close()

    # flow control of request bodies

    def buffered(self, size: int) -> None:
        self._buffered += size
        if self._buffered > BODY_HIGH_WATER:
            self._pause_reading()

    def consumed(self, size: int) -> None:
        self._buffered -= size
        if (
            self._reading_paused
            and self._buffered <= BODY_HIGH_WATER // 2
            and len(self.queue) <= PIPELINE_DEPTH
        ):
            self._resume_reading()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    # shutdown

    def close_when_idle(self) -> None:
        """Close now when idle, else after the request being answered."""
        self.closing = True
        if not self.busy and not self._head_started:
            self._close()

    async def wait_closed(self, seconds: float | None) -> None:
        """Wait until the connection's requests are answered, at most `seconds`."""
        task = self.task
        if task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), seconds)
        if self.transport is not None:
            self.transport.abort()


async def _close_stream(stream: AsyncIterator[bytes]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


def _request_line_end(data: bytes) -> int:
    """Where the first request line of `data` ends (its LF), past leading empty lines; -1
    when it is not complete."""
    start = 0
    while data[start : start + 1] in (b"\r", b"\n"):
        start += 1
    return data.find(b"\n", start)


def _reason(exc: httptools.HttpParserError) -> str:
    text = str(exc)
    return text[:120] if text else type(exc).__name__


class TrafficServer(web.Server):
    """The traffic port's connections (a protocol factory for aiohttp's sites)."""

    def __init__(
        self, holder: GatewayHolder, *, unused_handler: Callable[[web.BaseRequest], object]
    ) -> None:
        # aiohttp's server is given a handler it never calls: connections are ours.
        super().__init__(unused_handler)  # type: ignore[arg-type]
        self.holder = holder
        self._open: dict[TrafficConnection, None] = {}
        self._sessions: dict[WebSocketSession, None] = {}

    # The serving config's (a new config applies from the next request or head on).

    @property
    def gateway(self) -> Gateway:
        return self.holder.current

    @property
    def max_line_bytes(self) -> int:
        return self.holder.current.max_line_bytes

    @property
    def max_headers(self) -> int:
        return self.holder.current.max_headers

    @property
    def max_head_bytes(self) -> int:
        return self.holder.current.max_head_bytes

    @property
    def header_timeout(self) -> float:
        return self.holder.current.header_timeout

    @property
    def keep_alive_timeout(self) -> float:
        return self.holder.current.keep_alive_timeout

    @property
    def body_timeout(self) -> float:
        return self.holder.current.body_timeout

    @property
    def send_timeout(self) -> float:
        return self.holder.current.send_timeout

    def __call__(self) -> TrafficConnection:  # type: ignore[override]
        return TrafficConnection(self)

    @property
    def connections(self) -> list[TrafficConnection]:  # type: ignore[override]
        return list(self._open)

    def connection_opened(self, connection: TrafficConnection) -> None:
        self._open[connection] = None

    def connection_closed(self, connection: TrafficConnection) -> None:
        self._open.pop(connection, None)

    def websocket_opened(self, session: WebSocketSession) -> None:
        self._sessions[session] = None

    def websocket_closed(self, session: WebSocketSession) -> None:
        self._sessions.pop(session, None)

    @property
    def websockets(self) -> list[WebSocketSession]:
        """The open WebSocket sessions."""
        return list(self._sessions)

    def going_away(self) -> None:
        """Close every WebSocket session with 1001 (Going Away): the gateway drains."""
        for session in list(self._sessions):
            session.going_away(GOING_AWAY, "the gateway is shutting down")

    def pre_shutdown(self) -> None:
        self.going_away()
        for connection in list(self._open):
            connection.close_when_idle()

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - aiohttp's signature
        await asyncio.gather(*(c.wait_closed(timeout) for c in list(self._open)))
        self._open.clear()
