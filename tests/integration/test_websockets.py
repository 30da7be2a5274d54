"""WebSockets behind auth, end to end: aiohttp's WebSocket client, the gateway's traffic
server in-process on loopback, an aiohttp WebSocket upstream, real HS256 tokens.

Frames both ways (text, binary, 1 MiB, fragmented), ping/pong, the close handshake from
either side, refusals with catalogue codes, the subprotocol and query tokens kept from the
upstream, the session closed by the gateway (token expiry 4001, idle 1001, drain 1001, a
framing error 1002), the request log and the metrics."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from multidict import CIMultiDictProxy
from pydantic import SecretStr

from tests.support.gateway import RunningGateway, start_gateway, stop_gateway
from tests.support.tokens import AUDIENCE, HS_SECRET, ISSUER, claims, hs_token
from wardgate.commands.explain import render_text
from wardgate.gateway.app import GatewayRunner
from wardgate.gateway.config import parse_config
from wardgate.gateway.explain import explain_request
from wardgate.gateway.loading import LoadedConfig
from wardgate.gateway.server import drain
from wardgate.gateway.traffic import TrafficServer

MIB = 1024 * 1024


def token(**extra: Any) -> str:
    return hs_token(claims(iss=ISSUER, aud=AUDIENCE, **extra))


@dataclass
class Upgrade:
    path: str
    headers: CIMultiDictProxy[str]


@dataclass
class WebSocketUpstream:
    """An aiohttp WebSocket server: echoes messages; `close <code>` closes with that code;
    `/plain/*` answers plain HTTP."""

    url: str = ""
    upgrades: list[Upgrade] = field(default_factory=list)
    plain: list[Upgrade] = field(default_factory=list)
    closes: list[int | None] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    runner: web.AppRunner | None = None

    async def socket(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/refuse"):
            return web.json_response({"refused": True}, status=403)
        self.upgrades.append(Upgrade(request.path_qs, request.headers))
        ws = web.WebSocketResponse(protocols=("chat",), max_msg_size=4 * MIB, autoping=True)
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                if message.data.startswith("close "):
                    await ws.close(code=int(message.data.split()[1]), message=b"bye")
                    break
                await ws.send_str(message.data)
            elif message.type == WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        self.closes.append(ws.close_code)
        self.closed.set()
        return ws

    async def plain_handler(self, request: web.Request) -> web.StreamResponse:
        self.plain.append(Upgrade(request.path_qs, request.headers))
        return web.json_response({"plain": True})

    async def start(self) -> WebSocketUpstream:
        app = web.Application()
        app.router.add_get("/plain/{tail:.*}", self.plain_handler)
        app.router.add_get("/{tail:.*}", self.socket)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def document(upstream_url: str, **websocket: Any) -> dict[str, Any]:
    return {
        "authorizer": {
            "type": "jwt",
            "secret": "$secret.JWT_SECRET",
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "leeway": 0,
            "tokenSources": [
                {"type": "authorization"},
                {"type": "query", "name": "access_token"},
                {"type": "subprotocol", "prefix": "bearer."},
            ],
        },
        "servers": {"api": upstream_url},
        "paths": [
            {
                "method": "GET",
                "path": "/ws/*",
                "auth": {"scopes": ["live:read"]},
                "websocket": websocket or True,
                "integration": {"type": "http_proxy", "server": "api"},
            },
            {
                "method": "GET",
                "path": "/refuse/*",
                "auth": True,
                "websocket": True,
                "integration": {"type": "http_proxy", "server": "api"},
            },
            {
                "method": "GET",
                "path": "/plain/*",
                "auth": True,
                "integration": {"type": "http_proxy", "server": "api"},
            },
        ],
    }


@pytest.fixture
async def upstream() -> AsyncIterator[WebSocketUpstream]:
    server = await WebSocketUpstream().start()
    yield server
    await server.stop()


@pytest.fixture
async def gateway(upstream: WebSocketUpstream) -> AsyncIterator[RunningGateway]:
    running = await start_gateway(document(upstream.url))
    yield running
    await stop_gateway(running)


def jwt_expiry(jwt: str) -> float:
    payload = jwt.split(".")[1]
    return float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])


def live_token(**extra: Any) -> str:
    return token(scope="live:read", **extra)


def auth(jwt: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt or live_token()}"}


def log_lines(gateway: RunningGateway) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gateway.log_text().splitlines() if line]


def metric(gateway: RunningGateway, name: str, **labels: str) -> float:
    value = gateway.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def session_tasks(gateway: RunningGateway) -> list[asyncio.Task[None]]:
    """The tasks serving the gateway's connections that carry a WebSocket session now."""
    server = gateway.runner.server
    assert isinstance(server, TrafficServer)
    return [c.task for c in server.connections if c.tunnel is not None and c.task is not None]


