"""HTTP parsing attacks on raw sockets: request smuggling with conflicting `Content-Length`
and `Transfer-Encoding`, malformed framing, oversized heads, and slow clients (slowloris).

Each ambiguous request gets a clear 4xx (or the connection is closed), the upstream never
receives a request the client did not send as one, and nothing smuggled behind a refused
request is ever executed: the smuggled request always targets `/private/orders` without a
token, or a distinct public path the upstream would record.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource

import pytest

from tests.support import results
from tests.support.gateway import (
    CountingUpstream,
    RunningGateway,
    StartGateway,
    bearer,
    raw_exchange,
    seed_document,
    status_of,
)

SUITE = "HTTP parsing"
SMUGGLED = b"GET /public/smuggled HTTP/1.1\r\nHost: a\r\n\r\n"


def post(headers: bytes, body: bytes) -> bytes:
    return b"POST /public/x HTTP/1.1\r\nHost: a\r\n" + headers + b"\r\n" + body


# Requests with ambiguous framing: each must be refused with 400 (the smuggled request
# behind them never runs).
AMBIGUOUS: dict[str, bytes] = {
    "CL.TE": post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
    "TE.CL": post(
        b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
        b"2c\r\n" + SMUGGLED + b"\r\n0\r\n\r\n",
    ),
    "TE chunked, identity": post(
        b"Transfer-Encoding: chunked, identity\r\nContent-Length: 5\r\n", b"0\r\n\r\n"
    ),
    "TE identity only": post(b"Transfer-Encoding: identity\r\n", b"0\r\n\r\n" + SMUGGLED),
    "TE xchunked": post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n" + SMUGGLED),
    "TE chunked twice": post(
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED
    ),
    "TE space before colon": post(
        b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n" + SMUGGLED
    ),
    "TE obs-fold": post(
        b"Transfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n" + SMUGGLED
    ),
    "TE with vertical tab": post(b"Transfer-Encoding:\x0bchunked\r\n", b"0\r\n\r\n" + SMUGGLED),
    "TE on HTTP/1.0": (
        b"POST /public/x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        + SMUGGLED
    ),
    "two different Content-Length": post(
        b"Content-Length: 5\r\nContent-Length: 50\r\n", b"hello" + SMUGGLED
    ),
    "Content-Length list": post(b"Content-Length: 5, 50\r\n", b"hello" + SMUGGLED),
    "negative Content-Length": post(b"Content-Length: -1\r\n", SMUGGLED),
    "signed Content-Length": post(b"Content-Length: +5\r\n", b"hello" + SMUGGLED),
    "hex Content-Length": post(b"Content-Length: 0x5\r\n", b"hello" + SMUGGLED),
    "Content-Length with space inside": post(b"Content-Length: 1 0\r\n", b"hello" + SMUGGLED),
    "huge Content-Length": post(b"Content-Length: 99999999999999999999999\r\n", b"x"),
    "chunk size overflow": post(
        b"Transfer-Encoding: chunked\r\n", b"fffffffffffffffffff\r\nx\r\n0\r\n\r\n"
    ),
    "chunk size with junk": post(b"Transfer-Encoding: chunked\r\n", b"5x\r\nhello\r\n0\r\n\r\n"),
    "bare LF in chunk": post(b"Transfer-Encoding: chunked\r\n", b"5\nhello\n0\n\n" + SMUGGLED),
    "NUL in a header": b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n",
    "CR inside a header value": b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-A: a\rX-B: b\r\n\r\n",
    "header without a colon": b"GET /public/x HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
    "space in a header name": b"GET /public/x HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n",
    "HTTP/0.9 request": b"GET /private/orders\r\n\r\n",
    "HTTP/2 preface on HTTP/1": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "unknown version": b"GET /public/x HTTP/7.1\r\nHost: a\r\n\r\n",
}


@pytest.fixture
async def gateway(upstream: CountingUpstream, gateway_factory: StartGateway) -> RunningGateway:
    document = seed_document(
        upstream.url, limits={"maxHeaders": 50, "maxHeaderBytes": 4096, "maxTokenBytes": 2048}
    )
    document["paths"][1]["method"] = ["GET", "POST"]
    return await gateway_factory(document)


async def test_ambiguous_framing_is_refused_and_nothing_is_smuggled(
    gateway: RunningGateway, upstream: CountingUpstream
) -> None:
    failures: list[str] = []
    for name, data in AMBIGUOUS.items():
        before = len(upstream.seen)
        response = await raw_exchange(gateway.port, data)
        statuses = [int(s) for s in re.findall(rb"HTTP/1\.[01] (\d{3}) ", response)]
        if statuses not in ([400], [413], []):
            failures.append(f"{name}: answered {statuses}")
        elif len(upstream.seen) != before:
            failures.append(f"{name}: the upstream saw {upstream.seen[before:]}")
        else:
            results.record(SUITE, "ambiguous or malformed requests refused")
    assert failures == [], "\n".join(failures)
    assert upstream.seen == []


async def test_smuggling_into_a_protected_route_never_reaches_it(
    gateway: RunningGateway, upstream: CountingUpstream
) -> None:
    """A valid public request carrying a protected one in its body: the body is a body."""
    inner = b"GET /private/orders HTTP/1.1\r\nHost: a\r\n\r\n"
    framed = post(b"Content-Length: %d\r\n" % len(inner), inner)
    chunked = post(
        b"Transfer-Encoding: chunked\r\n",
        b"%x\r\n" % len(inner) + inner + b"\r\n0\r\n\r\n",
    )
    for data in (framed, chunked):
        response = await raw_exchange(
            gateway.port, data + b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        statuses = [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", response)]
        assert statuses == [200, 200]
    assert [s.path for s in upstream.seen] == ["/public/x", "/public/x"]
    assert upstream.protected_hits() == []
    results.record(SUITE, "ambiguous or malformed requests refused", 2)


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("60 headers (limit 50)", b"".join(b"X-H%d: v\r\n" % i for i in range(60))),
        ("a 5000-byte header (limit 4096)", b"X-Long: " + b"v" * 5000 + b"\r\n"),
        ("a 5000-byte header name", b"X" * 5000 + b": v\r\n"),
        ("a 5000-byte request target", None),
        ("a 5000-byte Authorization", b"Authorization: Bearer " + b"a" * 5000 + b"\r\n"),
        ("a 1 MiB head", b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 4000) for i in range(256))),
    ],
)
async def test_oversized_heads_are_refused(
    gateway: RunningGateway, upstream: CountingUpstream, name: str, head: bytes | None
) -> None:
    if head is None:
        data = b"GET /private/orders?" + b"q" * 5000 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    else:
        data = b"GET /private/orders HTTP/1.1\r\nHost: a\r\n" + head + b"\r\n"
    try:
        response = await raw_exchange(gateway.port, data)
    except ConnectionError:
        response = b""  # refused before the client finished sending
    assert status_of(response) in (400, 413, 414, 431, None), name
    assert upstream.seen == []
    # The gateway keeps serving.
    assert (await gateway.request("GET", "/private/orders", bearer())).status == 200
    results.record(SUITE, "ambiguous or malformed requests refused")


def _open_files() -> int:
    import os

    return len(os.listdir("/proc/self/fd"))


async def _served_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int | None:
    """Send `GET /health` on an open connection; the status of its answer."""
    writer.write(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: (\d+)", head)
        await reader.readexactly(int(length.group(1)) if length else 0)
    return status_of(head)


async def test_slow_clients_are_cut_off_and_do_not_starve_others(
    upstream: CountingUpstream, gateway_factory: StartGateway, long_run: bool
) -> None:
    """Slowloris: many connections each trickling a request head. The gateway must go on
    serving other clients meanwhile, and answer 408 and close each slow connection once
    `limits.headerTimeoutSeconds` has passed since its first byte (shortened here to keep
    the run fast), releasing their sockets; idle keep-alive connections, which send nothing,
    stay open (their limit is the keep-alive timeout, above load balancers' 60 s)."""
    timeout = 1.0
    gateway = await gateway_factory(
        seed_document(upstream.url, limits={"headerTimeoutSeconds": timeout})
    )
    server = gateway.runner.server
    assert server is not None
    # Two connections that are idle while the slow ones are cut: one never used yet, one
    # after a first request.
    idle = await asyncio.open_connection("127.0.0.1", gateway.port)
    reused = await asyncio.open_connection("127.0.0.1", gateway.port)
    assert await _served_on(*reused) == 200
    count = 400 if long_run else 100
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = min(count, (soft - _open_files()) // 3)
    files_before = _open_files()
    writers: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(b"GET /private/orders HTTP/1.1\r\nHost: a\r\n")
        readers.append(reader)
        writers.append(writer)
    opened = loop.time()

    async def trickle() -> None:
        # One header line per slow connection, over and over, while others are served.
        for round_number in range(1000):
            for writer in writers:
                if not writer.is_closing():
                    writer.write(b"X-%d: y\r\n" % round_number)
            await asyncio.sleep(0.1)

    trickling = asyncio.ensure_future(trickle())
    try:
        # Others are served while the slow clients hold their connections.
        for _ in range(20):
            answer = await gateway.request("GET", "/private/orders", bearer())
            assert answer.status == 200
        # Every slow connection is answered 408 and closed by the gateway.
        async with asyncio.timeout(timeout + 10):
            outcomes = await asyncio.gather(*(r.read() for r in readers), return_exceptions=True)
        elapsed = loop.time() - opened
        assert len(server.connections) <= 3  # the test client's, and the two idle ones
        # The idle connections outlived the slow ones and still serve.
        assert await _served_on(*idle) == 200
        assert await _served_on(*reused) == 200
    finally:
        trickling.cancel()
        for writer in [*writers, idle[1], reused[1]]:
            writer.close()
        await asyncio.gather(
            *(w.wait_closed() for w in [*writers, idle[1], reused[1]]), return_exceptions=True
        )
    for outcome in outcomes:
        if not isinstance(outcome, ConnectionError):
            assert isinstance(outcome, bytes)
            assert status_of(outcome) == 408
    # Cut within the timeout of their first byte (plus scheduling slack), long before the
    # keep-alive timeout.
    assert elapsed < timeout + 1.0, elapsed
    assert opened - started < timeout
    assert _open_files() <= files_before + 5
    assert upstream.protected_hits() == [s for s in upstream.seen if s.authorization]
    results.record(SUITE, "slow connections cut off", count)
    results.note(SUITE, slowloris_connections=count, slowloris_cut_seconds=round(elapsed, 2))


@pytest.mark.parametrize("reference", [False, True], ids=["traffic", "aiohttp-reference"])
async def test_a_slow_head_after_a_served_request_is_cut_too(
    upstream: CountingUpstream, gateway_factory: StartGateway, reference: bool
) -> None:
    """On a keep-alive connection the clock starts again at the next head's first byte (on
    the differential's aiohttp reference server too)."""
    timeout = 0.5
    gateway = await gateway_factory(
        seed_document(upstream.url, limits={"headerTimeoutSeconds": timeout}), reference=reference
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    loop = asyncio.get_running_loop()
    try:
        assert await _served_on(reader, writer) == 200
        # A second request in two parts within the timeout is served.
        writer.write(b"GET /health HTTP/1.1\r\n")
        await writer.drain()
        writer.write(b"Host: a\r\n\r\n")
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(int(re.search(rb"(?i)content-length: (\d+)", head)[1]))
        assert status_of(head) == 200
        writer.write(b"GET /health HTTP/1.1\r\nHost: a\r\n")
        started = loop.time()
        async with asyncio.timeout(timeout + 10):
            rest = await reader.read()
        elapsed = loop.time() - started
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert status_of(rest) == 408
    assert timeout * 0.9 <= elapsed < timeout + 1.0, elapsed
    results.record(SUITE, "slow connections cut off")
