"""The control plane is real Kubernetes: admission, controllers, garbage collection, RBAC,
and a local cluster leaves nothing behind when stopped."""

from __future__ import annotations

import json
import os
import secrets
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.support.host import killed_owner, processes_mentioning
from wardgate.devcluster.cluster import KubeCluster, KubectlError, LocalCluster, wait_until

pytestmark = pytest.mark.cluster


def get_json(cluster: KubeCluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def test_crd_schema_and_cel_rule_reject_invalid_objects(
    cluster: KubeCluster, namespace: str
) -> None:
    group = f"t{secrets.token_hex(4)}.test.wardgate.dev"
    crd = f"widgets.{group}"
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=textwrap.dedent(
            f"""\
            apiVersion: apiextensions.k8s.io/v1
            kind: CustomResourceDefinition
            metadata:
              name: {crd}
            spec:
              group: {group}
              names: {{kind: Widget, plural: widgets, singular: widget}}
              scope: Namespaced
              versions:
              - name: v1
                served: true
                storage: true
                schema:
                  openAPIV3Schema:
                    type: object
                    properties:
                      spec:
                        type: object
                        required: [minReplicas, maxReplicas]
                        properties:
                          minReplicas: {{type: integer, minimum: 0}}
                          maxReplicas: {{type: integer}}
                        x-kubernetes-validations:
                        - rule: self.minReplicas <= self.maxReplicas
                          message: minReplicas must not exceed maxReplicas
            """
        ),
    )
    try:
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")

        def widget(name: str, spec: str) -> str:
            return (
                f"apiVersion: {group}/v1\nkind: Widget\n"
                f"metadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n"
            )

        cluster.kubectl("create", "-f", "-", input=widget("ok", "{minReplicas: 1, maxReplicas: 3}"))

        with pytest.raises(KubectlError) as cel:
            cluster.kubectl(
                "create", "-f", "-", input=widget("crossed", "{minReplicas: 5, maxReplicas: 1}")
            )
        assert "minReplicas must not exceed maxReplicas" in cel.value.stderr

        with pytest.raises(KubectlError) as typed:
            cluster.kubectl(
                "create", "-f", "-", input=widget("typo", '{minReplicas: "two", maxReplicas: 3}')
            )
        assert "spec.minReplicas" in typed.value.stderr
        assert "must be of type integer" in typed.value.stderr

        names = [
            w["metadata"]["name"] for w in get_json(cluster, "widgets", "-n", namespace)["items"]
        ]
        assert names == ["ok"]
    finally:
        cluster.kubectl("delete", "crd", crd, "--wait=false")


def test_deployment_becomes_available_and_rolls_a_new_replicaset(
    cluster: KubeCluster, namespace: str
) -> None:
    ns = ("-n", namespace)
    cluster.kubectl(
        "create", "deployment", "web", "--image=example.invalid/web:v1", "--replicas=2", *ns
    )
    cluster.kubectl("rollout", "status", "deployment/web", "--timeout=90s", *ns)
    cluster.kubectl("wait", "--for=condition=Available", "deployment/web", "--timeout=60s", *ns)

    (first,) = get_json(cluster, "replicasets", "-l", "app=web", *ns)["items"]
    assert first["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    pods = get_json(cluster, "pods", "-l", "app=web", *ns)["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        assert pod["spec"]["nodeName"], "the scheduler bound the Pod to a node"
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready["Ready"] == "True"
        assert pod["metadata"]["ownerReferences"][0]["name"] == first["metadata"]["name"]

    cluster.kubectl("set", "image", "deployment/web", "web=example.invalid/web:v2", *ns)
    cluster.kubectl("rollout", "status", "deployment/web", "--timeout=90s", *ns)

    replicasets = get_json(cluster, "replicasets", "-l", "app=web", *ns)["items"]
    assert len(replicasets) == 2
    by_name = {rs["metadata"]["name"]: rs for rs in replicasets}
    old = by_name.pop(first["metadata"]["name"])
    (new,) = by_name.values()
    assert old["spec"]["replicas"] == 0
    assert new["status"]["readyReplicas"] == 2
    assert new["spec"]["template"]["spec"]["containers"][0]["image"] == "example.invalid/web:v2"
    cluster.kubectl(
        "wait",
        "--for=delete",
        "pod",
        "-l",
        f"pod-template-hash={_hash(old)}",
        "--timeout=60s",
        *ns,
    )
    pods = get_json(cluster, "pods", "-l", "app=web", *ns)["items"]
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"example.invalid/web:v2"}


