"""What the traffic server owns beyond the framing corpus: answers in order behind a slow
request, a client that goes away mid-body, large bodies streamed both ways with the size
limit, and refusals that close the connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket

import pytest

from tests.support import results
from tests.support.framing import parse_responses
from tests.support.gateway import (
    CountingUpstream,
    RunningGateway,
    StartGateway,
    raw_exchange,
    seed_document,
)

SUITE = "traffic server"


async def _gateway(
    upstream: CountingUpstream, factory: StartGateway, **extra: object
) -> RunningGateway:
    document = seed_document(upstream.url, **extra)
    return await factory(document)


async def test_pipelined_answers_keep_their_order_behind_a_slow_request(
    upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    upstream.gate = asyncio.Event()
    gateway = await _gateway(upstream, gateway_factory)
    data = (
        b"GET /public/first/slow HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /public/third HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    exchange = asyncio.ensure_future(raw_exchange(gateway.port, data))
    async with asyncio.timeout(10):
        await upstream.arrived.wait()
    # The first request waits upstream; the two behind it are not answered before it.
    assert not exchange.done()
    upstream.gate.set()
    responses = parse_responses(await exchange, head=False)
    assert [r.status for r in responses] == [200, 200, 200]
    assert [json.loads(r.body).get("path") for r in responses] == [
        "/public/first/slow",
        None,
        "/public/third",
    ]


async def test_a_client_that_leaves_mid_body_is_a_client_abort(
    upstream: CountingUpstream, gateway_factory: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway = await _gateway(upstream, gateway_factory)
    _, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(
        b"POST /public/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000
    )
    await writer.drain()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    async with asyncio.timeout(10):
        while '"status":499' not in gateway.log_text():
            gateway.request_log.flush()
            await asyncio.sleep(0.02)  # polling the request log for its line
    ours = [r for r in caplog.records if r.name.startswith("wardgate")]
    assert not [r for r in ours if r.exc_info or r.levelno >= logging.ERROR]
    assert any("client closed the connection" in r.getMessage() for r in ours)
    assert "internal_error" not in gateway.log_text()
    assert upstream.seen == []
    results.record(SUITE, "client aborts logged as such")


async def test_large_bodies_stream_both_ways_within_the_limit(
    upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    gateway = await _gateway(upstream, gateway_factory, limits={"maxBodyBytes": 300_000})
    body = b"y" * 200_000
    chunked = b"".join(
        b"%x\r\n%b\r\n" % (len(body[i : i + 50_000]), body[i : i + 50_000])
        for i in range(0, len(body), 50_000)
    )
    data = (
        b"POST /public/big HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n" + chunked + b"0\r\n\r\n"
    )
    responses = parse_responses(await raw_exchange(gateway.port, data), head=False)
    assert [r.status for r in responses] == [200]
    too_big = (
        b"POST /public/big HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked
        + chunked
        + b"0\r\n\r\n"
    )
    responses = parse_responses(await raw_exchange(gateway.port, too_big), head=False)
    assert [r.status for r in responses] == [413]
    assert re.search(rb'"code":"body_too_large"', responses[0].body)
    assert [s.path for s in upstream.seen] == ["/public/big"]


async def test_idle_keep_alive_connections_close_after_the_keep_alive_timeout(
    upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    """`limits.keepAliveTimeoutSeconds` (75 s by default; shortened here): a connection idle
    that long is closed by the gateway, whether it served a request or none; one that keeps
    sending requests more often is never cut."""
    timeout = 0.5
    gateway = await _gateway(upstream, gateway_factory, limits={"keepAliveTimeoutSeconds": timeout})
    loop = asyncio.get_running_loop()

    async def closed_at(reader: asyncio.StreamReader) -> float:
        assert await reader.read() == b""  # the gateway closed it, sending nothing
        return loop.time()

    unused = await asyncio.open_connection("127.0.0.1", gateway.port)
    opened = loop.time()
    unused_closed = asyncio.ensure_future(closed_at(unused[0]))
    used = await asyncio.open_connection("127.0.0.1", gateway.port)
    busy = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        assert await _health_on(*used) == 200
        answered = loop.time()
        used_closed = asyncio.ensure_future(closed_at(used[0]))
        # A request every fifth of the timeout, for three timeouts: served on one connection.
        for _ in range(15):
            assert await _health_on(*busy) == 200
            await asyncio.sleep(timeout / 5)
        async with asyncio.timeout(10):
            unused_end, used_end = await asyncio.gather(unused_closed, used_closed)
    finally:
        for _, writer in (unused, used, busy):
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    # Closed once idle for the timeout (timers run on the loop: plus scheduling slack),
    # long before the default.
    assert timeout * 0.9 <= unused_end - opened < timeout + 1.0, unused_end - opened
    assert timeout * 0.9 <= used_end - answered < timeout + 1.0, used_end - answered
    results.record(SUITE, "idle keep-alive connections closed")


async def _health_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    """`GET /health` on an open connection; its status."""
    writer.write(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
        match = re.search(rb"(?i)content-length: (\d+)", head)
        assert match is not None
        await reader.readexactly(int(match[1]))
    return int(head.split(b" ", 2)[1])


class _RawUpstream:
    """A raw upstream on loopback: `start()` gives its URL, `_serve` handles a connection."""

    _server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


class _SilentUpstream(_RawUpstream):
    """A raw upstream that reads what it is sent and never answers: records, per
    connection, the bytes received and when the gateway closes it."""

    def __init__(self) -> None:
        self.received: list[bytearray] = []
        self.closed: list[asyncio.Event] = []
        self.connected = asyncio.Event()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received = bytearray()
        closed = asyncio.Event()
        self.received.append(received)
        self.closed.append(closed)
        self.connected.set()
        try:
            while data := await reader.read(65536):
                received += data
        except ConnectionError:
            pass
        finally:
            closed.set()
            writer.close()


@pytest.mark.parametrize(
    ("sent", "upstream_contacted"),
    [
        pytest.param(
            b"POST /public/m HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n",
            True,
            id="chunked, one chunk",
        ),
        pytest.param(
            b"POST /public/m HTTP/1.1\r\nHost: a\r\nContent-Length: 90000\r\n\r\n0123456789",
            True,
            id="streamed Content-Length, 10 bytes",
        ),
        pytest.param(
            b"POST /public/m HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n0123456789",
            False,
            id="small Content-Length, 10 bytes",
        ),
    ],
)
async def test_a_stalled_request_body_is_answered_408_and_its_upstream_request_aborted(
    gateway_factory: StartGateway, sent: bytes, upstream_contacted: bool
) -> None:
    """`limits.bodyTimeoutSeconds` (60 s by default; shortened here): a body that stops
    arriving gets 408 `request_timeout`, its connection is closed, and the upstream
    connection the body was streamed to is closed rather than pooled."""
    timeout = 0.3
    silent = _SilentUpstream()
    url = await silent.start()
    try:
        gateway = await gateway_factory(seed_document(url, limits={"bodyTimeoutSeconds": timeout}))
        loop = asyncio.get_running_loop()
        started = loop.time()
        received = await raw_exchange(gateway.port, sent, seconds=5)  # to the gateway's close
        elapsed = loop.time() - started
        responses = parse_responses(received, head=False)
        assert [r.status for r in responses] == [408]
        assert re.search(rb'"code":"request_timeout"', responses[0].body)
        assert re.search(rb"(?i)\r\nconnection: close\r\n", received)
        assert timeout * 0.9 <= elapsed < timeout + 2.0, elapsed
        if upstream_contacted:
            assert len(silent.received) == 1
            assert silent.received[0].startswith(b"POST /public/m ")
            async with asyncio.timeout(5):
                await silent.closed[0].wait()  # aborted, not returned to the pool
        else:
            assert silent.received == []
    finally:
        await silent.stop()
    results.record(SUITE, "stalled request bodies timed out")


async def test_a_slow_body_that_keeps_arriving_is_not_cut_by_the_body_timeout(
    upstream: CountingUpstream, gateway_factory: StartGateway
) -> None:
    """The body timeout bounds the time between two reads, not the whole body."""
    timeout = 0.4
    gateway = await _gateway(upstream, gateway_factory, limits={"bodyTimeoutSeconds": timeout})
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(
            b"POST /public/slow-body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n"
        )
        for _ in range(8):  # three timeouts in all, a chunk every fifth of one
            writer.write(b"5\r\nhello\r\n")
            await writer.drain()
            await asyncio.sleep(timeout / 5)
        writer.write(b"0\r\n\r\n")
        async with asyncio.timeout(10):
            received = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert [r.status for r in parse_responses(received, head=False)] == [200]


class _FloodingUpstream(_RawUpstream):
    """A raw upstream that answers every connection with a 64 MB body, written as fast as
    the gateway takes it; `closed` is set when the gateway closes the connection."""

    def __init__(self) -> None:
        self.connections = 0
        self.closed = asyncio.Event()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        ended: asyncio.Future[bytes] | None = None
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (64 << 20))
            ended = asyncio.ensure_future(reader.read())  # b"" once the gateway closes
            block = b"z" * 65536
            while not ended.done():
                writer.write(block)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if ended is not None:
                ended.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await ended
            self.closed.set()
            writer.close()


async def test_a_client_that_never_reads_its_answer_is_cut_after_the_send_timeout(
    gateway_factory: StartGateway,
) -> None:
    """`limits.sendTimeoutSeconds` (60 s by default; shortened here): a client that asks
    for a large answer and reads none of it loses its connection, and the upstream
    connection the answer streams from is closed rather than held."""
    timeout = 0.3
    flooding = _FloodingUpstream()
    url = await flooding.start()
    client = socket.socket()
    try:
        gateway = await gateway_factory(seed_document(url, limits={"sendTimeoutSeconds": timeout}))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(client, ("127.0.0.1", gateway.port))
        await loop.sock_sendall(client, b"GET /public/big HTTP/1.1\r\nHost: a\r\n\r\n")
        async with asyncio.timeout(10):
            await flooding.closed.wait()  # the gateway let go of the upstream connection
        # The client connection is gone too: what was buffered, then the end (or a reset).
        async with asyncio.timeout(10):
            with contextlib.suppress(ConnectionError):
                while await loop.sock_recv(client, 1 << 20):
                    pass
    finally:
        client.close()
        await flooding.stop()
    assert flooding.connections == 1
    results.record(SUITE, "clients that never read cut")


async def test_pipelined_answers_wait_for_a_client_that_reads_nothing(
    gateway_factory: StartGateway, upstream: CountingUpstream
) -> None:
    """A client that pipelines requests for large answers and reads none is cut after the
    send timeout: the answers do not pile up in the gateway's memory meanwhile."""
    timeout = 0.3
    gateway = await _gateway(upstream, gateway_factory, limits={"sendTimeoutSeconds": timeout})
    loop = asyncio.get_running_loop()
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setblocking(False)
    try:
        await loop.sock_connect(client, ("127.0.0.1", gateway.port))
        # Each answer is small, the requests many: the write buffer fills with answers.
        request = b"GET /public/" + b"p" * 8000 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
        with contextlib.suppress(ConnectionError):
            for _ in range(400):
                await loop.sock_sendall(client, request)
        async with asyncio.timeout(10):
            with contextlib.suppress(ConnectionError):
                while await loop.sock_recv(client, 1 << 20):
                    pass
    finally:
        client.close()
    # Cut before all were answered (each answer echoes its 8 KB path).
    assert len(upstream.seen) < 400


