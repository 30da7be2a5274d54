"""What the traffic server owns beyond the framing corpus: answers in order behind a slow
request, a client that goes away mid-body, large bodies streamed both ways with the size
limit, and refusals that close the connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re

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
