"""The objects the operator applies for a Gateway, built from a render result. Pure.

Every object carries an owner reference to its Gateway (deleting the Gateway deletes them)
and the annotation `wardgate.io/applied-hash`, a hash of the object as built here: the
operator writes an object only when that hash differs from the one on the cluster, so a
reconcile with nothing changed writes nothing.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from wardgate.operator.models import API_VERSION, GatewaySpec
from wardgate.operator.render import Meta, RenderResult, SecretItem

Manifest = dict[str, Any]

TRAFFIC_PORT: Final = 8080
ADMIN_PORT: Final = 9901
CONFIG_DIR: Final = "/etc/wardgate/config"
CONFIG_FILE: Final = "config.json.gz"
"""The rendered config in the ConfigMap's `binaryData`, gzip-compressed: JSON of 20,000
paths is about 5 MB, compressed about 30 times less (docs/performance.md)."""
CONFIG_MAP_LIMIT: Final = 1_048_576
"""What the API server accepts in one ConfigMap (`data` and `binaryData` together)."""
SECRETS_DIR: Final = "/etc/wardgate/secrets"
PRESTOP_SECONDS: Final = 5
DEFAULT_DRAIN_SECONDS: Final = 20.0
APPLIED_HASH: Final = "wardgate.io/applied-hash"
CONFIG_HASH: Final = "wardgate.io/config-hash"
GATEWAY_LABEL: Final = "wardgate.io/gateway"
MANAGED_BY: Final = "wardgate-operator"
RUN_AS: Final = 65532


@dataclass(frozen=True, slots=True)
class Defaults:
    """Operator settings the Gateway spec may override."""

    image: str = "wardgate:latest"
    image_pull_policy: str = "IfNotPresent"


def child_name(gateway: str, suffix: str = "") -> str:
    """Name of an object owned by the Gateway (a DNS label, at most 63 characters)."""
    name = f"wardgate-{gateway}{suffix}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:54]}-{digest}"


def selector_labels(gateway: str) -> dict[str, str]:
    """What selects a Gateway's pods (its Deployment, Service and PodDisruptionBudget)."""
    return {"app.kubernetes.io/name": "wardgate-gateway", GATEWAY_LABEL: gateway}