async def ended(gateway: RunningGateway, tasks: list[asyncio.Task[None]]) -> None:
    """Wait until those connections are done (their sessions logged and counted)."""
    assert tasks
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    gateway.request_log.flush()


async def test_frames_both_ways_ping_pong_and_the_close_handshake_from_the_client(
    gateway: RunningGateway, upstream: WebSocketUpstream
) -> None:
    async with gateway.client.ws_connect(
        gateway.url + "/ws/feed", headers=auth(), autoping=False, max_msg_size=4 * MIB
    ) as ws:
        assert metric(gateway, "wardgate_websocket_connections") == 1
        tasks = session_tasks(gateway)
        await ws.send_str("hello")
        assert (await ws.receive()).data == "hello"
        await ws.send_bytes(b"\x00\x01binary")
        assert (await ws.receive()).data == b"\x00\x01binary"
        large = os.urandom(MIB)
        await ws.send_bytes(large)
        echoed = await ws.receive()
        assert echoed.type == WSMsgType.BINARY
        assert echoed.data == large
        await ws.ping(b"are you there")
        pong = await ws.receive()
        assert (pong.type, pong.data) == (WSMsgType.PONG, b"are you there")
        await ws.close(code=1000, message=b"done")
        assert ws.close_code == 1000
    await asyncio.wait_for(upstream.closed.wait(), 10)
    assert upstream.closes == [1000]
    await ended(gateway, tasks)
    assert metric(gateway, "wardgate_websocket_connections") == 0
    sessions = metric(
        gateway, "wardgate_websocket_sessions_total", route="/ws/*", close_code="1000"
    )
    assert sessions == 1
    relayed = metric(gateway, "wardgate_websocket_bytes_total", route="/ws/*", direction="client")
    assert relayed > MIB
    (line,) = [line for line in log_lines(gateway) if line["status"] == 101]
    session = line["detail"]["websocket"]
    assert (session["closeCode"], session["closedBy"]) == (1000, "client")
    assert session["bytesFromClient"] > MIB
    assert session["bytesFromUpstream"] > MIB
    assert line["route"] == "/ws/*"


async def test_the_close_handshake_from_the_upstream(
    gateway: RunningGateway, upstream: WebSocketUpstream
) -> None:
    async with gateway.client.ws_connect(gateway.url + "/ws/feed", headers=auth()) as ws:
        tasks = session_tasks(gateway)
        await ws.send_str("close 4000")
        message = await ws.receive()
        assert message.type == WSMsgType.CLOSE
        assert ws.close_code == 4000
    await ended(gateway, tasks)
    assert (
        metric(gateway, "wardgate_websocket_sessions_total", route="/ws/*", close_code="4xxx") == 1
    )


