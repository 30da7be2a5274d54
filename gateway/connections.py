"""Client connections: aiohttp's request handler with a time limit on reading a request head.

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

Cost on the hot path: one check after aiohttp parses the received bytes. A head that
arrives whole, as nearly every one does, schedules no timer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

logger = logging.getLogger("wardgate.gateway")

# No body, so no catalogue entry: nothing reached the pipeline, and there is no request ID.
_TIMEOUT_RESPONSE: Final = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
)


class HeadTimeoutHandler(RequestHandler):
    """A request handler that closes a connection whose request head takes longer than
    `header_timeout` seconds from its first byte."""

    __slots__ = ("_head_count", "_head_deadline", "_head_timeout", "_head_timer")

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = header_timeout
        self._head_deadline = 0.0
        """When the head being read must be complete; 0 when no head is being read."""
        self._head_count = 0
        """`_request_count` when that head began: once it moves on, the head is complete."""
        self._head_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        waiter = self._waiter
        # The handler waits for a head and these bytes did not complete one: they began or
        # continued a head. (Bytes that arrive while a request is handled are its body or a
        # pipelined head, which is timed from its next byte once the handler waits for it.)
        if waiter is None or waiter.done() or not data:
            return
        if self._head_deadline and self._head_count == self._request_count:
            return  # the head's clock is already running
        self._head_count = self._request_count
        self._head_deadline = deadline = self._loop.time() + self._head_timeout
        if self._head_timer is None:
            self._head_timer = self._loop.call_at(deadline, self._check_head)

    def _check_head(self) -> None:
        self._head_timer = None
        deadline = self._head_deadline
        if not deadline or self._force_close or self._close or self.transport is None:
            return
        if self._head_count != self._request_count:
            self._head_deadline = 0.0  # completed; a later head restarts the clock
            return
        if self._loop.time() < deadline:
            # Set by a newer head while an older head's timer was pending.
            self._head_timer = self._loop.call_at(deadline, self._check_head)
            return
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        logger.debug("request head not complete after %ss: closing", self._head_timeout)
        self.transport.write(_TIMEOUT_RESPONSE)
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)


class GatewayServer(web.Server):
    """aiohttp's low-level server with `HeadTimeoutHandler` connections."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        header_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return HeadTimeoutHandler(
            self, loop=self._loop, header_timeout=self._header_timeout, **self._kwargs
        )
