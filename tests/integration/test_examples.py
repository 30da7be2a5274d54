"""The examples: valid for the models, applied to the real API server, made Ready by the
operator, and GitOps-safe: applying them again changes nothing, and the operator writes only
status to them.

The same run checks the Argo CD health check (deploy/argocd/health.lua) against the live
objects in each state, and with `WARDGATE_UPDATE_GOLDEN=1` saves them as the fixtures of
tests/unit/test_argocd_health.py (tests/fixtures/status/KIND-STATE.json).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.argocd import STATUS_FIXTURES, assess
from wardgate.devcluster.cluster import KubeCluster, wait_until
from wardgate.devcluster.kwokreplicas import KwokReplicas
from wardgate.operator.models import (
    API_VERSION,
    AUTHORIZER_SPEC_ADAPTER,
    GATEWAY_SPEC_ADAPTER,
    ROUTE_SPEC_ADAPTER,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CRDS = ROOT / "deploy" / "crds"
FIELD_MANAGER = "gitops"
SPEC_ADAPTERS: dict[str, Any] = {
    "Gateway": GATEWAY_SPEC_ADAPTER,
    "Route": ROUTE_SPEC_ADAPTER,
    "Authorizer": AUTHORIZER_SPEC_ADAPTER,
}

# Objects that are not examples: each reaches a health state the examples do not.
BROKEN = f"""\
apiVersion: {API_VERSION}
kind: Route
metadata: {{name: lost}}
spec:
  gatewayRef: {{name: nowhere}}
  paths: [{{method: GET, path: /lost, response: {{lost: true}}}}]
---
apiVersion: {API_VERSION}
kind: Authorizer
metadata: {{name: keyless}}
spec:
  type: jwt
  secretRef: {{name: no-such-secret}}
  secret: $secret.KEY
  algorithm: HS256
---
apiVersion: {API_VERSION}
kind: Gateway
metadata: {{name: orphaned}}
spec:
  defaultAuthorizer: gone
---
apiVersion: {API_VERSION}
kind: Gateway
metadata: {{name: stuck}}
spec:
  pod:
    nodeSelector: {{wardgate.io/no-such-node: "true"}}
"""


def example_files() -> list[Path]:
    return sorted(EXAMPLES.rglob("*.yaml"))


def example_documents() -> list[dict[str, Any]]:
    return [d for path in example_files() for d in yaml.safe_load_all(path.read_text()) if d]


def update_fixtures(request: pytest.FixtureRequest) -> bool:
    option = bool(request.config.getoption("--update-golden", default=False))
    return option or os.environ.get("WARDGATE_UPDATE_GOLDEN", "") not in ("", "0")


def test_examples_are_valid_for_the_models() -> None:
    kinds = []
    for document in example_documents():
        assert "namespace" not in document["metadata"], "examples go to the namespace applied to"
        kind = document["kind"]
        kinds.append(kind)
        if kind in SPEC_ADAPTERS:
            assert document["apiVersion"] == API_VERSION
            SPEC_ADAPTERS[kind].validate_python(document["spec"])
    authorizer_types = sorted(
        d["spec"]["type"] for d in example_documents() if d["kind"] == "Authorizer"
    )
    assert authorizer_types == ["auth0", "jwt", "supabase", "supabase"]
    assert {"Secret", "Gateway", "Route", "Deployment", "Service"} <= set(kinds)


# --- against the cluster --------------------------------------------------------------------


def _get(cluster: KubeCluster, namespace: str, kind: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(
        cluster.kubectl(
            "get", f"{kind.lower()}s.wardgate.io/{name}", "-n", namespace, "-o", "json"
        ).stdout
    )
    return body


def _apply_examples(cluster: KubeCluster, namespace: str, *extra: str) -> str:
    return cluster.kubectl(
        "apply",
        "--server-side",
        f"--field-manager={FIELD_MANAGER}",
        "-n",
        namespace,
        "-R",
        "-f",
        str(EXAMPLES),
        *extra,
    ).stdout


@pytest.fixture
def operator(cluster: KubeCluster, namespace: str, tmp_path: Path) -> Iterator[Path]:
    """`wardgate operator` watching the test's namespace; yields its log file. The gateway
    pods on kwok's node run nothing, so `KwokReplicas` records what each would serve (a
    Gateway is Ready only when its replicas serve the current config)."""
    log = tmp_path / "operator.log"
    replicas = KwokReplicas(cluster.kubeconfig).start()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wardgate",
                "operator",
                "--kubeconfig",
                str(cluster.kubeconfig),
                "--namespace",
                namespace,
                "--standalone",
                "--gateway-image",
                "wardgate:test",
                # The examples name placeholder identity providers, unreachable from here:
                # probed, their Authorizers would never be Ready.
                "--jwks-probe-seconds",
                "0",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=cluster.env,
        )
    try:
        yield log
    finally:
        replicas.stop()
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.returncode not in (0, -15):
        print(log.read_text()[-4000:], file=sys.stderr)


def _install_crds(cluster: KubeCluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    for kind in ("gateways", "routes", "authorizers"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{kind}.wardgate.io")


def _ready(cluster: KubeCluster, namespace: str, kind: str, name: str) -> dict[str, Any]:
    """The object once its Ready condition is True for its current generation."""

    def reached() -> bool:
        body = _get(cluster, namespace, kind, name)
        return assess(body).status == "Healthy"

    wait_until(reached, what=f"{kind} {name} Ready", timeout=90, interval=0.25)
    return _get(cluster, namespace, kind, name)


def _state(cluster: KubeCluster, namespace: str, kind: str, name: str, want: str) -> dict[str, Any]:
    """The object once the health check gives `want` for a status the operator wrote."""

    def reached() -> bool:
        body = _get(cluster, namespace, kind, name)
        return bool(body.get("status")) and assess(body).status == want

    try:
        wait_until(reached, what=f"{kind} {name} {want}", timeout=90, interval=0.25)
    except TimeoutError:
        body = _get(cluster, namespace, kind, name)
        raise AssertionError(f"{kind} {name}: {assess(body)} {body.get('status')}") from None
    return _get(cluster, namespace, kind, name)


def _save(kind: str, state: str, body: dict[str, Any]) -> None:
    body = json.loads(json.dumps(body))
    body["metadata"].pop("managedFields", None)
    STATUS_FIXTURES.mkdir(parents=True, exist_ok=True)
    path = STATUS_FIXTURES / f"{kind.lower()}-{state.lower()}.json"
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")


def _abnormal(body: dict[str, Any]) -> dict[str, str]:
    """kstatus' abnormal-true conditions present: type → reason."""
    return {
        c["type"]: c["reason"]
        for c in body["status"]["conditions"]
        if c["type"] in ("Reconciling", "Stalled")
    }


