"""The proxy's HTTP/1.1 client against scripted loopback upstreams: reuse, framing
(Content-Length, chunked, until close, HEAD, 1xx), the stale keep-alive race, the pool
limit, idle expiry and broken responses; then the race and a broken response through
a running gateway."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wardgate.gateway.app import GatewayRunner, build_app, server_options
from wardgate.gateway.config import parse_config
from wardgate.gateway.loading import LoadedConfig
from wardgate.gateway.requestlog import RequestLog
from wardgate.gateway.upstream import (
    UpstreamConnection,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamPool,
)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
GET = b"GET / HTTP/1.1\r\nHost: upstream\r\n\r\n"
WAIT = 5.0

Reply = Callable[[int, int], bytes | None]
"""(connection number, request number on it) -> bytes to send, or None to close."""


@dataclass
class Scripted:
    """A loopback upstream that answers each request with scripted bytes."""

    reply: Reply
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    pools: list[UpstreamPool] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        self.connections += 1
        number = self.connections
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                served += 1
                answer = self.reply(number, served)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Reply], Awaitable[Scripted]]]:
    servers: list[asyncio.Server] = []
    upstreams: list[Scripted] = []

    async def _start(reply: Reply) -> Scripted:
        upstream = Scripted(reply)
        upstreams.append(upstream)
        server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
        servers.append(server)
        upstream.port = server.sockets[0].getsockname()[1]
        return upstream

    yield _start
    for upstream in upstreams:
        for pool in upstream.pools:
            pool.close()
        for writer in upstream.writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    for server in servers:
        server.close()
        await server.wait_closed()


def pool_for(upstream: Scripted, *, limit: int = 8) -> UpstreamPool:
    pool = UpstreamPool("127.0.0.1", upstream.port, tls=False, limit=limit, keepalive=30.0)
    upstream.pools.append(pool)
    return pool


async def exchange(
    pool: UpstreamPool, request: bytes = GET, *, head: bool = False
) -> tuple[UpstreamConnection, bytes]:
    conn = await pool.acquire(WAIT)
    conn.send(request, None, head_request=head)
    await conn.read_head(WAIT)
    body = await conn.read_body(WAIT)
    return conn, body


async def test_keep_alive_connection_is_reused(
    scripted: Callable[..., Awaitable[Scripted]],
) -> None:
    upstream = await scripted(lambda c, n: OK)
    pool = pool_for(upstream)
    for _ in range(3):
        conn, body = await exchange(pool)
        assert (conn.status, body) == (200, b"ok")
        pool.release(conn)
    assert upstream.connections == 1
    assert pool.connections == 1
    pool.close()
    assert pool.connections == 0


async def test_chunked_and_until_close_bodies(scripted: Callable[..., Awaitable[Scripted]]) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    upstream = await scripted(lambda c, n: chunked)
    pool = pool_for(upstream)
    conn, body = await exchange(pool)
    assert body == b"abcde"
    assert conn.reusable()
    pool.release(conn)

    until_close = await scripted(lambda c, n: b"HTTP/1.1 200 OK\r\n\r\nuntil close")
    closing_pool = pool_for(until_close)
    conn = await closing_pool.acquire(WAIT)
    conn.send(GET, None, head_request=False)
    await conn.read_head(WAIT)
    assert not conn.keep_alive
    # The scripted server closes only when the next request fails to come: ask it to.
    assert conn.transport is not None
    conn.transport.write_eof()
    assert await conn.read_body(WAIT) == b"until close"
    assert not conn.reusable()
    closing_pool.release(conn)
    assert closing_pool.connections == 0


async def test_head_response_ends_with_its_head(
    scripted: Callable[..., Awaitable[Scripted]],
) -> None:
    def reply(connection: int, number: int) -> bytes:
        if number == 1:
            return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
        return OK

    upstream = await scripted(reply)
    pool = pool_for(upstream)
    conn, body = await exchange(pool, b"HEAD / HTTP/1.1\r\nHost: u\r\n\r\n", head=True)
    assert (conn.status, body) == (200, b"")
    assert dict(conn.headers)[b"Content-Length"] == b"100"
    pool.release(conn)
    conn, body = await exchange(pool)
    assert body == b"ok"
    assert upstream.connections == 1


async def test_interim_responses_are_skipped(scripted: Callable[..., Awaitable[Scripted]]) -> None:
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    upstream = await scripted(lambda c, n: early + OK)
    conn, body = await exchange(pool_for(upstream))
    assert (conn.status, body) == (200, b"ok")
    assert [name for name, _ in conn.headers] == [b"Content-Length"]


async def test_stale_pooled_connection_raises_disconnected(
    scripted: Callable[..., Awaitable[Scripted]],
) -> None:
    # Answers the first request of each connection; closes on the second, unanswered.
    upstream = await scripted(lambda c, n: OK if n == 1 else None)
    pool = pool_for(upstream)
    conn, _ = await exchange(pool)
    pool.release(conn)
    reused = await pool.acquire(WAIT)
    assert reused is conn
    assert reused.reused
    reused.send(GET, None, head_request=False)
    with pytest.raises(UpstreamDisconnected):
        await reused.read_head(WAIT)
    reused.close()
    fresh = await pool.acquire(WAIT, fresh=True)
    assert fresh is not conn
    assert not fresh.reused


async def test_pool_limit_queues_requests(scripted: Callable[..., Awaitable[Scripted]]) -> None:
    upstream = await scripted(lambda c, n: OK)
    pool = pool_for(upstream, limit=1)
    first = await pool.acquire(WAIT)
    waiting = asyncio.ensure_future(pool.acquire(WAIT))
    first.send(GET, None, head_request=False)
    await first.read_head(WAIT)
    await first.read_body(WAIT)
    pool.release(first)
    second = await waiting
    assert second is first
    with pytest.raises(TimeoutError):
        await pool.acquire(0.05)
    assert upstream.connections == 1


async def test_expired_idle_connection_is_not_reused(
    scripted: Callable[..., Awaitable[Scripted]],
) -> None:
    upstream = await scripted(lambda c, n: OK)
    pool = pool_for(upstream)
    conn, _ = await exchange(pool)
    pool.release(conn)
    conn.expires = 0.0
    other, _ = await exchange(pool)
    assert other is not conn
    assert not conn.open
    assert upstream.connections == 2


async def test_invalid_response_is_an_upstream_error(
    scripted: Callable[..., Awaitable[Scripted]],
) -> None:
    upstream = await scripted(lambda c, n: b"SPDY/9 banana\r\n\r\n")
    pool = pool_for(upstream)
    conn = await pool.acquire(WAIT)
    conn.send(GET, None, head_request=False)
    with pytest.raises(UpstreamError, match="invalid response"):
        await conn.read_head(WAIT)
    assert not conn.open


def _self_signed() -> tuple[bytes, bytes]:
    """A certificate for 127.0.0.1, and its key (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "upstream")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