@pytest.mark.parametrize("answered_first", [False, True], ids=["fresh", "after a request"])
async def test_empty_lines_between_requests_do_not_keep_a_connection_open(
    upstream: CountingUpstream, gateway_factory: StartGateway, answered_first: bool
) -> None:
    """llhttp skips empty lines before a request line without beginning a message, so no
    head timer runs for them: a client that sends only CRLFs is idle, and is closed after
    `limits.keepAliveTimeoutSeconds` like one that sends nothing."""
    timeout = 0.5
    gateway = await _gateway(
        upstream,
        gateway_factory,
        limits={"keepAliveTimeoutSeconds": timeout, "headerTimeoutSeconds": timeout},
    )
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        if answered_first:
            assert await _health_on(reader, writer) == 200
        started = loop.time()
        closed = asyncio.ensure_future(reader.read())
        async with asyncio.timeout(timeout * 10):
            while not closed.done():  # an empty line every fifth of the timeout
                with contextlib.suppress(ConnectionError):
                    writer.write(b"\r\n")
                    await writer.drain()
                await asyncio.wait([closed], timeout=timeout / 5)
        assert closed.result() == b""  # closed by the gateway, nothing sent
        elapsed = loop.time() - started
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert timeout * 0.9 <= elapsed < timeout + 1.0, elapsed
    results.record(SUITE, "empty lines are no keep-alive activity")
