"""The served-config records of gateway pods on kwok's fake node, where no container runs.

On a real node each gateway replica records the hash of the config it serves
(`wardgate gateway --report-served`, `wardgate.gateway.kubesource.ServedReport`) and the
operator counts those records in the Gateway's status. A pod on a kwok node runs nothing,
so `KwokReplicas` records for each of its ready gateway pods the config of its Gateway's
ConfigMap, through the same call the gateway makes, as the gateway would once it swapped.
Pods on a real node are left to their own process: a pod is kwok's when its containers
run with no container id (a kubelet always reports one; kwok's stages never do), which
needs no read of the Node (the operator's account, which tests run this as, has none).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Final

from wardgate.gateway.delivery import CONFIG_HASH_ANNOTATION
from wardgate.gateway.kubesource import (
    ConfigMapSource,
    ConfigObject,
    ServedReport,
    SourceError,
    load_client_configuration,
)
from wardgate.operator.kube import METADATA_LIST, KubeApi, KubeError
from wardgate.operator.manifests import (
    GATEWAY_LABEL,
    MANAGED_BY,
    REPORT_LABEL,
    REPORT_SERVED,
    child_name,
    served_report_name,
)

log = logging.getLogger(__name__)

POLL_SECONDS: Final = 0.2


class KwokReplicas:
    """Records, every `POLL_SECONDS`, what each ready gateway pod on a kwok node serves."""

    def __init__(self, kubeconfig: Path) -> None:
        self._configuration = load_client_configuration(kubeconfig)
        self._api = KubeApi.from_configuration(self._configuration)
        self._stop = threading.Event()
        self._sources: dict[tuple[str, str], ConfigMapSource] = {}
        self._thread = threading.Thread(target=self._run, name="kwok-replicas", daemon=True)

    def start(self) -> KwokReplicas:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        for source in self._sources.values():
            source.close()
        self._api.close()

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.record()
            except (KubeError, SourceError) as exc:  # the next round tries again
                log.debug("kwok replicas: %s", exc)

    def _list(
        self, plural: str, selector: str, accept: str = "application/json"
    ) -> list[dict[str, Any]]:
        """Every object of a core kind with these labels, in every namespace."""
        found = self._api.request_blocking(
            "GET", f"/api/v1/{plural}", query=[("labelSelector", selector)], accept=accept
        )
        items: list[dict[str, Any]] = (found or {}).get("items") or []
        return items

    def record(self) -> None:
        """One round: each ready pod on a fake node whose record differs gets it written.
        Three listings a round (the pods, the config ConfigMaps' metadata, the records), not
        two reads per pod: with 200 Gateways, 400 reads every 0.2 s slowed the cluster the
        benchmarks measure."""
        managed = f"app.kubernetes.io/managed-by={MANAGED_BY}"
        pods = self._list("pods", managed)
        hashes = {
            key: ((item.get("metadata") or {}).get("annotations") or {}).get(CONFIG_HASH_ANNOTATION)
            for key, item in _by_name(self._list("configmaps", managed, METADATA_LIST)).items()
        }
        records = {
            key: item.get("data") or {}
            for key, item in _by_name(
                self._list("configmaps", f"{REPORT_LABEL}={REPORT_SERVED}")
            ).items()
        }
        for pod in pods:
            metadata = pod.get("metadata") or {}
            gateway = (metadata.get("labels") or {}).get(GATEWAY_LABEL)
            if not gateway or metadata.get("deletionTimestamp") or not _fake_and_ready(pod):
                continue
            namespace = str(metadata["namespace"])
            config_hash = hashes.get((namespace, child_name(gateway, "-config")))
            served = records.get((namespace, served_report_name(gateway)))
            if not config_hash or served is None:
                continue
            name = str(metadata["name"])
            if served.get(name) != config_hash:
                key = (namespace, str(gateway))
                source = self._sources.get(key)
                if source is None:
                    target = ConfigObject(namespace, child_name(gateway, "-config"))
                    source = self._sources[key] = ConfigMapSource(target, self._configuration)
                source.report_served(ServedReport(served_report_name(gateway), name), config_hash)


def _by_name(items: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(namespace, name) → the object."""
    return {
        (str(meta.get("namespace")), str(meta.get("name"))): item
        for item in items
        if (meta := item.get("metadata") or {})
    }


def _fake_and_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    containers = status.get("containerStatuses") or []
    return ready and bool(containers) and not any(c.get("containerID") for c in containers)
