"""What the gateway's WebSocket relay adds: an aiohttp echo upstream reached directly, then
through the gateway (traffic server, a public path with `websocket`), by one aiohttp
client.

Usage: `.venv/bin/python -m bench.bench_websockets [--messages N] [--large N]`. Prints, for
each, the round trips per second of small text messages (one in flight) and the echo
throughput of 1 MiB binary messages. Client, gateway and upstream share one event loop
and one core, so the figures compare the two paths; they are not a capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import aiohttp
from aiohttp import WSMsgType, web
from pydantic import SecretStr

from wardgate.gateway.app import GatewayRunner, build_app, server_options
from wardgate.gateway.config import parse_config
from wardgate.gateway.loading import LoadedConfig

MIB = 1024 * 1024


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=4 * MIB)
    await ws.prepare(request)
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.send_str(message.data)
        elif message.type == WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


async def measure(url: str, messages: int, large: int) -> tuple[float, float]:
    """(round trips per second, MiB per second echoed)."""
    async with (
        aiohttp.ClientSession() as client,
        client.ws_connect(url, max_msg_size=4 * MIB) as ws,
    ):
        payload = "x" * 32
        started = time.perf_counter()
        for _ in range(messages):
            await ws.send_str(payload)
            await ws.receive()
        small = messages / (time.perf_counter() - started)
        block = os.urandom(MIB)
        started = time.perf_counter()
        for _ in range(large):
            await ws.send_bytes(block)
            await ws.receive()
        throughput = large / (time.perf_counter() - started)
    return small, throughput


async def main(messages: int, large: int) -> None:
    upstream_app = web.Application()
    upstream_app.router.add_get("/{tail:.*}", echo)
    upstream = web.AppRunner(upstream_app, access_log=None)
    await upstream.setup()
    await web.TCPSite(upstream, "127.0.0.1", 0).start()
    upstream_url = f"http://127.0.0.1:{upstream.addresses[0][1]}"
    loaded = LoadedConfig(
        config=parse_config(
            {
                "servers": {"echo": upstream_url},
                "paths": [
                    {
                        "method": "GET",
                        "path": "/ws",
                        "websocket": True,
                        "integration": {"type": "http_proxy", "server": "echo"},
                    }
                ],
            }
        ),
        secrets={"UNUSED": SecretStr("")},
    )
    runner = GatewayRunner(build_app(loaded), **server_options(loaded))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    gateway_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        for name, url in (("direct", upstream_url), ("through the gateway", gateway_url)):
            best_small, best_large = 0.0, 0.0
            for _ in range(3):
                small, throughput = await measure(url + "/ws", messages, large)
                best_small, best_large = max(best_small, small), max(best_large, throughput)
            print(
                f"{name:<22} {best_small:>8.0f} round trips/s (32 B text)   "
                f"{best_large:>6.1f} MiB/s echoed (1 MiB binary)"
            )
    finally:
        await runner.cleanup()
        await upstream.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--large", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.large))
