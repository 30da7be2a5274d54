"""A server's CA bundle from a ConfigMap, on the real control plane: the operator carries
the bundle in the rendered config, renders again when the ConfigMap changes, and names a
missing ConfigMap, a missing key or a key without certificates on the Gateway
(`InvalidCertificate`) while the last good config keeps serving."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.certificates import new_authority
from tests.support.operator_fixtures import Objects, RunningOperator

pytestmark = pytest.mark.cluster

API = "wardgate.io/v1alpha1"


def bundle_config_map(data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "trust-bundle"},
        "data": data,
    }


def bundle_gateway(key: str = "bundle.pem") -> dict[str, Any]:
    ref = {"kind": "ConfigMap", "name": "trust-bundle", "key": key}
    return {
        "apiVersion": API,
        "kind": "Gateway",
        "metadata": {"name": "api"},
        "spec": {"servers": {"billing": {"url": "https://billing.internal", "caBundleRef": ref}}},
    }


def served_bundle(objects: Objects, namespace: str) -> str | None:
    config = objects.config(namespace, "api") or {}
    server = (config.get("servers") or {}).get("billing") or {}
    bundle = server.get("caBundlePem")
    return str(bundle) if bundle is not None else None


async def test_a_ca_bundle_from_a_config_map_is_rendered_and_follows_its_changes(
    operator: RunningOperator, objects: Objects, namespace: str
) -> None:
    first, second = new_authority(), new_authority()
    objects.apply(namespace, bundle_config_map({"bundle.pem": first.pem}), bundle_gateway())
    await asyncio.to_thread(
        objects.wait_condition, "Gateway", namespace, "api", "Accepted", "True", None, 90
    )
    await asyncio.to_thread(
        objects.wait,
        "the first bundle rendered",
        lambda: served_bundle(objects, namespace) == first.pem,
    )

    # trust-manager rotating its bundle: the Gateway is rendered again with the new one.
    both = first.pem + second.pem
    objects.apply(namespace, bundle_config_map({"bundle.pem": both}))
    await asyncio.to_thread(
        objects.wait,
        "the changed bundle rendered",
        lambda: served_bundle(objects, namespace) == both,
    )

    # A key without certificates: named on the Gateway, the last good config stays.
    objects.apply(namespace, bundle_config_map({"bundle.pem": "not a bundle"}))
    condition = await asyncio.to_thread(
        objects.wait_condition,
        "Gateway",
        namespace,
        "api",
        "Accepted",
        "False",
        "InvalidCertificate",
    )
    assert condition["message"].startswith(
        "spec.servers.billing.caBundleRef: ConfigMap 'trust-bundle' key 'bundle.pem': not PEM"
    )
    assert served_bundle(objects, namespace) == both

    # A key the ConfigMap does not have, then a ConfigMap that does not exist.
    objects.apply(namespace, bundle_gateway("other.pem"))
    await asyncio.to_thread(
        objects.wait,
        "the missing key named",
        lambda: (
            "ConfigMap 'trust-bundle' has no key 'other.pem'"
            in objects.condition("Gateway", namespace, "api", "Accepted").get("message", "")
        ),
    )
    objects.api.request_blocking(
        "DELETE", f"/api/v1/namespaces/{namespace}/configmaps/trust-bundle"
    )
    await asyncio.to_thread(
        objects.wait,
        "the missing ConfigMap named",
        lambda: (
            "no ConfigMap 'trust-bundle'"
            in objects.condition("Gateway", namespace, "api", "Accepted").get("message", "")
        ),
    )
    assert served_bundle(objects, namespace) == both

    # Created again with a good bundle: accepted and rendered.
    objects.apply(namespace, bundle_config_map({"other.pem": second.pem}))
    await asyncio.to_thread(objects.wait_condition, "Gateway", namespace, "api", "Accepted", "True")
    await asyncio.to_thread(
        objects.wait,
        "the recreated bundle rendered",
        lambda: served_bundle(objects, namespace) == second.pem,
    )
