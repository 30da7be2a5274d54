"""The demo's steps, in order, and their cleanup in reverse: control plane, chart, operator,
seed example, local gateway; then the answers, and following the config until stopped."""

from __future__ import annotations

import base64
import contextlib
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import jwt
import yaml

from wardgate.demo.local_gateway import LocalGateway, free_port
from wardgate.demo.upstream import OrdersUpstream
from wardgate.devcluster.cluster import KubeCluster, LocalCluster, wait_until
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
UPSTREAM_SERVER: Final = "orders"
WAIT_SECONDS: Final = 120.0

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
    """One request to the local gateway and what it answered."""

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
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, r.reason, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.reason, e.read().decode(errors="replace")


@dataclass
class Demo:
    """Everything the demo started, so that `close()` stops it all."""

    port: int | None
    out: TextIO = sys.stdout
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="wardgate-demo-")))
    cluster: LocalCluster | None = None
    operator: subprocess.Popen[bytes] | None = None
    upstream: OrdersUpstream | None = None
    gateway: LocalGateway | None = None
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
    def kube(self) -> KubeCluster:
        if self.cluster is None:
            raise DemoError("the control plane is not running")
        return self.cluster

    # -- the steps -------------------------------------------------------------------

    def start(self) -> None:
        """Bring everything up and the local gateway on the operator's config."""
        for path in (CHART, SEED):
            if not path.is_dir():
                raise DemoError(f"{path} is missing: run the demo from a source checkout")
        self.say("wardgate demo: the operator, a gateway and the seed example on this machine")
        with self.step("local control plane (etcd, kube-apiserver, controllers, a kwok node)"):
            self.cluster = LocalCluster()
            self.cluster.start()
        with self.step(f"Helm chart: CRDs, RBAC, operator Deployment in {RELEASE_NAMESPACE}"):
            self._install_chart()
        with self.step(f"operator, running here as ServiceAccount {RELEASE_NAMESPACE}/{RELEASE}"):
            self._start_operator()
        with self.step(f"seed example (examples/seed) in namespace {NAMESPACE}, Gateway Ready"):
            self._apply_seed()
        with self.step("gateway on localhost following the operator's ConfigMap"):
            self.upstream = OrdersUpstream().start()
            port = self.port if self.port is not None else free_port()
            # The account the Gateway's pods run as: it may read their ConfigMap and Secrets.
            account = child_name(GATEWAY)
            self.kube.kubectl(
                "wait", "--for=create", f"serviceaccount/{account}", "-n", NAMESPACE,
                f"--timeout={WAIT_SECONDS:.0f}s",
            )  # fmt: skip
            self.gateway = LocalGateway(
                port,
                {UPSTREAM_SERVER: self.upstream.url},
                self.workdir / "gateway.log",
                self._service_account_kubeconfig(NAMESPACE, account),
                f"{NAMESPACE}/{child_name(GATEWAY, '-config')}",
            )
            self.gateway.start()
        self.say(f"  ready in {time.monotonic() - self._started:.1f} s\n")

    def _helm(self, *args: str) -> None:
        result = subprocess.run(
            [str(self.kube.bin_dir / "helm"), *args],
            env=self.kube.env,
            capture_output=True,
            text=True,
            timeout=WAIT_SECONDS + 30,
            check=False,
        )
        if result.returncode != 0:
            raise DemoError(f"helm {args[0]} failed:\n{result.stderr}")

    def _install_chart(self) -> None:
        self._helm(
            "install", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE,
            "--create-namespace", "--wait", "--timeout", f"{WAIT_SECONDS:.0f}s",
        )  # fmt: skip

    def _service_account_kubeconfig(
        self, namespace: str = RELEASE_NAMESPACE, account: str = RELEASE
    ) -> Path:
        """A kubeconfig for a ServiceAccount (the chart's, for the operator: it gets exactly
        the chart's RBAC, as in a cluster)."""
        token = self.kube.kubectl(
            "create", "token", account, "-n", namespace, "--duration=24h"
        ).stdout.strip()
        admin = yaml.safe_load(self.kube.kubeconfig.read_text())
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": admin["clusters"][:1],
            "users": [{"name": RELEASE, "user": {"token": token}}],
            "contexts": [
                {
                    "name": RELEASE,
                    "context": {"cluster": admin["clusters"][0]["name"], "user": RELEASE},
                }
            ],
            "current-context": RELEASE,
        }
        path = self.workdir / f"{namespace}.{account}.kubeconfig"
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(config))
        return path

    def _start_operator(self) -> None:
        kubeconfig = self._service_account_kubeconfig()
        health = free_port()
        log = self.workdir / "operator.log"
        env = {**self.kube.env, "KUBECONFIG": str(kubeconfig)}
        with log.open("ab") as out:
            self.operator = subprocess.Popen(
                [
                    sys.executable, "-m", "wardgate", "operator", "--kubeconfig", str(kubeconfig),
                    "--all-namespaces", "--standalone",
                    f"--liveness=http://127.0.0.1:{health}/healthz",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )  # fmt: skip

        def alive() -> bool:
            if self.operator is None or self.operator.poll() is not None:
                raise DemoError(f"the operator exited:\n{_tail(log)}")
            status, _, _ = _get_status(f"http://127.0.0.1:{health}/healthz")
            return status == 200

        self._wait(alive, "the operator's liveness endpoint", log)

    def _apply_seed(self) -> None:
        self.kube.kubectl("create", "namespace", NAMESPACE)
        # Pods are refused until the namespace's default ServiceAccount exists.
        self.kube.kubectl(
            "wait", "--for=create", "serviceaccount/default", "-n", NAMESPACE, "--timeout=60s"
        )
        self.kube.kubectl(
            "apply", "--server-side", "--field-manager=demo", "-n", NAMESPACE, "-f", str(SEED)
        )
        result = self.kube.kubectl(
            "wait", "--for=condition=Ready", f"gateways.wardgate.io/{GATEWAY}", "-n", NAMESPACE,
            f"--timeout={WAIT_SECONDS:.0f}s", check=False,
        )  # fmt: skip
        if result.returncode != 0:
            status = self.kube.kubectl(
                "get", "wardgate", "-n", NAMESPACE, "-o", "wide", check=False
            ).stdout
            raise DemoError(
                f"Gateway {GATEWAY} did not become Ready:\n{status}\n"
                f"operator log:\n{_tail(self.workdir / 'operator.log')}"
            )

    def wait_for_config(self, previous: str | None, timeout: float = WAIT_SECONDS) -> str:
        """Block until the local gateway serves a config other than `previous`."""
        gateway = self.gateway
        if gateway is None:
            raise DemoError("the gateway is not running")
        served: list[str] = []

        def changed() -> bool:
            current = gateway.served_hash()
            if current is None or current == previous:
                return False
            served.append(current)
            return True

        self._wait(changed, "the local gateway to serve the new config", gateway.log_path)
        return served[-1]

    def _wait(self, condition: Callable[[], bool], what: str, log: Path | None) -> None:
        try:
            wait_until(condition, what=what, timeout=WAIT_SECONDS, interval=0.1)
        except TimeoutError as e:
            raise DemoError(f"{e}\n{_tail(log) if log else ''}") from None

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
        """The seed's three requests, sent to the local gateway."""
        base = self.gateway.url if self.gateway else ""
        cases = [
            ("public path", "/health", None, 200, None),
            ("no token: refused", "/private/orders", None, 401, "missing_token"),
            ("valid token: proxied to orders", "/private/orders", token, 200, None),
        ]
        answers = []
        for title, path, bearer, status, code in cases:
            header = ' -H "Authorization: Bearer $TOKEN"' if bearer else ""
            got, reason, body = request(base + path, bearer)
            answers.append(
                Answer(title, f"curl -i{header} {base}{path}", got, reason, body, status, code)
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
        kubeconfig = self.kube.kubeconfig
        bin_dir = self.kube.bin_dir
        gateway = self.gateway.url if self.gateway else ""
        self.say(
            "\nIn another shell, use the cluster:\n"
            f"  export KUBECONFIG={shlex.quote(str(kubeconfig))}\n"
            f'  export PATH={shlex.quote(str(bin_dir))}:"$PATH"\n'
            f"  kubectl get wardgate -n {NAMESPACE}\n"
            "Add a Route; the gateway here follows the operator's new config:\n"
            f"  kubectl apply -n {NAMESPACE} -f - <<'EOF'\n{NEW_ROUTE}EOF\n"
            f"  curl -i {gateway}/hello\n"
            f"Logs: {self.workdir}/operator.log, {self.workdir}/gateway.log\n"
            "Ctrl-C stops everything."
        )

    def check_following(self) -> list[Answer]:
        """Apply a new Route; the local gateway's answer on its path, and on `/health` all
        along the change (every request answered 200): the config is swapped in place."""
        gateway = self.gateway
        if gateway is None:
            raise DemoError("the gateway is not running")
        previous = gateway.served_hash()
        during: list[int] = []
        done = threading.Event()

        def keep_asking() -> None:
            while not done.is_set():
                try:
                    during.append(request(f"{gateway.url}/health")[0])
                except OSError:
                    during.append(0)

        asker = threading.Thread(target=keep_asking, name="demo-during-change")
        asker.start()
        try:
            self.kube.kubectl(
                "apply", "--server-side", "--field-manager=demo", "-n", NAMESPACE, "-f", "-",
                input=NEW_ROUTE,
            )  # fmt: skip
            current = self.wait_for_config(previous)
        finally:
            done.set()
            asker.join()
        refused = [status for status in during if status != 200]
        url = f"{gateway.url}/hello"
        status, reason, body = request(url)
        return [
            Answer(
                f"new Route applied: config {previous} → {current}",
                f"curl -i {url}",
                status,
                reason,
                body,
                200,
            ),
            Answer(
                f"/health during the change: {len(during)} requests, {len(refused)} not 200",
                f"curl -i {gateway.url}/health  # in a loop",
                200 if during and not refused else (refused or [0])[0],
                "OK" if during and not refused else "not all 200",
                "",
                200,
            ),
        ]

    def wait_forever(self) -> None:
        """Until Ctrl-C, or the operator exits."""
        if self.operator is None:
            raise DemoError("the operator is not running")
        self.operator.wait()
        raise DemoError(f"the operator exited:\n{_tail(self.workdir / 'operator.log')}")

    # -- cleanup ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop everything in reverse order and remove the demo's files."""
        if self.gateway is not None:
            self.gateway.stop()
        if self.upstream is not None:
            self.upstream.stop()
        if self.operator is not None:
            _terminate(self.operator)
        if self.cluster is not None:
            self.cluster.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _get_status(url: str) -> tuple[int, str, str]:
    try:
        return request(url)
    except OSError:
        return 0, "", ""


def _terminate(process: subprocess.Popen[Any]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(path: Path | None, lines: int = 30) -> str:
    if path is None:
        return ""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def _compact(body: str) -> str:
    try:
        return json.dumps(json.loads(body), separators=(", ", ": "))
    except ValueError:
        return body.strip()
