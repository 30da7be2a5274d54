"""Client connections of the aiohttp reference server (`wardgate.gateway.reference`):
aiohttp's request handler with a time limit on reading a request head. (The traffic port is
served by `wardgate.gateway.traffic`, which has the same limit.)

aiohttp bounds an idle connection by its keep-alive timeout, which must stay above the
idle timeout of the load balancers in front (60 s for most), but a client that sends a head
one byte at a time is bounded by nothing shorter (slowloris). `limits.headerTimeoutSeconds`
is that shorter bound, like nginx's `client_header_timeout` and Envoy's
`request_headers_timeout`: it runs from the first byte of a request head to the end of the
head, and when it passes the gateway answers 408 and closes the connection.

The clock starts at the first byte rather than at the connection's opening or at the end of
the previous response: a connection on which nothing is sent is idle, not slow, and stays
under the keep-alive timeout (load balancers open connections ahead of requests and keep
them idle). Body reads are the integration's business (the proxy's timeouts).

It serves only the differential tests, so its cost (a timer per head) does not matter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

logger = logging.getLogger("wardgate.gateway")

# No body, so no catalogue entry: nothing reached the pipeline, and there is no request ID.
_TIMEOUT_RESPONSE: Final = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
)


Malformed = Callable[[str, str | None], web.StreamResponse]
"""`Gateway.refuse_malformed`: the catalogue answer (and one log line) for a request the
parser refused, from a fixed reason and the peer."""

# aiohttp's fixed message for `limits.maxHeaders` (the only parser error without a class).
_TOO_MANY_HEADERS: Final = "Too many headers received"


def parser_refusal_reason(exc: BaseException | None) -> str:
    """A fixed reason for a parser error. The exception's own text is never used: it
    quotes the offending bytes, which may be an `Authorization` header."""
    if isinstance(exc, LineTooLong):
        return "header_too_large"
    if isinstance(exc, BadHttpMessage) and exc.message == _TOO_MANY_HEADERS:
        return "too_many_headers"
    if exc is None:
        return "unknown"
    # The class name (`InvalidHeader`, `BadStatusLine`, `TransferEncodingError`...) says
    # what was wrong without a byte of the request.
    return type(exc).__name__


class HeadTimeoutHandler(RequestHandler):
    """A request handler that closes a connection whose request head takes longer than
    `header_timeout` seconds from its first byte, and answers what the parser refuses with
    a catalogue error instead of aiohttp's plain text and traceback.

    It reads none of aiohttp's private state: `ReferenceServer` tells it when a head is
    complete (its request reaches the handler) and when that request is done."""

    __slots__ = (
        "_clock",
        "_head_deadline",
        "_head_timeout",
        "_head_timer",
        "_in_request",
        "_malformed",
    )

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        header_timeout: float,
        malformed: Malformed | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._clock = loop
        self._malformed = malformed
        self._head_timeout = header_timeout
        self._head_deadline = 0.0
        """When the head being read must be complete; 0 when no head is being read."""
        self._in_request = False
        """A request is being handled: bytes now are its body or a pipelined head."""
        self._head_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Between requests, bytes begin or continue a head (a pipelined head that arrived
        # during a request is timed from its next byte, if it is not complete by then).
        if self._in_request or not data or self._head_deadline:
            return
        self._head_deadline = deadline = self._clock.time() + self._head_timeout
        if self._head_timer is None:
            self._head_timer = self._clock.call_at(deadline, self._check_head)

    def head_complete(self) -> None:
        """A request's head was parsed whole: its handler runs."""
        self._head_deadline = 0.0
        self._in_request = True

    def request_done(self) -> None:
        """The handler has answered; the next bytes begin the next head."""
        self._in_request = False

    def _check_head(self) -> None:
        self._head_timer = None
        deadline = self._head_deadline
        transport = self.transport
        if not deadline or self._in_request or transport is None or transport.is_closing():
            return
        if self._clock.time() < deadline:
            # Set by a newer head while an older head's timer was pending.
            self._head_timer = self._clock.call_at(deadline, self._check_head)
            return
        logger.debug("request head not complete after %ss: closing", self._head_timeout)
        transport.write(_TIMEOUT_RESPONSE)
        self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's error path (parser refusals, a failing handler): never its log line,
        which quotes the request's bytes at ERROR level with a traceback."""
        if request.writer.output_size > 0:
            raise ConnectionError("the response has started: the connection is closed")
        if status == 400 and self._malformed is not None:
            response = self._malformed(parser_refusal_reason(exc), request.remote)
        else:
            # Not reached with `reference.handle`, which answers its own failures; kept
            # without the exception's text for any other handler.
            logger.error(
                "connection handler error: status %s, %s",
                status,
                type(exc).__name__ if exc is not None else "no exception",
            )
            response = web.Response(status=status)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        # aiohttp's "Unhandled exception" and similar lines carry the exception, whose text
        # may quote request bytes: the class name only.
        exc = kw.get("exc_info")
        logger.error(
            "connection handler: %s (%s)",
            args[0] if args else "error",
            type(exc).__name__ if isinstance(exc, BaseException) else "no exception",
        )

    def log_debug(self, *args: Any, **kw: Any) -> None:
        if self.debug:
            logger.debug("connection handler: %s", args[0] if args else "")

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)


class ReferenceServer(web.Server):
    """aiohttp's low-level server with `HeadTimeoutHandler` connections."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        header_timeout: float,
        malformed: Malformed | None = None,
        **kwargs: Any,
    ) -> None:
        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            connection = request.protocol
            if not isinstance(connection, HeadTimeoutHandler):  # pragma: no cover
                return await handler(request)
            connection.head_complete()
            try:
                return await handler(request)
            finally:
                connection.request_done()

        super().__init__(handle, **kwargs)
        self._header_timeout = header_timeout
        self._malformed = malformed
        self._handler_options = kwargs
        """What aiohttp's server passes to each connection's handler (keep-alive, limits)."""

    def __call__(self) -> RequestHandler:
        return HeadTimeoutHandler(
            self,
            loop=asyncio.get_running_loop(),
            header_timeout=self._header_timeout,
            malformed=self._malformed,
            **self._handler_options,
        )
