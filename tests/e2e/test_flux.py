"""GitOps with Flux, for real: Flux's source-controller and kustomize-controller (built from
Go modules, run against the test cluster) sync the seed example from a Git server on
loopback, with the `Kustomization` that docs/gitops.md shows (`wait: true` and its
`healthCheckExprs`, read from the page itself). The operator renders; a local
`wardgate gateway` serves the rendered config, as in the demo.

The tests run in order, each on the repository state the previous one left:
sync and health, a new Route served, an invalid Route failing the health check while the
gateway keeps serving, the revert healing it, a second sync writing nothing, pruning a
Route, an unreachable identity provider waited for. The statuses seen along the way then go
through Argo CD's health check in gopher-lua.
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from tests.support.argocd import assess_all
from tests.support.flux import (
    KUSTOMIZE_API,
    SOURCE_API,
    FluxControllers,
    condition,
    flux_controllers,
    request_reconcile,
)
from tests.support.git_server import GitRepo, GitServer, git_server
from tests.support.key_set_server import KeySetServer
from tests.support.operator_fixtures import (
    Objects,
    RunningOperator,
    account_kubeconfig,
    install_crds,
)
from tests.support.tokens import jwks, rsa_key
from wardgate.demo.local_gateway import LocalGateway, free_port
from wardgate.demo.upstream import OrdersUpstream
from wardgate.devcluster.cluster import KubeCluster, wait_until
from wardgate.operator.models import API_VERSION

pytestmark = pytest.mark.cluster

ROOT: Final = Path(__file__).resolve().parents[2]
EXAMPLES: Final = ROOT / "examples"
GITOPS_DOC: Final = ROOT / "docs" / "gitops.md"
NAMESPACE: Final = "flux-shop"
GATEWAY: Final = "api"
WARDGATE_KINDS: Final = ("Gateway", "Route", "Authorizer")
SYNCED_KINDS: Final = ("Secret", "Deployment", "Service", *WARDGATE_KINDS)
SYNC_TIMEOUT: Final = 120.0
PROBE_SECONDS: Final = 2.0
# Flux polls the health of what it applied every 5 s (kustomize-controller's interval).
FLUX_HEALTH_POLL_SECONDS: Final = 5

HELLO_ROUTE: Final = f"""\
apiVersion: {API_VERSION}
kind: Route
metadata:
  name: hello
spec:
  gatewayRef:
    name: api
  paths:
    - method: GET
      path: /hello
      response:
        hello: world
"""
# Valid for the CRD's schema (the API server accepts it), refused by the operator: the
# same method and path twice.
INVALID_ROUTE: Final = f"""\
apiVersion: {API_VERSION}
kind: Route
metadata:
  name: twice
spec:
  gatewayRef:
    name: api
  paths:
    - method: GET
      path: /twice
      response:
        first: true
    - method: GET
      path: /twice
      response:
        second: true
"""


def documented_manifests() -> list[dict[str, Any]]:
    """The GitRepository and Kustomization of docs/gitops.md's "Tested with Flux" block."""
    text = GITOPS_DOC.read_text()
    match = re.search(r"<!-- flux-tested -->\s*```yaml\n(.*?)```", text, re.S)
    assert match, "docs/gitops.md has no ```yaml block after <!-- flux-tested -->"
    return [d for d in yaml.safe_load_all(match.group(1)) if d]


