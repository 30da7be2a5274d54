"""The product as users run it, on the local cluster's real node: the README's commands
verbatim, the chart's operator running in-cluster from the image built here (with its
ServiceAccount, so the chart's RBAC is what is tested), the seed example's gateway and
`orders` as real pods, and requests through the gateway's Service (its ClusterIP, routed
from this machine to the node).

The tests run in order on one installation: the README first, then changes, disruptions
and, last, the chart's upgrade and uninstall.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml

from tests.support.cluster_fixtures import report
from tests.support.real_node import readme_block
from wardgate.devcluster.cluster import LocalCluster, wait_until

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "shop"
OPERATOR_NAMESPACE = "wardgate-system"
SEED = yaml.safe_load((ROOT / "examples" / "seed" / "authorizer.yaml").read_text())["spec"]
SEED_SECRET = yaml.safe_load((ROOT / "examples" / "seed" / "secret.yaml").read_text())[
    "stringData"
]["JWT_SECRET"]
ROTATED_SECRET = "rotated-secret-0123456789-abcdefghijklmnopqrstuv"
GATEWAY_SELECTOR = "app.kubernetes.io/name=wardgate-gateway"
OPERATOR_SELECTOR = "app.kubernetes.io/instance=wardgate,app.kubernetes.io/component=operator"


def token(secret: str) -> str:
    now = int(time.time())
    claims = {
        "iss": SEED["issuer"],
        "aud": SEED["audience"],
        "sub": "e2e",
        "iat": now,
        "exp": now + 3600,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


@dataclass(frozen=True)
class Answer:
    status: int
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Service:
    """The gateway's Service, reached at its ClusterIP from this machine."""

    host: str
    port: int

    def get(self, path: str, bearer: str | None = None, timeout: float = 5.0) -> Answer:
        # A connection per request, as a client that does not pool would: every request
        # goes through kube-proxy's choice of endpoint.
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        headers = {"Connection": "close"}
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            return Answer(response.status, response.read().decode(errors="replace"))
        finally:
            connection.close()

    def answers(self, path: str, status: int, bearer: str | None = None) -> bool:
        """Whether several requests in a row get `status`: while a change rolls out, pods
        with the old and the new config serve side by side."""
        try:
            return all(self.get(path, bearer).status == status for _ in range(6))
        except OSError:
            return False


@dataclass
class Load:
    """Steady requests to one path from a thread; counts answers and failures."""

    service: Service
    path: str
    bearer: str | None = None
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.statuses[self.service.get(self.path, self.bearer).status] += 1
            except OSError as e:
                self.errors.append(f"{type(e).__name__}: {e}")
            # Pacing (about 40 requests a second), not synchronisation.
            self._stop.wait(0.025)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + len(self.errors)

    @property
    def failed(self) -> int:
        return len(self.errors) + sum(n for status, n in self.statuses.items() if status != 200)

    def describe(self) -> str:
        return f"{self.total} requests: {dict(self.statuses)}, errors {self.errors[:5]}"


def kubectl_json(cluster: LocalCluster, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def gateway_deployment(cluster: LocalCluster) -> str:
    deployments = kubectl_json(
        cluster,
        "get",
        "deployments",
        "-n",
        NAMESPACE,
        "-l",
        GATEWAY_SELECTOR,
    )["items"]
    names = [d["metadata"]["name"] for d in deployments]
    assert len(names) == 1, names
    name: str = names[0]
    return name


def ready_gateway_pods(cluster: LocalCluster) -> list[str]:
    deployment = kubectl_json(
        cluster, "get", "deployment", gateway_deployment(cluster), "-n", NAMESPACE
    )
    selector = ",".join(
        f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items()
    )
    pods = kubectl_json(cluster, "get", "pods", "-n", NAMESPACE, "-l", selector)["items"]
    return [
        p["metadata"]["name"]
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p.get("status", {}).get("conditions", [])
        )
    ]


def rollout_status(cluster: LocalCluster, namespace: str, deployment: str) -> None:
    cluster.kubectl(
        "rollout",
        "status",
        f"deployment/{deployment}",
        "-n",
        namespace,
        "--timeout=180s",
        timeout=200,
    )


