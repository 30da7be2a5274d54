"""WebSocket sessions behind auth: the opening handshake's checks and the frame relay.

A path with `websocket` lets an authorised upgrade through (`HttpProxy.upgrade` sends the
handshake upstream on a connection of the upstream pool); once the upstream answers `101`,
the traffic server hands both connections to a `WebSocketSession`, which relays bytes both
ways unchanged until either side closes:

- frames are not decoded: masks, payloads and extensions (`permessage-deflate`,
  negotiated between the client and the upstream) pass as sent. Only frame headers are
  read (`FrameScanner`), so that the gateway knows where each frame ends: its own close
  frames go in between two frames, never inside one (RFC 6455 section 5.4 lets control
  frames come between the fragments of a message);
- a close frame from either side is passed on and its code noted; when one side's TCP
  connection ends, the other's is closed once what was sent to it is written;
- the gateway closes a session itself with a close frame to both sides, then waits up to
  `CLOSE_GRACE_SECONDS` for the close handshake before closing the connections: 1001
  (Going Away) when the gateway drains (SIGTERM) or the session was idle
  `idleTimeoutSeconds`; 4001 when the token that opened it expires (`closeOnExpiry`);
  1002 (Protocol Error) when a side breaks the framing (an unmasked client frame, a
  masked upstream frame, a fragmented or oversized control frame, a 64-bit length with
  its top bit set), after which nothing more of that side is relayed;
- a slow reader slows the writer: reading one side pauses while the other's send buffer
  is full.

Pure parts (the handshake checks, `FrameScanner`, `close_frame`) do no I/O.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import struct
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final, Literal, Protocol

from wardgate.gateway.errors import INVALID_WEBSOCKET_UPGRADE, GatewayError
from wardgate.gateway.exchange import Reply

if TYPE_CHECKING:
    from wardgate.gateway.metrics import GatewayMetrics
    from wardgate.gateway.upstream import UpstreamConnection

WEBSOCKET_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WEBSOCKET_VERSION: Final = "13"
CLOSE_GRACE_SECONDS: Final = 5.0
"""How long the gateway waits for the close handshake after sending its own close frames."""
GOING_AWAY: Final = 1001
PROTOCOL_ERROR: Final = 1002
TOKEN_EXPIRED_CLOSE: Final = 4001
"""The close code when the token that opened a session expires (4000-4999: private use,
RFC 6455 section 7.4.2; 4001 mirrors HTTP's 401)."""
# Bytes of a client's frames held before the upgrade is answered (read pauses above this).
HELD_LIMIT: Final = 64 * 1024

_OP_CLOSE: Final = 0x8
_MAX_CONTROL_PAYLOAD: Final = 125

Side = Literal["client", "upstream"]


def _tokens(values: Sequence[str]) -> list[str]:
    return [t.strip(" \t").lower() for value in values for t in value.split(",") if t.strip()]


def is_websocket_upgrade(headers: Headers) -> bool:
    """Whether a request asks for a WebSocket upgrade: `Upgrade: websocket` and `Connection`
    listing `upgrade` (anything less is a plain request whose `Upgrade` is ignored)."""
    upgrade = headers.getall("Upgrade", [])
    if not upgrade or "websocket" not in _tokens(upgrade):
        return False
    return "upgrade" in _tokens(headers.getall("Connection", []))


def check_handshake(method: str, version: tuple[int, int], has_body: bool, headers: Headers) -> str:
    """The client's `Sec-WebSocket-Key` of a valid opening handshake (RFC 6455 section
    4.2.1), else `invalid_websocket_upgrade` naming what is wrong."""

    def refuse(reason: str, extra: Mapping[str, str] | None = None) -> GatewayError:
        return GatewayError(
            INVALID_WEBSOCKET_UPGRADE,
            {"check": "websocket", "note": reason},
            dict(extra or {}),
        )

    if method != "GET":
        raise refuse(f"a WebSocket upgrade is a GET, not {method}")
    if version < (1, 1):
        raise refuse("a WebSocket upgrade needs HTTP/1.1")
    if has_body:
        raise refuse("a WebSocket upgrade has no body")
    versions = headers.getall("Sec-WebSocket-Version", [])
    if [v.strip() for v in versions] != [WEBSOCKET_VERSION]:
        raise refuse(
            "Sec-WebSocket-Version must be 13", {"Sec-WebSocket-Version": WEBSOCKET_VERSION}
        )
    keys = headers.getall("Sec-WebSocket-Key", [])
    if len(keys) != 1:
        raise refuse(f"{len(keys)} Sec-WebSocket-Key fields, one expected")
    key = keys[0].strip()
    try:
        decoded = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != 16:
        raise refuse("Sec-WebSocket-Key is not 16 bytes in base64")
    return key


def accept_value(key: str) -> str:
    """The `Sec-WebSocket-Accept` that answers a `Sec-WebSocket-Key`."""
    digest = hashlib.sha1(key.encode("ascii") + WEBSOCKET_GUID, usedforsecurity=False).digest()
    return base64.b64encode(digest).decode("ascii")


def check_upstream_answer(
    key: str, offered_protocols: Sequence[str], offered_extensions: Sequence[str], headers: Headers
) -> str | None:
    """None when the upstream's `101` answers the handshake sent to it; else what is
    wrong."""
    if "websocket" not in _tokens(headers.getall("Upgrade", [])):
        return "the 101 does not say Upgrade: websocket"
    accepts = headers.getall("Sec-WebSocket-Accept", [])
    if [a.strip() for a in accepts] != [accept_value(key)]:
        return "Sec-WebSocket-Accept does not answer the Sec-WebSocket-Key sent"
    chosen = _tokens(headers.getall("Sec-WebSocket-Protocol", []))
    offered = _tokens(offered_protocols)
    if len(chosen) > 1 or (chosen and chosen[0] not in offered):
        return "a subprotocol the client did not offer"
    offered_names = {e.split(";")[0].strip() for e in _tokens(offered_extensions)}
    for extension in _tokens(headers.getall("Sec-WebSocket-Extensions", [])):
        if extension.split(";")[0].strip() not in offered_names:
            return "an extension the client did not offer"
    return None


class Headers(Protocol):
    """What the checks read of headers (a `multidict` fits)."""

    def getall(self, key: str, default: list[str], /) -> list[str]: ...


def close_frame(code: int, reason: str, *, masked: bool) -> bytes:
    """A close frame (a client's frames are masked, a server's not: RFC 6455 5.1)."""
    payload = struct.pack("!H", code) + reason.encode("utf-8")[: _MAX_CONTROL_PAYLOAD - 2]
    if not masked:
        return bytes((0x80 | _OP_CLOSE, len(payload))) + payload
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x80 | _OP_CLOSE, 0x80 | len(payload))) + mask + body


