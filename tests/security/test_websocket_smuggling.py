"""WebSocket upgrades as an attacker uses them: no raw tunnel opens unless an authorised
client asked for a WebSocket on a route that allows it and the upstream answered that very
handshake.

- an `Upgrade` to a route without `websocket` is served as plain HTTP: the upstream sees no
  `Upgrade`, and the bytes behind the request are parsed as HTTP requests (each routed and
  authorised), never relayed raw;
- an upstream that answers `101` to a request without an upgrade (a plain request, or one
  whose `Upgrade` the gateway removed), or with a handshake answer that does not match,
  gets 502 `upstream_bad_upgrade`: what it sends after its `101` never reaches the client;
- a refused upgrade on a WebSocket route closes the connection: frames sent behind it are
  never read as requests."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.gateway import RunningGateway, bearer, raw_exchange, start_gateway, stop_gateway
from tests.support.tokens import AUDIENCE, ISSUER
from wardgate.gateway.errors import code_of_body

SMUGGLED = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"


class SwitchingUpstream:
    """Answers every request with `101 Switching Protocols` (and `accept` as its
    Sec-WebSocket-Accept), then raw bytes that would be a response if relayed."""

    def __init__(self, accept: str = "bogus") -> None:
        self.accept = accept
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                + self.accept.encode()
                + b"\r\n\r\n"
                + SMUGGLED
            )
            await writer.drain()
            await reader.read()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> SwitchingUpstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def document(url: str) -> dict[str, Any]:
    return {
        "authorizer": {
            "type": "jwt",
            "secret": "$secret.JWT_SECRET",
            "issuer": ISSUER,
            "audience": AUDIENCE,
        },
        "servers": {"api": url},
        "paths": [
            {
                "method": "GET",
                "path": "/ws",
                "auth": True,
                "websocket": True,
                "integration": {"type": "http_proxy", "server": "api"},
            },
            {
                "method": "GET",
                "path": "/plain",
                "auth": True,
                "integration": {"type": "http_proxy", "server": "api"},
            },
        ],
    }


@pytest.fixture
async def switching() -> AsyncIterator[SwitchingUpstream]:
    upstream = await SwitchingUpstream().start()
    yield upstream
    await upstream.stop()


@pytest.fixture
async def gateway(switching: SwitchingUpstream) -> AsyncIterator[RunningGateway]:
    running = await start_gateway(document(switching.url))
    yield running
    await stop_gateway(running)


def upgrade_head(path: str, *, token: bool = True, extra: bytes = b"") -> bytes:
    key = base64.b64encode(os.urandom(16))
    authorization = ("Authorization: " + bearer()["Authorization"] + "\r\n").encode()
    return (
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: gateway\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
        + key
        + b"\r\n"
        + (authorization if token else b"")
        + extra
        + b"\r\n"
    )


def responses(data: bytes) -> list[tuple[int, str | None]]:
    """(status, code) of each response in `data` (bodies are JSON with Content-Length)."""
    found = []
    while data.startswith(b"HTTP/1.1 "):
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        found.append((status, code_of_body(rest[:length])))
        data = rest[length:]
    assert data == b"", data[:200]
    return found


async def test_a_101_to_a_plain_request_is_refused_and_nothing_after_it_relayed(
    gateway: RunningGateway, switching: SwitchingUpstream
) -> None:
    for path in ("/plain", "/ws"):
        answer = await gateway.request("GET", path, bearer())
        assert (answer.status, answer.code) == (502, "upstream_bad_upgrade"), path
        assert b"smuggled" not in answer.body
    assert all(b"upgrade" not in head.lower() for head in switching.heads)


async def test_an_upgrade_to_a_route_without_websocket_opens_no_tunnel(
    gateway: RunningGateway, switching: SwitchingUpstream
) -> None:
    # Behind the upgrade, a request that would go unauthorised if relayed raw.
    behind = b"GET /plain HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n"
    received = await raw_exchange(gateway.port, upgrade_head("/plain") + behind)
    assert b"smuggled" not in received
    assert b" 101 " not in received
    # Each parsed and decided as HTTP: the upstream's 101 refused, then the bare request
    # refused for its missing token.
    assert responses(received) == [(502, "upstream_bad_upgrade"), (401, "missing_token")]
    (head,) = switching.heads
    assert b"upgrade" not in head.lower()


async def test_a_handshake_answer_that_does_not_match_opens_no_tunnel(
    gateway: RunningGateway, switching: SwitchingUpstream
) -> None:
    received = await raw_exchange(gateway.port, upgrade_head("/ws"))
    assert b"smuggled" not in received
    assert responses(received) == [(502, "upstream_bad_upgrade")]
    (head,) = switching.heads
    assert b"upgrade: websocket" in head.lower()


async def test_a_refused_upgrade_closes_the_connection_before_anything_behind_it(
    gateway: RunningGateway, switching: SwitchingUpstream
) -> None:
    # Behind it, a request with a valid token: read as a request, it would reach upstream.
    authorization = bearer()["Authorization"].encode()
    behind = b"GET /plain HTTP/1.1\r\nHost: gateway\r\nAuthorization: " + authorization
    behind += b"\r\n\r\n"
    received = await raw_exchange(gateway.port, upgrade_head("/ws", token=False) + behind)
    assert responses(received) == [(401, "missing_token")]
    assert switching.heads == []
