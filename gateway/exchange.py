"""What a traffic server hands to the pipeline for one request, and what it gets back.

A server presents each request as an `Incoming` (its head, and its body to read or stream)
and sends the `Reply` the pipeline returns: status, headers, and a body given whole or as
a stream. The traffic server (`wardgate.gateway.traffic`) and the aiohttp reference server
(`wardgate.gateway.reference`) are the two implementations.

An integration (a static response or the HTTP proxy) is an object with
`async respond(request, exchange) -> Reply`. It adds `exchange.response_headers` (the
request ID, CORS) to its reply, and sets `exchange.code` when it fails after the reply has
started, so that the request log and the metrics still see the failure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from http import HTTPStatus
from types import MappingProxyType
from typing import Final, Protocol

from multidict import CIMultiDict, CIMultiDictProxy

NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})
SERVER_HEADER: Final = "wardgate"
"""The `Server` of the gateway's own answers (and of upstream answers that have none):
no framework and no version, which would tell a scanner which advisories to try."""
# Logged for a request whose client went away while sending its body (nginx's figure).
CLIENT_ABORT_STATUS: Final = 499


class ClientAborted(Exception):
    """The client closed its connection while its request body was being read."""


class StreamBroken(Exception):
    """A streamed reply failed after its head was sent: the client connection must close,
    so that the client sees a truncated response rather than a complete-looking one."""


class Incoming(Protocol):
    """One request as a traffic server received it."""

    @property
    def method(self) -> str: ...

    @property
    def target(self) -> str:
        """The request target as received (origin or absolute form)."""
        ...

    @property
    def headers(self) -> CIMultiDictProxy[str] | CIMultiDict[str]: ...

    @property
    def version(self) -> tuple[int, int]: ...

    @property
    def remote(self) -> str | None: ...

    @property
    def scheme(self) -> str: ...

    @property
    def content_length(self) -> int | None: ...

    @property
    def head_bytes(self) -> int:
        """The size of the head as received (request line and fields)."""
        ...

    @property
    def has_body(self) -> bool: ...

    async def read(self) -> bytes:
        """The whole body. Raises `ClientAborted`, or a `GatewayError` for bad framing."""
        ...

    def chunks(self, size: int) -> AsyncIterator[bytes]:
        """The body in parts as they arrive (same errors as `read`)."""
        ...

    async def send_continue(self) -> None:
        """Send `100 Continue` (the caller checked that the client asked for it)."""
        ...


class Reply:
    """An answer: status, headers, and a body given whole (`body`) or streamed (`stream`,
    of `length` bytes when known).

    `fixed` are headers known before the request (a static response's, an error's
    `Content-Type`); `head` is the status line and those headers already encoded, and
    `head_has_length` says whether it ends with the body's `Content-Length`: the traffic
    server writes `head` as is and adds `headers`, the per-request ones. A relayed
    upstream answer has a `head` and no `fixed`: its fields are decoded only when another
    server needs them (`all_headers`)."""

    __slots__ = (
        "body",
        "fixed",
        "head",
        "head_has_length",
        "headers",
        "length",
        "status",
        "stream",
    )

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        body: bytes = b"",
        stream: AsyncIterator[bytes] | None = None,
        length: int | None = None,
        *,
        fixed: tuple[tuple[str, str], ...] = (),
        head: bytes = b"",
        head_has_length: bool = False,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.stream = stream
        self.length = length
        self.fixed = fixed
        self.head = head
        self.head_has_length = head_has_length

    def all_headers(self) -> CIMultiDict[str]:
        """The fixed and the per-request headers together."""
        fixed = self.fixed
        if not fixed and self.head:
            fixed = head_fields(self.head)
        headers: CIMultiDict[str] = CIMultiDict(fixed)
        headers.extend(self.headers)
        return headers


class Exchange:
    """The state of one request after routing and auth."""

    __slots__ = (
        "authority",
        "claim_headers",
        "code",
        "method",
        "path",
        "query",
        "request_id",
        "response_headers",
    )

    def __init__(
        self,
        request_id: str,
        method: str,
        path: str,
        query: str,
        response_headers: dict[str, str],
    ) -> None:
        self.request_id = request_id
        self.method = method
        self.path = path
        """The normalised path: the one matched, authorised and sent upstream."""
        self.query = query
        """The raw query string, without `?`."""
        self.response_headers = response_headers
        self.claim_headers: Mapping[str, str] = NO_HEADERS
        """Verified claims to forward upstream as headers."""
        self.code: str | None = None
        self.authority: str | None = None
        """The `host[:port]` the request was routed by, as sent: the absolute-form
        target's authority, else `Host` (what `X-Forwarded-Host` tells the upstream)."""


class Integration(Protocol):
    """What a route does once the request is allowed."""

    async def respond(self, request: Incoming, exchange: Exchange) -> Reply:
        """Answer the request."""
        ...


def encode_head(status: int, fields: Iterable[tuple[str, str]]) -> bytes:
    """A response's status line and header fields, encoded (no final empty line)."""
    lines = [status_line(status)]
    for name, value in fields:
        lines.append(f"{name}: {value}\r\n".encode("utf-8", "surrogateescape"))
    return b"".join(lines)


def head_fields(head: bytes) -> tuple[tuple[str, str], ...]:
    """The header fields of an encoded head (`encode_head`'s inverse)."""
    fields = []
    for line in head.split(b"\r\n")[1:]:
        if line:
            name, _, value = line.partition(b": ")
            fields.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))
    return tuple(fields)


def status_line(status: int) -> bytes:
    """`HTTP/1.1 200 OK` and its line end."""
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        line = f"HTTP/1.1 {status} {phrase}\r\n".encode()
    return line


_STATUS_LINES: Final[dict[int, bytes]] = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus
}