class FramingError(Exception):
    """A side broke the WebSocket framing."""


class FrameScanner:
    """Frame boundaries in one direction of a session, read from the frame headers.

    `scan(data)` splits what arrived into pieces to pass on, each a frame's bytes or part
    of them; a close frame is collected whole (it is at most 131 bytes) so that its code
    can be read. A framing error stops the scan at the start of the bad frame's header
    (what came before is whole frames) and is kept in `error`."""

    __slots__ = ("_close", "_header", "_masked", "_remaining", "close_code", "closed", "error")

    def __init__(self, *, masked: bool) -> None:
        self._masked = masked
        self._header = bytearray()
        self._remaining = 0
        self._close: bytearray | None = None
        self.closed = False
        """Whether this direction carried a close frame."""
        self.close_code: int | None = None
        """The code of the first close frame (1005 when it had none)."""
        self.error: str | None = None

    @property
    def at_boundary(self) -> bool:
        """Whether what was scanned ends between two frames."""
        return not self._remaining and not self._header and self._close is None

    def scan(self, data: bytes) -> list[tuple[bytes, bool]]:
        """The pieces of `data`, each with whether a frame ends with it."""
        pieces: list[tuple[bytes, bool]] = []
        if self.error is not None:
            return pieces
        position = 0
        size = len(data)
        while position < size:
            if self._remaining:
                take = min(self._remaining, size - position)
                part = data[position : position + take] if take < size else data
                position += take
                self._remaining -= take
                if self._close is not None:
                    self._close += part
                    if not self._remaining:
                        pieces.append((self._end_close(), True))
                else:
                    pieces.append((part, not self._remaining))
                continue
            header = self._header
            try:
                needed = self._header_size(header)
                while len(header) < needed and position < size:
                    header.append(data[position])
                    position += 1
                    needed = self._header_size(header)
                if len(header) < needed:
                    break
                length = self._payload_length(header)
                opcode = header[0] & 0x0F
                if opcode & 0x8 and (length > _MAX_CONTROL_PAYLOAD or not header[0] & 0x80):
                    raise FramingError("a control frame over 125 bytes or fragmented")
            except FramingError as exc:
                self.error = str(exc)
                self._header = bytearray()
                return pieces
            self._header = bytearray()
            self._remaining = length
            if opcode == _OP_CLOSE:
                self._close = header
                if not length:
                    pieces.append((self._end_close(), True))
                continue
            pieces.append((bytes(header), not length))
        return pieces

    def _header_size(self, header: bytearray) -> int:
        if len(header) < 2:
            return 2
        second = header[1]
        if bool(second & 0x80) != self._masked:
            raise FramingError(
                "an unmasked frame from the client" if self._masked else "a masked frame upstream"
            )
        code = second & 0x7F
        extended = 2 if code == 126 else 8 if code == 127 else 0
        return 2 + extended + (4 if self._masked else 0)

    @staticmethod
    def _payload_length(header: bytearray) -> int:
        code = header[1] & 0x7F
        if code == 126:
            return int(struct.unpack_from("!H", header, 2)[0])
        if code == 127:
            length = int(struct.unpack_from("!Q", header, 2)[0])
            if length >> 63:
                raise FramingError("a 64-bit length with its top bit set")
            return length
        return code

    def _end_close(self) -> bytes:
        frame = bytes(self._close or b"")
        self._close = None
        self.closed = True
        start = self._header_size(bytearray(frame[:2]))
        payload = frame[start:]
        if self._masked and payload:
            mask = frame[start - 4 : start]
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        if self.close_code is None:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        return frame


