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
from wardgate.operator.kube import KubeApi, KubeError
from wardgate.operator.manifests import GATEWAY_LABEL, MANAGED_BY, child_name, served_report_name

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

    def record(self) -> None:
        """One round: each ready pod on a fake node whose record differs gets it written."""
        listing = self._api.request_blocking(
            "GET",
            "/api/v1/pods",
            query=[("labelSelector", f"app.kubernetes.io/managed-by={MANAGED_BY}")],
        )
        records: dict[tuple[str, str], dict[str, Any]] = {}
        for pod in (listing or {}).get("items") or []:
            metadata = pod.get("metadata") or {}
            gateway = (metadata.get("labels") or {}).get(GATEWAY_LABEL)
            if not gateway or metadata.get("deletionTimestamp") or not _fake_and_ready(pod):
                continue
            namespace = str(metadata["namespace"])
            config_map = self._api.get_blocking(
                "ConfigMap", namespace, child_name(gateway, "-config")
            )
            served = ((config_map or {}).get("metadata") or {}).get("annotations") or {}
            config_hash = served.get(CONFIG_HASH_ANNOTATION)
            if not config_hash:
                continue
            key = (namespace, str(gateway))
            if key not in records:
                report = self._api.get_blocking("ConfigMap", namespace, served_report_name(gateway))
                if report is None:
                    continue
                records[key] = report.get("data") or {}
            name = str(metadata["name"])
            if records[key].get(name) != config_hash:
                source = self._sources.get(key)
                if source is None:
                    target = ConfigObject(namespace, child_name(gateway, "-config"))
                    source = self._sources[key] = ConfigMapSource(target, self._configuration)
                source.report_served(ServedReport(served_report_name(gateway), name), config_hash)


def _fake_and_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    containers = status.get("containerStatuses") or []
    return ready and bool(containers) and not any(c.get("containerID") for c in containers)