async def test_an_unauthorised_upgrade_is_refused_with_its_code_and_never_relayed(
    gateway: RunningGateway, upstream: WebSocketUpstream
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await gateway.client.ws_connect(gateway.url + "/ws/feed")
    assert refused.value.status == 401
    answer = await gateway.request(
        "GET",
        "/ws/feed",
        {
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        },
    )
    assert (answer.status, answer.code) == (401, "missing_token")
    assert answer.headers["Content-Type"] == "application/json"
    expired = await gateway.request(
        "GET",
        "/ws/feed",
        {
            **auth(live_token(lifetime=-60)),
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        },
    )
    assert (expired.status, expired.code) == (401, "token_expired")
    with pytest.raises(aiohttp.WSServerHandshakeError) as scope:
        await gateway.client.ws_connect(gateway.url + "/ws/feed", headers=auth(token()))
    assert scope.value.status == 403
    assert upstream.upgrades == []


async def test_the_subprotocol_token_is_removed_and_other_subprotocols_pass(
    gateway: RunningGateway, upstream: WebSocketUpstream
) -> None:
    jwt = live_token()
    async with gateway.client.ws_connect(
        gateway.url + "/ws/feed", protocols=("chat", f"bearer.{jwt}")
    ) as ws:
        assert ws.protocol == "chat"
        await ws.send_str("hi")
        assert (await ws.receive()).data == "hi"
    (seen,) = upstream.upgrades
    assert seen.headers["Sec-WebSocket-Protocol"] == "chat"
    assert jwt not in str(dict(seen.headers))
    assert "Authorization" not in seen.headers


async def test_the_query_token_is_removed_from_the_upstream_url_and_the_log(
    gateway: RunningGateway, upstream: WebSocketUpstream
) -> None:
    jwt = live_token()
    async with gateway.client.ws_connect(gateway.url + f"/ws/feed?room=1&access_token={jwt}") as ws:
        tasks = session_tasks(gateway)
        await ws.send_str("hi")
        assert (await ws.receive()).data == "hi"
    (seen,) = upstream.upgrades
    assert seen.path == "/ws/feed?room=1"
    await ended(gateway, tasks)
    for part in jwt.split("."):
        assert part not in gateway.log_text()


async def test_a_route_without_websocket_serves_the_upgrade_as_plain_http(
    gateway: RunningGateway, upstream: WebSocketUpstream
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as plain:
        await gateway.client.ws_connect(gateway.url + "/plain/feed", headers=auth())
    assert plain.value.status == 200
    (seen,) = upstream.plain
    assert "Upgrade" not in seen.headers
    assert "upgrade" not in seen.headers.get("Connection", "").lower()
    assert upstream.upgrades == []


async def test_the_upstream_refusing_the_upgrade_is_answered_as_a_normal_response(
    gateway: RunningGateway,
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await gateway.client.ws_connect(gateway.url + "/refuse/feed", headers=auth())
    assert refused.value.status == 403


async def test_an_invalid_handshake_is_refused_with_its_code(gateway: RunningGateway) -> None:
    headers = {**auth(), "Connection": "Upgrade", "Upgrade": "websocket"}
    missing_key = await gateway.request(
        "GET", "/ws/feed", {**headers, "Sec-WebSocket-Version": "13"}
    )
    assert (missing_key.status, missing_key.code) == (400, "invalid_websocket_upgrade")
    old_version = await gateway.request(
        "GET",
        "/ws/feed",
        {
            **headers,
            "Sec-WebSocket-Version": "8",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        },
    )
    assert (old_version.status, old_version.code) == (400, "invalid_websocket_upgrade")
    assert old_version.headers["Sec-WebSocket-Version"] == "13"


async def test_expiry_closes_the_session_with_4001(
    gateway: RunningGateway, upstream: WebSocketUpstream
) -> None:
    jwt = live_token(lifetime=2)
    async with gateway.client.ws_connect(gateway.url + "/ws/feed", headers=auth(jwt)) as ws:
        tasks = session_tasks(gateway)
        await ws.send_str("hi")
        assert (await ws.receive()).data == "hi"
        message = await ws.receive(timeout=10)
        assert message.type == WSMsgType.CLOSE
        assert ws.close_code == 4001
    await asyncio.wait_for(upstream.closed.wait(), 10)
    assert upstream.closes == [4001]
    await ended(gateway, tasks)
    assert time.time() >= jwt_expiry(jwt)
    assert (
        metric(gateway, "wardgate_websocket_sessions_total", route="/ws/*", close_code="4001") == 1
    )


async def test_idle_sessions_close_with_1001(upstream: WebSocketUpstream) -> None:
    running = await start_gateway(document(upstream.url, idleTimeoutSeconds=1))
    try:
        async with running.client.ws_connect(running.url + "/ws/feed", headers=auth()) as ws:
            started = time.monotonic()
            message = await ws.receive(timeout=10)
            assert message.type == WSMsgType.CLOSE
            assert ws.close_code == 1001
            assert time.monotonic() - started >= 0.9
        await asyncio.wait_for(upstream.closed.wait(), 10)
        assert upstream.closes == [1001]
    finally:
        await stop_gateway(running)


async def test_drain_closes_open_sessions_with_1001_within_the_drain_period(
    gateway: RunningGateway, upstream: WebSocketUpstream
) -> None:
    async with gateway.client.ws_connect(gateway.url + "/ws/feed", headers=auth()) as ws:
        await ws.send_str("hi")
        assert (await ws.receive()).data == "hi"
        site = next(iter(gateway.runner.sites))
        draining = asyncio.create_task(
            drain(gateway.runner, site, 20.0)  # type: ignore[arg-type]
        )
        message = await ws.receive(timeout=10)
        assert message.type == WSMsgType.CLOSE
        assert ws.close_code == 1001
    await asyncio.wait_for(draining, 10)
    await asyncio.wait_for(upstream.closed.wait(), 10)
    assert upstream.closes == [1001]


async def _raw_upgrade(port: int, path: str, jwt: str) -> tuple[asyncio.StreamReader, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
            f"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
            f"Authorization: Bearer {jwt}\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    return reader, writer


def masked_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    length = len(payload)
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(length)


async def test_a_fragmented_large_message_passes_whole(
    gateway: RunningGateway, upstream: WebSocketUpstream
) -> None:
    reader, writer = await _raw_upgrade(gateway.port, "/ws/feed", live_token())
    message = os.urandom(MIB)
    parts = [message[i : i + 300_000] for i in range(0, MIB, 300_000)]
    frames = b"".join(
        masked_frame(0x2 if i == 0 else 0x0, part, fin=i == len(parts) - 1)
        for i, part in enumerate(parts)
    )
    # A ping between two fragments, as RFC 6455 section 5.4 allows.
    middle = len(masked_frame(0x2, parts[0], fin=False))
    writer.write(frames[:middle] + masked_frame(0x9, b"p") + frames[middle:])
    opcode, payload = await read_frame(reader)
    assert (opcode, payload) == (0xA, b"p")
    opcode, payload = await read_frame(reader)
    assert (opcode, payload) == (0x2, message)
    writer.write(masked_frame(0x8, struct.pack("!H", 1000)))
    opcode, payload = await read_frame(reader)
    assert opcode == 0x8
    assert await reader.read() == b""
    writer.close()


async def test_an_unmasked_client_frame_closes_the_session_with_1002(
    gateway: RunningGateway, upstream: WebSocketUpstream
) -> None:
    reader, writer = await _raw_upgrade(gateway.port, "/ws/feed", live_token())
    writer.write(masked_frame(0x1, b"ok"))
    assert await read_frame(reader) == (0x1, b"ok")
    writer.write(b"\x81\x02no")  # unmasked: RFC 6455 section 5.1 forbids it
    opcode, payload = await read_frame(reader)
    assert opcode == 0x8
    assert struct.unpack("!H", payload[:2])[0] == 1002
    await asyncio.wait_for(upstream.closed.wait(), 10)
    assert upstream.closes == [1002]
    writer.close()


async def test_explain_says_what_an_upgrade_request_gets(upstream: WebSocketUpstream) -> None:
    loaded = LoadedConfig(
        config=parse_config(document(upstream.url)),
        secrets={"JWT_SECRET": SecretStr(HS_SECRET)},
    )
    jwt = live_token()
    handshake = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Protocol": f"chat, bearer.{jwt}",
    }
    report = await explain_request(loaded, "GET", "/ws/feed", handshake)
    assert report.admitted
    text = render_text(report, "test")
    assert "websocket upgrade allowed" in text
    assert "closed with 4001 at" in text
    assert "bearer.<token> removed before the upstream" in text
    assert jwt not in text
    assert report.to_json()["websocket"] == report.websocket
    plain = await explain_request(loaded, "GET", "/plain/feed", {**handshake, **auth(jwt)})
    assert plain.admitted
    assert plain.websocket is not None
    assert "served as plain HTTP" in plain.websocket
    old = await explain_request(
        loaded, "GET", "/ws/feed", {**handshake, "Sec-WebSocket-Version": "8"}
    )
    assert (old.status, old.code) == (400, "invalid_websocket_upgrade")
    failing = old.failing_check
    assert failing is not None
    assert failing.name == "websocket"


async def test_a_plain_request_never_carries_the_subprotocol_token_upstream(
    gateway: RunningGateway, upstream: WebSocketUpstream
) -> None:
    jwt = live_token()
    answer = await gateway.request(
        "GET", "/plain/feed", {"Sec-WebSocket-Protocol": f"chat, bearer.{jwt}"}
    )
    assert answer.status == 200
    only_token = await gateway.request(
        "GET", "/plain/feed", {"Sec-WebSocket-Protocol": f"bearer.{jwt}"}
    )
    assert only_token.status == 200
    first, second = upstream.plain
    assert first.headers["Sec-WebSocket-Protocol"] == "chat"
    assert "Sec-WebSocket-Protocol" not in second.headers
    assert jwt not in str(dict(first.headers)) + str(dict(second.headers))


async def test_open_sessions_outlive_a_config_reload(
    gateway: RunningGateway, upstream: WebSocketUpstream
) -> None:
    assert isinstance(gateway.runner, GatewayRunner)
    holder = gateway.runner.holder
    async with gateway.client.ws_connect(gateway.url + "/ws/feed", headers=auth()) as ws:
        await ws.send_str("before")
        assert (await ws.receive()).data == "before"
        changed = document(upstream.url, idleTimeoutSeconds=60)
        loaded = LoadedConfig(
            config=parse_config(changed), secrets={"JWT_SECRET": SecretStr(HS_SECRET)}
        )
        await holder.swap(holder.build(loaded), "changed")
        await ws.send_str("after")
        assert (await ws.receive()).data == "after"
        async with gateway.client.ws_connect(gateway.url + "/ws/feed", headers=auth()) as new:
            await new.send_str("new")
            assert (await new.receive()).data == "new"
