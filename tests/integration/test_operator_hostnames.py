"""Hostnames through the operator, on the real control plane: two Routes with the same method
and path on two hosts are both accepted and both served (real HTTP, by `Host`), a third on
one of those hosts gets `Conflict` naming the winner and the host, and a Route on a host the
Gateway does not serve gets `NoMatchingHostname`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.support.gateway import start_gateway, stop_gateway
from tests.support.operator_fixtures import Objects, RunningOperator

pytestmark = pytest.mark.cluster

API = "wardgate.io/v1alpha1"
HOSTNAMES = ["eu.shop.test", "us.shop.test", "*.shop.test"]


def _route(name: str, hostnames: list[str], store: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Route",
        "metadata": {"name": name},
        "spec": {
            "gatewayRef": {"name": "api"},
            "hostnames": hostnames,
            "paths": [{"method": "GET", "path": "/orders", "response": {"store": store}}],
        },
    }


async def test_two_hosts_serve_the_same_path_and_a_third_route_on_one_of_them_conflicts(
    operator: RunningOperator, objects: Objects, namespace: str
) -> None:
    gateway = {
        "apiVersion": API,
        "kind": "Gateway",
        "metadata": {"name": "api"},
        "spec": {"hostnames": HOSTNAMES},
    }
    objects.apply(
        namespace,
        gateway,
        _route("eu", ["eu.shop.test"], "eu"),
        _route("us", ["us.shop.test"], "us"),
    )
    for name in ("eu", "us"):
        accepted = await asyncio.to_thread(
            objects.wait_condition, "Route", namespace, name, "Accepted", "True", timeout=90
        )
        assert accepted["message"] == f"1 paths attached on {name}.shop.test"

    # Created after both (or in the same second, and after `eu` by name): `eu` keeps it.
    objects.apply(namespace, _route("zz-eu-copy", ["eu.shop.test"], "copy"))
    conflict = await asyncio.to_thread(
        objects.wait_condition, "Route", namespace, "zz-eu-copy", "Accepted", "False", "Conflict"
    )
    assert conflict["message"].startswith(
        f"GET /orders on eu.shop.test is already served by Route {namespace}/eu (spec.paths.0), "
    )
    assert "older" in conflict["message"] or "first by namespace/name" in conflict["message"]
    objects.apply(namespace, _route("elsewhere", ["api.other.test"], "elsewhere"))
    refused = await asyncio.to_thread(
        objects.wait_condition,
        "Route",
        namespace,
        "elsewhere",
        "Accepted",
        "False",
        "NoMatchingHostname",
    )
    assert "api.other.test" in refused["message"]
    assert "eu.shop.test, us.shop.test, *.shop.test" in refused["message"]

    def two_paths() -> bool:
        config = objects.config(namespace, "api")
        return config is not None and len(config["paths"]) == 2

    await asyncio.to_thread(objects.wait, "the config with both Routes", two_paths)
    config = objects.config(namespace, "api")
    assert config is not None
    assert config["hostnames"] == HOSTNAMES
    assert [(p["hostnames"], p["response"]) for p in config["paths"]] == [
        (["eu.shop.test"], {"store": "eu"}),
        (["us.shop.test"], {"store": "us"}),
    ]

    # The config the operator rendered, served over real HTTP.
    gateway_process = await start_gateway(config)
    try:
        for host, store in [
            ("eu.shop.test", "eu"),
            ("US.Shop.Test:8080", "us"),
            ("eu.shop.test.", "eu"),
        ]:
            answer = await gateway_process.request("GET", "/orders", {"Host": host})
            assert answer.status == 200, (host, answer.body)
            assert json.loads(answer.body) == {"store": store}, host
        unknown = await gateway_process.request("GET", "/orders", {"Host": "api.other.test"})
        assert (unknown.status, unknown.code) == (404, "unknown_host")
        # Served by the wildcard, but no Route serves /orders there.
        unrouted = await gateway_process.request("GET", "/orders", {"Host": "ca.shop.test"})
        assert (unrouted.status, unrouted.code) == (404, "no_route")
    finally:
        await stop_gateway(gateway_process)
