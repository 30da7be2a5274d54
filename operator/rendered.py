"""What the operator rendered for a Gateway, read back from the cluster (`wardgate explain
--gateway`): its ConfigMap, the Secret keys that config uses, and the Routes' policy decisions.

It reads with the blocking `kubernetes` client, as the person running the command (their
kubeconfig, or a pod's ServiceAccount), through the gateway's own reader of the ConfigMap's
layout (`wardgate.gateway.kubesource`), so both always agree on it. A Secret this person may
not read is left out; the caller says which references are then unresolved.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from wardgate.gateway.kubesource import (
    ConfigMapSource,
    ConfigObject,
    Snapshot,
    SourceError,
    api_reason,
    load_client_configuration,
)
from wardgate.operator.manifests import child_name
from wardgate.operator.models import GROUP, VERSION
from wardgate.operator.policy import explain_route_paths

SERVICE_ACCOUNT_NAMESPACE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
NO_MATCHING_ROUTE: Final = "no Route of this Gateway has a path matching the request"


def default_namespace(kubeconfig: Path | None = None) -> str:
    """The namespace kubectl would use, from where `load_client_configuration` reads the
    cluster: the given kubeconfig's current context's; else, in a pod, the pod's; else the
    default kubeconfig's current context's; else `default`."""
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
        except OSError:
            pass
    try:
        _, current = k8s_config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig is not None else None
        )
    except (k8s_config.ConfigException, OSError, ValueError, yaml.YAMLError):
        return "default"
    context = (current or {}).get("context") or {}
    return str(context.get("namespace") or "default")


@dataclass(frozen=True, slots=True)
class RenderedConfig:
    """A Gateway's rendered config with the secret values this reader could read."""

    snapshot: Snapshot
    origin: str
    """How the command names it: `configmap/NAME`, with ` -n NAMESPACE` when one was given."""


class RenderedGateway:
    """Reads what the operator rendered for one Gateway (blocking calls)."""

    def __init__(
        self,
        gateway: str,
        namespace: str | None,
        configuration: k8s_client.Configuration,
        kubeconfig: Path | None = None,
    ) -> None:
        self.gateway = gateway
        self.namespace = namespace or default_namespace(kubeconfig)
        config_map = child_name(gateway, "-config")
        self.origin = f"configmap/{config_map}" + (f" -n {namespace}" if namespace else "")
        self._configuration = configuration
        self._target = ConfigObject(self.namespace, config_map)

    @classmethod
    def connect(
        cls, gateway: str, namespace: str | None, kubeconfig: Path | None = None
    ) -> RenderedGateway:
        """A reader for `gateway` (raises `SourceError` when no cluster is configured)."""
        return cls(gateway, namespace, load_client_configuration(kubeconfig), kubeconfig)

    def config(self) -> RenderedConfig:
        """The rendered config and the Secret values it uses that can be read (raises
        `SourceError` when the ConfigMap cannot be read or has no config)."""
        source = ConfigMapSource(
            self._target,
            self._configuration,
            origin=self.origin,
            skip_unreadable_secrets=True,
        )
        try:
            return RenderedConfig(source.read(), self.origin)
        finally:
            source.close()

    def route_policy(self, path: str) -> list[str]:
        """The Route paths of the Gateway that match `path`, with the operator's decision on
        each, from the Routes' status (raises `SourceError`)."""
        with k8s_client.ApiClient(self._configuration) as api:
            custom = k8s_client.CustomObjectsApi(api)
            try:
                gateway = _json(
                    custom.get_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, "gateways", self.gateway,
                        _preload_content=False,
                    )
                )  # fmt: skip
                routes = _json(
                    custom.list_cluster_custom_object(
                        GROUP, VERSION, "routes", _preload_content=False
                    )
                )
            except (ApiException, HTTPError, OSError) as exc:
                raise SourceError(
                    f"Gateway {self.namespace}/{self.gateway}: {api_reason(exc)}"
                ) from None
        namespace = str((gateway.get("metadata") or {}).get("namespace", ""))
        lines = explain_route_paths(routes.get("items") or [], (namespace, self.gateway), path)
        return lines or [NO_MATCHING_ROUTE]


def _json(response: Any) -> Mapping[str, Any]:
    document: Mapping[str, Any] = json.loads(response.data)
    return document
