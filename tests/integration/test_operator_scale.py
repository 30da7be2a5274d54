"""The operator's behaviour at scale, at a small scale against the real control plane: a
config over the ConfigMap limit is reported once and never sent again and again, and
Events are written only for the transitions that need someone.

The figures at 1,000 to 10,000 Routes are measured by `bench/bench_scale.py`.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest

from tests.support.operator_fixtures import Objects, RunningOperator
from wardgate.operator.manifests import CONFIG_MAP_LIMIT

pytestmark = pytest.mark.cluster

API = "wardgate.io/v1alpha1"


def route(name: str, path: str, response: Any = None) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Route",
        "metadata": {"name": name},
        "spec": {
            "gatewayRef": {"name": "api"},
            "paths": [{"method": "GET", "path": path, "response": response or {"path": path}}],
        },
    }


GATEWAY = {"apiVersion": API, "kind": "Gateway", "metadata": {"name": "api"}, "spec": {}}


def events(objects: Objects, namespace: str, kind: str, reason: str | None = None) -> list[Any]:
    return [
        e
        for e in objects.list("Event", namespace)
        if e["involvedObject"]["kind"] == kind and reason in (None, e["reason"])
    ]


def test_a_config_over_the_limit_is_reported_once_and_not_retried(
    operator: RunningOperator, objects: Objects, namespace: str
) -> None:
    objects.apply(namespace, GATEWAY, route("small", "/small"))
    objects.wait_condition("Gateway", namespace, "api", "Ready", "True", timeout=90)
    assert objects.config(namespace, "api") is not None

    # Random bodies do not compress: 48 Routes of 32 KiB of base64 make about 1.2 MB.
    big = [
        route(f"big-{i}", f"/big/{i}", base64.b64encode(os.urandom(24 * 1024)).decode())
        for i in range(48)
    ]
    objects.apply(namespace, *big)
    condition = objects.wait_condition(
        "Gateway", namespace, "api", "Programmed", "False", "ConfigTooLarge", timeout=90
    )
    assert f"over the ConfigMap limit of {CONFIG_MAP_LIMIT} bytes" in condition["message"]
    size = int(condition["message"].split(" bytes compressed")[0].rsplit(" ", 1)[1])
    assert size > CONFIG_MAP_LIMIT
    assert objects.condition("Gateway", namespace, "api", "Ready")["reason"] == "ConfigTooLarge"
    # Its Routes, valid on their own, do not say Ready for a config that was not delivered:
    # each names the Gateway and the limit; none writes an Event of its own.
    for name in ("small", "big-0", "big-47"):
        not_served = objects.wait_condition(
            "Route", namespace, name, "Ready", "False", "GatewayConfigTooLarge"
        )
        assert f"Gateway {namespace}/api" in not_served["message"]
        assert f"limit of {CONFIG_MAP_LIMIT} bytes" in not_served["message"]
        accepted = objects.condition("Route", namespace, name, "Accepted")
        assert (accepted["status"], accepted["reason"]) == ("False", "GatewayConfigTooLarge")
    # Nothing is retried: once every change has been reconciled, no retry is pending.
    objects.wait("the operator to settle", operator.idle)
    # The last config that fitted keeps serving (the Routes arrive one by one, so it may
    # hold some of the big ones already).
    served = [p["path"] for p in (objects.config(namespace, "api") or {})["paths"]]
    assert "/small" in served
    assert len(served) < 1 + len(big)
    assert len(events(objects, namespace, "Gateway", "ConfigTooLarge")) == 1
    writes = operator.writes(namespace)
    operator.reconcile_everything()
    assert operator.writes(namespace) == writes
    assert len(events(objects, namespace, "Gateway", "ConfigTooLarge")) == 1

    for item in big[1:]:
        objects.delete("Route", namespace, item["metadata"]["name"])
    objects.wait_condition("Gateway", namespace, "api", "Programmed", "True", timeout=90)
    objects.wait(
        "the remaining paths", lambda: len((objects.config(namespace, "api") or {})["paths"]) == 2
    )
    recovered = [
        e for e in events(objects, namespace, "Gateway") if e["reason"] != "ConfigTooLarge"
    ]
    assert [e["type"] for e in recovered] == ["Normal"]
    # The Routes that remain are Ready again, with no Event either way.
    for name in ("small", "big-0"):
        objects.wait_condition("Route", namespace, name, "Ready", "True")
    assert events(objects, namespace, "Route") == []


def test_events_only_for_failures_and_recoveries(
    operator: RunningOperator, objects: Objects, namespace: str
) -> None:
    objects.apply(namespace, GATEWAY, *(route(f"r{i}", f"/r/{i}") for i in range(20)))
    for i in range(20):
        objects.wait_condition("Route", namespace, f"r{i}", "Accepted", "True")
    objects.wait_condition("Gateway", namespace, "api", "Ready", "True", timeout=90)
    objects.wait("the operator to settle", operator.idle)
    # Twenty accepted Routes and a Gateway rolled out: no Event at all.
    assert events(objects, namespace, "Route") == []
    assert events(objects, namespace, "Gateway") == []

    # One Route turns invalid: one Warning for it; fixed: one Normal.
    invalid = route("r3", "/r/3")
    invalid["spec"]["paths"][0]["auth"] = {"scopes": "read"}  # a list, says the operator
    objects.apply(namespace, invalid)
    objects.wait_condition("Route", namespace, "r3", "Accepted", "False", "Invalid")
    objects.wait("the operator to settle", operator.idle)
    written = events(objects, namespace, "Route")
    assert [(e["involvedObject"]["name"], e["type"], e["reason"]) for e in written] == [
        ("r3", "Warning", "Invalid")
    ]
    objects.apply(namespace, route("r3", "/r/3"))
    objects.wait_condition("Route", namespace, "r3", "Accepted", "True")
    objects.wait("the operator to settle", operator.idle)
    assert sorted((e["type"], e["reason"]) for e in events(objects, namespace, "Route")) == [
        ("Normal", "Accepted"),
        ("Warning", "Invalid"),
    ]
