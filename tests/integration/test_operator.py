"""The operator against the real control plane: one operator for the module."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from integration.operator_support import Objects, RunningOperator, install_crds, seed_objects

from wardgate.devcluster.cluster import KubeCluster

pytestmark = pytest.mark.cluster

SECRET = "seed-secret-0123456789-abcdefghijklmnop"


@pytest.fixture(scope="module")
def objects(cluster: KubeCluster) -> Objects:
    install_crds(cluster)
    return Objects(cluster)


@pytest.fixture(scope="module")
def operator(cluster: KubeCluster, objects: Objects) -> Iterator[RunningOperator]:
    running = RunningOperator(cluster.kubeconfig).start()
    yield running
    running.stop()


def test_seed_example_becomes_ready(
    operator: RunningOperator, objects: Objects, namespace: str
) -> None:
    objects.apply(namespace, *seed_objects(SECRET))
    objects.wait_condition("Gateway", namespace, "api", "Ready", "True", timeout=90)
    config = objects.config(namespace, "api")
    assert config is not None
    assert config["authorizers"]["jwt"]["secret"] == "$secret.jwt-keys.JWT_SECRET"
    assert [p["path"] for p in config["paths"]] == ["/health", "/private/orders"]
    assert config["servers"]["orders"]["url"] == f"http://orders.{namespace}.svc:8080"
    deployment = objects.get("Deployment", namespace, "wardgate-api")
    assert deployment is not None
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    sources = pod["volumes"][2]["projected"]["sources"]
    assert sources == [
        {
            "secret": {
                "name": "jwt-keys",
                "items": [{"key": "JWT_SECRET", "path": "jwt-keys.JWT_SECRET"}],
            }
        }
    ]
    assert base64.b64encode(SECRET.encode()).decode() not in str(deployment)
