"""The objects the operator applies for a Gateway, built from a render result. Pure.

A config change writes the ConfigMap (and the Deployment's `config-hash` annotation) and
nothing in the pod template: the gateways follow their ConfigMap through the API
(`wardgate gateway --watch-config`, `wardgate.gateway.kubesource`) and swap the config in
place, so pods roll only when the pod spec itself changes (image, resources, replicas'
template). Each Gateway's pods run as its own ServiceAccount, whose Role may read that one
ConfigMap and the Secrets its authorizers use, by name, and nothing else.

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
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from wardgate.gateway.delivery import (
    CONFIG_HASH_ANNOTATION,
    CONFIG_KEY,
    POD_NAME_VARIABLE,
    SECRET_ITEMS_KEY,
)
from wardgate.operator.models import API_VERSION, GatewaySpec
from wardgate.operator.render import Meta, RenderResult, SecretItem

Manifest = dict[str, Any]

TRAFFIC_PORT: Final = 8080
ADMIN_PORT: Final = 9901
TLS_PORT: Final = 8443
CONFIG_FILE: Final = CONFIG_KEY
CONFIG_MAP_LIMIT: Final = 1_048_576
"""What the API server accepts in one ConfigMap (`data` and `binaryData` together)."""
PRESTOP_SECONDS: Final = 5
DEFAULT_DRAIN_SECONDS: Final = 20.0
APPLIED_HASH: Final = "wardgate.io/applied-hash"
CONFIG_HASH: Final = CONFIG_HASH_ANNOTATION
GATEWAY_LABEL: Final = "wardgate.io/gateway"
REPORT_LABEL: Final = "wardgate.io/report"
"""On the ConfigMap where a Gateway's replicas record the config they serve (value
`REPORT_SERVED`): what the operator watches of them."""
REPORT_SERVED: Final = "served-config"
MANAGED_BY: Final = "wardgate-operator"
RUN_AS: Final = 65532
MAX_DEFAULT_WORKERS: Final = 16
"""At most this many workers from the CPU resources (`spec.workers` may set up to 64)."""


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


def secret_items_text(items: tuple[SecretItem, ...]) -> str:
    """The Secret keys a config needs (names, never values), as the gateway reads them."""
    return json.dumps(
        [{"secret": i.secret, "key": i.key, "path": i.path} for i in items],
        sort_keys=True,
        separators=(",", ":"),
    )


def build_service_account(meta: Meta) -> Manifest:
    """The identity of the Gateway's pods."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(meta, child_name(meta.name)),
    }


def build_role(meta: Meta, result: RenderResult) -> Manifest:
    """What the Gateway's pods may read: their ConfigMap and their Secrets, by name (a list
    or watch is authorised by name when it selects `metadata.name`); and the one ConfigMap
    where each records the config it serves, which they may patch."""
    rules: list[dict[str, Any]] = [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [child_name(meta.name, "-config")],
            "verbs": ["get", "list", "watch"],
        },
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [served_report_name(meta.name)],
            "verbs": ["patch"],
        },
    ]
    secrets = sorted({item.secret for item in result.secret_items})
    if secrets:
        rules.append(
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": secrets,
                "verbs": ["get"],
            }
        )
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(meta, child_name(meta.name)),
        "rules": rules,
    }


def build_role_binding(meta: Meta) -> Manifest:
    name = child_name(meta.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(meta, name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": meta.namespace}],
    }


def build_config_map(meta: Meta, result: RenderResult) -> Manifest:
    assert result.config_json is not None
    assert result.config_hash is not None
    compressed = base64.b64encode(compress_config(result.config_json)).decode("ascii")
    manifest: Manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(meta, child_name(meta.name, "-config")),
        "binaryData": {CONFIG_FILE: compressed},
        "data": {SECRET_ITEMS_KEY: secret_items_text(result.secret_items)},
    }
    manifest["metadata"]["annotations"] = {CONFIG_HASH: result.config_hash}
    return manifest