@pytest.fixture(scope="module")
def installed(node_cluster: LocalCluster) -> Service:
    """The README's "Install on a cluster" and "Apply a Route" blocks, run verbatim with
    bash (after creating the namespace they use); yields the gateway's Service."""
    started = time.monotonic()
    for heading in ("Install on a cluster", "Apply a Route"):
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", readme_block(heading)],
            cwd=ROOT,
            env=node_cluster.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, f"README '{heading}':\n{result.stdout}\n{result.stderr}"
    node_cluster.kubectl(
        "wait",
        "--for=condition=Ready",
        "gateway/api",
        "-n",
        NAMESPACE,
        "--timeout=180s",
        timeout=200,
    )
    rollout_status(node_cluster, NAMESPACE, "orders")
    rollout_status(node_cluster, NAMESPACE, gateway_deployment(node_cluster))
    report(f"README install + seed on real pods, Gateway Ready: {time.monotonic() - started:.1f} s")
    services = kubectl_json(
        node_cluster,
        "get",
        "services",
        "-n",
        NAMESPACE,
        "-l",
        GATEWAY_SELECTOR,
    )["items"]
    (service,) = services
    return Service(service["spec"]["clusterIP"], service["spec"]["ports"][0]["port"])


def test_readme_commands_run_the_operator_in_cluster(
    node_cluster: LocalCluster, installed: Service
) -> None:
    operator = kubectl_json(node_cluster, "get", "deployment", "wardgate", "-n", OPERATOR_NAMESPACE)
    assert operator["status"].get("readyReplicas") == 1
    # `kubectl get wardgate` shows the operator's verdicts: it runs in the cluster.
    listing = node_cluster.kubectl("get", "wardgate", "-n", NAMESPACE).stdout
    rows = [line.split() for line in listing.splitlines() if line and not line.startswith("NAME")]
    assert rows
    assert all("True" in row for row in rows), listing
    logs = node_cluster.kubectl("logs", "deployment/wardgate", "-n", OPERATOR_NAMESPACE).stdout
    assert logs


def test_seed_example_answers_through_the_service(installed: Service) -> None:
    wait_until(
        lambda: installed.answers("/health", 200), what="/health through the Service", timeout=60
    )
    assert installed.get("/health").json() == {"status": "ok"}
    missing = installed.get("/private/orders")
    assert missing.status == 401
    assert missing.json()["error"]["code"] == "missing_token"
    # Proxied to `orders` by its Service's DNS name (CoreDNS) and ClusterIP (kube-proxy),
    # once both have caught up with the Service created with the gateway.
    bearer = token(SEED_SECRET)
    wait_until(
        lambda: installed.answers("/private/orders", 200, bearer),
        what="orders through the gateway",
        timeout=60,
    )
    orders = installed.get("/private/orders", bearer)
    assert orders.status == 200, orders.body
    assert orders.json()["orders"][0]["id"] == "ord_1001"
    # The README's Route, applied right after the seed example.
    wait_until(lambda: installed.answers("/hello", 200), what="/hello", timeout=60)
    assert installed.get("/hello").json() == {"hello": "world"}


def test_a_route_applied_is_served_within_seconds(
    node_cluster: LocalCluster, installed: Service
) -> None:
    route = {
        "apiVersion": "wardgate.io/v1alpha1",
        "kind": "Route",
        "metadata": {"name": "ping"},
        "spec": {
            "gatewayRef": {"name": "api"},
            "paths": [{"method": "GET", "path": "/ping", "response": {"pong": True}}],
        },
    }
    applied = time.monotonic()
    node_cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump(route))
    wait_until(lambda: installed.answers("/ping", 200), what="/ping served", timeout=30)
    report(f"real pods: a new Route served {time.monotonic() - applied:.1f} s after kubectl apply")
    assert installed.get("/ping").json() == {"pong": True}


