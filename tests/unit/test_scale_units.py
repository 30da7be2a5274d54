"""Unit tests of what keeps the operator quiet and cheap at scale: the coalescing window,
backoff that events do not bypass, Events only on transitions that matter, and the
compressed config that fits 20,000 paths in one ConfigMap."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from wardgate.operator.conditions import eventful, false, merge_conditions, true
from wardgate.operator.inputs import resource_from_body, secret_from_body
from wardgate.operator.manifests import (
    CONFIG_FILE,
    CONFIG_MAP_LIMIT,
    Defaults,
    build_gateway_objects,
    config_map_size,
    config_map_text,
)
from wardgate.operator.render import render
from wardgate.operator.status import config_too_large, routes_not_delivered
from wardgate.operator.workqueue import WorkQueue


async def _next(processed: asyncio.Queue[str]) -> str:
    return await asyncio.wait_for(processed.get(), 5)


async def test_changes_within_the_window_are_processed_once() -> None:
    processed: asyncio.Queue[str] = asyncio.Queue()

    async def process(key: str) -> None:
        processed.put_nowait(key)

    queue: WorkQueue[str] = WorkQueue(process, lambda exc: None, workers=2, window=0.2)
    queue.start()
    try:
        for _ in range(5000):  # a bulk edit: every Route event names the same Gateway
            queue.add("gateway")
        queue.add("other")
        assert sorted([await _next(processed), await _next(processed)]) == ["gateway", "other"]
        queue.add("later")  # processed after the window: nothing else came meanwhile
        assert await _next(processed) == "later"
        queue.add("gateway")  # a later change is processed again
        assert await _next(processed) == "gateway"
    finally:
        await queue.stop()


async def test_events_during_a_backoff_do_not_cut_it_short() -> None:
    loop = asyncio.get_running_loop()
    attempts: list[float] = []
    processed: asyncio.Queue[str] = asyncio.Queue()

    async def process(key: str) -> None:
        attempts.append(loop.time())
        processed.put_nowait(key)
        if len(attempts) == 1:
            raise RuntimeError("refused")

    queue: WorkQueue[str] = WorkQueue(process, lambda exc: 0.5, workers=1, window=0.0)
    queue.start()
    try:
        queue.add("gateway")
        assert await _next(processed) == "gateway"  # refused: retried in 0.5 s
        for _ in range(20):  # e.g. the watch delivering the operator's own status writes
            queue.add("gateway")
        assert await _next(processed) == "gateway"
        assert attempts[1] - attempts[0] >= 0.5
        queue.add("sentinel")
        assert await _next(processed) == "sentinel"  # no third attempt came before it
        assert len(attempts) == 3
    finally:
        await queue.stop()


def _stored(*conditions: Any) -> list[dict[str, Any]]:
    return merge_conditions([], conditions, 1, "T")


def test_an_object_fine_from_the_start_writes_no_event() -> None:
    accepted = true("Accepted", "Accepted", "2 paths")
    assert eventful([], [accepted, true("Ready", "Ready")]) == []
    # A rollout (Pending, then Progressing, then Programmed) writes none either.
    pending = false("Programmed", "Pending", "the Deployment does not exist yet")
    progressing = false("Programmed", "Progressing", "rolling out")
    assert eventful([], [pending]) == []
    assert eventful(_stored(pending), [progressing]) == []
    assert eventful(_stored(progressing), [true("Programmed", "Programmed")]) == []


def test_a_failure_and_its_recovery_write_one_event_each() -> None:
    accepted = true("Accepted", "Accepted")
    invalid = false("Accepted", "Invalid", "paths.0.path: bad")
    assert eventful(_stored(accepted), [invalid]) == [invalid]
    assert eventful([], [invalid]) == [invalid]  # created invalid
    assert eventful(_stored(invalid), [invalid]) == []  # still invalid: nothing new
    conflict = false("Accepted", "Conflict", "taken")
    assert eventful(_stored(invalid), [conflict]) == [conflict]  # another reason
    assert eventful(_stored(conflict), [accepted]) == [accepted]  # fixed
    too_large = config_too_large(2_000_000, CONFIG_MAP_LIMIT, 30_000)
    assert eventful(_stored(true("Programmed", "Programmed")), [too_large]) == [too_large]


def test_the_too_large_condition_says_the_size_and_the_limit() -> None:
    condition = config_too_large(2_000_123, CONFIG_MAP_LIMIT, 30_000)
    assert (condition.type, condition.status, condition.reason) == (
        "Programmed",
        "False",
        "ConfigTooLarge",
    )
    assert "2000123 bytes" in condition.message
    assert str(CONFIG_MAP_LIMIT) in condition.message
    assert "30000 paths" in condition.message


def test_routes_of_an_undelivered_config_are_not_ready_and_write_no_event() -> None:
    gateway = resource_from_body(
        {"metadata": {"namespace": "team", "name": "api", "uid": "g"}, "spec": {}}
    )
    routes = [
        resource_from_body(
            {
                "metadata": {"namespace": "team", "name": f"route-{i:05d}"},
                "spec": {
                    "gatewayRef": {"name": "api"},
                    "paths": [{"method": "GET", "path": f"/r/{i}", "response": {"ok": True}}],
                },
            }
        )
        for i in range(3)
    ]
    assert all(s.ready for s in render(("team", "api"), gateway, routes, [], {}, {}, set()).routes)
    broken = resource_from_body(
        {
            "metadata": {"namespace": "team", "name": "broken"},
            "spec": {"gatewayRef": {"name": "api"}, "paths": [{"path": "no-slash"}]},
        }
    )
    result = render(("team", "api"), gateway, [*routes, broken], [], {}, {}, set())
    statuses = routes_not_delivered(result.routes, ("team", "api"), 2_000_123, CONFIG_MAP_LIMIT)
    by_name = {s.meta.name: s for s in statuses}
    for index in range(3):
        status = by_name[f"route-{index:05d}"]
        assert not status.ready
        ready = next(c for c in status.conditions if c.type == "Ready")
        assert (ready.status, ready.reason) == ("False", "GatewayConfigTooLarge")
        assert "Gateway team/api" in ready.message
        assert "2000123 bytes" in ready.message
        assert str(CONFIG_MAP_LIMIT) in ready.message
        assert [c.type for c in status.conditions if c.type == "Stalled"] == ["Stalled"]
        assert status.fields == next(r.fields for r in result.routes if r.meta == status.meta)
        # Thousands of Routes: the Gateway's Event says it once, the Routes write none,
        # neither on the way in nor on the way back.
        before = next(r for r in result.routes if r.meta == status.meta)
        assert eventful(_stored(*before.conditions), status.conditions) == []
        assert eventful(_stored(*status.conditions), before.conditions) == []
    # A Route that is invalid on its own keeps its own reason.
    assert by_name["broken"] == next(r for r in result.routes if r.meta.name == "broken")
    assert not by_name["broken"].ready


def _route(index: int) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "team", "name": f"route-{index:05d}"},
        "spec": {
            "gatewayRef": {"name": "api"},
            "paths": [
                {
                    "method": ["GET", "POST"],
                    "path": f"/service-{index}/items/{{id}}",
                    "auth": True,
                    "integration": {"type": "http_proxy", "server": "backend"},
                },
                {"method": "GET", "path": f"/service-{index}/health", "response": {"ok": True}},
            ],
        },
    }


def test_twenty_thousand_paths_fit_in_one_config_map() -> None:
    gateway = resource_from_body(
        {
            "metadata": {"namespace": "team", "name": "api", "uid": "u"},
            "spec": {
                "defaultAuthorizer": "jwt",
                "servers": {"backend": {"service": {"name": "backend", "port": 80}}},
            },
        }
    )
    authorizer = resource_from_body(
        {
            "metadata": {"namespace": "team", "name": "jwt"},
            "spec": {"type": "jwt", "secret": "$secret.KEY", "secretRef": {"name": "keys"}},
        }
    )
    secrets = {("team", "keys"): secret_from_body({"stringData": {"KEY": "k" * 40}})}
    routes = [resource_from_body(_route(i)) for i in range(10_000)]
    result = render(gateway.meta.key, gateway, routes, [authorizer], secrets, {})
    assert result.config is not None
    assert result.spec is not None
    assert result.config_json is not None
    assert len(result.config.paths) == 20_000
    config_map = build_gateway_objects(gateway.meta, result.spec, result, Defaults()).apply[0]
    assert list(config_map["binaryData"]) == [CONFIG_FILE]
    assert json.loads(config_map["data"]["secrets.json"]) == [
        {"key": "KEY", "path": "keys.KEY", "secret": "keys"}
    ]
    size = config_map_size(config_map)
    assert len(result.config_json) > CONFIG_MAP_LIMIT  # would not fit uncompressed
    assert size < CONFIG_MAP_LIMIT / 2
    text = config_map_text(config_map)
    assert text == result.config_json
    assert len(json.loads(text)["paths"]) == 20_000
