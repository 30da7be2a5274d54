"""Secret leakage on the operator's side: the operator is taken through the seed example,
a rotation of its Secret and the deletion of the key in use (with another key added);
then every secret value is searched for in what the operator emitted or wrote: its log
(the `wardgate.operator` and `kopf` loggers at DEBUG), the namespace's Events, every
ConfigMap, the Gateways, Routes and Authorizers (statuses included), and the Deployments,
ReplicaSets, Pods and Services (annotations, env). Zero hits.

Each value is searched for as is, in base64 (as a Secret's `data` holds it) and as the
start of its SHA-256 digest (an unsalted digest would let anyone test guesses), which
also shows that the config-hash annotations are not a hash of the secret alone.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import results
from tests.support.operator_fixtures import Objects, RunningOperator, seed_objects
from wardgate.devcluster.cluster import KubeCluster

pytestmark = pytest.mark.cluster

SUITE = "operator: secret leakage"
FIRST = "op-leak-first-secret-6b1f0d93c2a84e57-abcdef"
ROTATED = "op-leak-rotated-secret-a9e4c7015d3b2f86-uvwx"
OTHER = "op-leak-other-key-value-13d5f7b9e2c4a608-mn"
LOGGERS = ("wardgate.operator", "kopf")
CONFIG_HASH = "wardgate.io/config-hash"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def operator_log() -> Iterator[_Collect]:
    """Everything the operator and kopf log, at DEBUG."""
    handler = _Collect()
    loggers = [logging.getLogger(name) for name in LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def forms(value: str) -> dict[str, str]:
    """The ways a secret value could show: as is, base64, its digest's first 16 digits."""
    raw = value.encode()
    return {
        "value": value,
        "base64": base64.b64encode(raw).decode(),
        "sha256 prefix": hashlib.sha256(raw).hexdigest()[:16],
    }


def config_hashes(objects: Objects, namespace: str) -> set[str]:
    config_map = objects.get("ConfigMap", namespace, "wardgate-api-config") or {}
    gateway = objects.get("Gateway", namespace, "api") or {}
    return {
        config_map["metadata"]["annotations"][CONFIG_HASH],
        (gateway.get("status") or {}).get("configHash") or "",
    } - {""}


def test_no_secret_value_reaches_the_operators_output(
    cluster: KubeCluster, objects: Objects, namespace: str, operator_log: _Collect
) -> None:
    operator = RunningOperator(cluster.kubeconfig).start()
    try:
        objects.apply(namespace, *seed_objects(FIRST))
        objects.wait_condition("Gateway", namespace, "api", "Ready", "True", timeout=90)
        first_hashes = config_hashes(objects, namespace)

        objects.apply(namespace, seed_objects(ROTATED)[0])
        objects.wait(
            "the rotation rolled out", lambda: config_hashes(objects, namespace) != first_hashes
        )
        objects.wait_condition("Gateway", namespace, "api", "Ready", "True", timeout=90)

        other = base64.b64encode(OTHER.encode()).decode()
        objects.merge_patch(
            "Secret", namespace, "jwt-keys", {"data": {"JWT_SECRET": None, "OTHER_KEY": other}}
        )
        objects.wait_condition(
            "Authorizer", namespace, "jwt", "ResolvedRefs", "False", "KeyNotFound"
        )
        objects.wait_condition(
            "Route", namespace, "orders", "Accepted", "False", "AuthorizerNotReady"
        )
        objects.wait(
            "the operator to settle",
            lambda: objects.statuses_current(namespace) and operator.idle(),
        )
    finally:
        operator.stop()

    hashes = first_hashes | config_hashes(objects, namespace)
    sources: dict[str, list[Any]] = {
        "operator log records": operator_log.lines,
        "Events": objects.list("Event", namespace),
        "ConfigMaps": objects.list("ConfigMap", namespace),
        "Gateways, Routes and Authorizers": [
            item
            for kind in ("Gateway", "Route", "Authorizer")
            for item in objects.list(kind, namespace)
        ],
        "Deployments, ReplicaSets, Pods and Services": [
            *(
                item
                for kind in ("Deployment", "ReplicaSet", "Service")
                for item in objects.list(kind, namespace)
            ),
            *(objects.api.request_blocking("GET", f"/api/v1/namespaces/{namespace}/pods") or {})[
                "items"
            ],
        ],
    }
    # The run produced what is searched: DEBUG records, the reconciler's Events, statuses.
    assert any(" DEBUG " in line for line in operator_log.lines)
    assert sources["Events"]
    assert all(len(found) > 0 for found in sources.values())

    searched = {
        f"{name} ({form})": text
        for name, value in {"first": FIRST, "rotated": ROTATED, "other key": OTHER}.items()
        for form, text in forms(value).items()
    }
    hits = [
        f"{secret} in {source}"
        for source, found in sources.items()
        for secret, text in searched.items()
        if text
        in "\n".join(json.dumps(item) if not isinstance(item, str) else item for item in found)
    ]
    assert hits == []
    # The search does find a value where it is stored: in its Secret.
    assert forms(OTHER)["base64"] in json.dumps(objects.get("Secret", namespace, "jwt-keys"))
    assert not hashes & set(searched.values())

    results.record(SUITE, "secret values searched", 3)
    results.record(SUITE, "forms searched (value, base64, digest)", len(searched))
    for source, found in sources.items():
        results.record(SUITE, f"{source} searched", len(found))
    results.record(
        SUITE,
        "bytes searched",
        sum(len(json.dumps(found).encode()) for found in sources.values()),
    )
    results.record(SUITE, "hits", len(hits))
