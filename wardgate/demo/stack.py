"""The demo's steps, in order, and their cleanup: a local cluster with a real node, the
chart (the operator runs as a pod from the image built here), the seed example (its
gateway and `orders` run as pods); then the answers through the gateway's Service, and
a new Route followed by the gateway pods."""

from __future__ import annotations

import base64
import contextlib
import json
import shlex
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import jwt

from wardgate.devcluster import node
from wardgate.devcluster.cluster import KubectlError, LocalCluster, wait_until
from wardgate.gateway.errors import code_of_body
from wardgate.operator.manifests import child_name

ROOT: Final = Path(__file__).resolve().parents[2]
CHART: Final = ROOT / "deploy" / "helm" / "wardgate"
SEED: Final = ROOT / "examples" / "seed"
RELEASE: Final = "wardgate"
RELEASE_NAMESPACE: Final = "wardgate-system"
NAMESPACE: Final = "shop"
GATEWAY: Final = "api"
AUTHORIZER: Final = "jwt"
WAIT_SECONDS: Final = 180.0
# While a change rolls out, pods with the old and the new config serve side by side: an
# answer counts once it comes this many times in a row.
CONSISTENT_ANSWERS: Final = 6

NEW_ROUTE: Final = """\
apiVersion: wardgate.io/v1alpha1
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


class DemoError(RuntimeError):
    """A step failed; the message says which and where its logs are."""


@dataclass(frozen=True)
class Answer:
    """One request to the gateway's Service and what it answered."""

    title: str
    curl: str
    status: int
    reason: str
    body: str
    expected_status: int
    expected_code: str | None = None

    @property
    def code(self) -> str | None:
        return code_of_body(self.body)

    @property
    def ok(self) -> bool:
        return self.status == self.expected_status and self.expected_code in (None, self.code)