class Endpoint(Protocol):
    """One side's connection as the session drives it (an `asyncio.Transport` fits)."""

    def write(self, data: bytes) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def is_closing(self) -> bool: ...

    def close(self) -> None:
        """Close once what was written is sent."""
        ...

    def abort(self) -> None: ...


class _Direction:
    """Bytes from one side to the other."""

    __slots__ = ("broken", "bytes", "dropping", "pending", "scanner", "sink", "source")

    def __init__(self, source: Side, *, masked: bool) -> None:
        self.source: Side = source
        self.scanner = FrameScanner(masked=masked)
        self.sink: Endpoint | None = None
        self.bytes = 0
        self.pending: bytes | None = None
        """The gateway's close frame, written at the next frame boundary."""
        self.dropping = False
        """After the gateway's close frame: frames are read (for the answer), not passed."""
        self.broken = False
        """The side broke the framing: nothing more of it is read."""


class WebSocketReply(Reply):
    """The upstream's `101`: the traffic server sends it, then hands both connections to
    `session`."""

    __slots__ = ("session", "upstream")

    def __init__(
        self, headers: Mapping[str, str], session: WebSocketSession, upstream: UpstreamConnection
    ) -> None:
        super().__init__(101, headers)
        self.session = session
        self.upstream = upstream


