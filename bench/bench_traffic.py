"""The traffic server's CPU per request in-process: its protocol object driven with the
bytes a benchmark client sends, no client and no socket on the client's side.

    .venv/bin/python -m bench.bench_traffic [--requests N] [--rounds R] [--profile CASE]

Each case feeds one prepared request to a `TrafficConnection` (the real pipeline of
`build_app`, the bench's HS256 config, the request log off as in `bench.run`) and waits
for its reply; the figure is the process's CPU time per request, best of the rounds. The
proxied case sends its request to an upstream in a child process (a prepared 44-byte JSON
answer) over a real loopback connection, so it includes the upstream client's socket
calls; the others include no socket call at all. `--profile CASE` prints a `cProfile` of
one round instead (cumulative and own time, top functions).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import subprocess
import sys
import time
from typing import Any

import uvloop
from pydantic import SecretStr

from bench.contenders import SECRET, make_keys, wardgate_config
from tests.support.ports import free_port
from wardgate.gateway.app import GatewayRunner, build_app, server_options
from wardgate.gateway.config import parse_config
from wardgate.gateway.loading import LoadedConfig
from wardgate.gateway.metrics import GatewayMetrics
from wardgate.gateway.requestlog import RequestLog
from wardgate.gateway.traffic import TrafficConnection, TrafficServer

UPSTREAM = """
import asyncio, sys, uvloop
REPLY = (b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: 44\\r\\n\\r\\n"
         + b'{"orders":[{"id":1,"item":"book","qty":1}]}\\n')
class Upstream(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        for _ in range(data.count(b"\\r\\n\\r\\n")):
            self.transport.write(REPLY)
async def main():
    server = await asyncio.get_running_loop().create_server(Upstream, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await server.serve_forever()
uvloop.run(main())
"""


class Transport:
    """What the connection writes to: wakes the driver when a reply arrived."""

    def __init__(self) -> None:
        self.waiter: asyncio.Future[None] | None = None
        self.written = 0
        self.last = b""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.written += 1
        self.last = data
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        raise AssertionError("the connection closed: " + self.last[:200].decode())

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def request(path: str, token: str | None) -> bytes:
    """A request as wrk sends it."""
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    return (head + "\r\n").encode()


async def drive(connection: TrafficConnection, transport: Transport, data: bytes, n: int) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(n):
        waiter = transport.waiter = loop.create_future()
        connection.data_received(data)
        await waiter


async def main(args: argparse.Namespace, upstream_port: int) -> None:
    keys = make_keys()
    document = json.loads(
        wardgate_config(upstream_port, {"secret": "$secret.JWT_SECRET", "algorithm": "HS256"})
    )
    loaded = LoadedConfig(config=parse_config(document), secrets={"JWT_SECRET": SecretStr(SECRET)})
    app = build_app(loaded, metrics=GatewayMetrics(), request_log=RequestLog(None))
    runner = GatewayRunner(app, **server_options(loaded))
    await runner.setup()
    server = runner.server
    assert isinstance(server, TrafficServer)
    cases = {
        "health": (request("/health", None), b"200 OK"),
        "no-token": (request("/private/orders", None), b"401 "),
        "expired": (request("/private/orders", keys.hs_expired), b"401 "),
        "hs256": (request("/private/orders", keys.hs_token), b"200 OK"),
        "404": (request("/nowhere", None), b"404 "),
    }
    selected = [args.profile] if args.profile else (args.cases or list(cases))
    try:
        for name in selected:
            data, expected = cases[name]
            connection = server()
            transport = Transport()
            connection.connection_made(transport)  # type: ignore[arg-type]
            await drive(connection, transport, data, 200)
            assert expected in transport.last.split(b"\r\n", 1)[0], transport.last[:100]
            if args.profile:
                profile = cProfile.Profile()
                profile.enable()
                await drive(connection, transport, data, args.requests)
                profile.disable()
                stats = pstats.Stats(profile).strip_dirs()
                stats.sort_stats("tottime").print_stats(args.top)
                stats.sort_stats("cumulative").print_stats(args.top)
                connection.connection_lost(None)
                continue
            best = float("inf")
            for _ in range(args.rounds):
                started = time.process_time()
                await drive(connection, transport, data, args.requests)
                best = min(best, (time.process_time() - started) / args.requests)
            print(f"{name:10} {best * 1e6:7.2f} µs/request (best of {args.rounds})")
            connection.connection_lost(None)
    finally:
        await runner.cleanup()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", default="")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("cases", nargs="*")
    os.environ.setdefault("JWT_SECRET", SECRET)
    upstream_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-c", UPSTREAM, str(upstream_port)], stdout=subprocess.PIPE
    )
    try:
        assert upstream.stdout is not None
        upstream.stdout.readline()
        uvloop.run(main(parser.parse_args(), upstream_port))
    finally:
        upstream.kill()
        upstream.wait()


if __name__ == "__main__":
    cli()
