"""The operator against the real control plane.

One operator serves the module; it runs as the ServiceAccount of deploy/rbac.yaml, so every
test also proves those permissions are enough.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from tests.support.operator_fixtures import (
    Objects,
    RunningOperator,
    seed_objects,
)
from wardgate.devcluster.cluster import KubeCluster

pytestmark = pytest.mark.cluster

SECRET = "seed-secret-0123456789-abcdefghijklmnop"
ROTATED = "rotated-secret-0123456789-abcdefghijkl"
API = "wardgate.io/v1alpha1"
OWNED = ("ConfigMap", "Deployment", "Service")


def route(
    name: str, paths: list[dict[str, Any]], gateway: str = "api", **ref: str
) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Route",
        "metadata": {"name": name},
        "spec": {"gatewayRef": {"name": gateway, **ref}, "paths": paths},
    }


def gateway(name: str = "api", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Gateway", "metadata": {"name": name}, "spec": spec}


def static(path: str, method: str = "GET", **extra: Any) -> dict[str, Any]:
    return {"method": method, "path": path, "response": {"path": path}, **extra}


def pod_hash(objects: Objects, namespace: str, name: str = "api") -> str | None:
    """The hash of the config in the Gateway's ConfigMap (which its pods follow)."""
    config_map = objects.get("ConfigMap", namespace, f"wardgate-{name}-config")
    if config_map is None:
        return None
    value = config_map["metadata"].get("annotations", {}).get("wardgate.io/config-hash")
    return str(value) if value else None


def replica_sets(objects: Objects, namespace: str) -> set[str]:
    return {rs["metadata"]["uid"] for rs in objects.list("ReplicaSet", namespace)}


def test_seed_example_becomes_ready(
    operator: RunningOperator, objects: Objects, namespace: str, cluster: KubeCluster
) -> None:
    objects.apply(namespace, *seed_objects(SECRET))
    ready = objects.wait_condition("Gateway", namespace, "api", "Ready", "True", timeout=90)
    assert "ready replicas serve config" in ready["message"]
    objects.wait_condition("Authorizer", namespace, "jwt", "Ready", "True")
    for name in ("health", "orders"):
        objects.wait_condition("Route", namespace, name, "Accepted", "True")

    config = objects.config(namespace, "api")
    assert config is not None
    assert config["authorizers"]["jwt"]["secret"] == "$secret.jwt-keys.JWT_SECRET"
    assert config["defaultAuthorizer"] == "jwt"
    assert [p["path"] for p in config["paths"]] == ["/health", "/private/orders"]
    assert config["servers"]["orders"]["url"] == f"http://orders.{namespace}.svc:8080"

    deployment = objects.get("Deployment", namespace, "wardgate-api")
    assert deployment is not None
    pod = deployment["spec"]["template"]["spec"]
    # The pods read their ConfigMap and Secrets through the API, as their own account.
    assert pod["serviceAccountName"] == "wardgate-api"
    assert pod["automountServiceAccountToken"] is True
    assert "annotations" not in deployment["spec"]["template"]["metadata"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": "admin",
        "scheme": "HTTP",
    }
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["terminationGracePeriodSeconds"] > 20  # the default drainSeconds
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    assert container["args"][:3] == [
        "gateway",
        "--watch-config",
        f"{namespace}/wardgate-api-config",
    ]
    config_map = objects.get("ConfigMap", namespace, "wardgate-api-config")
    assert config_map is not None
    assert json.loads(config_map["data"]["secrets.json"]) == [
        {"key": "JWT_SECRET", "path": "jwt-keys.JWT_SECRET", "secret": "jwt-keys"}
    ]
    role = objects.get("Role", namespace, "wardgate-api")
    assert role is not None
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["wardgate-api-config"],
            "verbs": ["get", "list", "watch"],
        },
        # Where each replica records the config it serves.
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["wardgate-api-served"],
            "verbs": ["patch"],
        },
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["jwt-keys"],
            "verbs": ["get"],
        },
    ]
    # A replica may record what it serves in its Gateway's one ConfigMap, and write nothing
    # else: not its config, not another Gateway's record, not a Pod.
    account = f"system:serviceaccount:{namespace}:wardgate-api"
    for request, allowed in [
        (["patch", "configmaps/wardgate-api-served"], "yes"),
        (["update", "configmaps/wardgate-api-served"], "no"),
        (["patch", "configmaps/wardgate-api-config"], "no"),
        (["patch", "configmaps/wardgate-other-served"], "no"),
        (["patch", "pods"], "no"),
        (["list", "pods"], "no"),
    ]:
        answer = cluster.kubectl(
            "auth", "can-i", *request, "--as", account, "-n", namespace, check=False
        ).stdout.strip()
        assert answer == allowed, (request, answer)
    binding = objects.get("RoleBinding", namespace, "wardgate-api")
    assert binding is not None
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "wardgate-api", "namespace": namespace}
    ]
    gateway_body = objects.get("Gateway", namespace, "api")
    assert gateway_body is not None
    for kind in OWNED:
        owned = objects.get(
            kind, namespace, "wardgate-api-config" if kind == "ConfigMap" else "wardgate-api"
        )
        assert owned is not None
        assert owned["metadata"]["ownerReferences"][0]["uid"] == gateway_body["metadata"]["uid"]
    status = gateway_body["status"]
    assert status["routes"] == 2
    assert status["servingReplicas"] == status["replicas"] == 1
    assert status["configHash"] == pod_hash(objects, namespace)
    assert status["observedGeneration"] == gateway_body["metadata"]["generation"]

    # No secret value in any object the operator wrote, nor in statuses or Events.
    encoded = base64.b64encode(SECRET.encode()).decode()
    everything = str(
        [objects.list(k, namespace) for k in (*OWNED, "Event", "Route", "Authorizer", "Gateway")]
    )
    assert SECRET not in everything
    assert encoded not in everything

    listing = cluster.kubectl("get", "wardgate", "-n", namespace).stdout
    assert "gateway.wardgate.io/api" in listing
    assert "route.wardgate.io/orders" in listing
    assert "authorizer.wardgate.io/jwt" in listing


