"""Zero lost requests when a gateway process stops (SIGTERM) and when a new process with a
new config takes over the port from the old one (rollout with `--reuse-port`).

A load loop counts every request it sends and every response: a request is lost when it
gets no response (connection reset, disconnection mid-request) or a status other than 200.
After SIGTERM without a successor, a refused connection is not a lost request (nothing was
sent) and ends that load loop; during a rollout the port is always served, so a refused
connection counts as lost too. The upstream counts what it receives: every 200 a client
saw is a request the upstream served.

The basic SIGTERM case is in `tests/integration/test_gateway_process.py`.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.support import results
from tests.support.gateway import CountingUpstream, bearer, seed_document
from tests.support.processes import GatewayProcess, kill_all, launch_gateway
from tests.support.tokens import HS_SECRET

SUITE = "SIGTERM and rollout under load"
LOOPS = 16


@dataclass
class Load:
    """Concurrent request loops against one URL, counting every outcome."""

    url: str
    refusal_is_loss: bool
    sent: int = 0
    ok: int = 0
    lost: list[str] = field(default_factory=list)
    refused: int = 0
    stopping: bool = False
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    headers: dict[str, str] = field(default_factory=bearer)

    async def loop(self, new_connections: bool) -> None:
        connector = aiohttp.TCPConnector(force_close=new_connections)
        async with aiohttp.ClientSession(connector=connector) as session:
            while not self.stopping:
                try:
                    async with session.get(
                        self.url + "/private/orders", headers=self.headers
                    ) as response:
                        await response.read()
                except aiohttp.ClientConnectorError as exc:
                    if self.refusal_is_loss:
                        self.sent += 1
                        self.lost.append(f"refused: {exc}")
                        continue
                    self.refused += 1
                    return  # the gateway no longer accepts connections: nothing was sent
                except aiohttp.ClientError as exc:
                    self.sent += 1
                    self.lost.append(repr(exc))
                    continue
                self.sent += 1
                if response.status == 200:
                    self.ok += 1
                    if self.ok % 50 == 0:
                        self.progress.set()
                else:
                    self.lost.append(f"status {response.status}")

    async def more(self, count: int) -> None:
        """Wait until `count` more responses were counted."""
        target = self.ok + count
        async with asyncio.timeout(60):
            while self.ok < target:
                self.progress.clear()
                await self.progress.wait()

    def start(self) -> list[asyncio.Task[None]]:
        # A quarter of the loops open a new connection per request (where accept races are).
        return [asyncio.ensure_future(self.loop(i % 4 == 0)) for i in range(LOOPS)]


def config(upstream: CountingUpstream, version: int) -> dict[str, Any]:
    document = seed_document(upstream.url, drainSeconds=10)
    document["paths"][0]["response"] = {"status": "ok", "version": version}
    return document


async def test_sigterm_under_steady_load_loses_nothing(tmp_path: Path, long_run: bool) -> None:
    upstream = await CountingUpstream(work_seconds=0.005).start()
    processes: list[GatewayProcess] = []
    try:
        gateway = await launch_gateway(
            config(upstream, 1), {"JWT_SECRET": HS_SECRET}, tmp_path / "a", "--access-log", "-"
        )
        processes.append(gateway)
        async with aiohttp.ClientSession() as session:
            await gateway.ready(session)
        load = Load(gateway.url, refusal_is_loss=False)
        loops = load.start()
        await load.more(3000 if long_run else 300)
        before = load.ok
        gateway.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*loops), 60)
        assert await gateway.wait() == 0
    finally:
        await kill_all(processes)
        await upstream.stop()
    assert load.lost == []
    assert load.ok > before  # in-flight and keep-alive requests completed during the drain
    assert load.ok == load.sent == len(upstream.seen)
    results.record(SUITE, "SIGTERM: requests sent", load.sent)
    results.record(SUITE, "SIGTERM: requests lost", len(load.lost))
    results.record(SUITE, "SIGTERM: gateway stops survived")


async def test_rollout_to_a_new_process_loses_nothing(tmp_path: Path, long_run: bool) -> None:
    """Start process B with a new config on A's listening socket (handed over with
    `--listen-fd`, as a supervisor does), wait until it is ready, SIGTERM A; repeat. The
    load never stops and no request is lost."""
    upstream = await CountingUpstream(work_seconds=0.002).start()
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    processes: list[GatewayProcess] = []
    rollouts = 6 if long_run else 1
    load: Load | None = None
    loops: list[asyncio.Task[None]] = []
    started = time.monotonic()
    try:
        current = await launch_gateway(
            config(upstream, 0), {"JWT_SECRET": HS_SECRET}, tmp_path / "v0", listen_socket=listener
        )
        processes.append(current)
        async with aiohttp.ClientSession() as session:
            await current.ready(session)
            load = Load(current.url, refusal_is_loss=True)
            loops = load.start()
            await load.more(200)
            for version in range(1, rollouts + 1):
                successor = await launch_gateway(
                    config(upstream, version),
                    {"JWT_SECRET": HS_SECRET},
                    tmp_path / f"v{version}",
                    listen_socket=listener,
                )
                processes.append(successor)
                await successor.ready(session)
                await load.more(100)  # both serve
                current.process.send_signal(signal.SIGTERM)
                assert await current.wait() == 0
                current = successor
                await load.more(1000 if long_run else 100)  # the successor alone
                async with session.get(current.url + "/health") as health:
                    assert (await health.json())["version"] == version
                results.record(SUITE, "rollout: process handovers")
            load.stopping = True
            await asyncio.wait_for(asyncio.gather(*loops), 60)
            current.process.send_signal(signal.SIGTERM)
            assert await current.wait() == 0
    finally:
        if load is not None:
            load.stopping = True
        for task in loops:
            task.cancel()
        await kill_all(processes)
        await upstream.stop()
        listener.close()
    assert load is not None
    assert load.lost == []
    assert load.ok == load.sent == len(upstream.seen)
    results.record(SUITE, "rollout: requests sent", load.sent)
    results.record(SUITE, "rollout: requests lost", len(load.lost))
    results.note(SUITE, rollout_seconds=round(time.monotonic() - started, 1))
