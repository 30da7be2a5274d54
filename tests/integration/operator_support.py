"""Helpers for the operator's tests against the real control plane: the CRDs, an operator
running in-process (its own thread and event loop, as `wardgate operator` runs it), and
reading objects back through the API."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
import yaml

from wardgate.devcluster.cluster import KubeCluster, wait_until
from wardgate.operator.crds import CRD_DIR
from wardgate.operator.handlers import Controller, Options, registry
from wardgate.operator.kube import KubeApi, load_configuration
from wardgate.operator.manifests import Defaults

TEST_IMAGE = "wardgate:test"


def install_crds(cluster: KubeCluster) -> None:
    """Apply deploy/crds and wait until the API serves them."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/gateways.wardgate.io", "crd/routes.wardgate.io", "crd/authorizers.wardgate.io",
    )  # fmt: skip


@dataclass
class RunningOperator:
    """The operator in a thread; `stop()` ends it the way SIGTERM would."""

    kubeconfig: Path
    workers: int = 2
    memo: kopf.Memo = field(init=False)
    _ready: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    error: BaseException | None = None

    def start(self) -> RunningOperator:
        options = Options(
            kubeconfig=self.kubeconfig,
            defaults=Defaults(image=TEST_IMAGE, image_pull_policy="IfNotPresent"),
            workers=self.workers,
        )
        self.memo = kopf.Memo(options=options)
        self._thread = threading.Thread(target=self._run, name="operator", daemon=True)
        self._thread.start()
        if not self._ready.wait(60):
            raise TimeoutError(f"the operator did not start: {self.error!r}")
        wait_until(lambda: "controller" in self.memo, what="operator startup", timeout=30)
        return self

    def _run(self) -> None:
        try:
            asyncio.run(
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

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
            assert not self._thread.is_alive(), "the operator did not stop"
        assert self.error is None, f"the operator failed: {self.error!r}"

    @property
    def controller(self) -> Controller:
        controller: Controller = self.memo["controller"]
        return controller

    def writes(self) -> int:
        return sum(self.controller.kube.writes.values())

    def idle(self) -> bool:
        return self.controller.queue.idle


class Objects:
    """Blocking reads and `kubectl apply` for tests."""

    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster
        self.api = KubeApi.from_configuration(load_configuration(cluster.kubeconfig))

    def apply(self, namespace: str, *documents: dict[str, Any] | str) -> None:
        text = "\n---\n".join(
            d if isinstance(d, str) else yaml.safe_dump(d, sort_keys=False) for d in documents
        )
        self.cluster.kubectl("apply", "-n", namespace, "-f", "-", input=text)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.api.get_blocking(kind, namespace, name)

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
        data: dict[str, Any] = json.loads(config_map["data"]["config.json"])
        return data


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
