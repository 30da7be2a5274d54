#!/usr/bin/env python3
"""The floor of a Python gateway on this machine: what uvloop, httptools and the proxy's
own upstream client cost with no web framework at all.

    .venv/bin/python bench/python_floor.py PORT UPSTREAM_PORT

Serves `GET /health` with prepared bytes and proxies every other request to
127.0.0.1:UPSTREAM_PORT through `wardgate.gateway.upstream` (no auth, no header
filtering, no logging, no metrics: not a gateway). `bench/run.py` runs it as a contender
in cases 1 and 2, so that the table shows how much of Wardgate's cost is aiohttp's server
and how much any Python server on asyncio pays.
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import httptools
import uvloop

from wardgate.gateway.upstream import UpstreamPool

HEALTH = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n"
    b'{"status":"ok"}'
)


class Floor(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[bytes] = []
        self.tasks: set[asyncio.Future[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() != b"host":
            self.headers.append(name + b": " + value + b"\r\n")

    def on_message_complete(self) -> None:
        assert self.transport is not None
        if self.url == b"/health":
            self.transport.write(HEALTH)
        else:
            head = b"GET %s HTTP/1.1\r\nHost: upstream\r\n%b\r\n" % (
                self.url,
                b"".join(self.headers),
            )
            # Kept until done: the loop holds tasks only weakly.
            self.tasks.add(task := asyncio.ensure_future(self.proxy(head)))
            task.add_done_callback(self.tasks.discard)
        self.headers = []

    async def proxy(self, head: bytes) -> None:
        conn = await self.pool.acquire(5.0)
        conn.send(head, None, head_request=False)
        await conn.read_head(30.0)
        body = await conn.read_body(30.0)
        status = conn.status
        self.pool.release(conn)
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
            % (status, len(body), body)
        )


async def main(port: int, upstream_port: int) -> None:
    pool = UpstreamPool("127.0.0.1", upstream_port, tls=False, limit=512, keepalive=4.0)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Floor(pool), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2])))