class WebSocketSession:
    """One upgraded connection pair, relayed until both sides are closed."""

    def __init__(
        self,
        *,
        route: str,
        idle_seconds: float,
        expires_at: float | None,
        metrics: GatewayMetrics | None,
    ) -> None:
        self.route = route
        self._idle_seconds = idle_seconds
        self._expires_at = expires_at
        self._metrics = metrics
        self._loop = asyncio.get_running_loop()
        self._up = _Direction("client", masked=True)
        """Client to upstream (a client's frames are masked)."""
        self._down = _Direction("upstream", masked=False)
        self._client: Endpoint | None = None
        self._upstream: Endpoint | None = None
        self._client_open = False
        self._upstream_open = False
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._started = 0.0
        self._last_active = 0.0
        self._timers: list[asyncio.TimerHandle] = []
        self.closed_by: str | None = None
        """`client`, `upstream` or `gateway`: who sent the first close frame (or closed)."""
        self.gateway_code: int | None = None
        self.gateway_reason: str | None = None

    # setup

    def start(
        self, client: Endpoint, upstream: Endpoint, client_early: bytes, upstream_early: bytes
    ) -> None:
        """Relay from now on; `*_early` are bytes each side sent before the switch."""
        self._client = client
        self._upstream = upstream
        self._up.sink = upstream
        self._down.sink = client
        self._client_open = self._upstream_open = True
        self._started = self._last_active = self._loop.time()
        if self._metrics is not None:
            self._metrics.websocket_opened()
        self._timers.append(self._loop.call_later(self._idle_seconds, self._check_idle))
        if self._expires_at is not None:
            delay = max(0.0, self._expires_at - time.time())
            self._timers.append(self._loop.call_later(delay, self._expired))
        if upstream_early:
            self.from_upstream(upstream_early)
        if client_early:
            self.from_client(client_early)

    async def wait(self) -> None:
        """Until both connections are closed."""
        await asyncio.shield(self._done)

    # data

    def from_client(self, data: bytes) -> None:
        self._relay(self._up, data)

    def from_upstream(self, data: bytes) -> None:
        self._relay(self._down, data)

    def _relay(self, direction: _Direction, data: bytes) -> None:
        self._last_active = self._loop.time()
        if direction.broken:
            return
        scanner = direction.scanner
        pieces = scanner.scan(data)
        sink = direction.sink
        if pieces and not direction.dropping and sink is not None and not sink.is_closing():
            if direction.pending is None:
                out = pieces[0][0] if len(pieces) == 1 else b"".join(p for p, _ in pieces)
                direction.bytes += len(out)
                sink.write(out)
            else:
                # Up to the end of the frame in progress, then the gateway's close frame.
                for piece, frame_ends in pieces:
                    direction.bytes += len(piece)
                    sink.write(piece)
                    if frame_ends:
                        self._write_pending(direction)
                        break
        if scanner.closed and self.closed_by is None:
            self.closed_by = direction.source
        if scanner.error is not None:
            self._framing_failed(direction, scanner.error)
        else:
            self._close_if_answered()

    def _write_pending(self, direction: _Direction) -> None:
        frame = direction.pending
        direction.pending = None
        direction.dropping = True
        sink = direction.sink
        # No second close frame after the side's own (passed on just before).
        if (
            frame is not None
            and sink is not None
            and not direction.scanner.closed
            and not sink.is_closing()
        ):
            sink.write(frame)

    def _close_if_answered(self) -> None:
        """After the gateway's close frames: close the connections once both sides have
        sent theirs."""
        if self.gateway_code is not None and self._up.scanner.closed and self._down.scanner.closed:
            self._close_both()

    # closing by the gateway

    def going_away(self, code: int, reason: str, *, grace: float = CLOSE_GRACE_SECONDS) -> None:
        """Close both sides with `code`: a close frame to each at its next frame boundary,
        then the connections once both answered or after `grace` seconds."""
        if self._done.done() or self.gateway_code is not None:
            return
        self.gateway_code = code
        self.gateway_reason = reason
        if self.closed_by is None:
            self.closed_by = "gateway"
        # Toward the client the gateway speaks as a server (unmasked), upstream as a
        # client (masked). A direction that carried a close frame already gets none.
        for direction, masked in ((self._down, False), (self._up, True)):
            if direction.dropping or direction.scanner.closed:
                continue
            direction.pending = close_frame(code, reason, masked=masked)
            if direction.scanner.at_boundary or direction.broken:
                self._write_pending(direction)
        self._timers.append(self._loop.call_later(grace, self._close_both))
        self._close_if_answered()

    def _framing_failed(self, direction: _Direction, reason: str) -> None:
        # What follows from that side cannot be framed: nothing more of it is read, and no
        # answer to the close frame is awaited from it. What was passed on ends with a
        # whole frame, so the other side still gets a close frame.
        direction.broken = True
        if self.closed_by is None:
            self.closed_by = direction.source
        self.going_away(PROTOCOL_ERROR, reason, grace=1.0)
        direction.scanner.closed = True
        self._close_if_answered()

    def _check_idle(self) -> None:
        if self._done.done():
            return
        idle_until = self._last_active + self._idle_seconds
        now = self._loop.time()
        if now < idle_until:
            self._timers.append(self._loop.call_at(idle_until, self._check_idle))
            return
        self.going_away(GOING_AWAY, "idle timeout")

    def _expired(self) -> None:
        self.going_away(TOKEN_EXPIRED_CLOSE, "token expired")

    def _close_both(self) -> None:
        if self._client is not None and self._client_open:
            self._client.close()
        if self._upstream is not None and self._upstream_open:
            self._upstream.close()
        # A connection that does not close in time (its buffer never drains) is aborted.
        self._timers.append(self._loop.call_later(CLOSE_GRACE_SECONDS, self._abort_both))

    def _abort_both(self) -> None:
        if self._client is not None and self._client_open:
            self._client.abort()
        if self._upstream is not None and self._upstream_open:
            self._upstream.abort()

    # the connections' events

    def client_lost(self) -> None:
        self._client_open = False
        if self.closed_by is None:
            self.closed_by = "client"
        if self._upstream is not None and self._upstream_open:
            self._upstream.close()
        self._maybe_done()

    def upstream_lost(self) -> None:
        self._upstream_open = False
        if self.closed_by is None:
            self.closed_by = "upstream"
        if self._client is not None and self._client_open:
            self._client.close()
        self._maybe_done()

    def client_writable(self, writable: bool) -> None:
        """The client's send buffer filled (False) or drained: pause or resume upstream."""
        if self._upstream is not None and self._upstream_open:
            if writable:
                self._upstream.resume_reading()
            else:
                self._upstream.pause_reading()

    def upstream_writable(self, writable: bool) -> None:
        if self._client is not None and self._client_open:
            if writable:
                self._client.resume_reading()
            else:
                self._client.pause_reading()

    def _maybe_done(self) -> None:
        if self._client_open or self._upstream_open or self._done.done():
            return
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._metrics is not None:
            self._metrics.websocket_closed(
                self.route,
                self.close_code_label(),
                self._loop.time() - self._started,
                self._up.bytes,
                self._down.bytes,
            )
        self._done.set_result(None)

    # what the request log and the metrics say

    @property
    def close_code(self) -> int | None:
        """The first close code sent: the gateway's, or the side's that closed first."""
        if self.closed_by == "gateway":
            return self.gateway_code
        if self.closed_by == "client":
            return self._up.scanner.close_code or self.gateway_code
        if self.closed_by == "upstream":
            return self._down.scanner.close_code or self.gateway_code
        return None

    def close_code_label(self) -> str:
        """The close code as a metric label: the codes RFC 6455 defines and the gateway's
        own as they are, `3xxx`/`4xxx` for the others (a bounded set of values)."""
        code = self.close_code
        if code is None:
            return "none"
        if 1000 <= code <= 1015 or code == self.gateway_code:
            return str(code)
        if 3000 <= code <= 4999:
            return f"{code // 1000}xxx"
        return "other"

    def summary(self) -> dict[str, object]:
        """The session's facts for the request log (no payload, no header, no token)."""
        return {
            "durationMs": round((self._loop.time() - self._started) * 1000.0, 3),
            "bytesFromClient": self._up.bytes,
            "bytesFromUpstream": self._down.bytes,
            "closeCode": self.close_code,
            "closedBy": self.closed_by,
        }