def _hash(replicaset: dict[str, Any]) -> str:
    value: str = replicaset["metadata"]["labels"]["pod-template-hash"]
    return value


def test_deleting_an_owner_garbage_collects_its_dependents(
    cluster: KubeCluster, namespace: str
) -> None:
    ns = ("-n", namespace)
    cluster.kubectl("create", "configmap", "owner", "--from-literal=k=v", *ns)
    uid = cluster.kubectl("get", "configmap", "owner", "-o", "jsonpath={.metadata.uid}", *ns).stdout
    owner_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
    for kind, name in (("ConfigMap", "dependent-config"), ("Secret", "dependent-secret")):
        cluster.kubectl(
            "create",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": kind,
                    "metadata": {
                        "name": name,
                        "namespace": namespace,
                        "ownerReferences": [owner_ref],
                    },
                }
            ),
        )
    cluster.kubectl("create", "configmap", "bystander", *ns)

    cluster.kubectl("delete", "configmap", "owner", *ns)
    cluster.kubectl(
        "wait",
        "--for=delete",
        "configmap/dependent-config",
        "secret/dependent-secret",
        "--timeout=60s",
        *ns,
    )
    cluster.kubectl("get", "configmap", "bystander", *ns)


def test_service_account_is_denied_until_a_role_binding_allows_it(
    cluster: KubeCluster, namespace: str
) -> None:
    ns = ("-n", namespace)
    user = f"system:serviceaccount:{namespace}:reader"
    cluster.kubectl("create", "serviceaccount", "reader", *ns)
    cluster.kubectl("create", "configmap", "settings", *ns)

    denied = cluster.kubectl("get", "configmaps", f"--as={user}", *ns, check=False)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr
    assert f'User "{user}" cannot list resource "configmaps"' in denied.stderr

    cluster.kubectl(
        "create", "role", "read-config", "--verb=get,list", "--resource=configmaps", *ns
    )
    cluster.kubectl(
        "create",
        "rolebinding",
        "reader-reads-config",
        "--role=read-config",
        f"--serviceaccount={namespace}:reader",
        *ns,
    )

    def allowed() -> bool:
        result = cluster.kubectl(
            "auth", "can-i", "list", "configmaps", f"--as={user}", *ns, check=False
        )
        return result.stdout.strip() == "yes"

    # The RBAC authorizer learns about the new binding through its watch.
    wait_until(allowed, what="the RoleBinding to take effect", timeout=30)
    listed = cluster.kubectl("get", "configmaps", f"--as={user}", "-o", "name", *ns)
    assert "configmap/settings" in listed.stdout.split()
    still_denied = cluster.kubectl("get", "secrets", f"--as={user}", *ns, check=False)
    assert still_denied.returncode != 0
    assert "Forbidden" in still_denied.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stopping_a_local_cluster_leaves_no_process_and_no_directory() -> None:
    local = LocalCluster()
    local.start()
    try:
        directory = local.directory
        pids = local.pids()
        assert len(pids) == 6  # five components and the watchdog
        assert all(_alive(pid) for pid in pids)
        # Every component and the watchdog name the cluster's directory in their arguments.
        assert len(processes_mentioning(str(directory))) == 6
        local.kubectl("get", "--raw", "/readyz")
    finally:
        local.stop()
    assert not [pid for pid in pids if _alive(pid)]
    assert processes_mentioning(str(directory)) == []
    assert not directory.exists()


def test_a_killed_owner_leaves_no_process_and_no_directory() -> None:
    """The watchdog cleans up after an owner that could not (SIGKILL)."""
    script = (
        "import sys\n"
        "from wardgate.devcluster.cluster import LocalCluster\n"
        "c = LocalCluster()\n"
        "c.start()\n"
        "print(c.directory, flush=True)\n"
        "sys.stdin.read()\n"
    )
    with killed_owner(script) as line:
        directory = line[0]
        assert processes_mentioning(directory)
    wait_until(
        lambda: not processes_mentioning(directory) and not Path(directory).exists(),
        what="the watchdog to clean up",
        timeout=30,
    )
