"""Fixtures of the security, reliability and integration suites (loaded by their
`conftest.py`): a counting upstream and gateways in front of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.gateway import (
    CountingUpstream,
    RunningGateway,
    StartGateway,
    start_gateway,
    stop_gateway,
)


@pytest.fixture
async def upstream() -> AsyncIterator[CountingUpstream]:
    server = await CountingUpstream().start()
    yield server
    await server.stop()


@pytest.fixture
async def gateway_factory() -> AsyncIterator[StartGateway]:
    """`await gateway_factory(document, secrets=..., clock=...)`: a served gateway."""
    started: list[RunningGateway] = []

    async def start(document: dict[str, Any], **options: Any) -> RunningGateway:
        gateway = await start_gateway(document, **options)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await stop_gateway(gateway)