def test_each_route_reason(
    operator: RunningOperator, objects: Objects, namespace: str, cluster: KubeCluster
) -> None:
    other = f"{namespace}-b"
    cluster.kubectl("create", "namespace", other)
    try:
        objects.apply(
            namespace,
            gateway(servers={"orders": {"url": "http://orders.example.com"}}),
            route("first", [static("/shared")]),
        )
        objects.wait_condition("Route", namespace, "first", "Accepted", "True")
        objects.apply(
            namespace,
            route("second", [static("/shared"), static("/mine")]),
            route("orphan", [static("/x")], gateway="nothing"),
            route(
                "no-server",
                [
                    {
                        "method": "GET",
                        "path": "/s",
                        "integration": {"type": "http_proxy", "server": "billing"},
                    }
                ],
            ),
            route("no-authorizer", [static("/a", auth={"authorizer": "nobody"})]),
            route("no-default", [static("/d", auth=True)]),
            route("invalid", [static("/i", auth={"scopes": "read"})]),
            route("good", [static("/good")]),
        )
        objects.apply(other, route("foreign", [static("/f")], namespace=namespace))
        expected = {
            "second": "Conflict",
            "orphan": "GatewayNotFound",
            "no-server": "ServerNotFound",
            "no-authorizer": "AuthorizerNotFound",
            "no-default": "AuthorizerNotFound",
            "invalid": "Invalid",
        }
        for name, reason in expected.items():
            objects.wait_condition("Route", namespace, name, "Accepted", "False", reason)
        objects.wait_condition("Route", other, "foreign", "Accepted", "False", "NotAllowed")
        # Created within the same second or later: `first` wins (creation time, then name).
        conflict = objects.condition("Route", namespace, "second", "Accepted")
        assert f"Route {namespace}/first" in conflict["message"]
        objects.wait_condition("Route", namespace, "good", "Accepted", "True")

        # The bad Routes are left out; the good ones are served.
        def served() -> list[str]:
            config = objects.config(namespace, "api") or {"paths": []}
            return sorted(p["path"] for p in config["paths"])

        objects.wait("the good paths", lambda: served() == ["/good", "/shared"])
        events = objects.list("Event", namespace)
        assert any(
            e["reason"] == "Conflict" and e["involvedObject"]["name"] == "second" for e in events
        )

        # Once the older Route goes, the newer one gets the path.
        objects.delete("Route", namespace, "first")
        objects.wait_condition("Route", namespace, "second", "Accepted", "True")
        objects.wait("the newer paths", lambda: served() == ["/good", "/mine", "/shared"])
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false")


