"""A gateway served in-process on a loopback port, in front of an upstream that counts what
it receives, for the suites that attack and break the gateway end to end (`tests/security`,
`tests/reliability`); the in-process integration suites start their gateways with
`start_gateway` too.

The gateway is the real pipeline (`build_app` + `GatewayRunner`) with its request log
captured in memory, so that suites can search it; its authorizers may be built with a
settable `Clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr
from yarl import URL

from tests.support.tokens import AUDIENCE, HS_SECRET, ISSUER, Clock, claims, hs_token
from wardgate.gateway.app import GatewayRunner, build_app, server_options
from wardgate.gateway.config import parse_config
from wardgate.gateway.embedded import demo_document
from wardgate.gateway.errors import code_of_body
from wardgate.gateway.loading import LoadedConfig
from wardgate.gateway.metrics import GatewayMetrics
from wardgate.gateway.reference import ReferenceRunner
from wardgate.gateway.requestlog import RequestLog

PROTECTED_PREFIXES = ("/private", "/rs")


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as the upstream received it."""

    method: str
    path: str
    authorization: str | None
    headers: dict[str, str]


@dataclass
class CountingUpstream:
    """An aiohttp upstream on 127.0.0.1 that records every request.

    The last path segment picks a behaviour: `slow` waits for `gate`; `reset` sends the
    headers and part of the body, then aborts the connection; `drop` aborts before any
    response; anything else answers 200 with JSON.
    """

    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    port: int = 0
    gate: asyncio.Event | None = None
    work_seconds: float = 0.0
    """Time each request takes (simulated work, so that requests are in flight)."""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    def protected_hits(self) -> list[Seen]:
        """Requests for protected paths (those an attack must never get through to)."""
        return [s for s in self.seen if s.path.startswith(PROTECTED_PREFIXES)]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.seen.append(
            Seen(
                request.method,
                request.raw_path,
                request.headers.get("Authorization"),
                dict(request.headers),
            )
        )
        self.arrived.set()
        tail = request.path.rsplit("/", 1)[-1]
        if self.work_seconds:
            await asyncio.sleep(self.work_seconds)
        if tail == "slow" and self.gate is not None:
            await self.gate.wait()
        if tail == "drop":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if tail == "reset":
            response = web.StreamResponse()
            response.content_length = 1_000_000
            await response.prepare(request)
            await response.write(b"x" * 10_000)
            assert request.transport is not None
            request.transport.abort()
            return response
        return web.json_response({"path": request.raw_path})

    async def start(self) -> CountingUpstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def stop(self) -> None:
        """Stop listening (connections are refused); `start()` again serves the same port."""
        if self.gate is not None:
            self.gate.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def code(self) -> str | None:
        """The error code of a JSON error body, else None."""
        return code_of_body(self.body)


@dataclass
class RunningGateway:
    url: str
    port: int
    runner: GatewayRunner | ReferenceRunner
    metrics: GatewayMetrics
    log: io.BytesIO
    request_log: RequestLog
    client: aiohttp.ClientSession
    answers: list[Answer] = field(default_factory=list)

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> Answer:
        """One request with the path sent exactly as given (no client-side normalising)."""
        async with self.client.request(
            method,
            URL(self.url + path, encoded=True),
            headers=headers,
            data=data,
            allow_redirects=False,
        ) as response:
            answer = Answer(response.status, dict(response.headers), await response.read())
        self.answers.append(answer)
        return answer

    def log_text(self) -> str:
        return self.log.getvalue().decode("utf-8", "replace")


class _CapturedLog(io.BytesIO):
    def close(self) -> None:  # RequestLog never owns it
        pass


async def start_gateway(
    document: dict[str, Any],
    *,
    secrets: dict[str, str] | None = None,
    clock: Clock | None = None,
    shutdown_timeout: float = 1.0,
    log_requests: bool = True,
    reference: bool = False,
) -> RunningGateway:
    """Serve `document` on an ephemeral loopback port; stop it with `stop_gateway`.

    The request log goes to `log` unless `log_requests` is False (then none is written).
    With `reference`, the aiohttp reference server serves it instead of the traffic
    server."""
    values = {"JWT_SECRET": HS_SECRET} if secrets is None else secrets
    loaded = LoadedConfig(
        config=parse_config(document), secrets={k: SecretStr(v) for k, v in values.items()}
    )
    metrics = GatewayMetrics()
    log = _CapturedLog()
    request_log = RequestLog(log if log_requests else None)
    app = build_app(loaded, metrics=metrics, request_log=request_log, clock=clock or time.time)
    runner_class = ReferenceRunner if reference else GatewayRunner
    runner = runner_class(app, shutdown_timeout=shutdown_timeout, **server_options(loaded))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return RunningGateway(
        f"http://127.0.0.1:{port}", port, runner, metrics, log, request_log, aiohttp.ClientSession()
    )


async def stop_gateway(gateway: RunningGateway) -> None:
    await gateway.client.close()
    await gateway.runner.cleanup()


def seed_document(upstream_url: str, **extra: Any) -> dict[str, Any]:
    """The seed example, with `orders` pointing at the upstream and an open `/public/*`."""
    document = demo_document(upstream_url)
    document["paths"].append(
        {
            "method": "*",
            "path": "/public/*",
            "integration": {"type": "http_proxy", "server": "orders"},
        }
    )
    document.update(extra)
    return document


def bearer(token: str | None = None, **claim_values: Any) -> dict[str, str]:
    """An `Authorization` header with `token`, or a valid HS256 token for the seed."""
    if token is None:
        values: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, **claim_values}
        token = hs_token(claims(**values))
    return {"Authorization": f"Bearer {token}"}


async def raw_exchange(
    port: int, data: bytes, *, seconds: float = 10.0, read_limit: int = 1 << 20
) -> bytes:
    """Send raw bytes on a new connection; everything received until the peer closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        received = b""
        async with asyncio.timeout(seconds):
            while len(received) < read_limit and (chunk := await reader.read(65536)):
                received += chunk
        return received
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def status_of(response: bytes) -> int | None:
    """The status code of the first response in raw bytes, or None when there is none."""
    if not response.startswith(b"HTTP/1."):
        return None
    return int(response.split(b" ", 2)[1])


StartGateway = Callable[..., Awaitable[RunningGateway]]
"""The security and reliability fixtures' `gateway_factory(document, secrets=, clock=)`."""


class LogCapture(logging.Handler):
    """Every record of the `wardgate` loggers, formatted, with tracebacks."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def text(self) -> str:
        return "\n".join(self.lines)


def capture_logs() -> Iterator[LogCapture]:
    """Attach a `LogCapture` to the `wardgate` logger for the duration of a fixture."""
    handler = LogCapture()
    logger = logging.getLogger("wardgate")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
