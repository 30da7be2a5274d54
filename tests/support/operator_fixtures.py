"""Helpers for the operator's tests against the real control plane: the CRDs, an operator
running in-process (its own thread and event loop, as `wardgate operator` runs it), and
reading objects back through the API."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from wardgate.devcluster.cluster import KubeCluster, wait_until
from wardgate.devcluster.kwokreplicas import KwokReplicas
from wardgate.gateway.kubesource import load_client_configuration
from wardgate.operator.crds import CRD_DIR
from wardgate.operator.handlers import Controller, Options, Runtime, registry
from wardgate.operator.kube import KubeApi, object_path
from wardgate.operator.manifests import Defaults, config_map_text

TEST_IMAGE = "wardgate:test"
RBAC_FILE = CRD_DIR.parent / "rbac.yaml"


CRD_NAMES = ("gateways.wardgate.io", "routes.wardgate.io", "authorizers.wardgate.io")


def install_crds(cluster: KubeCluster) -> None:
    """Apply deploy/crds and wait until the API serves them."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
    # Not `kubectl wait --for=condition=Established`: it fails instead of waiting when a new
    # CRD has no conditions yet.
    api = KubeApi.from_configuration(load_client_configuration(cluster.kubeconfig))

    def established(name: str) -> bool:
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        crd = api.request_blocking("GET", path) or {}
        conditions = (crd.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    try:
        wait_until(lambda: all(established(n) for n in CRD_NAMES), what="the CRDs", timeout=60)
    finally:
        api.close()


@dataclass
class RunningOperator:
    """The operator in a thread; `stop()` ends it the way SIGTERM would."""

    kubeconfig: Path
    workers: int = 2
    probe_seconds: float | None = None
    resync_seconds: float | None = None
    image: str = TEST_IMAGE
    """The gateways' image in the Deployments the operator writes."""
    memo: Runtime = field(init=False)
    _ready: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    error: BaseException | None = None
    loop: asyncio.AbstractEventLoop = field(init=False)
    kwok_replicas: bool = True
    """Record for the gateway pods on kwok's node, which run nothing, what each would
    serve (False: a test runs the gateway that records it)."""
    replicas: KwokReplicas | None = None

    def start(self) -> RunningOperator:
        options = Options(
            kubeconfig=self.kubeconfig,
            defaults=Defaults(image=self.image, image_pull_policy="IfNotPresent"),
            workers=self.workers,
            probe_seconds=self.probe_seconds,
            resync_seconds=self.resync_seconds,
        )
        self.memo = Runtime(options)
        if self.kwok_replicas:
            self.replicas = KwokReplicas(self.kubeconfig).start()
        self._thread = threading.Thread(target=self._run, name="operator", daemon=True)
        self._thread.start()
        if not self._ready.wait(60):
            raise TimeoutError(f"the operator did not start: {self.error!r}")
        wait_until(lambda: self.memo.controller is not None, what="operator startup", timeout=30)
        return self

    def __enter__(self) -> RunningOperator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _run(self) -> None:
        # A Runner, like asyncio.run: leftover tasks, async generators and the default
        # executor are finished before the loop closes.
        runner = asyncio.Runner()
        self.loop = runner.get_loop()
        try:
            runner.run(
                kopf.operator(
                    registry=registry,
                    clusterwide=True,
                    standalone=True,
                    memo=self.memo,
                    ready_flag=self._ready,
                    stop_flag=self._stop,
                )
            )
        except BaseException as exc:  # reported by stop()
            self.error = exc
            self._ready.set()
        finally:
            runner.close()

    def stop(self) -> None:
        self._stop.set()
        if self.replicas is not None:
            self.replicas.stop()
        if self._thread is not None:
            self._thread.join(60)
            assert not self._thread.is_alive(), "the operator did not stop"
        # kopf may drop a watch connection without closing it when it stops; a process would
        # exit here. Collect those now, quietly, rather than in a later test.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        assert self.error is None, f"the operator failed: {self.error!r}"

    @property
    def controller(self) -> Controller:
        controller = self.memo.controller
        assert controller is not None, "the operator has not started"
        return controller

    @property
    def kube(self) -> KubeApi:
        """The operator's API client (its write counters)."""
        kube = self.memo.kube
        assert kube is not None, "the operator has not started"
        return kube

    def writes(self, namespace: str | None = None) -> int:
        """Write calls so far: all of them, or those in one namespace."""
        kube = self.kube
        if namespace is not None:
            return kube.namespace_writes[namespace]
        return sum(kube.writes.values())

    def idle(self) -> bool:
        return self.controller.queue.idle

    def reconcile_everything(self) -> None:
        """Enqueue every watched Gateway and Authorizer (as a resync would) and wait until
        the queue has processed them all."""
        controller = self.controller
        before = controller.queue.processed

        def enqueue() -> int:
            keys = [("Gateway", ns, name) for ns, name in controller.state.gateway_keys()]
            for namespace in {ns for ns, _ in controller.state.gateway_keys()}:
                keys += [
                    ("Authorizer", namespace, a.resource.meta.name)
                    for a in controller.state.authorizers_in(namespace)
                ]
            for key in keys:
                controller.queue.add(key)
            return len(keys)

        count = asyncio.run_coroutine_threadsafe(_call(enqueue), self.loop).result(10)
        wait_until(
            lambda: controller.queue.processed >= before + count and controller.queue.idle,
            what="the reconcile of every object",
            timeout=60,
        )


async def _call(function: Callable[[], int]) -> int:
    return function()


def service_account_kubeconfig(
    cluster: KubeCluster,
    directory: Path,
    name: str = "wardgate-operator",
    namespace: str = "wardgate-system",
) -> Path:
    """A kubeconfig of a ServiceAccount (by default the operator's: deploy/rbac.yaml is
    installed for it)."""
    if (name, namespace) == ("wardgate-operator", "wardgate-system"):
        cluster.kubectl("apply", "-f", str(RBAC_FILE))
    token = cluster.kubectl(
        "create", "token", name, "-n", namespace, "--duration=2h"
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text(encoding="utf-8"))
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    entry = next(c for c in admin["clusters"] if c["name"] == context["context"]["cluster"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": entry["cluster"]}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "cluster", "user": name}}],
        "current-context": name,
    }
    path = directory / f"{namespace}.{name}.kubeconfig"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def account_kubeconfig(cluster: KubeCluster, namespace: str, account: str, directory: Path) -> Path:
    """A kubeconfig of ServiceAccount `namespace/account`, once it exists (a Gateway's
    account is created by the operator)."""
    cluster.kubectl(
        "wait", "--for=create", f"serviceaccount/{account}", "-n", namespace, "--timeout=60s"
    )
    return service_account_kubeconfig(cluster, directory, account, namespace)


class Objects:
    """Blocking reads and `kubectl apply` for tests."""

    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster
        self.api = KubeApi.from_configuration(load_client_configuration(cluster.kubeconfig))

    def close(self) -> None:
        self.api.close()

    def apply(self, namespace: str, *documents: dict[str, Any] | str) -> None:
        text = "\n---\n".join(
            d if isinstance(d, str) else yaml.safe_dump(d, sort_keys=False) for d in documents
        )
        self.cluster.kubectl("apply", "-n", namespace, "-f", "-", input=text)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.api.get_blocking(kind, namespace, name)

    def list(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        found = self.api.request_blocking("GET", object_path(kind, namespace)) or {}
        items: list[dict[str, Any]] = found.get("items", [])
        return items

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.api.request_blocking("DELETE", object_path(kind, namespace, name))

    def merge_patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.api.request_blocking(
            "PATCH",
            object_path(kind, namespace, name),
            body=patch,
            content_type="application/merge-patch+json",
        )

    def resource_versions(self, namespace: str, kinds: tuple[str, ...]) -> dict[str, str]:
        """kind/name → resourceVersion of every object of these kinds in the namespace."""
        versions = {}
        for kind in kinds:
            for item in self.list(kind, namespace):
                versions[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
        return versions

    def statuses_current(self, namespace: str) -> bool:
        """Whether every Gateway, Route and Authorizer in the namespace has a status for its
        latest generation."""
        for kind in ("Gateway", "Route", "Authorizer"):
            for item in self.list(kind, namespace):
                observed = (item.get("status") or {}).get("observedGeneration")
                if observed != item["metadata"].get("generation"):
                    return False
        return True

    def condition(self, kind: str, namespace: str, name: str, type_: str) -> dict[str, Any]:
        body = self.get(kind, namespace, name) or {}
        for condition in (body.get("status") or {}).get("conditions") or []:
            if condition.get("type") == type_:
                return dict(condition)
        return {}

    def wait_condition(
        self,
        kind: str,
        namespace: str,
        name: str,
        type_: str,
        status: str,
        reason: str | None = None,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        def reached() -> bool:
            found = self.condition(kind, namespace, name, type_)
            return found.get("status") == status and reason in (None, found.get("reason"))

        try:
            wait_until(
                reached, what=f"{kind} {name} {type_}={status} {reason or ''}", timeout=timeout
            )
        except TimeoutError:
            body = self.get(kind, namespace, name)
            raise AssertionError(
                f"{kind} {namespace}/{name}: {json.dumps((body or {}).get('status'), indent=1)}"
            ) from None
        return self.condition(kind, namespace, name, type_)

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
        wait_until(check, what=what, timeout=timeout)

    def config(self, namespace: str, gateway: str) -> dict[str, Any] | None:
        config_map = self.get("ConfigMap", namespace, f"wardgate-{gateway}-config")
        if config_map is None:
            return None
        data: dict[str, Any] = json.loads(config_map_text(config_map) or "{}")
        return data


@pytest.fixture(scope="module")
def objects(cluster: KubeCluster) -> Iterator[Objects]:
    """The test module's API access, with the CRDs installed (a fixture: import it)."""
    install_crds(cluster)
    found = Objects(cluster)
    yield found
    found.close()


def seed_objects(secret_value: str) -> list[dict[str, Any]]:
    """The seed example as objects (the `orders` upstream is a Service)."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "jwt-keys"},
            "stringData": {"JWT_SECRET": secret_value},
        },
        {
            "apiVersion": "wardgate.io/v1alpha1",
            "kind": "Authorizer",
            "metadata": {"name": "jwt"},
            "spec": {
                "type": "jwt",
                "secret": "$secret.JWT_SECRET",
                "secretRef": {"name": "jwt-keys"},
                "algorithm": "HS256",
                "issuer": "https://issuer.example.com",
                "audience": "api-audience",
            },
        },
        {
            "apiVersion": "wardgate.io/v1alpha1",
            "kind": "Route",
            "metadata": {"name": "health"},
            "spec": {
                "gatewayRef": {"name": "api"},
                "paths": [{"method": "GET", "path": "/health", "response": {"status": "ok"}}],
            },
        },
        {
            "apiVersion": "wardgate.io/v1alpha1",
            "kind": "Route",
            "metadata": {"name": "orders"},
            "spec": {
                "gatewayRef": {"name": "api"},
                "paths": [
                    {
                        "method": "GET",
                        "path": "/private/orders",
                        "auth": True,
                        "integration": {"type": "http_proxy", "server": "orders"},
                    }
                ],
            },
        },
        {
            "apiVersion": "wardgate.io/v1alpha1",
            "kind": "Gateway",
            "metadata": {"name": "api"},
            "spec": {
                "defaultAuthorizer": "jwt",
                "servers": {"orders": {"service": {"name": "orders", "port": 8080}}},
            },
        },
    ]


@pytest.fixture(scope="module")
def operator(
    cluster: KubeCluster, objects: Objects, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningOperator]:
    """The operator, with the chart's RBAC (a ServiceAccount's kubeconfig), for one module."""
    kubeconfig = service_account_kubeconfig(cluster, tmp_path_factory.mktemp("operator"))
    running = RunningOperator(kubeconfig).start()
    yield running
    running.stop()