async def test_tls_upstream_is_verified(tmp_path: Path) -> None:
    cert, key = _self_signed()
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    upstream = Scripted(lambda c, n: OK)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    trusting = UpstreamPool(
        "127.0.0.1",
        port,
        tls=True,
        limit=4,
        keepalive=30.0,
        ssl_context=ssl.create_default_context(cadata=cert.decode()),
    )
    default = UpstreamPool("127.0.0.1", port, tls=True, limit=4, keepalive=30.0)
    try:
        conn, body = await exchange(trusting)
        assert (conn.status, body) == (200, b"ok")
        # The system's trust store does not know this certificate.
        with pytest.raises(ssl.SSLCertVerificationError):
            await default.acquire(WAIT)
    finally:
        trusting.close()
        conn.close()
        for writer in upstream.writers:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
        server.close()
        await server.wait_closed()


async def _gateway(upstream: Scripted) -> tuple[GatewayRunner, str]:
    document = {
        "paths": [
            {
                "method": "*",
                "path": "/open/*",
                "integration": {"type": "http_proxy", "server": "up"},
            }
        ],
        "servers": {"up": f"http://127.0.0.1:{upstream.port}"},
    }
    loaded = LoadedConfig(config=parse_config(document), secrets={})
    runner = GatewayRunner(
        build_app(loaded, request_log=RequestLog(None)), **server_options(loaded)
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def test_gateway_retries_a_stale_connection_and_maps_broken_responses(
    scripted: Callable[..., Awaitable[Scripted]],
) -> None:
    upstream = await scripted(lambda c, n: OK if n == 1 else None)
    runner, url = await _gateway(upstream)
    try:
        async with aiohttp.ClientSession() as client:
            for _ in range(3):
                async with client.get(url + "/open/a") as response:
                    assert response.status == 200
                    assert await response.read() == b"ok"
            # A POST with a body is not retried: the upstream may have acted on it.
            async with client.post(url + "/open/a", data=b"x") as posted:
                assert posted.status == 502
            assert upstream.connections == 3
            assert upstream.requests[-1].startswith(b"POST /open/a HTTP/1.1\r\n")
    finally:
        await runner.cleanup()


async def test_gateway_maps_an_invalid_response_to_502(
    scripted: Callable[..., Awaitable[Scripted]],
) -> None:
    upstream = await scripted(lambda c, n: b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
    runner, url = await _gateway(upstream)
    try:
        async with (
            aiohttp.ClientSession() as client,
            client.get(url + "/open/a") as response,
        ):
            assert response.status == 502
            assert (await response.json())["error"]["code"] == "upstream_unreachable"
    finally:
        await runner.cleanup()


async def _through_gateway(upstream: Scripted, request: bytes) -> bytes:
    """Send raw `request` to a gateway in front of `upstream`; every byte it answers."""
    runner, url = await _gateway(upstream)
    try:
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), WAIT)
        writer.close()
        return answer
    finally:
        await runner.cleanup()


