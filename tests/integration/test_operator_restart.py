"""The operator stopped in the middle of a reconcile, and restarted: it converges, creates no
duplicates, and a restart with nothing to do writes nothing.

The operators here watch the whole cluster, where other tests' namespaces may still be
terminating: what they do there (nothing, when they see the namespace terminating) is not
this test's subject, so writes are counted in this test's namespace."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from integration.operator_support import Objects, RunningOperator, install_crds, seed_objects

from wardgate.devcluster.cluster import KubeCluster

pytestmark = pytest.mark.cluster

SECRET = "seed-secret-0123456789-abcdefghijklmnop"
KINDS = ("Gateway", "Route", "Authorizer", "ConfigMap", "Deployment", "Service", "Secret")


@pytest.fixture(scope="module")
def objects(cluster: KubeCluster) -> Iterator[Objects]:
    install_crds(cluster)
    found = Objects(cluster)
    yield found
    found.close()


def _paths(objects: Objects, namespace: str) -> list[str]:
    config = objects.config(namespace, "api") or {"paths": []}
    return [p["path"] for p in config["paths"]]


def test_restart_mid_reconcile_converges_without_duplicates(
    cluster: KubeCluster, objects: Objects, namespace: str
) -> None:
    first = RunningOperator(cluster.kubeconfig).start()
    try:
        kube = first.controller.kube
        original = kube.apply

        async def apply_then_crash(manifest: dict[str, Any]) -> dict[str, Any]:
            if manifest["kind"] != "ConfigMap":
                raise RuntimeError("the operator process dies here")
            return await original(manifest)

        kube.apply = apply_then_crash  # type: ignore[method-assign]
        objects.apply(namespace, *seed_objects(SECRET))
        objects.wait(
            "the ConfigMap written before the crash",
            lambda: objects.get("ConfigMap", namespace, "wardgate-api-config") is not None,
        )
        assert objects.get("Deployment", namespace, "wardgate-api") is None
    finally:
        first.stop()

    # While no operator runs, a Route changes.
    health = seed_objects(SECRET)[2]
    health["spec"]["paths"].append({"method": "GET", "path": "/version", "response": "1"})
    objects.apply(namespace, health)

    second = RunningOperator(cluster.kubeconfig).start()
    try:
        objects.wait_condition("Gateway", namespace, "api", "Ready", "True", timeout=90)
        objects.wait(
            "the Route changed meanwhile", lambda: "/version" in _paths(objects, namespace)
        )
        for kind in ("ConfigMap", "Deployment", "Service"):
            assert len(objects.list(kind, namespace)) == (2 if kind == "ConfigMap" else 1), kind
        # (the second ConfigMap is kube-root-ca.crt)
        # Gateway Ready is written before the Routes' statuses: stop only once every status
        # is for the latest generation and nothing is left to do.
        objects.wait(
            "the second operator to settle",
            lambda: objects.statuses_current(namespace) and second.idle(),
        )
    finally:
        second.stop()

    versions = objects.resource_versions(namespace, KINDS)
    third = RunningOperator(cluster.kubeconfig).start()
    try:
        objects.wait(
            "the initial pass", lambda: third.controller.queue.processed > 0 and third.idle()
        )
        third.reconcile_everything()
        assert third.writes(namespace) == 0
        assert objects.resource_versions(namespace, KINDS) == versions
    finally:
        third.stop()