def gateway_workers(spec: GatewaySpec) -> int:
    """The gateway processes of a pod: `spec.workers`, else as many as whole cores in the
    container's CPU limit, else in its CPU request (at least 1; 1 without either).

    One process uses one core at most: fewer workers than cores leave CPU unused, more
    share cores, which only adds latency (and under a CPU limit, throttling)."""
    if spec.workers is not None:
        return spec.workers
    resources = spec.resources
    if resources is None:
        return 1
    cpu = resources.limits.get("cpu", resources.requests.get("cpu"))
    if cpu is None:
        return 1
    cores = cpu_cores(cpu)
    if cores is None:  # the API server refuses the Deployment and says why
        return 1
    return max(1, min(MAX_DEFAULT_WORKERS, int(cores)))


_CPU_QUANTITY: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(m?)")


def cpu_cores(quantity: int | str) -> Decimal | None:
    """A CPU quantity (`2`, `1.5`, `500m`) in cores; None for another form (this module is
    pure: no Kubernetes client, whose parser knows every suffix)."""
    match = _CPU_QUANTITY.fullmatch(str(quantity).strip())
    if match is None:
        return None
    cores = Decimal(match[1])
    return cores / 1000 if match[2] else cores


def served_report_name(gateway: str) -> str:
    """The ConfigMap where the Gateway's replicas record the config hash each serves."""
    return child_name(gateway, "-served")


def build_served_report(meta: Meta) -> Manifest:
    """The ConfigMap of the replicas' records: created empty, its `data` (pod name → config
    hash) written by the replicas themselves (`wardgate.gateway.kubesource.ServedReport`),
    which server-side apply of this manifest leaves alone."""
    metadata = _metadata(meta, served_report_name(meta.name))
    metadata["labels"][REPORT_LABEL] = REPORT_SERVED
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata}


def build_deployment(
    meta: Meta, spec: GatewaySpec, result: RenderResult, defaults: Defaults
) -> Manifest:
    assert result.config_hash is not None
    drain = spec.drain_seconds if spec.drain_seconds is not None else DEFAULT_DRAIN_SECONDS
    workers = gateway_workers(spec)
    args = [
        "gateway",
        "--watch-config",
        f"{meta.namespace}/{child_name(meta.name, '-config')}",
        "--host",
        "0.0.0.0",
        "--port",
        str(TRAFFIC_PORT),
        "--admin-host",
        "0.0.0.0",
        "--admin-port",
        str(ADMIN_PORT),
        "--report-served",
        served_report_name(meta.name),
    ]
    if workers > 1:
        args += ["--workers", str(workers)]
    if spec.tls is not None:
        # Certificates come with the config, from the Secrets it lists (read by the pod with
        # its Role), never through a volume: a rotated Secret applies within seconds.
        args += ["--tls-port", str(TLS_PORT)]
    # No config or secrets volume: the kubelet refreshes those a minute or more after a
    # change, and the gateway reads both through the API as they change.
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
    ]
    container: dict[str, Any] = {
        "name": "gateway",
        "image": spec.image or defaults.image,
        "imagePullPolicy": spec.image_pull_policy or defaults.image_pull_policy,
        "args": args,
        "env": [
            {"name": "WARDGATE_LOG_LEVEL", "value": spec.log_level},
            # The key of this replica's record of the config it serves.
            {
                "name": POD_NAME_VARIABLE,
                "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}},
            },
        ],
        "ports": [
            {"name": "http", "containerPort": TRAFFIC_PORT, "protocol": "TCP"},
            *(
                [{"name": "https", "containerPort": TLS_PORT, "protocol": "TCP"}]
                if spec.tls is not None
                else []
            ),
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
        "serviceAccountName": child_name(meta.name),
        "automountServiceAccountToken": True,
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
                # No config hash here: a config change must not replace the pods.
                **({"annotations": dict(pod.annotations)} if pod.annotations else {}),
            },
            "spec": pod_spec,
        },
    }
    if spec.autoscaling is None:
        deployment_spec["replicas"] = spec.replicas  # else the HorizontalPodAutoscaler owns it
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        # No config hash here either: the Deployment changes only when the pods must.
        "metadata": _metadata(meta, child_name(meta.name)),
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
                {
                    "name": "http",
                    "port": spec.service.port,
                    "targetPort": "http",
                    "protocol": "TCP",
                },
                *(
                    [
                        {
                            "name": "https",
                            "port": spec.tls.port,
                            "targetPort": "https",
                            "protocol": "TCP",
                        }
                    ]
                    if spec.tls is not None
                    else []
                ),
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
        build_served_report(meta),
        build_service_account(meta),
        build_role(meta, result),
        build_role_binding(meta),
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
