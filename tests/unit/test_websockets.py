"""The WebSocket relay's pure parts: frame boundaries whatever the reads' sizes, close codes,
the opening handshake's checks and the upstream answer's."""

from __future__ import annotations

import itertools
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from wardgate.gateway.errors import GatewayError
from wardgate.gateway.websockets import (
    FrameScanner,
    WebSocketSession,
    accept_value,
    check_handshake,
    check_upstream_answer,
    close_frame,
    is_websocket_upgrade,
)


def frame(opcode: int, payload: bytes, *, masked: bool, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        header = struct.pack("!BB", first, mask_bit | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


frames = st.lists(
    st.one_of(
        st.tuples(st.sampled_from([0x0, 0x1, 0x2]), st.integers(0, 70_000)),
        st.tuples(st.sampled_from([0x9, 0xA]), st.integers(0, 125)),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(frames=frames, masked=st.booleans(), cuts=st.lists(st.integers(0, 300_000), max_size=12))
def test_boundaries_do_not_depend_on_how_the_bytes_arrive(
    frames: list[tuple[int, int]], masked: bool, cuts: list[int]
) -> None:
    stream = b"".join(frame(op, b"x" * size, masked=masked) for op, size in frames)
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    scanner = FrameScanner(masked=masked)
    passed = b""
    ends = 0
    for start, end in itertools.pairwise(points):
        for piece, frame_ends in scanner.scan(stream[start:end]):
            passed += piece
            ends += frame_ends
    assert passed == stream
    assert ends == len(frames)
    assert scanner.at_boundary
    assert scanner.error is None


@pytest.mark.parametrize("masked", [True, False])
def test_a_close_frame_is_passed_whole_with_its_code_read(masked: bool) -> None:
    data = frame(0x1, b"hello", masked=masked) + frame(
        0x8, struct.pack("!H", 4321) + b"bye", masked=masked
    )
    scanner = FrameScanner(masked=masked)
    pieces = [scanner.scan(data[i : i + 1]) for i in range(len(data))]
    assert b"".join(p for batch in pieces for p, _ in batch) == data
    assert scanner.closed
    assert scanner.close_code == 4321
    assert close_frame(1001, "going away", masked=masked)[:1] == b"\x88"
    reread = FrameScanner(masked=masked)
    reread.scan(close_frame(1001, "going away", masked=masked))
    assert reread.close_code == 1001


@pytest.mark.parametrize(
    ("data", "masked", "reason"),
    [
        (frame(0x1, b"x", masked=False), True, "unmasked"),
        (frame(0x1, b"x", masked=True), False, "masked"),
        (frame(0x9, b"x" * 126, masked=True), True, "control"),
        (frame(0x9, b"x", masked=True, fin=False), True, "control"),
        (b"\x82\xff" + b"\x80" + b"\x00" * 7 + b"mask", True, "64-bit"),
    ],
)
def test_framing_errors_stop_at_the_bad_header(data: bytes, masked: bool, reason: str) -> None:
    good = frame(0x2, b"fine", masked=masked)
    scanner = FrameScanner(masked=masked)
    pieces = scanner.scan(good + data + good)
    assert b"".join(p for p, _ in pieces) == good
    assert scanner.error is not None
    assert reason in scanner.error
    assert scanner.at_boundary


def handshake(**fields: str) -> CIMultiDict[str]:
    headers = CIMultiDict(
        {
            "Connection": "keep-alive, Upgrade",
            "Upgrade": "WebSocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        }
    )
    for name, value in fields.items():
        name = name.replace("_", "-")
        if value:
            headers[name] = value
        else:
            headers.pop(name, None)
    return headers


def test_the_opening_handshake_checks() -> None:
    assert is_websocket_upgrade(handshake())
    assert not is_websocket_upgrade(handshake(Connection="keep-alive"))
    assert not is_websocket_upgrade(handshake(Upgrade="h2c"))
    assert check_handshake("GET", (1, 1), False, handshake()) == "dGhlIHNhbXBsZSBub25jZQ=="
    refused = [
        ("POST", (1, 1), False, handshake()),
        ("GET", (1, 0), False, handshake()),
        ("GET", (1, 1), True, handshake()),
        ("GET", (1, 1), False, handshake(Sec_WebSocket_Version="8")),
        ("GET", (1, 1), False, handshake(Sec_WebSocket_Key="")),
        ("GET", (1, 1), False, handshake(Sec_WebSocket_Key="c2hvcnQ=")),
    ]
    for method, version, body, headers in refused:
        with pytest.raises(GatewayError) as error:
            check_handshake(method, version, body, headers)
        assert error.value.error.code == "invalid_websocket_upgrade"


def with_field(headers: CIMultiDict[str], name: str, value: str) -> CIMultiDict[str]:
    copy = CIMultiDict(headers)
    copy[name] = value
    return copy


def test_the_upstream_answer_checks() -> None:
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    # RFC 6455 section 1.3's example.
    assert accept_value(key) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    answer = CIMultiDict({"Upgrade": "websocket", "Sec-WebSocket-Accept": accept_value(key)})
    assert check_upstream_answer(key, [], [], answer) is None
    assert check_upstream_answer(key, [], [], with_field(answer, "Upgrade", "h2c")) is not None
    other = accept_value("b3RoZXIga2V5IDEyMzQ1Ng==")
    wrong = with_field(answer, "Sec-WebSocket-Accept", other)
    assert check_upstream_answer(key, [], [], wrong) is not None
    chat = with_field(answer, "Sec-WebSocket-Protocol", "chat")
    assert check_upstream_answer(key, ["chat, superchat"], [], chat) is None
    assert check_upstream_answer(key, ["superchat"], [], chat) is not None
    deflate = with_field(answer, "Sec-WebSocket-Extensions", "permessage-deflate")
    offered = ["permessage-deflate; client_max_window_bits"]
    assert check_upstream_answer(key, [], offered, deflate) is None
    assert check_upstream_answer(key, [], [], deflate) is not None


class Sink:
    """An endpoint that keeps what the session writes to it."""

    def __init__(self) -> None:
        self.data = b""
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:
        self.data += data

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def frames_of(data: bytes, *, masked: bool) -> list[tuple[int, bytes]]:
    scanner = FrameScanner(masked=masked)
    out: list[tuple[int, bytes]] = []
    current = b""
    for piece, ends in scanner.scan(data):
        current += piece
        if ends:
            out.append((current[0] & 0x0F, current))
            current = b""
    assert scanner.at_boundary
    return out


async def test_the_gateway_close_waits_for_the_frame_in_progress() -> None:
    session = WebSocketSession(route="/ws", idle_seconds=60, expires_at=None, metrics=None)
    client, upstream = Sink(), Sink()
    session.start(client, upstream, b"", b"")
    large = frame(0x2, b"y" * 100_000, masked=False)
    session.from_upstream(large[:40_000])
    session.going_away(1001, "the gateway is shutting down")
    # Upstream-bound: at a boundary, so the (masked) close goes at once.
    assert [op for op, _ in frames_of(upstream.data, masked=True)] == [0x8]
    # Client-bound: in the middle of a frame, so nothing is injected yet.
    assert client.data == large[:40_000]
    session.from_upstream(large[40_000:] + frame(0x1, b"after", masked=False))
    received = frames_of(client.data, masked=False)
    assert [op for op, _ in received] == [0x2, 0x8]
    assert received[0][1] == large
    assert struct.unpack("!H", received[1][1][2:4])[0] == 1001
    # Both answer with their close frames: the connections are closed.
    assert not client.closed
    session.from_client(frame(0x8, struct.pack("!H", 1001), masked=True))
    session.from_upstream(frame(0x8, struct.pack("!H", 1001), masked=False))
    assert client.closed
    assert upstream.closed
    session.client_lost()
    session.upstream_lost()
    await session.wait()
    assert session.summary()["closeCode"] == 1001
    assert session.summary()["closedBy"] == "gateway"


async def test_a_slow_reader_pauses_the_other_side() -> None:
    session = WebSocketSession(route="/ws", idle_seconds=60, expires_at=None, metrics=None)
    client, upstream = Sink(), Sink()
    session.start(client, upstream, b"", b"")
    session.client_writable(False)
    assert upstream.paused
    session.client_writable(True)
    assert not upstream.paused
    session.upstream_writable(False)
    assert client.paused
    session.client_lost()
    session.upstream_lost()
    await session.wait()