def test_secret_rotation_accepts_the_new_secret_and_refuses_the_old(
    node_cluster: LocalCluster, installed: Service
) -> None:
    old, new = token(SEED_SECRET), token(ROTATED_SECRET)
    assert installed.get("/private/orders", old).status == 200
    node_cluster.kubectl(
        "patch",
        "secret",
        "jwt-keys",
        "-n",
        NAMESPACE,
        "--type=merge",
        "-p",
        json.dumps({"stringData": {"JWT_SECRET": ROTATED_SECRET}}),
    )
    rotated = time.monotonic()

    def rotated_everywhere() -> bool:
        return installed.answers("/private/orders", 200, new) and installed.answers(
            "/private/orders", 401, old
        )

    wait_until(rotated_everywhere, what="the rotated secret in every gateway pod", timeout=180)
    report(f"real pods: Secret rotation in effect after {time.monotonic() - rotated:.1f} s")
    refused = installed.get("/private/orders", old)
    assert refused.status == 401
    assert refused.json()["error"]["code"] == "invalid_signature", refused.body


def test_config_rollout_and_rollout_restart_under_load_fail_no_request(
    node_cluster: LocalCluster, installed: Service
) -> None:
    node_cluster.kubectl(
        "patch", "gateway", "api", "-n", NAMESPACE, "--type=merge", "-p", '{"spec":{"replicas":2}}'
    )
    wait_until(
        lambda: len(ready_gateway_pods(node_cluster)) == 2, what="2 gateway pods Ready", timeout=180
    )
    deployment = gateway_deployment(node_cluster)
    route = {
        "apiVersion": "wardgate.io/v1alpha1",
        "kind": "Route",
        "metadata": {"name": "during-load"},
        "spec": {
            "gatewayRef": {"name": "api"},
            "paths": [{"method": "GET", "path": "/during-load", "response": {"ok": True}}],
        },
    }
    with Load(installed, "/health") as load:
        wait_until(lambda: load.total >= 20, what="load running", timeout=30)
        node_cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump(route))
        wait_until(
            lambda: installed.answers("/during-load", 200), what="new config served", timeout=60
        )
        rollout_status(node_cluster, NAMESPACE, deployment)
        node_cluster.kubectl("rollout", "restart", f"deployment/{deployment}", "-n", NAMESPACE)
        rollout_status(node_cluster, NAMESPACE, deployment)
        wait_until(
            lambda: len(ready_gateway_pods(node_cluster)) == 2,
            what="2 pods Ready again",
            timeout=120,
        )
        seen = load.total
        wait_until(lambda: load.total >= seen + 20, what="requests after the rollout", timeout=30)
    report(f"real pods: config rollout + rollout restart under load: {load.describe()}")
    assert load.total >= 100, load.describe()
    assert load.failed == 0, load.describe()


def test_a_gateway_pod_deleted_while_two_serve_fails_no_request(
    node_cluster: LocalCluster, installed: Service
) -> None:
    pods = ready_gateway_pods(node_cluster)
    assert len(pods) == 2, pods
    with Load(installed, "/health") as load:
        wait_until(lambda: load.total >= 20, what="load running", timeout=30)
        node_cluster.kubectl("delete", "pod", pods[0], "-n", NAMESPACE, "--wait=true", timeout=120)
        wait_until(
            lambda: len(set(ready_gateway_pods(node_cluster)) - {pods[0]}) == 2,
            what="a replacement pod Ready",
            timeout=120,
        )
        seen = load.total
        wait_until(lambda: load.total >= seen + 20, what="requests after the deletion", timeout=30)
    report(f"real pods: a gateway pod deleted under load: {load.describe()}")
    assert load.failed == 0, load.describe()


