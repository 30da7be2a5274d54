"""Status bodies and Events built from render results and observed objects. Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from wardgate.operator.conditions import (
    DERIVED,
    NOT_DELIVERED,
    Cond,
    false,
    merge_conditions,
    needs_attention,
    summarise,
    true,
)
from wardgate.operator.render import Meta, ObjectKey, ObjectStatus

Body = dict[str, Any]

# Every field the operator owns in each kind's status; absent ones are sent as null so that a
# merge patch removes them.
STATUS_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "Gateway": ("routes", "configHash", "replicas", "availableReplicas", "servingReplicas"),
    "Route": ("paths", "auth", "policy"),
    "Authorizer": ("issuer", "jwks"),
}
EVENT_MESSAGE_LIMIT: Final = 1024
COMPONENT: Final = "wardgate-operator"


@dataclass(frozen=True, slots=True)
class Replicas:
    """A Gateway's pods as watched: their names, the ready ones (not terminating), and the
    config hash each has recorded serving (pod name → hash; records of pods gone may
    linger)."""

    pods: frozenset[str] = frozenset()
    ready: frozenset[str] = frozenset()
    served: Mapping[str, str] = field(default_factory=dict)

    def serving(self, config_hash: str | None) -> int:
        """Ready replicas that serve `config_hash`."""
        return sum(1 for pod in self.ready if config_hash and self.served.get(pod) == config_hash)

    def stale(self) -> list[str]:
        """Records of pods that no longer exist."""
        return sorted(pod for pod in self.served if pod not in self.pods)


def served_condition(replicas: Replicas, running: str | None) -> Cond:
    """`ConfigServed`: true when every ready replica serves the config in the Gateway's
    ConfigMap (`running`), as each replica records it after its in-place swap."""
    if running is None:
        return false("ConfigServed", "Pending", "no config has been written yet")
    if not replicas.ready:
        return false("ConfigServed", "Pending", f"no ready replica serves config {running} yet")
    serving = replicas.serving(running)
    ready = len(replicas.ready)
    if serving < ready:
        others = Counter(replicas.served.get(pod, "nothing recorded") for pod in replicas.ready)
        del others[running]
        elsewhere = ", ".join(f"{count} {what}" for what, count in sorted(others.items()))
        return false(
            "ConfigServed",
            "Progressing",
            f"{serving}/{ready} ready replicas serve config {running} (others: {elsewhere})",
        )
    return true(
        "ConfigServed", "Served", f"{serving}/{ready} ready replicas serve config {running}"
    )


def _annotations(body: Mapping[str, Any] | None) -> Mapping[str, str]:
    if not body:
        return {}
    return (body.get("metadata") or {}).get("annotations") or {}


def programmed_condition(
    accepted: bool,
    deployment: Mapping[str, Any] | None,
    desired_hash: str | None,
    running: str | None,
) -> Cond:
    """Whether the Deployment's replicas are all available and the latest valid config is
    in their ConfigMap (`running`: its hash), which they follow."""
    if deployment is None:
        if not accepted:
            return false("Programmed", "Pending", "no valid config has been rendered yet")
        return false("Programmed", "Pending", "the gateway Deployment does not exist yet")
    if desired_hash is not None and running != desired_hash:
        return false("Programmed", "Progressing", f"config {desired_hash} is not applied yet")
    spec = deployment.get("spec") or {}
    observed = deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation", 0)
    want = int(spec.get("replicas", 1))
    updated = int(observed.get("updatedReplicas") or 0)
    available = int(observed.get("availableReplicas") or 0)
    total = int(observed.get("replicas") or 0)
    if int(observed.get("observedGeneration") or 0) < int(generation):
        return false("Programmed", "Progressing", "the Deployment controller has not seen it yet")
    if updated < want or total > want or available < want:
        return false(
            "Programmed",
            "Progressing",
            f"rolling out config {running}: {updated}/{want} replicas updated, "
            f"{available} available",
        )
    return true("Programmed", "Programmed", f"{available}/{want} replicas run config {running}")


def gateway_status(
    rendered: ObjectStatus,
    deployment: Mapping[str, Any] | None,
    desired_hash: str | None,
    running: str | None,
    conflict: str | None = None,
    blocked: Cond | None = None,
    replicas: Replicas | None = None,
) -> tuple[tuple[Cond, ...], dict[str, Any]]:
    """The Gateway's conditions and fields: render's view plus the Deployment's and the
    replicas' (`conflict`: why an object to apply could not be, when it belongs to someone
    else; `blocked`: the Programmed condition when the config could not be applied for
    another reason). Ready needs the config served by every ready replica, not only
    written."""
    accepted = next(c for c in rendered.conditions if c.type == "Accepted")
    others = [c for c in rendered.conditions if c.type not in ("Accepted", "Ready")]
    if conflict is not None:
        programmed = false("Programmed", "ObjectConflict", conflict)
    elif blocked is not None:
        programmed = blocked
    else:
        programmed = programmed_condition(accepted.ok, deployment, desired_hash, running)
    served = served_condition(replicas or Replicas(), running)
    conditions = summarise((accepted, *others, programmed, served), served.message)
    fields = {k: v for k, v in rendered.fields.items() if k != "configHash"}
    if deployment is not None:
        fields["servingReplicas"] = (replicas or Replicas()).serving(running)
        fields["configHash"] = running
        fields["replicas"] = int((deployment.get("spec") or {}).get("replicas", 1))
        fields["availableReplicas"] = int(
            (deployment.get("status") or {}).get("availableReplicas") or 0
        )
    return conditions, fields


def config_too_large(size: int, limit: int, paths: int) -> Cond:
    """Programmed=False: the compressed config does not fit in its ConfigMap."""
    return false(
        "Programmed",
        "ConfigTooLarge",
        f"the rendered config of {paths} paths is {size} bytes compressed, over the "
        f"ConfigMap limit of {limit} bytes: split the Routes over more Gateways; the last "
        "config that fitted keeps serving",
    )


def routes_not_delivered(
    routes: Sequence[ObjectStatus], gateway: ObjectKey, size: int, limit: int
) -> tuple[ObjectStatus, ...]:
    """The Routes' statuses when their Gateway's config was not delivered (too large): those
    that would be Ready say they are not served as they stand; the others keep their own
    reason."""
    namespace, name = gateway
    unserved = false(
        "Accepted",
        NOT_DELIVERED,
        f"the config of Gateway {namespace}/{name} is not delivered: {size} bytes compressed, "
        f"over the ConfigMap limit of {limit} bytes; its gateways keep serving the last config "
        "that fitted, which may not hold this Route as it stands",
    )
    return tuple(
        ObjectStatus(
            status.kind,
            status.meta,
            summarise(
                [unserved, *(c for c in status.conditions if c.type not in DERIVED | {"Accepted"})]
            ),
            status.fields,
        )
        if status.ready
        else status
        for status in routes
    )


def build_status(
    kind: str,
    meta: Meta,
    previous: Mapping[str, Any],
    conditions: Sequence[Cond],
    fields: Mapping[str, Any],
    now: str,
) -> Body:
    """The whole status to store (every owned field, null when absent)."""
    status: Body = {
        "observedGeneration": meta.generation,
        "conditions": merge_conditions(
            previous.get("conditions") or [], conditions, meta.generation, now
        ),
    }
    for name in STATUS_FIELDS[kind]:
        status[name] = fields.get(name)
    return status


def same_status(previous: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether writing `desired` would change nothing (nulls are absent fields)."""

    def significant(status: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in status.items() if v is not None and k in desired}

    return significant(previous) == significant(desired)


def build_event(
    kind: str, api_version: str, meta: Meta, condition: Cond, now: str, instance: str
) -> Body:
    """A core/v1 Event for one condition transition."""
    message = f"{condition.type}={condition.status}: {condition.message}".strip(": ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.name}.", "namespace": meta.namespace},
        "involvedObject": {
            "apiVersion": api_version,
            "kind": kind,
            "name": meta.name,
            "namespace": meta.namespace,
            "uid": meta.uid,
        },
        "reason": condition.reason,
        "message": message[:EVENT_MESSAGE_LIMIT],
        # Leaving a failure (for a rollout, too) is good news.
        "type": "Warning"
        if needs_attention(condition.type, condition.status, condition.reason)
        else "Normal",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