def _labels(gateway: str) -> dict[str, str]:
    # `instance` is not the bare Gateway name: Argo CD's label tracking (the default before
    # 3.0) reads that label as the name of an Application, which would claim, and with
    # pruning delete, the objects of a Gateway named like it.
    return {
        **selector_labels(gateway),
        "app.kubernetes.io/instance": child_name(gateway),
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def _metadata(meta: Meta, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": meta.namespace,
        "labels": _labels(meta.name),
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": "Gateway",
                "name": meta.name,
                "uid": meta.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def with_applied_hash(manifest: Manifest) -> Manifest:
    """The manifest with the hash of its own content as an annotation."""
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
    metadata = manifest["metadata"]
    metadata["annotations"] = {**metadata.get("annotations", {}), APPLIED_HASH: digest}
    return manifest


def compress_config(config_json: str) -> bytes:
    """The config as stored: gzip with no timestamp, so equal configs give equal bytes."""
    return gzip.compress(config_json.encode("utf-8"), compresslevel=6, mtime=0)


def config_map_size(manifest: Mapping[str, Any]) -> int:
    """The size the API server checks against `CONFIG_MAP_LIMIT`: keys plus values, the
    values of `binaryData` decoded."""
    size = 0
    for key, value in (manifest.get("data") or {}).items():
        size += len(key) + len(value.encode("utf-8"))
    for key, value in (manifest.get("binaryData") or {}).items():
        size += len(key) + len(base64.b64decode(value))
    return size


def config_map_text(body: Mapping[str, Any]) -> str | None:
    """The config JSON a ConfigMap built by `build_config_map` holds (None when it has none)."""
    encoded = (body.get("binaryData") or {}).get(CONFIG_FILE)
    if not isinstance(encoded, str):
        return None
    return gzip.decompress(base64.b64decode(encoded)).decode("utf-8")


def build_config_map(meta: Meta, result: RenderResult) -> Manifest:
    assert result.config_json is not None
    assert result.config_hash is not None
    compressed = base64.b64encode(compress_config(result.config_json)).decode("ascii")
    manifest: Manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(meta, child_name(meta.name, "-config")),
        "binaryData": {CONFIG_FILE: compressed},
    }
    manifest["metadata"]["annotations"] = {CONFIG_HASH: result.config_hash}
    return manifest


def _secrets_volume(items: tuple[SecretItem, ...]) -> dict[str, Any]:
    sources: dict[str, list[dict[str, str]]] = {}
    for item in items:
        sources.setdefault(item.secret, []).append({"key": item.key, "path": item.path})
    return {
        "name": "secrets",
        "projected": {
            "defaultMode": 0o440,
            "sources": [
                {"secret": {"name": secret, "items": entries}}
                for secret, entries in sorted(sources.items())
            ],
        },
    }


def build_deployment(
    meta: Meta, spec: GatewaySpec, result: RenderResult, defaults: Defaults
) -> Manifest:
    assert result.config_hash is not None
    drain = spec.drain_seconds if spec.drain_seconds is not None else DEFAULT_DRAIN_SECONDS
    args = [
        "gateway",
        "--config",
        f"{CONFIG_DIR}/{CONFIG_FILE}",
        "--host",
        "0.0.0.0",
        "--port",
        str(TRAFFIC_PORT),
        "--admin-host",
        "0.0.0.0",
        "--admin-port",
        str(ADMIN_PORT),
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": child_name(meta.name, "-config")}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
    ]
    if result.secret_items:
        args += ["--secrets-dir", SECRETS_DIR]
        mounts.append({"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True})
        volumes.append(_secrets_volume(result.secret_items))
    container: dict[str, Any] = {
        "name": "gateway",
        "image": spec.image or defaults.image,
        "imagePullPolicy": spec.image_pull_policy or defaults.image_pull_policy,
        "args": args,
        "env": [{"name": "WARDGATE_LOG_LEVEL", "value": spec.log_level}],
        "ports": [
            {"name": "http", "containerPort": TRAFFIC_PORT, "protocol": "TCP"},
            {"name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "admin"},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "admin"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        # Endpoints drop a terminating pod asynchronously: keep serving a moment first.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }
    if spec.resources is not None:
        container["resources"] = spec.resources.model_dump(mode="json", exclude_defaults=True)
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": int(drain) + PRESTOP_SECONDS + 10,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    pod = spec.pod
    if pod.node_selector:
        pod_spec["nodeSelector"] = dict(pod.node_selector)
    if pod.tolerations:
        pod_spec["tolerations"] = list(pod.tolerations)
    if pod.affinity is not None:
        pod_spec["affinity"] = dict(pod.affinity)
    if pod.priority_class_name:
        pod_spec["priorityClassName"] = pod.priority_class_name
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(meta.name)},
        "revisionHistoryLimit": 5,
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "template": {
            "metadata": {
                "labels": {**pod.labels, **_labels(meta.name)},
                "annotations": {**pod.annotations, CONFIG_HASH: result.config_hash},
            },
            "spec": pod_spec,
        },
    }
    if spec.autoscaling is None:
        deployment_spec["replicas"] = spec.replicas  # else the HorizontalPodAutoscaler owns it
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            **_metadata(meta, child_name(meta.name)),
            "annotations": {CONFIG_HASH: result.config_hash},
        },
        "spec": deployment_spec,
    }


def build_service(meta: Meta, spec: GatewaySpec) -> Manifest:
    metadata = _metadata(meta, child_name(meta.name))
    if spec.service.annotations:
        metadata["annotations"] = dict(spec.service.annotations)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": spec.service.type,
            "selector": selector_labels(meta.name),
            "ports": [
                {"name": "http", "port": spec.service.port, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def build_pdb(meta: Meta) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(meta, child_name(meta.name)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(meta.name)}},
    }


def build_hpa(meta: Meta, spec: GatewaySpec) -> Manifest:
    assert spec.autoscaling is not None
    scaling = spec.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(meta, child_name(meta.name)),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": child_name(meta.name),
            },
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": scaling.target_cpu_utilization_percentage,
                        },
                    },
                }
            ],
        },
    }


@dataclass(frozen=True, slots=True)
class GatewayObjects:
    """What to apply (in order) and which optional kinds must not exist."""

    apply: tuple[Manifest, ...]
    absent: tuple[tuple[str, str], ...]
    """(kind, name) of owned objects to delete if present."""


def build_gateway_objects(
    meta: Meta, spec: GatewaySpec, result: RenderResult, defaults: Defaults
) -> GatewayObjects:
    """Every owned object for a valid render result, in apply order (config first)."""
    objects = [
        build_config_map(meta, result),
        build_deployment(meta, spec, result, defaults),
        build_service(meta, spec),
    ]
    absent: list[tuple[str, str]] = []
    min_replicas = spec.autoscaling.min_replicas if spec.autoscaling else spec.replicas
    if min_replicas > 1:
        objects.append(build_pdb(meta))
    else:
        absent.append(("PodDisruptionBudget", child_name(meta.name)))
    if spec.autoscaling is not None:
        objects.append(build_hpa(meta, spec))
    else:
        absent.append(("HorizontalPodAutoscaler", child_name(meta.name)))
    return GatewayObjects(tuple(with_applied_hash(o) for o in objects), tuple(absent))