def test_the_operator_pod_deleted_comes_back_and_catches_up(
    node_cluster: LocalCluster, installed: Service
) -> None:
    selector = OPERATOR_SELECTOR
    (before,) = kubectl_json(node_cluster, "get", "pods", "-n", OPERATOR_NAMESPACE, "-l", selector)[
        "items"
    ]
    node_cluster.kubectl(
        "delete", "pod", before["metadata"]["name"], "-n", OPERATOR_NAMESPACE, "--wait=false"
    )
    # Changed while the operator is away (or starting): the new pod must catch up.
    route = {
        "apiVersion": "wardgate.io/v1alpha1",
        "kind": "Route",
        "metadata": {"name": "after-operator-restart"},
        "spec": {
            "gatewayRef": {"name": "api"},
            "paths": [{"method": "GET", "path": "/caught-up", "response": {"caught": "up"}}],
        },
    }
    node_cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump(route))
    rollout_status(node_cluster, OPERATOR_NAMESPACE, "wardgate")
    wait_until(lambda: installed.answers("/caught-up", 200), what="/caught-up served", timeout=120)
    (after,) = [
        p
        for p in kubectl_json(
            node_cluster, "get", "pods", "-n", OPERATOR_NAMESPACE, "-l", selector
        )["items"]
        if not p["metadata"].get("deletionTimestamp")
    ]
    assert after["metadata"]["uid"] != before["metadata"]["uid"]
    node_cluster.kubectl(
        "wait",
        "--for=condition=Accepted",
        "route/after-operator-restart",
        "-n",
        NAMESPACE,
        "--timeout=60s",
    )


def _process_status(cluster: LocalCluster, namespace: str, target: str) -> dict[str, str]:
    """/proc/1/status of a running container, read from inside it, and whether its root
    file system refused a write."""
    script = "cat /proc/1/status; touch /written-by-test 2>&1 && echo WRITABLE || echo READONLY"
    output = cluster.kubectl("exec", "-n", namespace, target, "--", "sh", "-c", script).stdout
    fields = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in output.splitlines())
        if value
    )
    fields["root"] = "READONLY" if output.rstrip().endswith("READONLY") else "WRITABLE"
    return fields


@pytest.mark.parametrize("which", ["gateway", "operator"])
def test_the_running_containers_are_confined(
    node_cluster: LocalCluster, installed: Service, which: str
) -> None:
    if which == "gateway":
        target, namespace = f"deployment/{gateway_deployment(node_cluster)}", NAMESPACE
    else:
        target, namespace = "deployment/wardgate", OPERATOR_NAMESPACE
    status = _process_status(node_cluster, namespace, target)
    assert status["Uid"].split() == ["65532"] * 4, status
    assert status["Gid"].split() == ["65532"] * 4, status
    for capabilities in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[capabilities], 16) == 0, (capabilities, status[capabilities])
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"  # a filter: the runtime's default profile
    assert status["root"] == "READONLY"


def test_helm_upgrade_then_uninstall(node_cluster: LocalCluster, installed: Service) -> None:
    chart = str(ROOT / "deploy" / "helm" / "wardgate")
    helm = str(node_cluster.bin_dir / "helm")
    before = kubectl_json(node_cluster, "get", "deployment", "wardgate", "-n", OPERATOR_NAMESPACE)
    subprocess.run(
        [
            helm,
            "upgrade",
            "wardgate",
            chart,
            "--namespace",
            OPERATOR_NAMESPACE,
            "--reuse-values",
            "--set",
            "operator.verbose=true",
            "--wait",
            "--timeout",
            "180s",
        ],
        env=node_cluster.env,
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    after = kubectl_json(node_cluster, "get", "deployment", "wardgate", "-n", OPERATOR_NAMESPACE)
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    assert after["status"].get("readyReplicas") == 1
    assert "--verbose" in after["spec"]["template"]["spec"]["containers"][0]["args"]
    # The upgraded operator still reconciles.
    node_cluster.kubectl(
        "wait", "--for=condition=Ready", "gateway/api", "-n", NAMESPACE, "--timeout=60s"
    )
    subprocess.run(
        [helm, "uninstall", "wardgate", "--namespace", OPERATOR_NAMESPACE, "--wait"],
        env=node_cluster.env,
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    gone = node_cluster.kubectl(
        "get",
        "deployment",
        "wardgate",
        "-n",
        OPERATOR_NAMESPACE,
        "--ignore-not-found",
        "-o",
        "name",
    )
    assert gone.stdout.strip() == ""
    # The gateways the operator made keep serving without it.
    assert installed.get("/health").status == 200
