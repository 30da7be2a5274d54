"""Configs swapped in place, in-process: under a steady load of requests (proxied, with
and without a token), the gateway goes through twenty configs and back; not one request
fails, each answer comes from a whole config, and a config that fails to build changes
nothing."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from tests.support.gateway import (
    CountingUpstream,
    RunningGateway,
    bearer,
    seed_document,
    start_gateway,
    stop_gateway,
)
from tests.support.tokens import HS_SECRET
from wardgate.gateway.config import ConfigError, parse_config
from wardgate.gateway.kubesource import Snapshot
from wardgate.gateway.loading import LoadedConfig, document_hash
from wardgate.gateway.server import build_snapshot


@pytest.fixture
async def gateway(upstream: CountingUpstream) -> AsyncIterator[RunningGateway]:
    running = await start_gateway(seed_document(upstream.url), log_requests=False)
    yield running
    await stop_gateway(running)


def with_path(document: dict[str, Any], path: str) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    changed["paths"].append({"method": "GET", "path": path, "response": {"version": path}})
    return changed


def loaded_of(document: dict[str, Any]) -> LoadedConfig:
    return LoadedConfig(
        config=parse_config(document),
        secrets={"JWT_SECRET": SecretStr(HS_SECRET)},
        config_hash=document_hash(document),
    )


async def test_twenty_swaps_under_load_fail_no_request(
    gateway: RunningGateway, upstream: CountingUpstream
) -> None:
    holder = gateway.runner.holder
    base = seed_document(upstream.url)
    first_hash = holder.config_hash
    answers: list[tuple[str, int]] = []
    stop = asyncio.Event()
    token = bearer()

    expected = {"static": 200, "proxied": 200, "token": 200, "no token": 401}
    requests = {
        "static": ("/health", None),
        "proxied": ("/public/items", None),
        "token": ("/private/orders", token),
        "no token": ("/private/orders", None),
    }

    async def load(label: str) -> None:
        path, headers = requests[label]
        while not stop.is_set():
            answer = await gateway.request("GET", path, headers)
            answers.append((label, answer.status))

    clients = [asyncio.create_task(load(label)) for label in requests for _ in range(2)]
    try:
        for version in range(20):
            document = with_path(base, f"/v/{version}")
            new = holder.build(loaded_of(document))
            before = len(answers)
            await holder.swap(new, document_hash(document))
            assert holder.current is new
            answer = await gateway.request("GET", f"/v/{version}")
            assert answer.status == 200
            if version:  # the previous config's path is gone with it
                assert (await gateway.request("GET", f"/v/{version - 1}")).status == 404
            # Requests flowed during this config too.
            await gateway.request("GET", "/health")
            while len(answers) < before + 20:
                await gateway.request("GET", "/health")
    finally:
        stop.set()
        await asyncio.gather(*clients)

    failed = [(label, status) for label, status in answers if status != expected[label]]
    assert failed == []
    assert len(answers) > 400
    assert holder.config_hash != first_hash
    metrics = gateway.metrics.registry.get_sample_value
    assert metrics("wardgate_config_info", {"hash": holder.config_hash}) == 1
    assert metrics("wardgate_config_info", {"hash": first_hash}) is None
    assert metrics("wardgate_config_reloads_total", {"result": "ok"}) == 20


async def test_a_config_that_fails_to_build_changes_nothing(
    gateway: RunningGateway, upstream: CountingUpstream
) -> None:
    holder = gateway.runner.holder
    serving, serving_hash = holder.current, holder.config_hash
    broken = with_path(seed_document(upstream.url), "/x")
    broken["paths"][-1]["auth"] = {"authorizer": "nobody"}  # no such authorizer
    snapshot = Snapshot("h-broken", broken, {"JWT_SECRET": HS_SECRET}, "1", "test")
    with pytest.raises(ConfigError) as refused:
        build_snapshot(holder, lambda document: document, snapshot)
    assert any("nobody" in problem for problem in refused.value.problems)
    missing_secret = Snapshot("h-secret", seed_document(upstream.url), {}, "2", "test")
    with pytest.raises(ConfigError):
        build_snapshot(holder, lambda document: document, missing_secret)
    assert holder.current is serving
    assert holder.config_hash == serving_hash
    assert (await gateway.request("GET", "/health")).status == 200