@dataclass
class GitOps:
    """What the module's tests share."""

    cluster: KubeCluster
    objects: Objects
    flux: FluxControllers
    server: GitServer
    repo: GitRepo
    upstream: OrdersUpstream
    workdir: Path
    port: int
    gateway: LocalGateway | None = None
    operator: RunningOperator | None = None
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Statuses met along the way, by what they show (for the Argo CD check)."""

    def flux_object(self, kind: str, name: str) -> dict[str, Any]:
        api = SOURCE_API if kind == "GitRepository" else KUSTOMIZE_API
        plural = {"GitRepository": "gitrepositories", "Kustomization": "kustomizations"}[kind]
        body = self.objects.api.request_blocking(
            "GET", f"/apis/{api}/namespaces/{NAMESPACE}/{plural}/{name}"
        )
        assert body is not None
        return body

    def kustomization(self) -> dict[str, Any]:
        return self.flux_object("Kustomization", "shop")

    def ready(self) -> dict[str, Any]:
        return condition(self.kustomization(), "Ready")

    def wait_for_kustomization(
        self, what: str, check: Any, timeout: float = SYNC_TIMEOUT
    ) -> dict[str, Any]:
        """Wait until `check(kustomization)` holds; fail with its status and the logs."""
        try:
            wait_until(lambda: bool(check(self.kustomization())), what=what, timeout=timeout)
        except TimeoutError:
            status = json.dumps(self.kustomization().get("status"), indent=1)
            raise AssertionError(
                f"{what}: Kustomization status {status}\n"
                f"kustomize-controller:\n{self.flux.tail('kustomize-controller')}"
            ) from None
        return self.kustomization()

    def sync(self, commit: str, ready: str = "True") -> dict[str, Any]:
        """Ask the GitRepository to fetch and wait until the Kustomization applied `commit`
        and reports Ready=`ready` for it."""
        request_reconcile(self.cluster, "gitrepository", NAMESPACE, "wardgate-examples")

        def applied(body: dict[str, Any]) -> bool:
            status = body.get("status") or {}
            # Ready keeps the previous revision's True while a new one is applied and
            # checked: a success is the applied revision, a failure the attempted one.
            key = "lastAppliedRevision" if ready == "True" else "lastAttemptedRevision"
            ready_now = condition(body, "Ready")
            return status.get(key, "").endswith(commit) and ready_now.get("status") == ready

        return self.wait_for_kustomization(f"revision {commit[:8]} Ready={ready}", applied)

    def wardgate_objects(self) -> list[dict[str, Any]]:
        return [body for kind in WARDGATE_KINDS for body in self.objects.list(kind, NAMESPACE)]

    def remember(self, label: str, bodies: list[dict[str, Any]]) -> None:
        for body in bodies:
            body = json.loads(json.dumps(body))
            body["metadata"].pop("managedFields", None)
            self.seen[f"{label}: {body['kind']}/{body['metadata']['name']}"] = body

    def follow_config(self) -> str:
        """Wait until the local gateway (started the first time, following the ConfigMap as
        the Gateway's pods do) serves the ConfigMap's current config; its hash."""
        if self.gateway is None:
            account = f"wardgate-{GATEWAY}"
            kubeconfig = account_kubeconfig(self.cluster, NAMESPACE, account, self.workdir)
            self.gateway = LocalGateway(
                self.port,
                {"orders": self.upstream.url},
                self.workdir / "gateway.log",
                kubeconfig,
                f"{NAMESPACE}/wardgate-{GATEWAY}-config",
            )
            self.gateway.start()
        gateway = self.gateway
        hashes: list[str] = []

        def current() -> bool:
            config_map = self.objects.get("ConfigMap", NAMESPACE, f"wardgate-{GATEWAY}-config")
            wanted = ((config_map or {}).get("metadata") or {}).get("annotations", {})
            hashes.append(str(wanted.get("wardgate.io/config-hash")))
            return gateway.served_hash() == hashes[-1]

        wait_until(current, what="the local gateway on the ConfigMap's config", timeout=60)
        return hashes[-1]

    def get(self, path: str) -> tuple[int, Any]:
        assert self.gateway is not None
        try:
            with urllib.request.urlopen(self.gateway.url + path, timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def gitops(cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitOps]:
    """Flux, a Git server holding the examples, the namespace; the operator is started by
    the first test (it must see the Kustomization wait for it)."""
    workdir = tmp_path_factory.mktemp("flux")
    install_crds(cluster)
    cluster.kubectl("create", "namespace", NAMESPACE)
    objects = Objects(cluster)
    upstream = OrdersUpstream().start()
    (workdir / "git").mkdir()
    files = {str(path.relative_to(EXAMPLES)): path.read_text() for path in EXAMPLES.rglob("*.yaml")}
    state: GitOps | None = None
    try:
        with flux_controllers(cluster, workdir) as flux, git_server(workdir / "git") as server:
            repo = server.repository("wardgate-examples", files)
            state = GitOps(cluster, objects, flux, server, repo, upstream, workdir, free_port())
            yield state
    finally:
        if state is not None and state.gateway is not None:
            state.gateway.stop()
        if state is not None and state.operator is not None:
            state.operator.stop()
        upstream.stop()
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false")
        objects.close()
        shutil.rmtree(workdir, ignore_errors=True)


def test_documented_manifests_are_a_git_repository_and_a_waiting_kustomization() -> None:
    source, kustomization = documented_manifests()
    assert (source["apiVersion"], source["kind"]) == (SOURCE_API, "GitRepository")
    assert (kustomization["apiVersion"], kustomization["kind"]) == (KUSTOMIZE_API, "Kustomization")
    spec = kustomization["spec"]
    assert spec["wait"] is True
    assert spec["prune"] is True
    assert spec["sourceRef"] == {"kind": "GitRepository", "name": source["metadata"]["name"]}
    assert {e["kind"] for e in spec["healthCheckExprs"]} == set(WARDGATE_KINDS)


def test_the_kustomization_is_ready_only_once_wardgate_objects_are(gitops: GitOps) -> None:
    source, kustomization = documented_manifests()
    # Only what cannot be the same here differs from the page: the namespace, and the URL
    # of the Git server on loopback.
    source["metadata"]["namespace"] = NAMESPACE
    source["spec"]["url"] = gitops.repo.url
    kustomization["metadata"]["namespace"] = NAMESPACE
    kustomization["spec"]["targetNamespace"] = NAMESPACE
    gitops.objects.apply(NAMESPACE, source, kustomization)

    # No operator yet: Flux applies the objects, then waits for their health.
    def applied_and_waiting(body: dict[str, Any]) -> bool:
        healthy = condition(body, "Healthy")
        routes = gitops.objects.list("Route", NAMESPACE)
        return len(routes) == 2 and healthy.get("reason") == "Progressing"

    waiting = gitops.wait_for_kustomization("objects applied, health pending", applied_and_waiting)
    assert condition(waiting, "Healthy")["message"].startswith("Running health checks")
    assert condition(waiting, "Ready").get("status") != "True"
    unready = gitops.wardgate_objects()
    assert {body["kind"] for body in unready} == set(WARDGATE_KINDS)
    assert all("status" not in body for body in unready)
    gitops.remember("before the operator", unready)

    gitops.operator = RunningOperator(
        gitops.cluster.kubeconfig, probe_seconds=PROBE_SECONDS
    ).start()
    head = gitops.repo.head()
    done = gitops.wait_for_kustomization(
        "Ready=True",
        lambda body: (
            condition(body, "Ready").get("status") == "True"
            and (body.get("status") or {}).get("lastAppliedRevision", "").endswith(head)
        ),
    )
    assert condition(done, "Ready")["reason"] == "ReconciliationSucceeded"
    ready = gitops.wardgate_objects()
    gitops.remember("synced", ready)
    for body in ready:
        ready_condition = condition(body, "Ready")
        assert ready_condition["status"] == "True", body
        assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    # It became Ready only after every Wardgate object did.
    became_ready = condition(done, "Ready")["lastTransitionTime"]
    assert all(condition(b, "Ready")["lastTransitionTime"] <= became_ready for b in ready)

    gitops.follow_config()
    assert gitops.get("/health") == (200, {"status": "ok"})


def test_a_commit_adding_a_route_is_served(gitops: GitOps) -> None:
    assert gitops.get("/hello")[0] == 404
    commit = gitops.repo.commit("Add the hello Route", {"seed/hello.yaml": HELLO_ROUTE})
    gitops.sync(commit)
    gitops.objects.wait_condition("Route", NAMESPACE, "hello", "Ready", "True")
    gitops.objects.wait_condition("Gateway", NAMESPACE, GATEWAY, "Ready", "True")
    gitops.follow_config()
    assert gitops.get("/hello") == (200, {"hello": "world"})
    assert gitops.get("/health") == (200, {"status": "ok"})


def test_an_invalid_route_fails_the_health_check_and_the_gateway_keeps_serving(
    gitops: GitOps,
) -> None:
    served = gitops.follow_config()
    commit = gitops.repo.commit("Add an invalid Route", {"seed/twice.yaml": INVALID_ROUTE})
    failed = gitops.sync(commit, ready="False")
    ready = condition(failed, "Ready")
    assert ready["reason"] == "HealthCheckFailed", ready
    # Flux names the failed object and its kstatus reading; the reason is on the Route, in
    # Ready and in kstatus' Stalled (Flux's message has no room for an object's own words).
    assert f"Route/{NAMESPACE}/twice status: 'Failed'" in ready["message"], ready
    route_ready = gitops.objects.condition("Route", NAMESPACE, "twice", "Ready")
    route_stalled = gitops.objects.condition("Route", NAMESPACE, "twice", "Stalled")
    assert (route_ready["status"], route_ready["reason"]) == ("False", "Invalid")
    assert (route_stalled["status"], route_stalled["reason"]) == ("True", "Invalid")
    assert "GET /twice duplicates spec.paths.0" in route_ready["message"]
    twice = gitops.objects.get("Route", NAMESPACE, "twice")
    assert twice is not None
    gitops.remember("invalid route", [twice])

    # The Gateway and the config it serves are untouched.
    gitops.objects.wait_condition("Gateway", NAMESPACE, GATEWAY, "Ready", "True")
    assert gitops.follow_config() == served
    assert gitops.get("/hello") == (200, {"hello": "world"})
    assert gitops.get("/twice")[0] == 404


def test_reverting_the_invalid_commit_heals_the_kustomization(gitops: GitOps) -> None:
    commit = gitops.repo.revert(gitops.repo.head())
    gitops.sync(commit)
    wait_until(
        lambda: gitops.objects.get("Route", NAMESPACE, "twice") is None,
        what="Route twice pruned",
        timeout=60,
    )
    assert gitops.get("/hello") == (200, {"hello": "world"})


def test_a_second_sync_with_nothing_changed_writes_nothing(gitops: GitOps) -> None:
    assert gitops.operator is not None
    before = _resource_versions(gitops)
    operator_writes = gitops.operator.writes(NAMESPACE)
    applied = gitops.kustomization()["status"]["lastAppliedRevision"]
    token = request_reconcile(gitops.cluster, "kustomization", NAMESPACE, "shop")
    done = gitops.wait_for_kustomization(
        "the requested reconcile",
        lambda body: (
            (body.get("status") or {}).get("lastHandledReconcileAt") == token
            and condition(body, "Ready").get("status") == "True"
        ),
    )
    assert done["status"]["lastAppliedRevision"] == applied
    assert _resource_versions(gitops) == before
    assert gitops.operator.writes(NAMESPACE) == operator_writes


def test_pruning_a_route_removes_it_from_the_config(gitops: GitOps) -> None:
    commit = gitops.repo.commit("Remove the hello Route", {"seed/hello.yaml": None})
    gitops.sync(commit)
    wait_until(
        lambda: gitops.objects.get("Route", NAMESPACE, "hello") is None,
        what="Route hello pruned",
        timeout=60,
    )

    def without_hello() -> bool:
        config = gitops.objects.config(NAMESPACE, GATEWAY) or {}
        return "/hello" not in json.dumps(config)

    wait_until(without_hello, what="/hello gone from the config", timeout=60)
    gitops.objects.wait_condition("Gateway", NAMESPACE, GATEWAY, "Ready", "True")
    gitops.follow_config()
    assert gitops.get("/hello")[0] == 404
    assert gitops.get("/health") == (200, {"status": "ok"})
    gitops.remember("after pruning", gitops.wardgate_objects())


def partners_authorizer(jwks_uri: str) -> str:
    return f"""\
apiVersion: {API_VERSION}
kind: Authorizer
metadata:
  name: partners
spec:
  type: jwt
  jwksUri: {jwks_uri}
  algorithms: [RS256]
  issuer: https://partners.example.com/
  audience: api-audience
"""


def test_an_unreachable_identity_provider_is_waited_for_not_failed(gitops: GitOps) -> None:
    """An Authorizer whose JWKS does not answer is neither Ready nor Stalled: with the
    documented expressions Flux keeps waiting for it (InProgress) until the health check's
    timeout instead of failing at its next poll, and the sync turns Ready once the
    provider answers."""
    key_server = KeySetServer(jwks(rsa_key("partners-1"))).start()
    key_server.stop()  # its port is known; the provider is down
    try:
        # A short timeout for this step, so that its end shows how Flux read the Authorizer.
        _set_timeout(gitops, "20s")
        commit = gitops.repo.commit(
            "Add the partners Authorizer",
            {"seed/partners.yaml": partners_authorizer(key_server.url)},
        )
        failed = gitops.sync(commit, ready="False")
        ready = condition(failed, "Ready")
        assert ready["reason"] == "HealthCheckFailed", ready
        assert "timeout waiting for" in ready["message"], ready
        assert f"Authorizer/{NAMESPACE}/partners status: 'InProgress'" in ready["message"]
        down = gitops.objects.condition("Authorizer", NAMESPACE, "partners", "Ready")
        assert (down["status"], down["reason"]) == ("False", "JwksUnreachable"), down
        assert not gitops.objects.condition("Authorizer", NAMESPACE, "partners", "Stalled")
        # The provider was down for more than one of Flux's health polls before the
        # timeout: a `failed` reading would have ended the wait early.
        waited = _seconds(ready["lastTransitionTime"]) - _seconds(down["lastTransitionTime"])
        assert waited > FLUX_HEALTH_POLL_SECONDS, (down, ready)
        body = gitops.objects.get("Authorizer", NAMESPACE, "partners")
        assert body is not None
        gitops.remember("provider down", [body])

        key_server.start()  # the same port: the provider answers
        gitops.objects.wait_condition(
            "Authorizer", NAMESPACE, "partners", "Ready", "True", timeout=30
        )
        _set_timeout(gitops, documented_manifests()[1]["spec"]["timeout"])
        gitops.sync(commit)
    finally:
        key_server.stop()


def _set_timeout(gitops: GitOps, timeout: str) -> None:
    gitops.cluster.kubectl(
        "patch", "kustomization/shop", "-n", NAMESPACE, "--type=merge",
        "-p", json.dumps({"spec": {"timeout": timeout}}),
    )  # fmt: skip


def _seconds(timestamp: str) -> float:
    return datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def test_argo_cd_health_of_the_statuses_flux_saw(gitops: GitOps) -> None:
    """Argo CD's check in gopher-lua agrees with Flux's reading of each status: no status
    is Progressing (Flux waited), Ready is Healthy (Flux was Ready), the invalid Route is
    Degraded with its reason (Flux failed the health check). One difference by design: an
    unreachable identity provider is Degraded for Argo CD and waited for by Flux."""
    labels = list(gitops.seen)
    healths = dict(zip(labels, assess_all([gitops.seen[k] for k in labels]), strict=True))
    expected = {
        "before the operator": "Progressing",
        "synced": "Healthy",
        "invalid route": "Degraded",
        "after pruning": "Healthy",
        "provider down": "Degraded",
    }
    assert {label.split(":")[0] for label in labels} == set(expected)
    for label, health in healths.items():
        assert health.status == expected[label.split(":")[0]], (label, health)
    twice = healths["invalid route: Route/twice"]
    assert twice.message.startswith("Invalid: spec.paths.1: GET /twice duplicates")
    partners = healths["provider down: Authorizer/partners"]
    assert partners.message.startswith("JwksUnreachable: ")


def _resource_versions(gitops: GitOps) -> dict[str, str]:
    versions = gitops.objects.resource_versions(NAMESPACE, SYNCED_KINDS)
    versions.update(gitops.objects.resource_versions(NAMESPACE, ("ConfigMap",)))
    return versions