def _get(path: str = "/open/a", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".encode()


def _head_of(answer: bytes) -> bytes:
    return answer.partition(b"\r\n\r\n")[0].lower()


# What an upstream sends that a relayed answer must never carry: each is refused (502) or
# relayed without the part that would change what the client reads.
BROKEN_UPSTREAM_ANSWERS = {
    "head over the limit": b"HTTP/1.1 200 OK\r\n"
    + b"".join(b"X-Filler-%d: %s\r\n" % (i, b"a" * 1000) for i in range(100))
    + b"Content-Length: 2\r\n\r\nok",
    "interim response with a body": b"HTTP/1.1 150 Weird\r\nContent-Length: 5\r\n\r\nEVIL!" + OK,
    "interim response chunked": b"HTTP/1.1 103 Early Hints\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nEVIL!\r\n0\r\n\r\n" + OK,
    "gzip then chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    b"2\r\nok\r\n0\r\n\r\n",
    "identity": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nok",
    "chunked twice": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("case", list(BROKEN_UPSTREAM_ANSWERS))
async def test_a_broken_upstream_answer_is_a_502(
    scripted: Callable[..., Awaitable[Scripted]], case: str
) -> None:
    upstream = await scripted(lambda c, n: BROKEN_UPSTREAM_ANSWERS[case])
    answer = await _through_gateway(upstream, _get())
    assert answer.startswith(b"HTTP/1.1 502 "), answer[:300]
    assert b'"upstream_unreachable"' in answer
    assert b"EVIL" not in answer
    assert b"filler" not in answer.lower()


async def test_trailers_are_never_merged_into_the_head(
    scripted: Callable[..., Awaitable[Scripted]],
) -> None:
    upstream = await scripted(
        lambda c, n: (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
            b"0\r\nSet-Cookie: session=evil\r\nLocation: http://evil.example/\r\n\r\n"
        )
    )
    answer = await _through_gateway(upstream, _get())
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"set-cookie" not in _head_of(answer)
    assert b"location" not in _head_of(answer)
    assert b"hello" in answer.partition(b"\r\n\r\n")[2]


async def test_bytes_after_a_complete_answer_are_not_a_second_answer(
    scripted: Callable[..., Awaitable[Scripted]],
) -> None:
    second = b"HTTP/1.1 201 Created\r\nX-Second: yes\r\nContent-Length: 5\r\n\r\nevil!"
    upstream = await scripted(lambda c, n: OK + second)
    runner, url = await _gateway(upstream)
    try:
        async with aiohttp.ClientSession() as client:
            for _ in range(2):
                async with client.get(url + "/open/a") as response:
                    assert response.status == 200
                    assert "X-Second" not in response.headers
                    assert await response.read() == b"ok"
        # The connection that carried the extra bytes was not reused.
        assert upstream.connections == 2
    finally:
        await runner.cleanup()


async def test_no_content_answers_carry_no_false_length(
    scripted: Callable[..., Awaitable[Scripted]],
) -> None:
    """A 204 never carries `Content-Length` (RFC 9110 section 8.6); the answer to HEAD of a
    chunked resource names no length rather than `0`."""
    no_content = await scripted(
        lambda c, n: b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"
    )
    answer = await _through_gateway(no_content, _get())
    assert answer.startswith(b"HTTP/1.1 204 ")
    assert b"content-length" not in _head_of(answer)
    chunked = await scripted(lambda c, n: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    answer = await _through_gateway(chunked, _get(method="HEAD"))
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"content-length: 0" not in _head_of(answer)
    sized = await scripted(lambda c, n: b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n")
    answer = await _through_gateway(sized, _get(method="HEAD"))
    assert b"content-length: 42" in _head_of(answer)
