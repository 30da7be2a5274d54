"""The operator stopped in the middle of a reconcile, and restarted: it converges, creates no
duplicates, and a restart with nothing to do writes nothing.

The operators here watch the whole cluster, where other tests' namespaces may still be
terminating: what they do there (nothing, when they see the namespace terminating) is not
this test's subject, so writes are counted in this test's namespace."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.operator_fixtures import Objects, RunningOperator, seed_objects
from wardgate.devcluster.cluster import KubeCluster

pytestmark = pytest.mark.cluster

SECRET = "seed-secret-0123456789-abcdefghijklmnop"
KINDS = ("Gateway", "Route", "Authorizer", "ConfigMap", "Deployment", "Service", "Secret")


def _paths(objects: Objects, namespace: str) -> list[str]:
    config = objects.config(namespace, "api") or {"paths": []}
    return [p["path"] for p in config["paths"]]


def test_restart_mid_reconcile_converges_without_duplicates(
    cluster: KubeCluster, objects: Objects, namespace: str
) -> None:
    first = RunningOperator(cluster.kubeconfig).start()
    try:
        kube = first.kube
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
            assert len(objects.list(kind, namespace)) == (3 if kind == "ConfigMap" else 1), kind
        # (the ConfigMaps: the config, the replicas' records and kube-root-ca.crt)
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


def test_a_deployment_with_the_old_selector_is_replaced_and_its_pods_adopted(
    cluster: KubeCluster, objects: Objects, namespace: str
) -> None:
    """Deployments made before the `instance` label changed are selected by it, and a
    selector cannot change: the operator deletes the Deployment leaving its ReplicaSet, and
    the new Deployment, whose selector matches the old pods, adopts and rolls it over."""
    operator = RunningOperator(cluster.kubeconfig).start()
    try:
        objects.apply(namespace, *seed_objects(SECRET))
        objects.wait_condition("Gateway", namespace, "api", "Ready", "True", timeout=90)
        objects.wait(
            "the operator to settle",
            lambda: objects.statuses_current(namespace) and operator.idle(),
        )
    finally:
        operator.stop()

    # The Deployment as the earlier operator made it.
    made = objects.get("Deployment", namespace, "wardgate-api")
    assert made is not None
    old_labels = {
        "app.kubernetes.io/name": "wardgate-gateway",
        "app.kubernetes.io/instance": "api",
        "app.kubernetes.io/managed-by": "wardgate-operator",
        "wardgate.io/gateway": "api",
    }
    old_selector = {
        "app.kubernetes.io/name": "wardgate-gateway",
        "app.kubernetes.io/instance": "api",
    }
    spec = made["spec"]
    spec["selector"] = {"matchLabels": old_selector}
    spec["template"]["metadata"]["labels"] = old_labels
    old = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "wardgate-api",
            "labels": old_labels,
            "annotations": made["metadata"]["annotations"],
            "ownerReferences": made["metadata"]["ownerReferences"],
        },
        "spec": spec,
    }
    objects.delete("Deployment", namespace, "wardgate-api")
    objects.wait(
        "the deletion", lambda: objects.get("Deployment", namespace, "wardgate-api") is None
    )
    objects.apply(namespace, old)

    def available(selector: dict[str, str]) -> bool:
        found = objects.get("Deployment", namespace, "wardgate-api") or {}
        status = found.get("status") or {}
        return (
            found.get("spec", {}).get("selector") == {"matchLabels": selector}
            and status.get("observedGeneration") == found["metadata"]["generation"]
            and status.get("updatedReplicas") == status.get("availableReplicas") == 1
            and status.get("replicas") == 1
        )

    objects.wait("the old Deployment available", lambda: available(old_selector), timeout=90)
    old_sets = {rs["metadata"]["uid"] for rs in objects.list("ReplicaSet", namespace)}
    assert len(old_sets) == 1

    second = RunningOperator(cluster.kubeconfig).start()
    try:
        new_selector = {"app.kubernetes.io/name": "wardgate-gateway", "wardgate.io/gateway": "api"}
        objects.wait("the new Deployment rolled out", lambda: available(new_selector), timeout=90)
        objects.wait_condition("Gateway", namespace, "api", "Ready", "True", timeout=90)
    finally:
        second.stop()

    deployment = objects.get("Deployment", namespace, "wardgate-api")
    assert deployment is not None
    assert deployment["metadata"]["labels"]["app.kubernetes.io/instance"] == "wardgate-api"
    # The old ReplicaSet was adopted by the new Deployment, not deleted with the old one.
    owners = {
        rs["metadata"]["uid"]: [o["uid"] for o in rs["metadata"].get("ownerReferences", [])]
        for rs in objects.list("ReplicaSet", namespace)
    }
    assert old_sets <= set(owners)
    assert all(owners[uid] == [deployment["metadata"]["uid"]] for uid in old_sets)
    service = objects.get("Service", namespace, "wardgate-api") or {}
    assert service["spec"]["selector"] == new_selector