def test_a_bad_authorizer_takes_out_only_the_routes_that_use_it(
    operator: RunningOperator, objects: Objects, namespace: str
) -> None:
    objects.apply(namespace, *seed_objects(SECRET))
    objects.wait_condition("Gateway", namespace, "api", "Ready", "True", timeout=90)
    good_config = objects.config(namespace, "api")

    # A second Authorizer whose Secret does not exist, used by a new Route.
    objects.apply(
        namespace,
        {
            "apiVersion": API,
            "kind": "Authorizer",
            "metadata": {"name": "partner"},
            "spec": {
                "type": "jwt",
                "secret": "$secret.PARTNER_KEY",
                "secretRef": {"name": "partner"},
            },
        },
        route("partner", [static("/partner", auth={"authorizer": "partner"})]),
    )
    objects.wait_condition(
        "Authorizer", namespace, "partner", "ResolvedRefs", "False", "SecretNotFound"
    )
    objects.wait_condition("Route", namespace, "partner", "Accepted", "False", "AuthorizerNotReady")
    # A Route created meanwhile, using another Authorizer, is served: only the partner Route
    # is left out, and it does not say Ready.
    objects.apply(namespace, route("later", [static("/later", auth=True)]))
    objects.wait_condition("Route", namespace, "later", "Ready", "True")
    objects.wait(
        "the later Route in the config",
        lambda: (
            "/later"
            in [p["path"] for p in (objects.config(namespace, "api") or {}).get("paths", [])]
        ),
        timeout=60,
    )
    objects.apply(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "partner"},
            "stringData": {"OTHER": "x"},
        },
    )
    objects.wait_condition(
        "Authorizer", namespace, "partner", "ResolvedRefs", "False", "KeyNotFound"
    )
    refs = objects.condition("Authorizer", namespace, "partner", "ResolvedRefs")
    assert "(its keys: OTHER)" in refs["message"]  # key names, never values
    objects.apply(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "partner"},
            "stringData": {"PARTNER_KEY": "short"},
        },
    )
    objects.wait_condition(
        "Authorizer", namespace, "partner", "ResolvedRefs", "False", "InvalidKey"
    )
    # Meanwhile, the partner Route is out of the served config and says why; the seed's
    # paths are served unchanged and the Gateway is Ready.
    objects.wait(
        "the partner Route to name the Authorizer's reason",
        lambda: (
            "InvalidKey" in objects.condition("Route", namespace, "partner", "Ready")["message"]
        ),
        timeout=30,
    )
    partner = objects.condition("Route", namespace, "partner", "Ready")
    assert partner["status"] == "False"
    assert partner["reason"] == "AuthorizerNotReady"
    served = objects.config(namespace, "api")
    assert served is not None
    assert "/partner" not in [p["path"] for p in served["paths"]]
    assert good_config is not None
    assert [p for p in good_config["paths"] if p in served["paths"]] == good_config["paths"]
    objects.wait_condition("Gateway", namespace, "api", "Ready", "True", timeout=90)

    objects.apply(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "partner"},
            "stringData": {"PARTNER_KEY": "partner-key-0123456789-abcdefghijklmnop"},
        },
    )
    objects.wait_condition("Authorizer", namespace, "partner", "Ready", "True")
    objects.wait_condition("Gateway", namespace, "api", "Ready", "True", timeout=90)
    config = objects.config(namespace, "api")
    assert config is not None
    assert "/partner" in [p["path"] for p in config["paths"]]


def test_secret_rotation_applies_in_place_and_a_deleted_key_takes_out_its_routes(
    operator: RunningOperator, objects: Objects, namespace: str
) -> None:
    objects.apply(namespace, *seed_objects(SECRET))
    objects.wait_condition("Gateway", namespace, "api", "Ready", "True", timeout=90)
    before = pod_hash(objects, namespace)
    config = objects.config(namespace, "api")
    sets = replica_sets(objects, namespace)

    started = time.monotonic()
    objects.apply(namespace, seed_objects(ROTATED)[0])
    objects.wait(
        "a new config hash",
        lambda: pod_hash(objects, namespace) not in (None, before),
        timeout=10,
    )
    rolled_after = time.monotonic() - started
    assert rolled_after < 10
    assert objects.config(namespace, "api") == config  # references, not values
    objects.wait_condition("Gateway", namespace, "api", "Ready", "True", timeout=90)
    assert replica_sets(objects, namespace) == sets  # applied in place: no rollout

    objects.merge_patch("Secret", namespace, "jwt-keys", {"data": {"JWT_SECRET": None}})
    objects.wait_condition("Authorizer", namespace, "jwt", "ResolvedRefs", "False", "KeyNotFound")
    # The Route that uses the Authorizer is left out and says so; the public one stays.
    objects.wait_condition("Route", namespace, "orders", "Accepted", "False", "AuthorizerNotReady")
    objects.wait_condition("Route", namespace, "health", "Ready", "True")
    deployment = objects.get("Deployment", namespace, "wardgate-api")
    assert deployment is not None
    assert deployment["status"].get("availableReplicas") == 1