def _managers(body: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (entry["manager"], entry["operation"], entry.get("subresource", ""))
        for entry in body["metadata"].get("managedFields", [])
    }


@pytest.mark.cluster
def test_examples_apply_reconcile_and_reapply_unchanged(
    cluster: KubeCluster, namespace: str, request: pytest.FixtureRequest
) -> None:
    _install_crds(cluster)
    _apply_examples(cluster, namespace)
    cluster.kubectl(
        "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-n", namespace, "-f", "-",
        input=BROKEN,
    )  # fmt: skip
    save = update_fixtures(request)

    # Before any operator runs: no status, Progressing.
    waiting = {"Gateway": "api", "Route": "orders", "Authorizer": "jwt"}
    for kind, name in waiting.items():
        body = _get(cluster, namespace, kind, name)
        assert "status" not in body
        assert assess(body).status == "Progressing"
        if save:
            _save(kind, "progressing", body)

    operator_log = request.getfixturevalue("operator")
    try:
        documents = [d for d in example_documents() if d["kind"] in SPEC_ADAPTERS]
        healthy = {}
        for document in documents:
            kind, name = document["kind"], document["metadata"]["name"]
            healthy[(kind, name)] = _ready(cluster, namespace, kind, name)
        degraded = {
            kind: _state(cluster, namespace, kind, name, "Degraded")
            for kind, name in [
                ("Route", "lost"),
                ("Authorizer", "keyless"),
                ("Gateway", "orphaned"),
            ]
        }
        rolling = _state(cluster, namespace, "Gateway", "stuck", "Progressing")
    except (AssertionError, TimeoutError):
        print(operator_log.read_text()[-6000:], file=sys.stderr)
        raise
    assert healthy[("Gateway", "api")]["status"]["routes"] == 3  # health, orders, admin
    assert assess(degraded["Route"]).message.startswith("GatewayNotFound: ")
    assert assess(degraded["Authorizer"]).message.startswith("SecretNotFound: ")
    assert assess(degraded["Gateway"]).message.startswith("AuthorizerNotFound: ")
    assert assess(rolling).message.startswith("Progressing: ")
    # kstatus, for tools that read only that: Reconciling while rolling out, Stalled when a
    # change is needed, neither when Ready.
    assert all(_abnormal(body) == {} for body in healthy.values())
    assert {kind: _abnormal(body) for kind, body in degraded.items()} == {
        "Route": {"Stalled": "GatewayNotFound"},
        "Authorizer": {"Stalled": "SecretNotFound"},
        "Gateway": {"Stalled": "AuthorizerNotFound"},
    }
    assert _abnormal(rolling) == {"Reconciling": "Progressing"}
    if save:
        for kind, name in waiting.items():
            _save(kind, "healthy", healthy[(kind, name)])
        for kind, body in degraded.items():
            _save(kind, "degraded", body)
        _save("Gateway", "progressing-rollout", rolling)

    # GitOps: the operator wrote status only, with no finalizer, on every example object.
    for (kind, name), body in healthy.items():
        assert not body["metadata"].get("finalizers"), (kind, name)
        others = {m for m in _managers(body) if m[0] != FIELD_MANAGER}
        assert all(subresource == "status" for _, _, subresource in others), (kind, name, others)

    # Applying the examples again changes nothing: the server-side diff is empty, and a
    # real apply leaves every object's resourceVersion as it was.
    cluster.kubectl(
        "wait", "--for=condition=Available", "deployment/orders", "-n", namespace, "--timeout=60s"
    )
    diff = cluster.kubectl(
        "diff", "--server-side", f"--field-manager={FIELD_MANAGER}", "-n", namespace,
        "-R", "-f", str(EXAMPLES), check=False,
    )  # fmt: skip
    assert diff.returncode == 0, diff.stdout + diff.stderr
    before = _resource_versions(cluster, namespace)
    output = _apply_examples(cluster, namespace)
    assert "serverside-applied" in output
    assert _resource_versions(cluster, namespace) == before


def _resource_versions(cluster: KubeCluster, namespace: str) -> dict[str, str]:
    listed = json.loads(
        cluster.kubectl(
            "get",
            "secrets,deployments.apps,services,gateways.wardgate.io,routes.wardgate.io,"
            "authorizers.wardgate.io",
            "-n",
            namespace,
            "-l",
            "app.kubernetes.io/part-of=wardgate-examples",
            "-o",
            "json",
        ).stdout
    )
    return {
        f"{item['kind']}/{item['metadata']['name']}": item["metadata"]["resourceVersion"]
        for item in listed["items"]
    }
