"""Request framing rules that hold before any route is looked at, shared by the traffic
server and the decision path (RFC 9112; where nginx and HAProxy differ, the stricter).

- `CONNECT` is refused (405 `unsupported_method`) and the connection closed: the gateway
  opens no tunnels, and the bytes after a `CONNECT` are no request of the client's.
- `Transfer-Encoding` must be exactly `chunked` (the final and only coding). When
  `chunked` is not the final coding the body's end is unknown: 400 `malformed_request`
  (the parser's verdict, and HAProxy's); when other codings precede it (`gzip, chunked`),
  501 `unsupported_transfer_coding` (nginx's answer; HAProxy's is 422). Either way the
  connection closes.
- An HTTP/1.0 request with `Transfer-Encoding` is refused, 400 `malformed_request`, and
  the connection closes (RFC 9112 section 6.1: its framing is faulty; nginx refuses it
  too, HAProxy answers it and closes).
- The whole head (request line and fields) is bounded by `limits.maxHeadBytes`
  (431 `header_too_large`), besides the per-line and field-count limits.
"""

from __future__ import annotations

from typing import Final

from wardgate.gateway.errors import (
    BODY_TOO_LARGE,
    HEADER_TOO_LARGE,
    MALFORMED_REQUEST,
    UNSUPPORTED_METHOD,
    UNSUPPORTED_TRANSFER_CODING,
    ErrorCode,
    GatewayError,
)

TUNNEL_METHODS: Final = frozenset({"CONNECT"})

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
FRAMING_HEADERS: Final = HOP_BY_HOP_HEADERS | {"content-length"}
"""Fields that frame a message or its connection: the gateway writes them, never a config."""

# Refusals after which the rest of the connection's bytes cannot be trusted to start a
# request (or are a body nobody wants): the connection is closed after the answer.
CLOSING_ERRORS: Final[frozenset[ErrorCode]] = frozenset(
    {
        UNSUPPORTED_METHOD,
        UNSUPPORTED_TRANSFER_CODING,
        HEADER_TOO_LARGE,
        MALFORMED_REQUEST,
        BODY_TOO_LARGE,
    }
)


def check_framing(
    method: str,
    minor_version: int,
    transfer_encoding: str | None,
    head_bytes: int,
    max_head_bytes: int,
) -> bool:
    """Raise the request's framing refusal, if any; True when the connection must close
    after the answer although the request is served (no such case today)."""
    if head_bytes > max_head_bytes:
        raise GatewayError(HEADER_TOO_LARGE, {"limit": max_head_bytes, "headBytes": head_bytes})
    if method in TUNNEL_METHODS:
        raise GatewayError(UNSUPPORTED_METHOD, {"method": method})
    if transfer_encoding is not None:
        if minor_version == 0:
            raise GatewayError(MALFORMED_REQUEST, {"reason": "Transfer-Encoding on HTTP/1.0"})
        if transfer_encoding.strip().lower() != "chunked":
            codings = [c.strip().lower() for c in transfer_encoding.split(",")]
            error = UNSUPPORTED_TRANSFER_CODING if codings[-1] == "chunked" else MALFORMED_REQUEST
            raise GatewayError(error, {"transferEncoding": transfer_encoding[:64]})
    return False