def request(url: str, token: str | None = None) -> tuple[int, str, str]:
    """GET `url`: (status, reason, body)."""
    # A connection per request: each goes through kube-proxy's choice of gateway pod.
    headers = {"Connection": "close"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, r.reason, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.reason, e.read().decode(errors="replace")


def _status(url: str, token: str | None = None) -> int:
    try:
        return request(url, token)[0]
    except OSError:
        return 0


@dataclass
class Demo:
    """Everything the demo started, so that `close()` stops it all."""

    out: TextIO = sys.stdout
    cluster: LocalCluster | None = None
    url: str = ""
    _started: float = field(default_factory=time.monotonic)

    # -- output ----------------------------------------------------------------------

    def say(self, message: str = "") -> None:
        print(message, file=self.out, flush=True)

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        started = time.monotonic()
        print(f"  … {what}", file=self.out, end="", flush=True)
        try:
            yield
        except BaseException:
            print("  failed", file=self.out, flush=True)
            raise
        print(f"  ({time.monotonic() - started:.1f} s)", file=self.out, flush=True)

    @property
    def kube(self) -> LocalCluster:
        if self.cluster is None:
            raise DemoError("the cluster is not running")
        return self.cluster

    # -- the steps -------------------------------------------------------------------

    def start(self) -> None:
        """Bring everything up: the cluster, the chart, the seed example."""
        for path in (CHART, SEED):
            if not path.is_dir():
                raise DemoError(f"{path} is missing: run the demo from a source checkout")
        self.say("wardgate demo: the operator, a gateway and the seed example on a local cluster")
        with self.step("the image (hack/build-image.sh; rebuilt only when the sources change)"):
            archives = node.local_image_archives()
        with self.step("local cluster: control plane and a real node (containerd, kubelet)"):
            self.cluster = LocalCluster(real_node=True, image_archives=archives)
            self.cluster.start()
        with self.step(f"Helm chart: CRDs, RBAC, the operator's pod in {RELEASE_NAMESPACE}"):
            self._install_chart()
        with self.step(f"seed example (examples/seed) in {NAMESPACE}: gateway and orders pods"):
            self._apply_seed()
        self.url = self._service_url()
        self.say(f"  ready in {time.monotonic() - self._started:.1f} s\n")

    def _install_chart(self) -> None:
        result = subprocess.run(
            [
                str(self.kube.bin_dir / "helm"), "install", RELEASE, str(CHART),
                "--namespace", RELEASE_NAMESPACE, "--create-namespace",
                "--wait", "--timeout", f"{WAIT_SECONDS:.0f}s",
            ],
            env=self.kube.env,
            capture_output=True,
            text=True,
            timeout=WAIT_SECONDS + 30,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise DemoError(f"helm install failed:\n{result.stderr}\n{self._operator_log()}")

    def _operator_log(self) -> str:
        logs = self.kube.kubectl(
            "logs", f"deployment/{RELEASE}", "-n", RELEASE_NAMESPACE, "--tail=30", check=False
        )
        return f"operator log:\n{logs.stdout}{logs.stderr}"

    def _apply_seed(self) -> None:
        self.kube.kubectl("create", "namespace", NAMESPACE)
        # Pods are refused until the namespace's default ServiceAccount exists.
        self.kube.kubectl(
            "wait", "--for=create", "serviceaccount/default", "-n", NAMESPACE, "--timeout=60s"
        )
        self.kube.kubectl(
            "apply", "--server-side", "--field-manager=demo", "-n", NAMESPACE, "-f", str(SEED)
        )
        try:
            self.kube.kubectl(
                "wait", "--for=condition=Ready", f"gateways.wardgate.io/{GATEWAY}",
                "-n", NAMESPACE, f"--timeout={WAIT_SECONDS:.0f}s", timeout=WAIT_SECONDS + 30,
            )  # fmt: skip
            for deployment in ("orders", child_name(GATEWAY)):
                self.kube.kubectl(
                    "rollout", "status", f"deployment/{deployment}", "-n", NAMESPACE,
                    f"--timeout={WAIT_SECONDS:.0f}s", timeout=WAIT_SECONDS + 30,
                )  # fmt: skip
        except KubectlError as e:
            status = self.kube.kubectl(
                "get", "wardgate,pods", "-n", NAMESPACE, "-o", "wide", check=False
            ).stdout
            raise DemoError(
                f"the seed example did not become Ready: {e}\n{status}\n{self._operator_log()}"
            ) from None

    def _service_url(self) -> str:
        """The gateway's Service at its ClusterIP, which this machine routes to the node."""
        service = json.loads(
            self.kube.kubectl(
                "get", f"service/{child_name(GATEWAY)}", "-n", NAMESPACE, "-o", "json"
            ).stdout
        )
        url = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"
        self._wait(lambda: self._consistently(url + "/health", 200), "the gateway's Service")
        return url

    def _consistently(self, url: str, status: int, token: str | None = None) -> bool:
        return all(_status(url, token) == status for _ in range(CONSISTENT_ANSWERS))

    def _wait(self, condition: Callable[[], bool], what: str) -> None:
        try:
            wait_until(condition, what=what, timeout=WAIT_SECONDS, interval=0.2)
        except TimeoutError as e:
            raise DemoError(f"{e}\n{self._operator_log()}") from None

    # -- the answers -----------------------------------------------------------------

    def token(self) -> str:
        """A token the seed's Authorizer accepts: its issuer and audience, signed with the
        Secret's JWT_SECRET."""
        authorizer = json.loads(
            self.kube.kubectl(
                "get", f"authorizers.wardgate.io/{AUTHORIZER}", "-n", NAMESPACE, "-o", "json"
            ).stdout
        )["spec"]
        secret_name = authorizer["secretRef"]["name"]
        key = authorizer["secret"].removeprefix("$secret.")
        secret = json.loads(
            self.kube.kubectl("get", f"secret/{secret_name}", "-n", NAMESPACE, "-o", "json").stdout
        )
        value = base64.b64decode(secret["data"][key])
        now = int(time.time())
        claims: dict[str, Any] = {"sub": "demo-user", "iat": now, "exp": now + 3600}
        for claim, field_name in (("iss", "issuer"), ("aud", "audience")):
            if field_name in authorizer:
                claims[claim] = authorizer[field_name]
        return jwt.encode(claims, value, algorithm=authorizer.get("algorithm", "HS256"))

    def answers(self, token: str) -> list[Answer]:
        """The seed's three requests, sent to the gateway's Service."""
        cases = [
            ("public path", "/health", None, 200, None),
            ("no token: refused", "/private/orders", None, 401, "missing_token"),
            ("valid token: proxied to the orders pods", "/private/orders", token, 200, None),
        ]
        # CoreDNS and kube-proxy catch up with the `orders` Service within seconds of its
        # creation; until then the gateway answers 502.
        self._wait(
            lambda: self._consistently(f"{self.url}/private/orders", 200, token),
            "the orders pods through the gateway",
        )
        answers = []
        for title, path, bearer, status, code in cases:
            header = ' -H "Authorization: Bearer $TOKEN"' if bearer else ""
            got, reason, body = request(self.url + path, bearer)
            answers.append(
                Answer(title, f"curl -i{header} {self.url}{path}", got, reason, body, status, code)
            )
        return answers

    def show(self, answers: list[Answer]) -> None:
        for answer in answers:
            mark = "✓" if answer.ok else "✗"
            expected = f"{answer.expected_status}" + (
                f" {answer.expected_code}" if answer.expected_code else ""
            )
            self.say(f"\n# {answer.title} (expect {expected}) {mark}")
            self.say(f"$ {answer.curl}")
            self.say(f"HTTP/1.1 {answer.status} {answer.reason}")
            if answer.body:
                self.say(_compact(answer.body))

    def show_next_steps(self) -> None:
        self.say(
            "\nIn another shell, use the cluster:\n"
            f"  export KUBECONFIG={shlex.quote(str(self.kube.kubeconfig))}\n"
            f'  export PATH={shlex.quote(str(self.kube.bin_dir))}:"$PATH"\n'
            f"  kubectl get wardgate,pods -n {NAMESPACE}\n"
            f"  kubectl logs -n {RELEASE_NAMESPACE} deployment/{RELEASE}\n"
            "Add a Route; the gateway pods serve it within seconds:\n"
            f"  kubectl apply -n {NAMESPACE} -f - <<'EOF'\n{NEW_ROUTE}EOF\n"
            f"  curl -i {self.url}/hello\n"
            f"Cluster logs: {self.kube.logs_dir()}\n"
            "Ctrl-C stops everything."
        )

    def check_following(self) -> list[Answer]:
        """Apply a new Route; its answer through the Service once the gateway pods serve
        it, and `/health` all along (every request answered 200)."""
        during: list[int] = []
        done = threading.Event()

        def keep_asking() -> None:
            while not done.is_set():
                during.append(_status(f"{self.url}/health"))

        asker = threading.Thread(target=keep_asking, name="demo-during-rollout")
        asker.start()
        started = time.monotonic()
        try:
            self.kube.kubectl(
                "apply", "--server-side", "--field-manager=demo", "-n", NAMESPACE, "-f", "-",
                input=NEW_ROUTE,
            )  # fmt: skip
            self._wait(lambda: self._consistently(f"{self.url}/hello", 200), "/hello served")
            served = time.monotonic() - started
        finally:
            done.set()
            asker.join()
        refused = [status for status in during if status != 200]
        url = f"{self.url}/hello"
        status, reason, body = request(url)
        return [
            Answer(
                f"new Route applied: served by the gateway pods after {served:.1f} s",
                f"curl -i {url}",
                status,
                reason,
                body,
                200,
            ),
            Answer(
                f"/health meanwhile: {len(during)} requests, {len(refused)} not 200",
                f"curl -i {self.url}/health  # in a loop",
                200 if during and not refused else (refused or [0])[0],
                "OK" if during and not refused else "not all 200",
                "",
                200,
            ),
        ]

    def wait_forever(self) -> None:
        """Until Ctrl-C, or a component of the cluster exits."""
        name = self.kube.wait_for_exit()
        raise DemoError(f"{name} exited:\n{self.kube.describe_logs()}")

    # -- cleanup ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop the cluster (its pods, node and namespaces) and remove its files."""
        if self.cluster is not None:
            self.cluster.stop()


def _compact(body: str) -> str:
    try:
        return json.dumps(json.loads(body), separators=(", ", ": "))
    except ValueError:
        return body.strip()