def test_update_delete_and_cascade(
    operator: RunningOperator, objects: Objects, namespace: str
) -> None:
    objects.apply(namespace, gateway(replicas=2), route("r", [static("/one")]))
    objects.wait_condition("Gateway", namespace, "api", "Ready", "True", timeout=90)
    assert objects.get("PodDisruptionBudget", namespace, "wardgate-api") is not None
    assert objects.get("HorizontalPodAutoscaler", namespace, "wardgate-api") is None

    objects.apply(namespace, route("r", [static("/one"), static("/two")]))
    objects.wait(
        "the updated config",
        lambda: (
            [p["path"] for p in (objects.config(namespace, "api") or {"paths": []})["paths"]]
            == ["/one", "/two"]
        ),
    )
    objects.apply(namespace, gateway(autoscaling={"minReplicas": 1, "maxReplicas": 3}))
    objects.wait(
        "the HorizontalPodAutoscaler",
        lambda: objects.get("HorizontalPodAutoscaler", namespace, "wardgate-api") is not None,
    )
    objects.wait(
        "no PodDisruptionBudget",
        lambda: objects.get("PodDisruptionBudget", namespace, "wardgate-api") is None,
    )

    objects.delete("Route", namespace, "r")
    objects.wait(
        "the config without the Route",
        lambda: (objects.config(namespace, "api") or {"paths": [1]})["paths"] == [],
    )
    objects.apply(namespace, route("r2", [static("/three")]))
    objects.wait_condition("Route", namespace, "r2", "Accepted", "True")
    objects.delete("Gateway", namespace, "api")
    objects.wait_condition("Route", namespace, "r2", "Accepted", "False", "GatewayNotFound")
    objects.wait(
        "owned objects garbage-collected",
        lambda: all(
            objects.get(kind, namespace, name) is None
            for kind, name in (
                ("ConfigMap", "wardgate-api-config"),
                ("Deployment", "wardgate-api"),
                ("Service", "wardgate-api"),
                ("HorizontalPodAutoscaler", "wardgate-api"),
            )
        ),
    )


def test_no_op_reconcile_writes_nothing(
    operator: RunningOperator, objects: Objects, namespace: str
) -> None:
    objects.apply(namespace, *seed_objects(SECRET))
    objects.wait_condition("Gateway", namespace, "api", "Ready", "True", timeout=90)
    objects.wait("the operator to settle", operator.idle)
    kinds = ("Gateway", "Route", "Authorizer", *OWNED, "Secret")
    versions = objects.resource_versions(namespace, kinds)
    # Counted in this namespace: other tests' namespaces may still be terminating.
    writes = operator.writes(namespace)

    operator.reconcile_everything()

    assert operator.writes(namespace) == writes
    assert objects.resource_versions(namespace, kinds) == versions


def test_terminating_namespace_gets_no_writes(
    cluster: KubeCluster, operator: RunningOperator, objects: Objects, namespace: str
) -> None:
    """The namespace controller deletes everything in it (the Deployment, the Gateway, the
    Routes, in no set order): the operator neither re-creates what it removes nor reports on
    objects about to vanish."""
    objects.apply(namespace, *seed_objects(SECRET))
    objects.wait_condition("Gateway", namespace, "api", "Ready", "True", timeout=90)
    objects.wait("the operator to settle", lambda: objects.statuses_current(namespace))
    objects.wait("the operator to settle", operator.idle)
    writes = operator.writes(namespace)

    cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    cluster.kubectl("wait", "--for=delete", f"namespace/{namespace}", "--timeout=120s")
    objects.wait("the operator to settle", operator.idle)

    assert operator.writes(namespace) == writes


def test_a_missing_backend_service_is_reported_without_blocking(
    operator: RunningOperator, objects: Objects, namespace: str
) -> None:
    """The seed's `orders` server is a Service: until it exists the Route is attached and
    served but says ResolvedRefs=False, BackendNotFound; the Service's creation and deletion
    are watched."""
    objects.apply(namespace, *seed_objects(SECRET))
    objects.wait_condition("Gateway", namespace, "api", "Ready", "True", timeout=90)
    missing = objects.wait_condition(
        "Route", namespace, "orders", "ResolvedRefs", "False", "BackendNotFound"
    )
    assert f"Service {namespace}/orders, which does not exist" in missing["message"]
    assert objects.condition("Route", namespace, "orders", "Stalled")["status"] == "True"
    assert objects.condition("Route", namespace, "orders", "Accepted")["status"] == "True"
    assert "/private/orders" in [
        p["path"] for p in (objects.config(namespace, "api") or {})["paths"]
    ]

    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "orders"},
        "spec": {"selector": {"app": "orders"}, "ports": [{"port": 8080}]},
    }
    objects.apply(namespace, service)
    objects.wait_condition("Route", namespace, "orders", "ResolvedRefs", "True")
    objects.wait_condition("Route", namespace, "orders", "Ready", "True")
    assert objects.condition("Route", namespace, "orders", "Stalled") == {}

    objects.delete("Service", namespace, "orders")
    objects.wait_condition("Route", namespace, "orders", "ResolvedRefs", "False", "BackendNotFound")
    objects.wait_condition("Gateway", namespace, "api", "Ready", "True")
