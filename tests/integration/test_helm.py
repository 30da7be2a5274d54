"""The Helm chart: lint, golden `helm template` output, manifests the API server accepts,
and a real install, upgrade and uninstall on the cluster.

Regenerate the golden files with `WARDGATE_UPDATE_GOLDEN=1 pytest tests/integration/test_helm.py`
(or `--update-golden` when the golden tests' options are loaded), then review the diff.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from wardgate.devcluster.binaries import find_bin_dir
from wardgate.devcluster.cluster import KubeCluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "wardgate"
CRDS = ROOT / "deploy" / "crds"
GOLDEN = ROOT / "tests" / "golden" / "helm"
RELEASE_NAMESPACE = "wardgate-system"

# name → `helm template` arguments; each renders to tests/golden/helm/NAME.yaml.
TEMPLATE_CASES: dict[str, list[str]] = {
    "default": [],
    "namespaced": [
        "--set",
        "watchNamespaces={team-a,team-b}",
        "--set",
        "image.digest=sha256:" + "0" * 64,
        "--set",
        "gateway.image.repository=registry.example.com/wardgate-gateway",
        "--set",
        "gateway.image.tag=1.2.3",
        "--set",
        "podMonitor.enabled=true",
        "--set",
        "podMonitor.labels.release=prometheus",
        "--set",
        "operator.verbose=true",
    ],
}

CRD_NAMES = ("gateways.wardgate.io", "routes.wardgate.io", "authorizers.wardgate.io")


def helm_binary() -> Path:
    return find_bin_dir() / "helm"


def helm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run helm; fail with its output when it exits non-zero."""
    result = subprocess.run(
        [str(helm_binary()), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def render(*args: str, release: str = "wardgate", namespace: str = RELEASE_NAMESPACE) -> str:
    return helm("template", release, str(CHART), "--namespace", namespace, *args).stdout


def update_golden(request: pytest.FixtureRequest) -> bool:
    option = bool(request.config.getoption("--update-golden", default=False))
    return option or os.environ.get("WARDGATE_UPDATE_GOLDEN", "") not in ("", "0")


# --- the chart on its own -------------------------------------------------------------------


def test_chart_crds_are_the_generated_ones() -> None:
    chart_crds = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    # deploy/crds also holds the Route `auth` admission policy, a template in the chart.
    generated = {
        p.name: p.read_bytes()
        for p in CRDS.glob("*.yaml")
        if ".policy." not in p.name and ".binding." not in p.name
    }
    assert sorted(chart_crds) == sorted(generated)
    stale = [name for name in generated if chart_crds[name] != generated[name]]
    assert not stale, f"{stale} differ: run python -m wardgate.operator.crds (writes both)"


def test_helm_lint() -> None:
    helm("lint", "--strict", str(CHART))
    helm("lint", "--strict", str(CHART), *TEMPLATE_CASES["namespaced"])


def test_mistyped_values_fail_with_their_path() -> None:
    for args, expected in [
        (["--set", "imagee.tag=x"], "additional properties 'imagee' not allowed"),
        (["--set", "operator.workers=0"], "/operator/workers"),
        (["--set", "watchNamespaces=all"], "/watchNamespaces"),
    ]:
        result = subprocess.run(
            [str(helm_binary()), "template", "x", str(CHART), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode != 0, args
        assert expected in result.stderr, result.stderr


@pytest.mark.parametrize("case", sorted(TEMPLATE_CASES))
def test_helm_template_golden(case: str, request: pytest.FixtureRequest) -> None:
    output = render(*TEMPLATE_CASES[case])
    path = GOLDEN / f"{case}.yaml"
    if update_golden(request):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(output)
    assert path.exists(), f"{path} is missing: run with WARDGATE_UPDATE_GOLDEN=1"
    assert output == path.read_text(), f"{path} differs: run with WARDGATE_UPDATE_GOLDEN=1"


def _documents(manifests: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(manifests) if d]


def test_operator_pod_is_hardened() -> None:
    deployment = next(d for d in _documents(render()) if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    args = container["args"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in args
    assert "--gateway-image=ghcr.io/wardgate/wardgate:0.1.0" in args


# --- against the API server -----------------------------------------------------------------

PODMONITOR_CRD = """\
# A stand-in for the Prometheus Operator's CRD: enough for the API server to accept the kind.
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: podmonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: PodMonitor, plural: podmonitors, singular: podmonitor, listKind: PodMonitorList}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""


@pytest.fixture
def podmonitor_crd(cluster: KubeCluster) -> Iterator[None]:
    cluster.kubectl("apply", "--server-side", "-f", "-", input=PODMONITOR_CRD)
    cluster.kubectl("wait", "--for=condition=Established", "crd/podmonitors.monitoring.coreos.com")
    yield
    cluster.kubectl("delete", "crd", "podmonitors.monitoring.coreos.com", "--wait=false")


@pytest.mark.cluster
@pytest.mark.usefixtures("podmonitor_crd")
def test_rendered_manifests_pass_server_side_dry_run(cluster: KubeCluster, namespace: str) -> None:
    release = f"dry-{secrets.token_hex(3)}"
    for args in (
        [],
        [*TEMPLATE_CASES["namespaced"], "--set", f"watchNamespaces={{{namespace}}}"],
    ):
        manifests = render(*args, "--include-crds", release=release, namespace=namespace)
        result = cluster.kubectl(
            "apply", "--server-side", "--dry-run=server", "-f", "-", input=manifests
        )
        kinds = {d["kind"] for d in _documents(manifests)}
        assert "CustomResourceDefinition" in kinds
        assert "Deployment" in kinds
        assert result.stdout.count("(server dry run)") == len(_documents(manifests))


def _get(cluster: KubeCluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


@pytest.mark.cluster
def test_install_upgrade_uninstall(cluster: KubeCluster, namespace: str) -> None:
    release = f"wg-{secrets.token_hex(3)}"
    deployment = f"deployment/{release}-wardgate"
    env = cluster.env
    common = [release, str(CHART), "--namespace", namespace, "--wait", "--timeout", "120s"]
    # The cluster holds deploy/crds' admission policy (cluster-scoped) already.
    common += ["--set", "routeAuthPolicy.enabled=false"]

    helm("install", *common, env=env)
    for crd in CRD_NAMES:
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    cluster.kubectl(
        "wait", "--for=condition=Available", deployment, "-n", namespace, "--timeout=120s"
    )
    # The operator's ServiceAccount may do what the operator needs, and no more.
    account = f"system:serviceaccount:{namespace}:{release}-wardgate"
    for request, allowed in [
        (["patch", "gateways.wardgate.io", "--subresource=status"], "yes"),
        (["watch", "routes.wardgate.io"], "yes"),
        (["create", "deployments.apps"], "yes"),
        (["list", "namespaces"], "yes"),
        (["watch", "pods"], "yes"),
        (["patch", "pods"], "no"),
        (["update", "gateways.wardgate.io"], "no"),
        (["create", "secrets"], "no"),
    ]:
        answer = cluster.kubectl(
            "auth", "can-i", *request, "--as", account, "-n", namespace, check=False
        ).stdout.strip()
        assert answer == allowed, (request, answer)

    helm("upgrade", *common, "--set", "operator.verbose=true", env=env)
    cluster.kubectl(
        "wait", "--for=condition=Available", deployment, "-n", namespace, "--timeout=120s"
    )
    upgraded = _get(cluster, deployment, "-n", namespace)
    assert upgraded["metadata"]["generation"] == 2
    assert "--verbose" in upgraded["spec"]["template"]["spec"]["containers"][0]["args"]
    status = upgraded["status"]
    assert status["observedGeneration"] == 2
    assert status["updatedReplicas"] == status["availableReplicas"] == 1

    helm("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "120s", env=env)
    left = cluster.kubectl(
        "get",
        "deployments,serviceaccounts,clusterroles,clusterrolebindings",
        "-A",
        "-l",
        f"app.kubernetes.io/instance={release}",
        "-o",
        "name",
    ).stdout
    assert left == ""
    # Helm keeps the CRDs (and so every user's objects) on uninstall.
    for crd in CRD_NAMES:
        cluster.kubectl("get", f"crd/{crd}")


def test_argocd_application_values_render() -> None:
    applications = yaml.safe_load_all((ROOT / "deploy" / "argocd" / "application.yaml").read_text())
    chart_app = next(
        a for a in applications if a["spec"]["source"]["path"] == "deploy/helm/wardgate"
    )
    helm_source = chart_app["spec"]["source"]["helm"]
    values = json.dumps(helm_source["valuesObject"])
    result = subprocess.run(
        [str(helm_binary()), "template", helm_source["releaseName"], str(CHART), "-f", "-"],
        input=values,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _rules(role: dict[str, Any]) -> set[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]]:
    return {
        (
            tuple(sorted(rule.get("apiGroups", []))),
            tuple(sorted(rule.get("resources", []))),
            tuple(sorted(rule.get("verbs", []))),
        )
        for rule in role["rules"]
    }


def test_chart_rbac_matches_deploy_rbac() -> None:
    deploy = {
        d["metadata"]["name"]: d
        for d in yaml.safe_load_all((ROOT / "deploy" / "rbac.yaml").read_text())
        if d and d["kind"] == "ClusterRole"
    }
    chart = {
        d["metadata"]["name"]: d
        for args in TEMPLATE_CASES.values()
        for d in _documents(render(*args))
        if d["kind"] == "ClusterRole"
    }
    assert _rules(chart["wardgate"]) == _rules(deploy["wardgate-operator"])
    assert _rules(chart["wardgate-cluster"]) == _rules(deploy["wardgate-operator-cluster"])
    assert len(chart) == len(deploy) == 2
