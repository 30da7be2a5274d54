"""The API server restarted under a running operator: the operator recovers its watches and
catches up with what changed while it was cut off, without duplicating anything.

While kube-apiserver is down nothing can be written through it, so the changes are written
straight into etcd, as another API server of a highly available control plane would have
stored them (custom resources are stored as JSON): a Route gains a path, another is deleted.
The restarted API server's watch cache starts at etcd's current revision, so the operator's
watches cannot resume where they stopped: they must list again. The change arrives in that
listing, never as an event; the deletion arrives not at all (a listing only shows what
exists), so only the operator's resync can notice it.

The session cluster is used when it is local; with `WARDGATE_KUBECONFIG` (a cluster this
test cannot restart) the module starts a local cluster of its own.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import results
from tests.support.operator_fixtures import Objects, RunningOperator, install_crds, seed_objects
from wardgate.devcluster.cluster import KubeCluster, LocalCluster

pytestmark = pytest.mark.cluster

SUITE = "operator: API server restart"
SECRET = "restart-secret-0123456789-abcdefghijklm"
OWNED = ("ConfigMap", "Deployment", "Service", "ReplicaSet")
# kube-apiserver stops listening at once on SIGTERM; what it does afterwards is not the
# subject here (see `LocalCluster.stop_component`).
STOP_GRACE_SECONDS = 1.0
RESYNC_SECONDS = 1.0


@pytest.fixture(scope="module")
def local_cluster(cluster: KubeCluster) -> Iterator[LocalCluster]:
    """The session cluster when it is local, else one started for this module."""
    if isinstance(cluster, LocalCluster):
        yield cluster
        return
    with LocalCluster() as own:
        yield own


@pytest.fixture
def objects(local_cluster: LocalCluster) -> Iterator[Objects]:
    install_crds(local_cluster)
    found = Objects(local_cluster)
    yield found
    found.close()


@pytest.fixture
def own_namespace(local_cluster: LocalCluster) -> Iterator[str]:
    name = f"t-apiserver-restart-{secrets.token_hex(3)}"
    local_cluster.kubectl("create", "namespace", name)
    local_cluster.kubectl(
        "wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=60s"
    )
    yield name
    local_cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def _etcd(cluster: LocalCluster, call: str, request: dict[str, str]) -> dict[str, Any]:
    """One call of etcd's JSON gateway (keys and values base64)."""
    data = json.dumps(request).encode()
    with urllib.request.urlopen(f"{cluster.etcd_url}/v3/kv/{call}", data, timeout=10) as r:
        reply: dict[str, Any] = json.load(r)
    return reply


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _route_key(namespace: str, name: str) -> str:
    return _b64(f"/registry/wardgate.io/routes/{namespace}/{name}")


def change_route_in_etcd(cluster: LocalCluster, namespace: str, name: str, path: str) -> None:
    """Add a path to a stored Route, with the new generation the API server would give it."""
    found = _etcd(cluster, "range", {"key": _route_key(namespace, name)})
    stored = json.loads(base64.b64decode(found["kvs"][0]["value"]))
    stored["spec"]["paths"].append({"method": "GET", "path": path, "response": "1"})
    stored["metadata"]["generation"] += 1
    _etcd(cluster, "put", {"key": _route_key(namespace, name), "value": _b64(json.dumps(stored))})


def _paths(objects: Objects, namespace: str) -> set[str]:
    config = objects.config(namespace, "api") or {"paths": []}
    return {p["path"] for p in config["paths"]}


def _uids(objects: Objects, namespace: str) -> dict[str, set[str]]:
    return {
        kind: {item["metadata"]["uid"] for item in objects.list(kind, namespace)} for kind in OWNED
    }


def test_operator_catches_up_after_the_api_server_restarts(
    local_cluster: LocalCluster, objects: Objects, own_namespace: str
) -> None:
    namespace = own_namespace
    operator = RunningOperator(local_cluster.kubeconfig, resync_seconds=RESYNC_SECONDS).start()
    try:
        objects.apply(namespace, *seed_objects(SECRET))
        objects.wait_condition("Gateway", namespace, "api", "Ready", "True", timeout=90)
        objects.wait(
            "the operator to settle",
            lambda: objects.statuses_current(namespace) and operator.idle(),
        )
        before = _uids(objects, namespace)

        down = time.monotonic()
        local_cluster.stop_component("kube-apiserver", grace=STOP_GRACE_SECONDS)
        change_route_in_etcd(local_cluster, namespace, "health", "/version")
        _etcd(local_cluster, "deleterange", {"key": _route_key(namespace, "orders")})
        local_cluster.start_component("kube-apiserver")
        back = time.monotonic()

        objects.wait(
            "the config to show the change made while the API server was down",
            lambda: "/version" in _paths(objects, namespace),
            timeout=60,
        )
        objects.wait(
            "the config to lose the Route deleted while the API server was down",
            lambda: "/private/orders" not in _paths(objects, namespace),
            timeout=60,
        )
        objects.wait(
            "every status current and nothing left to do",
            lambda: objects.statuses_current(namespace) and operator.idle(),
        )
        caught_up = time.monotonic()
        objects.wait_condition("Gateway", namespace, "api", "Ready", "True")
        assert objects.condition("Route", namespace, "health", "Accepted")["status"] == "True"
        assert objects.get("Route", namespace, "orders") is None
        # The same objects as before the restart: none created again, none duplicated, and
        # no new ReplicaSet: the new config is applied in place, not by a rollout.
        after = _uids(objects, namespace)
        for kind in ("ConfigMap", "Deployment", "Service", "ReplicaSet"):
            assert after[kind] == before[kind], kind
    finally:
        operator.stop()

    results.record(SUITE, "API server restarts survived")
    results.record(SUITE, "changes made while it was down, caught up")
    results.record(SUITE, "deletions made while it was down, caught up")
    results.record(SUITE, "duplicate objects", 0)
    results.note(
        SUITE,
        api_server_down_seconds=round(back - down, 1),
        caught_up_seconds_after_restart=round(caught_up - back, 1),
    )
